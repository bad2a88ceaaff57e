import type { Readable, Writable } from 'node:stream';
import WebSocket from 'ws';
import { TUNNEL_CHUNK_BYTES, TUNNEL_HIGH_WATER_BYTES } from '../tunnel/wire.js';

// The byte plumbing of `outpost ssh`, shared by the hubs (websocket ↔ websocket), the agent
// (websocket ↔ sshd's TCP socket) and the CLI (websocket ↔ stdin/stdout). Nothing is buffered
// without bound: a side whose peer is slow is not read until the peer has caught up.

export interface ByteCounters {
  // Bytes from the stream into the websocket, and from the websocket into the stream.
  up: number;
  down: number;
}

function asBuffer(data: WebSocket.RawData): Buffer {
  if (Buffer.isBuffer(data)) return data;
  if (Array.isArray(data)) return Buffer.concat(data);
  return Buffer.from(data);
}

// Stream → websocket in binary messages of at most TUNNEL_CHUNK_BYTES; the stream pauses while
// more than TUNNEL_HIGH_WATER_BYTES wait in the websocket. And websocket → stream: binary messages
// only (a text message after the verdict is a protocol error: `onError`); the websocket pauses
// while the stream refuses more (write() false) until 'drain'.
export function pipeStreamAndSocket(
  input: Readable,
  output: Writable,
  ws: WebSocket,
  hooks: { activity(): void; onError(reason: string): void },
): ByteCounters {
  const counters: ByteCounters = { up: 0, down: 0 };
  let inputPaused = false;
  const sent = (error?: Error): void => {
    if (error) return;
    if (inputPaused && ws.bufferedAmount < TUNNEL_HIGH_WATER_BYTES / 2) {
      inputPaused = false;
      input.resume();
    }
  };
  input.on('data', (chunk: Buffer) => {
    if (ws.readyState !== WebSocket.OPEN) return;
    hooks.activity();
    counters.up += chunk.length;
    for (let offset = 0; offset < chunk.length; offset += TUNNEL_CHUNK_BYTES)
      ws.send(chunk.subarray(offset, offset + TUNNEL_CHUNK_BYTES), { binary: true }, sent);
    if (ws.bufferedAmount > TUNNEL_HIGH_WATER_BYTES && !inputPaused) {
      inputPaused = true;
      input.pause();
    }
  });
  output.on('drain', () => ws.resume());
  ws.on('message', (data, isBinary) => {
    if (!isBinary) return hooks.onError('a text message inside the byte stream');
    const bytes = asBuffer(data);
    hooks.activity();
    counters.down += bytes.length;
    if (!output.write(bytes)) ws.pause();
  });
  return counters;
}

// Websocket → websocket, both ways, messages kept whole (text stays text: the verdict passes
// through a hub unchanged). Messages that arrive before `to` is open wait in a queue bounded by
// TUNNEL_HIGH_WATER_BYTES (then the pair is closed); past it, `from` is paused until `to` drains.
export function pipeSockets(
  a: WebSocket,
  b: WebSocket,
  hooks: { activity(): void; onEnd(reason: string): void },
): void {
  let ended = false;
  const end = (reason: string, code = 1000): void => {
    if (ended) return;
    ended = true;
    for (const ws of [a, b]) {
      if (ws.readyState === WebSocket.OPEN) closeQuietly(ws, code, reason);
      // Still connecting (a relay's hop upstream): what is queued for it (a refusal's verdict) is
      // sent when it opens (forward's listener runs first), then it closes; its handshake timeout
      // ends it if it never opens.
      else if (ws.readyState === WebSocket.CONNECTING) ws.once('open', () => closeQuietly(ws, code, reason));
    }
    hooks.onEnd(reason);
  };
  forward(a, b, hooks.activity, end);
  forward(b, a, hooks.activity, end);
  for (const ws of [a, b]) {
    ws.on('close', (code, reason) => end(reason.toString() || `closed (${code})`, code === 1000 ? 1000 : 1001));
    ws.on('error', (error) => end(error.message, 1011));
  }
}

function forward(from: WebSocket, to: WebSocket, activity: () => void, end: (reason: string) => void): void {
  const queue: { data: Buffer; binary: boolean }[] = [];
  let queued = 0;
  let paused = false;
  const sent = (error?: Error): void => {
    if (error) return;
    if (paused && to.bufferedAmount < TUNNEL_HIGH_WATER_BYTES / 2) {
      paused = false;
      from.resume();
    }
  };
  to.once('open', () => {
    for (const item of queue.splice(0)) to.send(item.data, { binary: item.binary }, sent);
    queued = 0;
  });
  from.on('message', (data, isBinary) => {
    activity();
    const bytes = asBuffer(data);
    if (to.readyState === WebSocket.CONNECTING) {
      queued += bytes.length;
      if (queued > TUNNEL_HIGH_WATER_BYTES) return end('too much data before the next hop was connected');
      queue.push({ data: bytes, binary: isBinary });
      return;
    }
    if (to.readyState !== WebSocket.OPEN) return;
    to.send(bytes, { binary: isBinary }, sent);
    if (to.bufferedAmount > TUNNEL_HIGH_WATER_BYTES && !paused) {
      paused = true;
      from.pause();
    }
  });
}

// Closes without ever throwing: a close reason is at most 123 bytes of UTF-8, and ws throws past it.
export function closeQuietly(ws: WebSocket, code: number, reason: string): void {
  let cut = reason.slice(0, 100);
  while (Buffer.byteLength(cut) > 120) cut = cut.slice(0, -1);
  try {
    ws.close(code, cut);
  } catch {
    ws.terminate();
  }
}
