import { promises as fs } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { join } from 'node:path';
import { sourceOf } from '../coordinator/enrollment-limits.js';
import { respondJson } from '../coordinator/http-guard.js';
import type { ResourceLimits } from '../coordinator/limits.js';
import { type CoordinatorExtension, type RunningCoordinator, startCoordinator } from '../coordinator/server.js';
import type { TrustState } from '../coordinator/trust-state.js';
import type { UpdateLog } from '../coordinator/update-log.js';
import { verifyCheckpoint } from '../shared/audit/checkpoint.js';
import { RETURN_DATA_PATH } from '../shared/bundle/format.js';
import type { SigningKey } from '../shared/crypto/keys.js';
import { readCheckpoint, TIMESTAMP_DOC } from '../shared/documents/fleet.js';
import { parseDocName } from '../shared/documents/names.js';
import type { Logger } from '../shared/log.js';
import { checkpointKeeper } from '../shared/node/fleet-trust.js';
import { RequestBodyError, readBody } from '../shared/node/http-body.js';
import type { ControlLink } from '../shared/node/tunnel-link.js';
import { authHeaders, FORWARDED_FOR_HEADER, forwardedProofTarget, signAuthProof } from '../shared/sync/auth-proof.js';
import { fetchChallenge, httpBaseFromWs } from '../shared/sync/reconnect.js';
import { relayServesHost } from '../shared/trust/capabilities.js';
import { type Bridge, createBridge, isRelayedDocument } from './bridge.js';
import { createReturnDataEndpoint } from './bundle-return-data.js';
import { CACHE_PREFIX, type CacheMirror, openCacheMirror } from './cache-mirror.js';
import { registerRelayMetrics } from './metrics.js';
import { linkTunnelsUpstream } from './tunnels.js';
import { startUpstreamLink, type UpstreamLink } from './upstream.js';

// `outpost relay`: the coordinator's server (same websocket endpoint, same per-document queue and
// fsync'ed log on its own disk, same authentication against the policy it syncs from upstream)
// plus a bridge that keeps its documents in step with an upstream over one multiplexed socket,
// plus a binary-cache mirror. It holds no signing key: every intent, result and status it
// forwards is signed by an admin or a host and verified by its readers.
export interface RelayConfig {
  upstreams: string[];
  // Proves to the upstream which relay this is (policy.relays[].key); signs nothing else.
  key: SigningKey | null;
  orgRootKeys: string[];
  dataDir: string;
  listen: string;
  port: number;
  maxPayload: number;
  idleUnloadMs: number;
  baseBackoffMs: number;
  maxBackoffMs: number;
  upstreamTimeoutMs: number;
  syncConcurrency: number;
  cacheUpstreams: string[];
  cacheMaxBytes: number;
  tls?: { certFile: string; keyFile: string };
  limits?: Partial<ResourceLimits>;
  logger: Logger;
}

export interface RunningRelay extends RunningCoordinator {
  upstream: UpstreamLink;
  bridge: Bridge;
}

// /api/rollouts: plans, co-signatures and actions (a page the relay serves to site staff sends
// its rollout actions here, and queues them while the uplink is down: docs/web.md).
const FORWARDED_POSTS = ['/api/policy', '/api/enroll', '/api/enroll/approve', '/api/rollouts'];
const MAX_FORWARDED_BODY = 256 * 1024;

