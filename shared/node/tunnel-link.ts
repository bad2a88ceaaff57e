import WebSocket from 'ws';
import type { SigningKey } from '../crypto/keys.js';
import type { Logger } from '../log.js';
import {
  connectionFailed,
  connectionSucceeded,
  connectNow,
  createReconnectState,
  fetchAuthProof,
  type ReconnectHooks,
  stopReconnecting,
} from '../sync/reconnect.js';
import { TUNNEL_CONTROL_MAX_BYTES } from '../tunnel/wire.js';

// The one control socket of `outpost ssh` that an agent (to its server) or a relay (to its
// upstream) keeps open: outbound, so it works from behind NAT; proving its key with a fresh
// single-use challenge at every attempt; reconnecting with the same backoff and failover as the
// documents; pinged, and dropped when silent (a NAT that forgot the connection).
export interface ControlLinkOptions {
  urls: string[];
  // The websocket path and query, e.g. `_tunnel/agent?host=h1`.
  path: string;
  query: Record<string, string>;
  // What the key proof is signed for; null: no proof (a relay run without a key).
  proof: { key: SigningKey; target: string } | null;
  baseBackoffMs: number;
  maxBackoffMs: number;
  // Pings at a third of this; a link silent for this long is dropped.
  timeoutMs: number;
  logger: Logger;
  onOpen(ws: WebSocket, url: string): void;
  onMessage(text: string, url: string): void;
}

export interface ControlLink {
  connectedUrl(): string | null;
  send(text: string): void;
  stop(): void;
}

export function startControlLink(options: ControlLinkOptions): ControlLink {
  const { logger } = options;
  const state = createReconnectState(options.urls, { baseMs: options.baseBackoffMs, capMs: options.maxBackoffMs });
  let live: { ws: WebSocket; url: string } | null = null;
  // The socket of the attempt in flight: stop() must end it too, or a link that opens after
  // stop() keeps pinging, and its interval keeps the stopped agent's process alive.
  let current: WebSocket | null = null;
  const hooks: ReconnectHooks = {
    attempt: async (url) => {
      const proof = options.proof
        ? await fetchAuthProof(url, options.proof.target, options.proof.key, options.timeoutMs)
        : {};
      if (state.closed) return;
      const query = new URLSearchParams({ ...options.query, ...proof });
      const ws = new WebSocket(`${url.replace(/\/+$/, '')}/${options.path}?${query}`, {
        handshakeTimeout: options.timeoutMs,
        maxPayload: TUNNEL_CONTROL_MAX_BYTES,
      });
      current = ws;
      let heard = Date.now();
      let watchdog: NodeJS.Timeout | null = null;
      ws.on('open', () => {
        if (state.closed) return ws.terminate();
        heard = Date.now();
        live = { ws, url };
        connectionSucceeded(state);
        watchdog = setInterval(
          () => {
            if (Date.now() - heard > options.timeoutMs) return ws.terminate();
            ws.ping();
          },
          Math.max(100, options.timeoutMs / 3),
        );
        logger.debug({ event: 'tunnel-link-up', url, path: options.path }, 'tunnel control link up');
        options.onOpen(ws, url);
      });
      ws.on('pong', () => (heard = Date.now()));
      ws.on('message', (data, isBinary) => {
        heard = Date.now();
        if (isBinary) return;
        try {
          options.onMessage(data.toString(), url);
        } catch (error) {
          logger.error({ event: 'tunnel-link-message-failed', err: error }, 'handling a tunnel control message failed');
        }
      });
      ws.on('error', (error) =>
        logger.debug({ event: 'tunnel-link-error', url, reason: error.message }, 'tunnel control link error'),
      );
      ws.on('close', (code, reason) => {
        if (watchdog) clearInterval(watchdog);
        if (live?.ws === ws) live = null;
        if (current === ws) current = null;
        if (code >= 4400 && code < 4500)
          logger.warn(
            { event: 'tunnel-link-refused', url, code, reason: reason.toString() },
            'the server refused the tunnel control link',
          );
        connectionFailed(state, hooks, `closed with ${code}`);
      });
    },
    onRetry: (url, delayMs, reason) =>
      logger.debug(
        { event: 'tunnel-link-retry', url, delayMs: Math.round(delayMs), reason },
        'reconnecting the tunnel control link',
      ),
  };
  connectNow(state, hooks);
  return {
    connectedUrl: () => (live ? live.url : null),
    send: (text) => {
      if (live?.ws.readyState === WebSocket.OPEN) live.ws.send(text, (error) => error && live?.ws.terminate());
    },
    stop: () => {
      stopReconnecting(state);
      current?.terminate();
      current = null;
      live = null;
    },
  };
}
