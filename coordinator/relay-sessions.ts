import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { WebSocket } from 'ws';
import { parseDocName, statusDocName } from '../shared/documents/names.js';
import type { Logger } from '../shared/log.js';
import {
  decodeFrame,
  encodeFrame,
  FRAME_CHANGES,
  FRAME_CLOSE,
  FRAME_DATA,
  FRAME_OPEN,
  FRAME_PRESENCE,
  FRAME_SINCE,
  MUX_PATH,
  type MuxFrame,
} from '../shared/sync/mux-frames.js';
import { serveConnection } from './connection.js';
import { followDocumentChanges } from './followed-changes.js';
import type { DocumentHost } from './hosted-documents.js';
import { LIMIT_FLAGS, type Refusals, type ResourceLimits, ThrottledWarn, type WriteLimits } from './limits.js';
import type { PresenceTable } from './presence.js';
import type { Principal, TrustState } from './trust-state.js';
import type { UpdateLog } from './update-log.js';
import { closeReason, closeSocket, isServedDocument } from './wire.js';

// The coordinator's side of the relay link (frames: shared/sync/mux-frames.ts): one session per
// relay, each channel served like a direct socket.

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
    sendFrame(this.mux, { type: FRAME_CLOSE, channel: this.channel, code, reason: closeReason(reason) });
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
  // Stops following the log for the change feed: the feed is shared per log and would keep this
  // server's callback (and, on a shared log, its retries) after the coordinator closed. The
  // relays' sockets are the server's to close.
  close(): void;
}

const PING_INTERVAL_MS = 30_000;
// Close codes on a channel (the relay's bridge retries all but 4403 and 1008 after a second).
const CLOSE_NOT_A_DOCUMENT = 4404;
const CLOSE_TOO_MANY = 4429;

export interface MuxLimits {
  limits: ResourceLimits;
  refusals: Refusals;
  writeLimits: WriteLimits;
}

interface Session {
  notify(document: string): void;
  close(code: number, reason: string): void;
}