// Policy pushes, enrollment and rollout submissions go to the coordinator, which checks and
// writes them; the relay passes them on because a site's hosts (and staff) may reach nothing but
// their relay. The entries are signed, so passing them on adds no trust; the answer comes back
// unchanged.
async function forwardPost(
  path: string,
  req: IncomingMessage,
  res: ServerResponse,
  upstreams: string[],
  current: string | null,
  key: SigningKey | null,
): Promise<void> {
  const body = await readBody(req, MAX_FORWARDED_BODY);
  const order = current ? [current, ...upstreams.filter((u) => u !== current)] : upstreams;
  // With its key, the relay names the client's source (proven, so the upstream's per-source rate
  // limit counts each client of the site apart; fuzz finding 7). A chained relay's client is the
  // relay below it: its own claim is not passed further.
  const source = sourceOf(req.socket.remoteAddress);
  const problems: string[] = [];
  for (const upstream of order) {
    let answer: { status: number; contentType: string; body: Buffer };
    try {
      const forwarded = key
        ? {
            [FORWARDED_FOR_HEADER]: source,
            ...authHeaders(
              signAuthProof(key, await fetchChallenge(upstream, 10_000), forwardedProofTarget(path, source)),
            ),
          }
        : {};
      const response = await fetch(`${httpBaseFromWs(upstream)}${path}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...forwarded },
        body: new Uint8Array(body),
        signal: AbortSignal.timeout(30_000),
      });
      // The whole answer first: an upstream that fails mid-answer is tried like an unreachable one,
      // and nothing is half-sent to the client.
      answer = {
        status: response.status,
        contentType: response.headers.get('content-type') ?? 'application/json',
        body: Buffer.from(await response.arrayBuffer()),
      };
    } catch (error) {
      problems.push(`${upstream}: ${(error as Error).message}`);
      continue;
    }
    if (res.headersSent || res.destroyed) return;
    res.writeHead(answer.status, { 'content-type': answer.contentType });
    res.end(answer.body);
    return;
  }
  respondJson(res, 503, {
    error: `this relay passes ${path} on to its upstream, and none is reachable now (${problems.join('; ')}); try again later or POST to the coordinator directly`,
  });
}

async function* loggedUpdates(log: UpdateLog, document: string): AsyncGenerator<Uint8Array> {
  for await (const entry of log.iterate(document)) yield entry.update;
}

// The signed checkpoints of the coordinator's log heads that pass through, verified under the
// relay's policy chain, kept like an agent keeps them (shared/audit/kept-checkpoints.ts): a second place, off the
// coordinator, that an auditor can check the coordinator's history against (docs/audit.md).
async function keepCheckpoints(server: RunningCoordinator, path: string, logger: Logger): Promise<void> {
  const { doc } = await server.host.pin(TIMESTAMP_DOC);
  const keep = checkpointKeeper(path, logger);
  let lastSeq = 0;
  const onUpdate = (): void => {
    const signed = readCheckpoint(doc);
    if (!signed || signed.checkpoint.seq <= lastSeq || !verifyCheckpoint(signed, server.trust.chain()).ok) return;
    lastSeq = signed.checkpoint.seq;
    keep(signed);
  };
  doc.on('update', onUpdate);
  onUpdate();
}

export async function startRelay(config: RelayConfig): Promise<RunningRelay> {
  const { logger } = config;
  await fs.mkdir(config.dataDir, { recursive: true, mode: 0o700 });
  let trust: TrustState | null = null;
  let bridge: Bridge | null = null;
  let upstream: UpstreamLink | null = null;
  let tunnelLink: ControlLink | null = null;
  let returnData: ReturnType<typeof createReturnDataEndpoint> | null = null;
  const cache: CacheMirror | null = config.cacheUpstreams.length
    ? await openCacheMirror({
        dir: join(config.dataDir, 'nix-cache'),
        upstreams: config.cacheUpstreams,
        maxBytes: config.cacheMaxBytes,
        logger,
      })
    : null;

  // With a policy, the relay offers only what its upstream lets it sync: the fleet documents and
  // the documents of the hosts the policy assigns to this relay's key. Others get 4403, and their
  // agents fail over to their next endpoint.
  const serves = (document: string): boolean => {
    if (!isRelayedDocument(document)) return false;
    if (!trust?.enforced || document.startsWith('fleet/')) return true;
    const policy = trust.policy();
    const parsed = parseDocName(document);
    return Boolean(policy && parsed && config.key && relayServesHost(policy, config.key.publicKey, parsed.host));
  };

  const extension: CoordinatorExtension = {
    attach(host, log, presence, challenges) {
      returnData = createReturnDataEndpoint({
        key: config.key,
        challenges,
        log,
        cacheDir: join(config.dataDir, 'nix-cache'),
        logger,
      });
      bridge = createBridge(host, presence, {
        logger,
        passConcurrency: config.syncConcurrency,
        pullOnly: (document) => document.startsWith('fleet/'),
        // The upstream decides what this relay may sync (it answers 4403 otherwise).
        inScope: isRelayedDocument,
        history: (document) => loggedUpdates(log, document),
      });
    },
    serves,
    attachTunnels(hub) {
      tunnelLink = linkTunnelsUpstream(hub, {
        upstreams: config.upstreams,
        key: config.key,
        baseBackoffMs: config.baseBackoffMs,
        maxBackoffMs: config.maxBackoffMs,
        timeoutMs: config.upstreamTimeoutMs,
        logger,
      });
    },
    route(req, res, path) {
      if (path === CACHE_PREFIX || path.startsWith(`${CACHE_PREFIX}/`)) {
        if (cache) cache.handle(req, res, path);
        else respondJson(res, 404, { error: 'this relay mirrors no binary cache; start it with --cache-upstream URL' });
        return true;
      }
      if (path === RETURN_DATA_PATH && returnData) {
        returnData.handle(req, res);
        return true;
      }
      if (req.method === 'POST' && FORWARDED_POSTS.includes(path)) {
        forwardPost(path, req, res, config.upstreams, upstream?.connectedUrl() ?? null, config.key).catch(
          (error: Error) =>
            respondJson(res, error instanceof RequestBodyError ? error.status : 400, { error: error.message }),
        );
        return true;
      }
      return false;
    },
    health: () => ({
      role: 'relay',
      upstream: upstream?.connectedUrl() ?? null,
      upstreamLink: upstream?.stats() ?? null,
      bridge: bridge?.stats() ?? null,
      cacheMirror: cache?.stats() ?? null,
    }),
    metrics: (registry) => registerRelayMetrics(registry, { upstream: () => upstream, bridge: () => bridge, cache }),
    async close() {
      upstream?.stop();
      tunnelLink?.stop();
    },
  };

  const server = await startCoordinator({
    dataDir: join(config.dataDir, 'log'),
    listen: config.listen,
    port: config.port,
    maxPayload: config.maxPayload,
    idleUnloadMs: config.idleUnloadMs,
    logger,
    orgRootKeys: config.orgRootKeys,
    tls: config.tls,
    limits: config.limits,
    extension,
  });
  trust = server.trust;
  const activeBridge = bridge as Bridge | null;
  if (!activeBridge) throw new Error('relay bridge was not attached');
  const link = startUpstreamLink(
    {
      urls: config.upstreams,
      identity: config.key,
      logger,
      baseBackoffMs: config.baseBackoffMs,
      maxBackoffMs: config.maxBackoffMs,
      timeoutMs: config.upstreamTimeoutMs,
      maxPayload: config.maxPayload,
    },
    activeBridge.handlers,
  );
  upstream = link;
  activeBridge.attach(link);
  if (server.trust.enforced) await keepCheckpoints(server, join(config.dataDir, 'kept-checkpoints.jsonl'), logger);
  // After a restart nothing says which documents still hold writes the upstream has not
  // confirmed: sync every document once (a few at a time) when the link is up.
  activeBridge.enqueue(await server.log.documents());
  logger.info(
    { event: 'relay-started', upstreams: config.upstreams, url: server.url, cacheMirror: config.cacheUpstreams },
    'relay started',
  );
  return Object.assign(server, { upstream: link, bridge: activeBridge });
}
