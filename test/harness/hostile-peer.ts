import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import * as decoding from 'lib0/decoding';
import * as encoding from 'lib0/encoding';
import { type WebSocket, WebSocketServer } from 'ws';
import * as syncProtocol from 'y-protocols/sync';
import * as Y from 'yjs';
import { ENROLLMENT_DOC, TIMESTAMP_DOC } from '../../shared/documents/fleet.js';
import { parseDocName } from '../../shared/documents/names.js';

// A compromised coordinator or relay, as the agent meets it: a real websocket server on 127.0.0.1
// speaking the real y-websocket protocol (sync step 1/2, updates, awareness) and the HTTP routes
// an agent calls (/auth/challenge, /api/enroll, /api/documents, /api/presence). It accepts every
// key proof, and the attacker holds every document and writes into it directly: whatever it puts
// in a document reaches each connected agent the way a coordinator's update would.
//
// With `raw`, the attacker sends bytes of its choosing on a document's connections (an endless
// stream of updates that it never keeps itself, for example).

const MESSAGE_SYNC = 0;

export interface HostilePeer {
  url: string;
  // The attacker's copy of a document (created empty on first use).
  doc(name: string): Y.Doc;
  // Replaces a document by an empty one: clients connected to it are disconnected, so on
  // reconnecting they sync with the new content (a peer that "forgets" what it served).
  reset(name: string): Y.Doc;
  // Whether client writes to `name` are kept (true, the default) or dropped.
  acceptWrites(name: string, accept: boolean): void;
  // Open connections to `name`.
  connections(name: string): WebSocket[];
  // Sends a Yjs update to every open connection of `name` without applying it to the attacker's
  // copy; resolves once written out, with how many connections took it.
  sendUpdate(name: string, update: Uint8Array): Promise<number>;
  // Connection attempts seen per document.
  connectsTo(name: string): number;
  close(): Promise<void>;
}

interface Room {
  doc: Y.Doc;
  sockets: Set<WebSocket>;
  acceptWrites: boolean;
}

// The attacker keeps the whole history of the documents its victims only read (desired, the
// policy), so a fresh sync hands them every entry it ever wrote and deleted: honest servers no
// longer do (shared/documents/names.ts), a compromised one may.
function attackerCollects(name: string): boolean {
  return parseDocName(name)?.role === 'status' || name === TIMESTAMP_DOC || name === ENROLLMENT_DOC;
}

export async function startHostilePeer(): Promise<HostilePeer> {
  const rooms = new Map<string, Room>();
  const connects = new Map<string, number>();

  const room = (name: string): Room => {
    let found = rooms.get(name);
    if (!found) {
      found = { doc: newDoc(name), sockets: new Set(), acceptWrites: true };
      rooms.set(name, found);
    }
    return found;
  };
  const newDoc = (name: string): Y.Doc => {
    const doc = new Y.Doc({ gc: attackerCollects(name) });
    doc.on('update', (update: Uint8Array, origin: unknown) => {
      const current = rooms.get(name);
      if (!current || current.doc !== doc) return;
      const message = updateMessage(update);
      for (const socket of current.sockets) if (socket !== origin) socket.send(message);
    });
    return doc;
  };
  const updateMessage = (update: Uint8Array): Uint8Array => {
    const encoder = encoding.createEncoder();
    encoding.writeVarUint(encoder, MESSAGE_SYNC);
    syncProtocol.writeUpdate(encoder, update);
    return encoding.toUint8Array(encoder);
  };

  const json = (res: ServerResponse, status: number, body: unknown): void => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '/').split('?')[0];
    req.resume();
    if (path === '/auth/challenge')
      return json(res, 200, { challenge: randomBytes(32).toString('hex'), expiresAt: Date.now() + 60_000 });
    if (path === '/api/enroll') return json(res, 200, { ok: true, enrolled: true });
    if (path === '/api/documents') return json(res, 200, { documents: [...rooms.keys()] });
    if (path === '/api/presence') return json(res, 200, { hosts: {} });
    return json(res, 404, { error: 'not found' });
  });
  const wss = new WebSocketServer({ noServer: true, maxPayload: 256 * 2 ** 20 });
  server.on('upgrade', (req, socket, head) => {
    const name = decodeURIComponent(new URL(req.url ?? '/', 'http://127.0.0.1').pathname).replace(/^\/+/, '');
    connects.set(name, (connects.get(name) ?? 0) + 1);
    wss.handleUpgrade(req, socket, head, (ws) => {
      const current = room(name);
      current.sockets.add(ws);
      ws.on('close', () => rooms.get(name)?.sockets.delete(ws));
      ws.on('error', () => undefined);
      ws.on('message', (data: Buffer) => {
        const target = rooms.get(name);
        if (!target?.sockets.has(ws)) return;
        try {
          const decoder = decoding.createDecoder(new Uint8Array(data));
          // Awareness and awareness queries are ignored: only documents matter here.
          if (decoding.readVarUint(decoder) !== MESSAGE_SYNC) return;
          const kind = decoding.readVarUint(decoder);
          if (kind === syncProtocol.messageYjsSyncStep1) {
            const encoder = encoding.createEncoder();
            encoding.writeVarUint(encoder, MESSAGE_SYNC);
            syncProtocol.readSyncStep1(decoder, encoder, target.doc);
            ws.send(encoding.toUint8Array(encoder));
          } else if (target.acceptWrites) {
            syncProtocol.readSyncStep2(decoder, target.doc, ws);
          }
        } catch {
          ws.close(1008, 'malformed message');
        }
      });
      const encoder = encoding.createEncoder();
      encoding.writeVarUint(encoder, MESSAGE_SYNC);
      syncProtocol.writeSyncStep1(encoder, current.doc);
      ws.send(encoding.toUint8Array(encoder));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;

  return {
    url: `ws://127.0.0.1:${port}`,
    doc: (name) => room(name).doc,
    reset(name) {
      const current = room(name);
      current.doc = newDoc(name);
      for (const socket of current.sockets) socket.terminate();
      current.sockets.clear();
      return current.doc;
    },
    acceptWrites(name, accept) {
      room(name).acceptWrites = accept;
    },
    connections: (name) => [...(rooms.get(name)?.sockets ?? [])],
    async sendUpdate(name, update) {
      const message = updateMessage(update);
      const open = [...(rooms.get(name)?.sockets ?? [])].filter((socket) => socket.readyState === socket.OPEN);
      const delivered = await Promise.all(
        open.map((socket) => new Promise<boolean>((resolve) => socket.send(message, (error) => resolve(!error)))),
      );
      return delivered.filter(Boolean).length;
    },
    connectsTo: (name) => connects.get(name) ?? 0,
    async close() {
      for (const client of wss.clients) client.terminate();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
