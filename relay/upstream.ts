import WebSocket from 'ws';
import type { SigningKey } from '../shared/crypto/keys.js';
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
  type PresenceEntry,
} from '../shared/sync/mux-frames.js';
import {
  connectionFailed,
  connectionSucceeded,
  connectNow,
  createReconnectState,
  currentUrl,
  fetchAuthProof,
  type ReconnectHooks,
  stopReconnecting,
} from '../shared/sync/reconnect.js';

// The relay's one connection to its upstream (a coordinator, or a relay closer to it), carrying
// every document as a channel (shared/sync/mux-frames.ts). Reconnects by itself with jittered exponential
// backoff capped at maxBackoffMs (minutes on satellite links, so a site coming back does not storm
// the coordinator), moves to the next --upstream after two failures in a row at one, and proves
// the relay's key with a fresh single-use challenge at every attempt.
export interface UpstreamHandlers {
  connected(url: string): void;
  disconnected(): void;
  data(channel: number, message: Uint8Array): void;
  closed(channel: number, code: number, reason: string): void;
  changes(epoch: string, cursor: number, documents: string[]): void;
}

export interface UpstreamLinkOptions {
  urls: string[];
  identity: SigningKey | null;
  logger: Logger;
  baseBackoffMs: number;
  maxBackoffMs: number;
  // No message (not even a pong) for this long: the link is dead (blackholed, NAT state lost).
  timeoutMs: number;
  maxPayload: number;
}

export interface UpstreamLink {
  connectedUrl(): string | null;
  open(document: string): number | null;
  send(channel: number, message: Uint8Array): void;
  close(channel: number, code?: number, reason?: string): void;
  since(epoch: string, cursor: number): void;
  presence(hosts: PresenceEntry[]): void;
  stats(): { bytesIn: number; bytesOut: number; connects: number; channels: number };
  stop(): void;
}

export function startUpstreamLink(options: UpstreamLinkOptions, handlers: UpstreamHandlers): UpstreamLink {
  const { urls, logger } = options;
  let ws: WebSocket | null = null;
  let open = false;
  const reconnect = createReconnectState(urls, { baseMs: options.baseBackoffMs, capMs: options.maxBackoffMs });
  let nextChannel = 1;
  let channels = 0;
  const counters = { bytesIn: 0, bytesOut: 0, connects: 0 };
  const hooks: ReconnectHooks = {
    attempt: (url) => connect(url),
    onRetry: (url, delayMs, reason) =>
      logger.debug({ event: 'upstream-retry', url, delayMs: Math.round(delayMs), reason }, 'reconnecting to upstream'),
  };

  const connect = async (url: string): Promise<void> => {
    let query = '';
    try {
      if (options.identity)
        query = `?${new URLSearchParams(await fetchAuthProof(url, MUX_PATH, options.identity, options.timeoutMs))}`;
    } catch (error) {
      logger.warn({ event: 'upstream-unreachable', url, reason: (error as Error).message }, 'upstream unreachable');
      throw error;
    }
    if (reconnect.closed) return;
    const socket = new WebSocket(`${url.replace(/\/+$/, '')}/${MUX_PATH}${query}`, {
      handshakeTimeout: options.timeoutMs,
      maxPayload: options.maxPayload + 1024,
    });
    ws = socket;
    let lastHeard = Date.now();
    let watchdog: NodeJS.Timeout | null = null;
    socket.binaryType = 'nodebuffer';
    socket.on('open', () => {
      open = true;
      connectionSucceeded(reconnect);
      counters.connects += 1;
      nextChannel = 1;
      channels = 0;
      lastHeard = Date.now();
      // Ping at a third of the timeout; a link that stays silent past it is dropped.
      watchdog = setInterval(
        () => {
          if (Date.now() - lastHeard > options.timeoutMs) {
            logger.warn(
              { event: 'upstream-timeout', url, timeoutMs: options.timeoutMs },
              'upstream silent: dropping the link',
            );
            socket.terminate();
            return;
          }
          socket.ping();
        },
        Math.max(100, options.timeoutMs / 3),
      );
      logger.info({ event: 'upstream-connected', url }, 'connected to upstream');
      handlers.connected(url);
    });
    socket.on('pong', () => (lastHeard = Date.now()));
    socket.on('message', (data: Buffer) => {
      lastHeard = Date.now();
      counters.bytesIn += data.length;
      let frame: MuxFrame;
      try {
        frame = decodeFrame(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
      } catch (error) {
        logger.warn(
          { event: 'upstream-bad-frame', url, reason: (error as Error).message },
          'bad frame from upstream: reconnecting',
        );
        socket.terminate();
        return;
      }
      try {
        if (frame.type === FRAME_DATA) handlers.data(frame.channel, frame.message);
        else if (frame.type === FRAME_CLOSE) {
          channels -= 1;
          handlers.closed(frame.channel, frame.code, frame.reason);
        } else if (frame.type === FRAME_CHANGES) handlers.changes(frame.epoch, frame.cursor, frame.documents);
      } catch (error) {
        // Whatever the upstream sends must not end the relay: drop the link and reconnect.
        logger.error({ event: 'upstream-frame-failed', url, err: error }, 'handling a frame from upstream failed');
        socket.terminate();
      }
    });
    socket.on('error', (error) =>
      logger.debug({ event: 'upstream-error', url, reason: error.message }, 'upstream socket error'),
    );
    socket.on('close', (code, reason) => {
      if (watchdog) clearInterval(watchdog);
      const wasOpen = open;
      open = false;
      if (ws === socket) ws = null;
      if (wasOpen) {
        logger.warn({ event: 'upstream-disconnected', url, code, reason: reason.toString() }, 'upstream link lost');
        handlers.disconnected();
      } else {
        logger.warn({ event: 'upstream-unreachable', url, code, reason: reason.toString() }, 'upstream unreachable');
      }
      connectionFailed(reconnect, hooks, `closed with ${code}`);
    });
  };

  const sendFrame = (frame: MuxFrame): boolean => {
    if (!ws || !open) return false;
    const bytes = encodeFrame(frame);
    counters.bytesOut += bytes.length;
    const socket = ws;
    socket.send(bytes, (error) => error && socket.terminate());
    return true;
  };

  connectNow(reconnect, hooks);
  return {
    connectedUrl: () => (open ? currentUrl(reconnect) : null),
    open(document) {
      const channel = nextChannel++;
      if (!sendFrame({ type: FRAME_OPEN, channel, document })) return null;
      channels += 1;
      return channel;
    },
    send(channel, message) {
      sendFrame({ type: FRAME_DATA, channel, message });
    },
    close(channel, code = 1000, reason = '') {
      if (sendFrame({ type: FRAME_CLOSE, channel, code, reason })) channels -= 1;
    },
    since(epoch, cursor) {
      sendFrame({ type: FRAME_SINCE, epoch, cursor });
    },
    presence(hosts) {
      if (hosts.length > 0) sendFrame({ type: FRAME_PRESENCE, hosts });
    },
    stats: () => ({ ...counters, channels }),
    stop() {
      stopReconnecting(reconnect);
      ws?.terminate();
    },
  };
}
