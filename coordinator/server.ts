import { readFileSync } from 'node:fs';
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { type WebSocket, WebSocketServer } from 'ws';
import type { SigningKey } from '../shared/crypto/keys.js';
import { parseDocName } from '../shared/documents/names.js';
import type { Logger } from '../shared/log.js';
import { authParamsSchema, verifyAuthProof } from '../shared/sync/auth-proof.js';
import { MUX_PATH } from '../shared/sync/mux-frames.js';
import { createChallengeStore } from './challenges.js';
import { serveConnection } from './connection.js';
import { handleFleetPost, sendJson } from './fleet-api.js';
import { createDocumentHost, type DocumentHost, type PresenceChange } from './hosted-documents.js';
import { PresenceTable } from './presence.js';
import { createMuxServer } from './relay-sessions.js';
import { startTimestamps } from './timestamps.js';
import { createTrustState, type Principal, type TrustState } from './trust-state.js';
import { openUpdateLog, type UpdateLog } from './update-log.js';

export interface CoordinatorConfig {
  dataDir: string;
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
  // What a relay adds (coordinator/relay.ts); a coordinator has none.
  extension?: CoordinatorExtension;
}

export interface CoordinatorExtension {
  // Called once the document host exists, before the trust state pins the fleet documents.
  attach(host: DocumentHost, log: UpdateLog, presence: PresenceTable): void;
  // Documents this server offers at all (a relay: those its upstream lets it sync).
  serves(document: string): boolean;
  // Extra HTTP routes, tried first; true when answered.
  route(req: IncomingMessage, res: ServerResponse, path: string): boolean;
  health(): Record<string, unknown>;
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

// Document names a peer may open: a host's desired or status document, or a fleet-wide one.
export function isServedDocument(name: string): boolean {
  return parseDocName(name) !== null || /^fleet\/[a-z0-9-]{1,63}$/.test(name);
}

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

// Close codes 4400-4499 tell a stock y-websocket client not to retry on its own.
const CLOSE_UNAUTHENTICATED = 4401;
const CLOSE_FORBIDDEN = 4403;

export async function startCoordinator(config: CoordinatorConfig): Promise<RunningCoordinator> {
  const { logger } = config;
  const log = await openUpdateLog(config.dataDir);
  // Liveness lives only in memory, fed by awareness (and by relays' summaries): never written into documents.
  const presence = new PresenceTable();
  const onPresence = (change: PresenceChange): void => {
    const parsed = parseDocName(change.document);
    if (parsed?.role !== 'status') return;
    presence.setLocal(parsed.host, change.online);
  };
  const host = createDocumentHost(log, logger, config.idleUnloadMs, onPresence);
  const extension = config.extension;
  extension?.attach(host, log, presence);
  const pinnedRoot = new Set(config.orgRootKeys ?? []);
  const trust = await createTrustState(host, [...pinnedRoot], logger);
  const challenges = createChallengeStore(config.challengeTtlMs ?? 3_600_000);
  const wss = new WebSocketServer({ noServer: true, maxPayload: config.maxPayload });
  // Relays downstream of this server sync all their documents over one socket each.
  const mux = createMuxServer(
    host,
    log,
    trust,
    presence,
    logger,
    (principal, document) => trust.access(principal, document) !== 'none' && (extension?.serves(document) ?? true),
  );
  const muxServer = new WebSocketServer({ noServer: true, maxPayload: config.maxPayload + 1024 });
  const stopTimestamps = config.timestampKey
    ? startTimestamps(host, trust, config.timestampKey, config.timestampIntervalMs ?? 60_000, logger)
    : () => undefined;

  const handleRequest = (req: IncomingMessage, res: ServerResponse): void => {
    const path = new URL(req.url ?? '/', 'http://localhost').pathname;
    if (extension?.route(req, res, path)) return;
    if (req.method === 'POST') {
      handleFleetPost(path, req, res, host, trust, pinnedRoot, logger).then(
        (handled) => handled || sendJson(res, 404, { error: `no such endpoint ${path}` }),
        (error: Error) => sendJson(res, 500, { error: error.message }),
      );
      return;
    }
    if (req.method !== 'GET') {
      sendJson(res, 405, { error: 'use GET, or POST for /api/policy, /api/enroll and /api/enroll/approve' });
      return;
    }
    if (path === '/healthz') {
      sendJson(res, 200, {
        ok: true,
        openDocuments: host.openDocuments(),
        policyVersion: trust.policy()?.version ?? null,
        authentication: trust.enforced,
        relaySessions: mux.sessions(),
        ...extension?.health(),
      });
      return;
    }
    if (path === '/auth/challenge') {
      sendJson(res, 200, challenges.issue());
      return;
    }
    if (path === '/api/documents') {
      log.documents().then(
        (documents) => sendJson(res, 200, { documents }),
        (error: Error) => sendJson(res, 500, { error: error.message }),
      );
      return;
    }
    if (path === '/api/presence') {
      sendJson(res, 200, { hosts: presence.snapshot() });
      return;
    }
    sendJson(res, 404, { error: `no such endpoint ${path}; try /healthz, /api/documents or /api/presence` });
  };
  const server: Server = config.tls
    ? createHttpsServer(
        { cert: readFileSync(config.tls.certFile), key: readFileSync(config.tls.keyFile) },
        handleRequest,
      )
    : createHttpServer(handleRequest);

  // Who is connecting: a key proven by a signed, single-use challenge, or (open mode) an address.
  function authenticate(req: IncomingMessage, documentName: string): { principal: Principal } | { refused: string } {
    const query = new URL(req.url ?? '/', 'http://localhost').searchParams;
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
    logger.warn({ event: 'connection-refused', ...fields, reason }, 'refusing connection');
    ws.close(code, reason.slice(0, 120));
  }

  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const path = decodeURIComponent(new URL(req.url ?? '/', 'http://localhost').pathname).replace(/^\/+/, '');
    if (path === MUX_PATH) {
      muxServer.handleUpgrade(req, socket, head, (ws) => {
        const outcome = authenticate(req, MUX_PATH);
        if ('refused' in outcome) return refuse(ws, CLOSE_UNAUTHENTICATED, outcome.refused, { document: MUX_PATH });
        mux.handle(ws, outcome.principal);
      });
      return;
    }
    if (!isServedDocument(path)) {
      logger.warn({ event: 'upgrade-refused', url: req.url, reason: 'unknown document' }, 'refusing websocket upgrade');
      socket.end(
        'HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\nunknown document; expected /hosts/<id>/desired, /hosts/<id>/status or /fleet/<name>\n',
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
      serveConnection(ws, {
        documentName,
        principal: principal.label,
        host,
        logger,
        mayWrite: writeCheck(trust, principal, documentName),
      });
    });
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.port, config.listen, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const url = `${config.tls ? 'wss' : 'ws'}://${config.listen.includes(':') ? `[${config.listen}]` : config.listen}:${port}`;
  logger.info(
    {
      event: 'coordinator-listening',
      url,
      dataDir: config.dataDir,
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
      await extension?.close();
      for (const ws of wss.clients) ws.terminate();
      for (const ws of muxServer.clients) ws.terminate();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await host.closeAll();
      await log.close();
    },
  };
}
