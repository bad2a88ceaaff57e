import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import * as decoding from 'lib0/decoding';
import * as encoding from 'lib0/encoding';
import { WebSocket } from 'ws';
import { parseDocName, statusDocName } from '../shared/documents/names.js';
import type { Logger } from '../shared/log.js';
import { serveConnection } from './connection.js';
import type { DocumentHost } from './hosted-documents.js';
import type { PresenceTable } from './relay-presence.js';
import type { Principal, TrustState } from './trust-state.js';
import type { UpdateLog } from './update-log.js';

// One websocket between a relay and its upstream (the coordinator or another relay) carries all
// documents: a relay with 10,000 hosts behind it would otherwise need 20,000 sockets upstream
// (docs/relays.md has the measurements). Towards agents and browsers nothing changes: they speak
// plain y-websocket, one document per socket.
//
// The relay proves its key once, at the upgrade of /_relay (the challenge is signed for the
// document name "_relay"). Every frame is one binary websocket message:
//   OPEN    0  varUint channel, varString document          relay → upstream
//   DATA    1  varUint channel, then one y-websocket message   both ways
//   CLOSE   2  varUint channel, varUint code, varString reason both ways
//   SINCE   3  varString epoch, varUint cursor                relay → upstream
//   CHANGES 4  varString epoch, varUint cursor, varUint n, n × varString document   upstream → relay
//   PRESENCE 5 varUint n, n × (varString host, varUint online, float64 lastSeen)   relay → upstream
// Each channel is served by the same serveConnection as a direct socket: same per-document queue,
// same authorization per update, same fsync before broadcast. CHANGES names the documents in the
// relay's scope that changed upstream since the relay's cursor (all of them when the epoch, which
// is new at every upstream start, does not match), so the relay fetches what its agents will
// need without holding every document open.

export const MUX_PATH = '_relay';
export const FRAME_OPEN = 0;
export const FRAME_DATA = 1;
export const FRAME_CLOSE = 2;
export const FRAME_SINCE = 3;
export const FRAME_CHANGES = 4;
export const FRAME_PRESENCE = 5;

export interface PresenceEntry {
  host: string;
  online: boolean;
  lastSeen: number;
}

export type MuxFrame =
  | { type: typeof FRAME_OPEN; channel: number; document: string }
  | { type: typeof FRAME_DATA; channel: number; message: Uint8Array }
  | { type: typeof FRAME_CLOSE; channel: number; code: number; reason: string }
  | { type: typeof FRAME_SINCE; epoch: string; cursor: number }
  | { type: typeof FRAME_CHANGES; epoch: string; cursor: number; documents: string[] }
  | { type: typeof FRAME_PRESENCE; hosts: PresenceEntry[] };

export function encodeFrame(frame: MuxFrame): Uint8Array {
  const encoder = encoding.createEncoder();
  encoding.writeVarUint(encoder, frame.type);
  switch (frame.type) {
    case FRAME_OPEN:
      encoding.writeVarUint(encoder, frame.channel);
      encoding.writeVarString(encoder, frame.document);
      break;
    case FRAME_DATA:
      encoding.writeVarUint(encoder, frame.channel);
      encoding.writeUint8Array(encoder, frame.message);
      break;
    case FRAME_CLOSE:
      encoding.writeVarUint(encoder, frame.channel);
      encoding.writeVarUint(encoder, frame.code);
      encoding.writeVarString(encoder, frame.reason);
      break;
    case FRAME_SINCE:
      encoding.writeVarString(encoder, frame.epoch);
      encoding.writeVarUint(encoder, frame.cursor);
      break;
    case FRAME_CHANGES:
      encoding.writeVarString(encoder, frame.epoch);
      encoding.writeVarUint(encoder, frame.cursor);
      encoding.writeVarUint(encoder, frame.documents.length);
      for (const document of frame.documents) encoding.writeVarString(encoder, document);
      break;
    case FRAME_PRESENCE:
      encoding.writeVarUint(encoder, frame.hosts.length);
      for (const entry of frame.hosts) {
        encoding.writeVarString(encoder, entry.host);
        encoding.writeVarUint(encoder, entry.online ? 1 : 0);
        encoding.writeFloat64(encoder, entry.lastSeen);
      }
      break;
  }
  return encoding.toUint8Array(encoder);
}

