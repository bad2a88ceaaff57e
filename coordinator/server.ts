import { readFileSync } from 'node:fs';
import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server,
  type ServerOptions,
  type ServerResponse,
} from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import type { Registry } from 'prom-client';
import { type WebSocket, WebSocketServer } from 'ws';
import type { SigningKey } from '../shared/crypto/keys.js';
import { parseDocName, statusDocName } from '../shared/documents/names.js';
import type { Logger } from '../shared/log.js';
import { createWebApp } from '../shared/node/web-app.js';
import {
  AUTH_HEADERS,
  authParamsSchema,
  FORWARDED_FOR_HEADER,
  forwardedProofTarget,
  forwardedSourceSchema,
  verifyAuthProof,
} from '../shared/sync/auth-proof.js';
import { MUX_PATH } from '../shared/sync/mux-frames.js';
import { TUNNEL_PREFIX } from '../shared/tunnel/wire.js';
import { handleAuditGet } from './audit-api.js';
import type { LogBackend } from './backends/backend-option.js';
import { openLogBackend } from './backends/open-log.js';
import { createReturnBundleEndpoint, RETURN_BUNDLE_PATH } from './bundle-return.js';
import { type ChallengeStore, createChallengeStore } from './challenges.js';
import { serveConnection } from './connection.js';
import type { EnrollmentLimits } from './enrollment-limits.js';
import { createEnrollmentGate, type ForwardedBy, handleFleetPost } from './fleet-api.js';
import { createDocumentHost, type DocumentHost, type PresenceChange } from './hosted-documents.js';
import {
  headerOf,
  proofFromHeaders,
  refuseUpgrade,
  requestPath,
  requestQuery,
  respondJson,
  upgradeDocument,
} from './http-guard.js';
import {
  createConnectionGate,
  createRefusals,
  DEFAULT_LIMITS,
  type ResourceLimits,
  ThrottledWarn,
  WriteLimits,
} from './limits.js';
import { createCoordinatorMetrics } from './metrics.js';
import { PresenceTable } from './presence.js';
import { createMuxServer } from './relay-sessions.js';
import { ROLLOUTS_PATH, type RolloutService, registerRolloutMetrics, startRolloutService } from './rollouts.js';
import { startTimestamps } from './timestamps.js';
import { createTrustState, type Principal, type TrustState } from './trust-state.js';
import { createTunnelHub, type TunnelHub } from './tunnels.js';
import type { UpdateLog } from './update-log.js';
import { closeSocket, isServedDocument } from './wire.js';

export interface CoordinatorConfig {
  dataDir: string;
  // Where the update log lives (coordinator/backends/): LevelDB in dataDir unless a NATS cluster.
  backend?: LogBackend;
  listen: string;
  port: number;
  maxPayload: number;
  idleUnloadMs: number;
  logger: Logger;
  // Pinned org root keys; empty = open development mode (no authentication).
  orgRootKeys?: string[];
  timestampKey?: SigningKey;
  timestampIntervalMs?: number;
  tls?: { certFile: string; keyFile: string };
  challengeTtlMs?: number;
  // Per-address, per-connection and per-writer limits (coordinator/limits.ts); defaults for the rest.
  limits?: Partial<ResourceLimits>;
  // Rate, cap and expiry of enrollment requests (coordinator/enrollment-limits.ts).
  enrollmentLimits?: Partial<EnrollmentLimits>;
  // What a relay adds (coordinator/relay.ts); a coordinator has none.
  extension?: CoordinatorExtension;
  // The built web editor served at / (shared/node/web-app.ts); default: dist/web beside the code.
  webAppDir?: string;
}

