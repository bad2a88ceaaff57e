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
  type ReconnectState,
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

// Opens the websocket of one attempt: ws's client; unit tests pass a stand-in.
export type OpenUpstreamSocket = (url: string, options: WebSocket.ClientOptions) => WebSocket;

const openWebSocket: OpenUpstreamSocket = (url, options) => new WebSocket(url, options);

// Everything the link knows, as one record the functions below take (the yjs style): unit tests
// build one with a stand-in socket (test/unit/relay/upstream.test.ts).
export interface UpstreamState {
  readonly options: UpstreamLinkOptions;
  readonly handlers: UpstreamHandlers;
  readonly openSocket: OpenUpstreamSocket;
  readonly reconnect: ReconnectState;
  readonly hooks: ReconnectHooks;
  // The socket of the attempt in progress or the live link, and whether it is open.
  socket: WebSocket | null;
  open: boolean;
  // Channel numbers restart at 1 on every connection.
  nextChannel: number;
  channels: number;
  readonly counters: { bytesIn: number; bytesOut: number; connects: number };
}

export function createUpstreamState(
  options: UpstreamLinkOptions,
  handlers: UpstreamHandlers,
  openSocket: OpenUpstreamSocket = openWebSocket,
): UpstreamState {
  const { logger } = options;
  const link: UpstreamState = {
    options,
    handlers,
    openSocket,
    reconnect: createReconnectState(options.urls, { baseMs: options.baseBackoffMs, capMs: options.maxBackoffMs }),
    hooks: {
      attempt: (url) => connectUpstream(link, url),
      onRetry: (url, delayMs, reason) =>
        logger.debug(
          { event: 'upstream-retry', url, delayMs: Math.round(delayMs), reason },
          'reconnecting to upstream',
        ),
    },
    socket: null,
    open: false,
    nextChannel: 1,
    channels: 0,
    counters: { bytesIn: 0, bytesOut: 0, connects: 0 },
  };
  return link;
}

// One attempt: a fresh proof (with an identity), then the websocket; its events drive the rest.
export async function connectUpstream(link: UpstreamState, url: string): Promise<void> {
  const { options } = link;
  let query = '';
  try {
    if (options.identity)
      query = `?${new URLSearchParams(await fetchAuthProof(url, MUX_PATH, options.identity, options.timeoutMs))}`;
  } catch (error) {
    options.logger.warn(
      { event: 'upstream-unreachable', url, reason: (error as Error).message },
      'upstream unreachable',
    );
    throw error;
  }
  if (link.reconnect.closed) return;
  const socket = link.openSocket(`${url.replace(/\/+$/, '')}/${MUX_PATH}${query}`, {
    handshakeTimeout: options.timeoutMs,
    maxPayload: options.maxPayload + 1024,
  });
  link.socket = socket;
  // When the socket was last heard from (any message or pong), for the watchdog.
  const heard = { at: Date.now() };
  let watchdog: ReturnType<typeof setInterval> | null = null;
  socket.binaryType = 'nodebuffer';
  socket.on('open', () => {
    heard.at = Date.now();
    watchdog = watchUpstream(link, socket, url, heard);
    upstreamOpened(link, url);
  });
  socket.on('pong', () => (heard.at = Date.now()));
  socket.on('message', (data: Buffer) => {
    heard.at = Date.now();
    upstreamMessage(link, socket, url, data);
  });
  socket.on('error', (error) =>
    options.logger.debug({ event: 'upstream-error', url, reason: error.message }, 'upstream socket error'),
  );
  socket.on('close', (code, reason) => {
    if (watchdog) clearInterval(watchdog);
    upstreamClosed(link, socket, url, code, reason.toString());
  });
}

// Pings at a third of the timeout; a link that stays silent past it is dropped.
function watchUpstream(
  link: UpstreamState,
  socket: WebSocket,
  url: string,
  heard: { at: number },
): ReturnType<typeof setInterval> {
  return setInterval(
    () => checkSilence(link, socket, url, heard.at, Date.now()),
    Math.max(100, link.options.timeoutMs / 3),
  );
}