// Throws on anything malformed; callers close the socket.
export function decodeFrame(bytes: Uint8Array): MuxFrame {
  const decoder = decoding.createDecoder(bytes);
  const type = decoding.readVarUint(decoder);
  switch (type) {
    case FRAME_OPEN:
      return { type, channel: decoding.readVarUint(decoder), document: decoding.readVarString(decoder) };
    case FRAME_DATA: {
      const channel = decoding.readVarUint(decoder);
      return { type, channel, message: bytes.subarray(decoder.pos) };
    }
    case FRAME_CLOSE:
      return {
        type,
        channel: decoding.readVarUint(decoder),
        code: decoding.readVarUint(decoder),
        reason: decoding.readVarString(decoder),
      };
    case FRAME_SINCE:
      return { type, epoch: decoding.readVarString(decoder), cursor: decoding.readVarUint(decoder) };
    case FRAME_CHANGES: {
      const epoch = decoding.readVarString(decoder);
      const cursor = decoding.readVarUint(decoder);
      const count = decoding.readVarUint(decoder);
      if (count > 10_000_000) throw new Error('implausible document count');
      const documents: string[] = [];
      for (let i = 0; i < count; i++) documents.push(decoding.readVarString(decoder));
      return { type, epoch, cursor, documents };
    }
    case FRAME_PRESENCE: {
      const count = decoding.readVarUint(decoder);
      if (count > 10_000_000) throw new Error('implausible host count');
      const hosts: PresenceEntry[] = [];
      for (let i = 0; i < count; i++)
        hosts.push({
          host: decoding.readVarString(decoder),
          online: decoding.readVarUint(decoder) === 1,
          lastSeen: decoding.readFloat64(decoder),
        });
      return { type, hosts };
    }
    default:
      throw new Error(`unknown relay frame type ${type}`);
  }
}

export function sendFrame(ws: WebSocket, frame: MuxFrame): void {
  if (ws.readyState === WebSocket.OPEN) ws.send(encodeFrame(frame), (error) => error && ws.terminate());
}

// Stands in for a WebSocket towards serveConnection and the document host: what they send
// becomes DATA frames of one channel, and the real socket's liveness stands for the channel's.
class ChannelSocket extends EventEmitter {
  readyState: number = WebSocket.OPEN;
  constructor(
    private readonly mux: WebSocket,
    readonly channel: number,
    private readonly onClosed: (channel: number) => void,
  ) {
    super();
  }
  send(message: Uint8Array, callback?: (error?: Error) => void): void {
    if (this.readyState !== WebSocket.OPEN) return;
    sendFrame(this.mux, { type: FRAME_DATA, channel: this.channel, message });
    callback?.();
  }
  ping(): void {
    // The mux socket is pinged itself; a channel is alive while it is.
    setImmediate(() => this.readyState === WebSocket.OPEN && this.emit('pong'));
  }
  close(code = 1000, reason = ''): void {
    if (this.readyState !== WebSocket.OPEN) return;
    sendFrame(this.mux, { type: FRAME_CLOSE, channel: this.channel, code, reason });
    this.closed(code, reason);
  }
  terminate(): void {
    this.close(1006, 'terminated');
  }
  // The peer closed the channel, or the mux socket went away.
  closed(code: number, reason: string): void {
    if (this.readyState !== WebSocket.OPEN) return;
    this.readyState = WebSocket.CLOSED;
    this.onClosed(this.channel);
    this.emit('close', code, Buffer.from(reason));
  }
}

export interface MuxServer {
  handle(ws: WebSocket, principal: Principal): void;
  sessions(): number;
}

const MAX_CHANNELS_PER_SESSION = 100_000;
const PING_INTERVAL_MS = 30_000;