// The upstream side: serves relays' multiplexed connections with the same document host.
export function createMuxServer(
  host: DocumentHost,
  log: UpdateLog,
  trust: TrustState,
  presence: PresenceTable,
  logger: Logger,
  access: (principal: Principal, document: string) => boolean,
  { limits, refusals, writeLimits }: MuxLimits,
): MuxServer {
  const epoch = randomBytes(8).toString('hex');
  let counter = 0;
  const changedAt = new Map<string, number>();
  const sessions = new Set<Session>();
  // One session per relay key: a newer one replaces the older (a relay that reconnects before
  // the old socket timed out), so a key cannot multiply its channel budget.
  const byKey = new Map<string, Session>();
  const warnings = new ThrottledWarn(logger);

  const noteChanged = (name: string): void => {
    counter += 1;
    changedAt.set(name, counter);
    for (const session of sessions) session.notify(name);
  };
  host.observe({ accepted: (document) => noteChanged(document.name) });
  // On a shared log (NATS) another coordinator's writes reach the host's observers only for
  // documents loaded here; relays keep their sites' copies from this feed, so it follows the log
  // itself too (a loaded document is then noted twice, which the 20 ms batching absorbs), and
  // after the log's delivery may have lost entries it notes the documents that moved meanwhile.
  const followed = followDocumentChanges(log, noteChanged, logger);

  return {
    sessions: () => sessions.size,
    close: () => followed.stop(),
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
      const mayOpen = (document: string): boolean => {
        const now = current();
        return (!trust.enforced || now.kind === 'relay') && access(now, document);
      };
      const refuseChannel = (
        channel: number,
        document: string,
        code: number,
        reason: string,
        kind: 'relayDocumentNames' | 'relayChannels',
      ): void => {
        refusals[kind] += 1;
        warnings.warn(
          `${principal.label}|${kind}`,
          {
            event: 'relay-channel-refused',
            document: document.slice(0, 200),
            documentLength: document.length,
            principal: principal.label,
            reason,
          },
          'refusing a relay channel',
        );
        sendFrame(ws, { type: FRAME_CLOSE, channel, code, reason: closeReason(reason) });
      };

      const flushNotes = (): void => {
        noteTimer = null;
        if (pendingNotes.size === 0) return;
        sendFrame(ws, { type: FRAME_CHANGES, epoch, cursor: counter, documents: [...pendingNotes] });
        pendingNotes.clear();
      };
      const session: Session = {
        notify(document: string) {
          if (byDocument.has(document) || !mayOpen(document)) return;
          pendingNotes.add(document);
          noteTimer ??= setTimeout(flushNotes, 20);
        },
        close(code, reason) {
          closeSocket(ws, code, reason);
        },
      };
      sessions.add(session);
      const key = principal.kind === 'relay' ? principal.key : null;
      if (key !== null) {
        byKey.get(key)?.close(4409, 'replaced by a newer session of the same relay');
        byKey.set(key, session);
      }
      const ping = setInterval(() => {
        if (!alive) return ws.terminate();
        alive = false;
        ws.ping();
      }, PING_INTERVAL_MS);
      ws.on('pong', () => (alive = true));

      // One SINCE answered at a time (listing the whole log is not free); a newer one waits.
      let sinceRunning = false;
      let sinceNext: { epoch: string; cursor: number } | null = null;
      const since = (sinceEpoch: string, cursor: number): void => {
        if (sinceRunning) {
          sinceNext = { epoch: sinceEpoch, cursor };
          return;
        }
        sinceRunning = true;
        answerSince(sinceEpoch, cursor)
          .catch((error: Error) =>
            logger.error({ event: 'relay-changes-failed', err: error }, 'cannot list changed documents'),
          )
          .finally(() => {
            sinceRunning = false;
            const next = sinceNext;
            sinceNext = null;
            if (next && ws.readyState === WebSocket.OPEN) since(next.epoch, next.cursor);
          });
      };

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
        if (channels.has(channel)) throw new Error(`channel ${channel} is already open`);
        // The same names the direct endpoint accepts, checked before anything is loaded.
        if (!isServedDocument(document)) {
          refuseChannel(
            channel,
            document,
            CLOSE_NOT_A_DOCUMENT,
            'not a document name; expected hosts/<id>/desired, hosts/<id>/status or fleet/<name>',
            'relayDocumentNames',
          );
          return;
        }
        if (channels.size >= limits.maxDocumentsPerConnection) {
          refuseChannel(
            channel,
            document,
            CLOSE_TOO_MANY,
            `${limits.maxDocumentsPerConnection} documents already open on this relay link (${LIMIT_FLAGS.maxDocumentsPerConnection})`,
            'relayChannels',
          );
          return;
        }
        if (!mayOpen(document)) {
          logger.warn(
            { event: 'connection-refused', document, principal: principal.label, reason: "not in this relay's scope" },
            'refusing relay channel',
          );
          sendFrame(ws, {
            type: FRAME_CLOSE,
            channel,
            code: 4403,
            reason: closeReason(`${principal.label} may not open ${document}`),
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
          mayWrite: () =>
            (!trust.enforced || current().kind === 'relay') && trust.access(current(), document) === 'write',
          // A relay carries its hosts' writes: its quota is per document, like each host's own.
          limits: writeLimits,
          writer: `${principal.label} ${document}`,
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
            case FRAME_PRESENCE: {
              // Hosts this relay may not sync are not its to report, and the table is bounded.
              let refused = 0;
              for (const entry of frame.hosts) {
                const name = entry.host.length <= 63 ? statusDocName(entry.host) : '';
                const accepted =
                  parseDocName(name) !== null &&
                  mayOpen(name) &&
                  Number.isFinite(entry.lastSeen) &&
                  presence.setRemote(
                    session,
                    entry.host,
                    entry.online,
                    Math.max(0, Math.min(entry.lastSeen, Date.now())),
                    limits.maxDocumentsPerConnection,
                  );
                if (!accepted) refused += 1;
              }
              if (refused > 0) {
                refusals.relayPresence += refused;
                warnings.warn(
                  `${principal.label}|presence`,
                  { event: 'relay-presence-refused', principal: principal.label, entries: refused },
                  "ignoring presence for hosts outside this relay's scope, malformed, or over the limit",
                );
              }
              return;
            }
            case FRAME_SINCE:
              since(frame.epoch, frame.cursor);
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
          closeSocket(ws, 1007, (error as Error).message);
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
        if (key !== null && byKey.get(key) === session) byKey.delete(key);
        presence.dropSource(session);
        for (const socket of [...channels.values()]) {
          try {
            socket.closed(1006, 'relay connection closed');
          } catch (error) {
            logger.error({ event: 'relay-channel-close-failed', err: error }, 'closing a relay channel failed');
          }
        }
        logger.info({ event: 'relay-disconnected', principal: principal.label }, 'relay disconnected');
      });
      logger.info({ event: 'relay-connected', principal: principal.label }, 'relay connected');
    },
  };
}