export interface CoordinatorExtension {
  // Called once the document host exists, before the trust state pins the fleet documents. The
  // challenge store is the server's own (/auth/challenge), for routes that take key proofs.
  attach(host: DocumentHost, log: UpdateLog, presence: PresenceTable, challenges: ChallengeStore): void;
  // Documents this server offers at all (a relay: those its upstream lets it sync).
  serves(document: string): boolean;
  // Extra HTTP routes, tried first; true when answered.
  route(req: IncomingMessage, res: ServerResponse, path: string): boolean;
  health(): Record<string, unknown>;
  // A relay links the tunnel hub to its upstream (relay/tunnels.ts).
  attachTunnels?(hub: TunnelHub): void;
  // Adds its own series to GET /metrics (relay/metrics.ts).
  metrics?(registry: Registry): void;
  close(): Promise<void>;
}

export interface RunningCoordinator {
  url: string;
  port: number;
  log: UpdateLog;
  trust: TrustState;
  host: DocumentHost;
  close(): Promise<void>;
}

export type { HostPresence } from './presence.js';
export { isServedDocument };

// Built here, not inside the upgrade handler: a closure there would keep the upgrade request (its
// headers, strings and head buffer) alive for as long as the connection lives, ~2.5 KB a host.
function writeCheck(trust: TrustState, principal: Principal, documentName: string): () => boolean {
  return () =>
    trust.access(
      principal.kind === 'unknown-key' || principal.kind === 'anonymous'
        ? principal
        : trust.principalForKey(principal.key),
      documentName,
    ) === 'write';
}

// Writes are charged to the proven principal; an anonymous peer (open mode) has no identity
// beyond its address, so there the quota is per address and document.
function writerKey(principal: Principal, documentName: string): string {
  return principal.kind === 'anonymous' ? `${principal.label} ${documentName}` : principal.label;
}

// Close codes 4400-4499 tell a stock y-websocket client not to retry on its own.
const CLOSE_UNAUTHENTICATED = 4401;
const CLOSE_FORBIDDEN = 4403;

// The HTTP read-only APIs: who may call them with --org-root, and what each caller sees.
const API_PATHS = ['/api/documents', '/api/presence'];

function ignoreSocketError(): void {
  // A peer resetting its connection mid-upgrade or mid-refusal is normal; without a listener the
  // 'error' event would end the process.
}