// The upstream side: serves relays' multiplexed connections with the same document host.
export function createMuxServer(
  host: DocumentHost,
  log: UpdateLog,
  trust: TrustState,
  presence: PresenceTable,
  logger: Logger,
  access: (principal: Principal, document: string) => boolean,
): MuxServer {
  const epoch = randomBytes(8).toString('hex');
  let counter = 0;
  const changedAt = new Map<string, number>();
  const sessions = new Set<{ notify(document: string): void }>();

  host.observe({
    accepted(document) {
      counter += 1;
      changedAt.set(document.name, counter);
      for (const session of sessions) session.notify(document.name);
    },
  });

  return {
    sessions: () => sessions.size,
    handle(ws, principal) {
      const channels = new Map<number, ChannelSocket>();
      const byDocument = new Map<string, number>();
      const pendingNotes = new Set<string>();
      let noteTimer: NodeJS.Timeout | null = null;
      let alive = true;
      // The principal is looked up again for each check, so a policy change applies at once.
      const current = (): Principal =>
        principal.kind === 'anonymous' || principal.kind === 'unknown-key'
          ? principal
          : trust.principalForKey(principal.key);
      const mayOpen = (document: string): boolean => access(current(), document);

      const flushNotes = (): void => {
        noteTimer = null;
        if (pendingNotes.size === 0) return;
        sendFrame(ws, { type: FRAME_CHANGES, epoch, cursor: counter, documents: [...pendingNotes] });
        pendingNotes.clear();
      };
      const session = {
        notify(document: string) {
          if (byDocument.has(document) || !mayOpen(document)) return;
          pendingNotes.add(document);
          noteTimer ??= setTimeout(flushNotes, 20);
        },
      };
      sessions.add(session);
      const ping = setInterval(() => {
        if (!alive) return ws.terminate();
        alive = false;
        ws.ping();
      }, PING_INTERVAL_MS);
      ws.on('pong', () => (alive = true));

      const answerSince = async (sinceEpoch: string, cursor: number): Promise<void> => {
        const now = counter;
        let documents: string[];
        if (sinceEpoch === epoch) {
          documents = [...changedAt].filter(([, at]) => at > cursor).map(([name]) => name);
        } else {
          documents = [...new Set([...(await log.documents()), ...changedAt.keys()])];
        }
        sendFrame(ws, { type: FRAME_CHANGES, epoch, cursor: now, documents: documents.filter(mayOpen) });
      };

      const open = (channel: number, document: string): void => {
        if (channels.has(channel) || channels.size >= MAX_CHANNELS_PER_SESSION)
          throw new Error(`channel ${channel} already open, or too many channels`);
        if (!mayOpen(document)) {
          logger.warn(
            { event: 'connection-refused', document, principal: principal.label, reason: "not in this relay's scope" },
            'refusing relay channel',
          );
          sendFrame(ws, {
            type: FRAME_CLOSE,
            channel,
            code: 4403,
            reason: `${principal.label} may not open ${document}`,
          });
          return;
        }
        const socket = new ChannelSocket(ws, channel, (closed) => {
          channels.delete(closed);
          if (byDocument.get(document) === closed) byDocument.delete(document);
        });
        channels.set(channel, socket);
        byDocument.set(document, channel);
        serveConnection(socket as unknown as WebSocket, {
          documentName: document,
          principal: principal.label,
          host,
          logger,
          mayWrite: () => trust.access(current(), document) === 'write',
        });
      };

      ws.on('message', (data: Buffer, isBinary: boolean) => {
        alive = true;
        try {
          if (!isBinary) throw new Error('text frames are not part of the relay protocol');
          const frame = decodeFrame(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
          switch (frame.type) {
            case FRAME_OPEN:
              open(frame.channel, frame.document);
              return;
            case FRAME_DATA:
              channels.get(frame.channel)?.emit('message', Buffer.from(frame.message), true);
              return;
            case FRAME_CLOSE:
              channels.get(frame.channel)?.closed(frame.code, frame.reason);
              return;
            case FRAME_PRESENCE:
              // Hosts this relay may not sync are not its to report.
              for (const entry of frame.hosts)
                if (parseDocName(statusDocName(entry.host)) && mayOpen(statusDocName(entry.host)))
                  presence.setRemote(session, entry.host, entry.online, Math.min(entry.lastSeen, Date.now()));
              return;
            case FRAME_SINCE:
              void answerSince(frame.epoch, frame.cursor).catch((error: Error) =>
                logger.error({ event: 'relay-changes-failed', err: error }, 'cannot list changed documents'),
              );
              return;
            default:
              throw new Error(`unexpected frame type ${frame.type} from a relay`);
          }
        } catch (error) {
          logger.warn(
            {
              event: 'connection-refused-message',
              document: MUX_PATH,
              principal: principal.label,
              reason: (error as Error).message,
            },
            'closing relay connection: bad frame',
          );
          ws.close(1007, (error as Error).message.slice(0, 120));
        }
      });
      ws.on('error', (error) =>
        logger.warn(
          { event: 'connection-error', document: MUX_PATH, principal: principal.label, reason: error.message },
          'relay connection error',
        ),
      );
      ws.on('close', () => {
        clearInterval(ping);
        if (noteTimer) clearTimeout(noteTimer);
        sessions.delete(session);
        presence.dropSource(session);
        for (const socket of [...channels.values()]) socket.closed(1006, 'relay connection closed');
        logger.info({ event: 'relay-disconnected', principal: principal.label }, 'relay disconnected');
      });
      logger.info({ event: 'relay-connected', principal: principal.label }, 'relay connected');
    },
  };
}