// One watchdog tick: drop a socket not heard from for longer than the timeout, else ping it.
// Returns whether it was dropped.
export function checkSilence(
  link: UpstreamState,
  socket: WebSocket,
  url: string,
  lastHeard: number,
  now: number,
): boolean {
  const { timeoutMs, logger } = link.options;
  if (now - lastHeard > timeoutMs) {
    logger.warn({ event: 'upstream-timeout', url, timeoutMs }, 'upstream silent: dropping the link');
    socket.terminate();
    return true;
  }
  socket.ping();
  return false;
}

export function upstreamOpened(link: UpstreamState, url: string): void {
  link.open = true;
  connectionSucceeded(link.reconnect);
  link.counters.connects += 1;
  link.nextChannel = 1;
  link.channels = 0;
  link.options.logger.info({ event: 'upstream-connected', url }, 'connected to upstream');
  link.handlers.connected(url);
}

// One frame from the upstream: a bad one, or one whose handling throws, drops the link (it
// reconnects); nothing the upstream sends may end the relay.
export function upstreamMessage(link: UpstreamState, socket: WebSocket, url: string, data: Buffer): void {
  const { logger } = link.options;
  const { handlers } = link;
  link.counters.bytesIn += data.length;
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
      link.channels -= 1;
      handlers.closed(frame.channel, frame.code, frame.reason);
    } else if (frame.type === FRAME_CHANGES) handlers.changes(frame.epoch, frame.cursor, frame.documents);
  } catch (error) {
    logger.error({ event: 'upstream-frame-failed', url, err: error }, 'handling a frame from upstream failed');
    socket.terminate();
  }
}

// The socket closed: a live link is lost, or an attempt failed; either way the next attempt is
// scheduled (backoff, failover).
export function upstreamClosed(
  link: UpstreamState,
  socket: WebSocket,
  url: string,
  code: number,
  reason: string,
): void {
  const { logger } = link.options;
  const wasOpen = link.open;
  link.open = false;
  if (link.socket === socket) link.socket = null;
  if (wasOpen) {
    logger.warn({ event: 'upstream-disconnected', url, code, reason }, 'upstream link lost');
    link.handlers.disconnected();
  } else {
    logger.warn({ event: 'upstream-unreachable', url, code, reason }, 'upstream unreachable');
  }
  connectionFailed(link.reconnect, link.hooks, `closed with ${code}`);
}

// Sends one frame if the link is up; false if it is not.
export function sendFrame(link: UpstreamState, frame: MuxFrame): boolean {
  const socket = link.socket;
  if (!socket || !link.open) return false;
  const bytes = encodeFrame(frame);
  link.counters.bytesOut += bytes.length;
  socket.send(bytes, (error) => error && socket.terminate());
  return true;
}

export function openUpstreamChannel(link: UpstreamState, document: string): number | null {
  const channel = link.nextChannel++;
  if (!sendFrame(link, { type: FRAME_OPEN, channel, document })) return null;
  link.channels += 1;
  return channel;
}

export function closeUpstreamChannel(link: UpstreamState, channel: number, code = 1000, reason = ''): void {
  if (sendFrame(link, { type: FRAME_CLOSE, channel, code, reason })) link.channels -= 1;
}

export function stopUpstreamLink(link: UpstreamState): void {
  stopReconnecting(link.reconnect);
  link.socket?.terminate();
}

// Starts connecting and wires the state to the UpstreamLink interface the bridge uses.
export function startUpstreamLink(
  options: UpstreamLinkOptions,
  handlers: UpstreamHandlers,
  openSocket?: OpenUpstreamSocket,
): UpstreamLink {
  const link = createUpstreamState(options, handlers, openSocket);
  connectNow(link.reconnect, link.hooks);
  return {
    connectedUrl: () => (link.open ? currentUrl(link.reconnect) : null),
    open: (document) => openUpstreamChannel(link, document),
    send: (channel, message) => void sendFrame(link, { type: FRAME_DATA, channel, message }),
    close: (channel, code, reason) => closeUpstreamChannel(link, channel, code, reason),
    since: (epoch, cursor) => void sendFrame(link, { type: FRAME_SINCE, epoch, cursor }),
    presence: (hosts) => void (hosts.length > 0 && sendFrame(link, { type: FRAME_PRESENCE, hosts })),
    stats: () => ({ ...link.counters, channels: link.channels }),
    stop: () => stopUpstreamLink(link),
  };
}