export async function startCoordinator(config: CoordinatorConfig): Promise<RunningCoordinator> {
  const { logger } = config;
  const limits: ResourceLimits = { ...DEFAULT_LIMITS, ...config.limits };
  const refusals = createRefusals();
  const writeLimits = new WriteLimits(limits, refusals, logger);
  const warnings = new ThrottledWarn(logger);
  const { log, sharePresence } = await openLogBackend(config.backend, config.dataDir, logger);
  // Liveness lives only in memory, fed by awareness (and by relays' summaries, and by the other
  // coordinators on a shared NATS log): never written into documents.
  const presence = new PresenceTable();
  const sharedPresence = sharePresence?.(presence) ?? null;
  // What this coordinator sees itself (awareness here, its relays' summaries) is what it tells the
  // others; what they told it is not passed on again.
  if (sharedPresence) presence.onOwnChange((host, online, lastSeen) => sharedPresence.local(host, online, lastSeen));
  const onPresence = (change: PresenceChange): void => {
    const parsed = parseDocName(change.document);
    if (parsed?.role !== 'status') return;
    presence.setLocal(parsed.host, change.online);
  };
  const host = createDocumentHost(log, logger, config.idleUnloadMs, onPresence);
  const extension = config.extension;
  const challenges = createChallengeStore(config.challengeTtlMs ?? 3_600_000);
  extension?.attach(host, log, presence, challenges);
  const pinnedRoot = new Set(config.orgRootKeys ?? []);
  const trust = await createTrustState(host, [...pinnedRoot], logger);
  // `outpost ssh` (coordinator/tunnels.ts): a router; the host's agent decides.
  const tunnels = createTunnelHub({ trust, authenticate, logger });
  extension?.attachTunnels?.(tunnels);
  const enrollmentGate = createEnrollmentGate(config.enrollmentLimits);
  const webApp = createWebApp(config.webAppDir);
  const wss = new WebSocketServer({ noServer: true, maxPayload: config.maxPayload });
  // Relays downstream of this server sync all their documents over one socket each.
  const mux = createMuxServer(
    host,
    log,
    trust,
    presence,
    logger,
    (principal, document) => trust.access(principal, document) !== 'none' && (extension?.serves(document) ?? true),
    { limits, refusals, writeLimits },
  );
  const muxServer = new WebSocketServer({ noServer: true, maxPayload: config.maxPayload + 1024 });
  // Rollouts are the coordinator's alone: a relay forwards their documents like any fleet document.
  const rollouts: RolloutService | null = extension
    ? null
    : await startRolloutService({
        host,
        trust,
        listDocuments: () => log.documents(),
        log,
        limiter: enrollmentGate.limiter,
        logger,
      });
  // Sneakernet return bundles into this running coordinator (coordinator/bundle-return.ts).
  const returnBundles = createReturnBundleEndpoint({ host, trust, challenges, writeLimits, refusals, logger });
  const stopTimestamps = config.timestampKey
    ? startTimestamps(host, trust, log, config.timestampKey, config.timestampIntervalMs ?? 60_000, logger)
    : () => undefined;

  // Who calls a read-only API: with --org-root an admin or a relay of the policy, proven by a
  // signed single-use challenge in headers (the proof is signed for the path, so it is good for
  // nothing else); in open mode anyone (null).
  function apiCaller(
    req: IncomingMessage,
    path: string,
  ): { principal: Principal | null } | { status: number; error: string } {
    if (!trust.enforced) return { principal: null };
    const parsed = proofFromHeaders(req);
    const fix = `GET /auth/challenge, sign it for ${path} and send ${Object.values(AUTH_HEADERS).join(', ')} (outpost status --key KEYFILE does this)`;
    if (!parsed.success) return { status: 401, error: `${path} needs a key proof: ${fix}` };
    if (!challenges.consume(parsed.data.challenge))
      return { status: 401, error: `unknown, used or expired challenge: ${fix}` };
    if (!verifyAuthProof(parsed.data, path))
      return { status: 401, error: `key proof signature does not verify for ${path}: ${fix}` };
    const principal = trust.principalForKey(parsed.data.principal);
    if (principal.kind !== 'admin' && principal.kind !== 'relay')
      return {
        status: 403,
        error: `${principal.label} may not read ${path}: only admins and relays of the policy may`,
      };
    return { principal };
  }

  // A fleet POST passed on by a relay of the policy, with the client source the relay proved it
  // names (FORWARDED_FOR_HEADER); null for anything else, which is counted by its own address.
  function relayForwarded(req: IncomingMessage, path: string): ForwardedBy | null {
    const claimed = headerOf(req, FORWARDED_FOR_HEADER);
    if (claimed === undefined || !trust.enforced) return null;
    const source = forwardedSourceSchema.safeParse(claimed);
    const proof = proofFromHeaders(req);
    const problem = !source.success
      ? 'the named source is not an address'
      : !proof.success
        ? 'no key proof'
        : !challenges.consume(proof.data.challenge)
          ? 'unknown, used or expired challenge'
          : !verifyAuthProof(proof.data, forwardedProofTarget(path, source.data))
            ? 'the proof is not signed for this path and source'
            : trust.principalForKey(proof.data.principal).kind !== 'relay'
              ? 'the key is not a relay of the policy'
              : null;
    if (problem !== null || !source.success || !proof.success) {
      warnings.warn(
        `forwarded:${req.socket.remoteAddress}`,
        { event: 'forwarded-for-ignored', path, address: req.socket.remoteAddress, reason: problem },
        `ignoring ${FORWARDED_FOR_HEADER}: ${problem}; the request counts as from its own address`,
      );
      return null;
    }
    return { relay: trust.principalForKey(proof.data.principal).label, source: source.data };
  }

  function handleApi(req: IncomingMessage, res: ServerResponse, path: string): void {
    const caller = apiCaller(req, path);
    if ('error' in caller) {
      refusals.apiUnauthenticated += 1;
      warnings.warn(
        `api:${req.socket.remoteAddress}`,
        { event: 'api-refused', path, address: req.socket.remoteAddress, reason: caller.error },
        'refusing an API request',
      );
      respondJson(res, caller.status, { error: caller.error });
      return;
    }
    const { principal } = caller;
    const visible = (document: string): boolean => principal === null || trust.access(principal, document) !== 'none';
    if (path === '/api/documents') {
      log.documents().then(
        (documents) => respondJson(res, 200, { documents: documents.filter(visible) }),
        (error: Error) => respondJson(res, 500, { error: `cannot list the update log: ${error.message}` }),
      );
      return;
    }
    const hosts = Object.fromEntries(
      Object.entries(presence.snapshot()).filter(([name]) => visible(statusDocName(name))),
    );
    respondJson(res, 200, { hosts });
  }

  function route(req: IncomingMessage, res: ServerResponse): void {
    const path = requestPath(req.url);
    if (path === null) {
      refusals.badRequests += 1;
      respondJson(res, 400, { error: 'malformed request URL; expected a path such as /healthz' });
      return;
    }
    if (extension?.route(req, res, path)) return;
    if (req.method === 'POST' && path === ROLLOUTS_PATH && rollouts) {
      void rollouts.handlePost(req, res);
      return;
    }
    if (req.method === 'POST' && path === RETURN_BUNDLE_PATH && !extension) {
      returnBundles.handle(req, res);
      return;
    }
    if (req.method === 'POST') {
      handleFleetPost(path, req, res, host, trust, pinnedRoot, logger, enrollmentGate, relayForwarded(req, path))
        .then((handled) => handled || respondJson(res, 404, { error: `no such endpoint ${path}` }))
        .catch((error: Error) => respondJson(res, 500, { error: error.message }));
      return;
    }
    if (req.method !== 'GET') {
      respondJson(res, 405, {
        error:
          'use GET, or POST for /api/policy, /api/enroll, /api/enroll/approve, /api/enroll/clear and /api/rollouts',
      });
      return;
    }
    if (path.startsWith('/api/audit/')) {
      handleAuditGet(path, req, res, log, trust, challenges, logger).catch((error: Error) => {
        if (res.headersSent) res.destroy(error);
        else respondJson(res, 500, { error: error.message });
      });
      return;
    }
    if (path === '/healthz') {
      respondJson(res, 200, {
        ok: true,
        openDocuments: host.openDocuments(),
        policyVersion: trust.policy()?.version ?? null,
        authentication: trust.enforced,
        relaySessions: mux.sessions(),
        tunnels: tunnels.stats(),
        connections: gate.stats(),
        limits,
        refusals,
        enrollment: enrollmentGate.health(),
        ...(rollouts ? { rollouts: rollouts.health() } : {}),
        ...extension?.health(),
      });
      return;
    }
    // Counts only, like /healthz: open to anyone who can reach the port (docs/operations.md, Metrics).
    if (path === '/metrics') {
      metrics.respond(res);
      return;
    }
    if (path === '/auth/challenge') {
      respondJson(res, 200, challenges.issue());
      return;
    }
    if (API_PATHS.includes(path)) {
      handleApi(req, res, path);
      return;
    }
    if (webApp.handle(req, res, path)) return;
    respondJson(res, 404, { error: `no such endpoint ${path}; try /healthz, /api/documents or /api/presence` });
  }

  const handleRequest = (req: IncomingMessage, res: ServerResponse): void => {
    gate.started(req.socket);
    try {
      route(req, res);
    } catch (error) {
      // A bug, not the peer's fault: answer 500 and keep serving everyone else.
      refusals.handlerErrors += 1;
      logger.error({ event: 'request-failed', method: req.method, err: error }, 'request handler failed');
      respondJson(res, 500, { error: `internal error: ${(error as Error).message}` });
    }
  };
  // Request headers must be complete within the upgrade timeout (slowloris); Node checks this
  // itself for HTTP requests, the connection gate does for every connection.
  const httpOptions: ServerOptions = {
    headersTimeout: limits.upgradeTimeoutMs,
    requestTimeout: Math.max(60_000, limits.upgradeTimeoutMs),
    connectionsCheckingInterval: Math.min(30_000, Math.max(1000, limits.upgradeTimeoutMs / 2)),
  };
  const server: Server = config.tls
    ? createHttpsServer(
        {
          ...httpOptions,
          cert: readFileSync(config.tls.certFile),
          key: readFileSync(config.tls.keyFile),
          handshakeTimeout: limits.upgradeTimeoutMs,
        },
        handleRequest,
      )
    : createHttpServer(httpOptions, handleRequest);
  const gate = createConnectionGate(server, limits, refusals, logger, { tls: Boolean(config.tls) });
  const metrics = createCoordinatorMetrics({
    role: extension ? 'relay' : 'coordinator',
    host,
    presence,
    log,
    logDirectory: config.dataDir,
    refusals,
    gate,
    relaySessions: () => mux.sessions(),
  });
  extension?.metrics?.(metrics.registry);
  if (rollouts) registerRolloutMetrics(metrics.registry, rollouts);
  server.on('clientError', (error: NodeJS.ErrnoException, socket: Duplex) => {
    refusals.badRequests += 1;
    socket.on('error', ignoreSocketError);
    if (error.code === 'ECONNRESET' || !socket.writable) return void socket.destroy();
    const status =
      error.code === 'HPE_HEADER_OVERFLOW'
        ? '431 Request Header Fields Too Large'
        : error.code === 'ERR_HTTP_REQUEST_TIMEOUT'
          ? '408 Request Timeout'
          : '400 Bad Request';
    socket.end(`HTTP/1.1 ${status}\r\nconnection: close\r\n\r\n`);
  });

  // Who is connecting: a key proven by a signed, single-use challenge, or (open mode) an address.
  function authenticate(req: IncomingMessage, documentName: string): { principal: Principal } | { refused: string } {
    const query = requestQuery(req.url);
    const address = req.socket.remoteAddress ?? 'unknown';
    if (!query.has('principal')) {
      return trust.enforced
        ? { refused: 'no key proof (principal, challenge, signature parameters)' }
        : { principal: { kind: 'anonymous', label: `anonymous@${address}` } };
    }
    const parsed = authParamsSchema.safeParse(Object.fromEntries(query));
    if (!parsed.success) return { refused: `malformed key proof: ${parsed.error.issues[0]?.message}` };
    if (!challenges.consume(parsed.data.challenge)) return { refused: 'unknown, used or expired challenge' };
    if (!verifyAuthProof(parsed.data, documentName)) return { refused: 'key proof signature does not verify' };
    return { principal: trust.principalForKey(parsed.data.principal) };
  }

  function refuse(ws: WebSocket, code: number, reason: string, fields: Record<string, unknown>): void {
    warnings.warn(
      `refused:${fields.principal ?? 'unauthenticated'}:${fields.document}`,
      { event: 'connection-refused', ...fields, reason },
      'refusing connection',
    );
    // The peer may still send frames (even invalid ones) until it has read our close.
    ws.on('error', ignoreSocketError);
    closeSocket(ws, code, reason);
  }

  function upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const path = upgradeDocument(req.url);
    if (path === null) {
      refusals.badRequests += 1;
      warnings.warn(
        `bad-upgrade:${req.socket.remoteAddress}`,
        { event: 'upgrade-refused', address: req.socket.remoteAddress, reason: 'malformed URL' },
        'refusing websocket upgrade',
      );
      refuseUpgrade(
        socket,
        400,
        'Bad Request',
        'malformed URL or percent-encoding; expected /hosts/<id>/desired, /hosts/<id>/status or /fleet/<name>',
      );
      return;
    }
    if (path.startsWith(TUNNEL_PREFIX)) {
      tunnels.upgrade(req, socket, head, path);
      return;
    }
    if (path === MUX_PATH) {
      muxServer.handleUpgrade(req, socket, head, (ws) => {
        const outcome = authenticate(req, MUX_PATH);
        if ('refused' in outcome) return refuse(ws, CLOSE_UNAUTHENTICATED, outcome.refused, { document: MUX_PATH });
        const { principal } = outcome;
        // A relay session carries many documents and presence for many hosts: only keys the policy
        // lists as relays get one.
        if (trust.enforced && principal.kind !== 'relay') {
          refusals.relaySessions += 1;
          return refuse(
            ws,
            CLOSE_FORBIDDEN,
            `${principal.label} is not a relay of the policy; only keys listed under relays may open ${MUX_PATH}`,
            { document: MUX_PATH, principal: principal.label },
          );
        }
        metrics.socketOpened(req.socket, 'relay-link');
        mux.handle(ws, principal);
      });
      return;
    }
    if (!isServedDocument(path)) {
      warnings.warn(
        `unknown-document:${req.socket.remoteAddress}`,
        { event: 'upgrade-refused', url: req.url?.slice(0, 300), reason: 'unknown document' },
        'refusing websocket upgrade',
      );
      refuseUpgrade(
        socket,
        404,
        'Not Found',
        'unknown document; expected /hosts/<id>/desired, /hosts/<id>/status or /fleet/<name>',
      );
      return;
    }
    const documentName = path;
    wss.handleUpgrade(req, socket, head, (ws) => {
      const outcome = authenticate(req, documentName);
      if ('refused' in outcome) return refuse(ws, CLOSE_UNAUTHENTICATED, outcome.refused, { document: documentName });
      const { principal } = outcome;
      if (extension && !extension.serves(documentName)) {
        return refuse(ws, CLOSE_FORBIDDEN, `this relay does not serve ${documentName}; use the coordinator`, {
          document: documentName,
          principal: principal.label,
        });
      }
      if (trust.access(principal, documentName) === 'none') {
        return refuse(ws, CLOSE_FORBIDDEN, `${principal.label} may not open ${documentName}`, {
          document: documentName,
          principal: principal.label,
        });
      }
      metrics.socketOpened(req.socket, 'document');
      serveConnection(ws, {
        documentName,
        principal: principal.label,
        host,
        logger,
        mayWrite: writeCheck(trust, principal, documentName),
        limits: writeLimits,
        writer: writerKey(principal, documentName),
      });
    });
  }

  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    gate.started(socket as Socket);
    socket.on('error', ignoreSocketError);
    try {
      upgrade(req, socket, head);
    } catch (error) {
      refusals.handlerErrors += 1;
      logger.error({ event: 'upgrade-failed', err: error }, 'upgrade handler failed');
      socket.destroy();
    }
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.port, config.listen, () => {
      server.off('error', reject);
      resolve();
    });
  });
  // After listening, errors are the accept loop's (EMFILE when out of file descriptors): log
  // them; without a listener they would end the process.
  server.on('error', (error: Error) =>
    warnings.warn('server-error', { event: 'server-error', reason: error.message }, 'server socket error'),
  );
  const port = (server.address() as AddressInfo).port;
  const url = `${config.tls ? 'wss' : 'ws'}://${config.listen.includes(':') ? `[${config.listen}]` : config.listen}:${port}`;
  logger.info(
    {
      event: 'coordinator-listening',
      url,
      dataDir: config.dataDir,
      updateLog: log.describe(),
      authentication: trust.enforced,
      policyVersion: trust.policy()?.version ?? null,
    },
    'coordinator listening',
  );

  return {
    url,
    port,
    log,
    trust,
    host,
    async close() {
      stopTimestamps();
      sharedPresence?.close();
      rollouts?.close();
      mux.close();
      await extension?.close();
      tunnels.close();
      for (const ws of wss.clients) ws.terminate();
      for (const ws of muxServer.clients) ws.terminate();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await host.closeAll();
      await log.close();
    },
  };
}
