import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocketServer } from 'ws';
import type { Logger } from '../shared/log.js';
import { parseDocName } from '../shared/documents/names.js';
import { openUpdateLog, type UpdateLog } from './update-log.js';
import { createDocumentHost, type PresenceChange } from './hosted-documents.js';
import { serveConnection } from './connection.js';

export interface CoordinatorConfig {
  dataDir: string;
  listen: string;
  port: number;
  maxPayload: number;
  idleUnloadMs: number;
  logger: Logger;
}

export interface RunningCoordinator {
  url: string;
  port: number;
  log: UpdateLog;
  close(): Promise<void>;
}

export interface HostPresence {
  online: boolean;
  lastSeen: string | null;
}

// Document names a peer may open: a host's desired or status document, or a fleet-wide one.
export function isServedDocument(name: string): boolean {
  return parseDocName(name) !== null || /^fleet\/[a-z0-9-]{1,63}$/.test(name);
}

function documentNameFromUrl(url: string | undefined): string | null {
  if (!url) return null;
  const path = decodeURIComponent(new URL(url, 'http://localhost').pathname).replace(/^\/+/, '');
  return isServedDocument(path) ? path : null;
}

function json(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

export async function startCoordinator(config: CoordinatorConfig): Promise<RunningCoordinator> {
  const { logger } = config;
  const log = await openUpdateLog(config.dataDir);
  // Liveness lives only in memory, fed by awareness: never written into documents.
  const presence = new Map<string, { online: boolean; lastSeen: number }>();
  const onPresence = (change: PresenceChange): void => {
    const parsed = parseDocName(change.document);
    if (!parsed || parsed.role !== 'status') return;
    presence.set(parsed.host, { online: change.online, lastSeen: Date.now() });
  };
  const host = createDocumentHost(log, logger, config.idleUnloadMs, onPresence);
  const wss = new WebSocketServer({ noServer: true, maxPayload: config.maxPayload });

  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const path = new URL(req.url ?? '/', 'http://localhost').pathname;
    if (req.method !== 'GET') return json(res, 405, { error: 'only GET is served over HTTP; documents travel over websockets' });
    if (path === '/healthz') return json(res, 200, { ok: true, openDocuments: host.openDocuments() });
    if (path === '/api/documents') {
      log.documents().then((documents) => json(res, 200, { documents }), (error: Error) => json(res, 500, { error: error.message }));
      return;
    }
    if (path === '/api/presence') {
      const hosts: Record<string, HostPresence> = {};
      for (const [id, p] of presence) hosts[id] = { online: p.online, lastSeen: new Date(p.lastSeen).toISOString() };
      return json(res, 200, { hosts });
    }
    json(res, 404, { error: `no such endpoint ${path}; try /healthz, /api/documents or /api/presence` });
  });

  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const documentName = documentNameFromUrl(req.url);
    if (!documentName) {
      logger.warn({ event: 'upgrade-refused', url: req.url, reason: 'unknown document' }, 'refusing websocket upgrade');
      socket.end('HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\nunknown document; expected /hosts/<id>/desired, /hosts/<id>/status or /fleet/<name>\n');
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      // Until challenge-response authentication lands every connection is anonymous, named by address.
      const principal = `anonymous@${req.socket.remoteAddress ?? 'unknown'}`;
      serveConnection(ws, { documentName, principal, host, logger });
    });
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.port, config.listen, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const url = `ws://${config.listen.includes(':') ? `[${config.listen}]` : config.listen}:${port}`;
  logger.info({ event: 'coordinator-listening', url, dataDir: config.dataDir }, 'coordinator listening');

  return {
    url,
    port,
    log,
    async close() {
      for (const ws of wss.clients) ws.terminate();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await host.closeAll();
      await log.close();
    },
  };
}
