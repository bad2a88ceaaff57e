import { appendFileSync } from 'node:fs';
import { join } from 'node:path';
import WebSocket from 'ws';
import { hostOfStorePath } from './bench-intents.js';

// Preloaded into a benchmarked server process (`node --import`, dispatch.ts --trace-frames DIR):
// times every websocket frame that carries a bench intent (a sync update naming the intent's
// store path, bench-intents.ts) as the server receives it and as it hands it to a socket, from
// `ws` itself, so the same hook times our coordinator and the stock server alike. Lines
// "in|out <host> <hrtime ns>" go to DIR/frames-<pid>.tsv, about once a second and at exit;
// frame-residency.ts pairs them. hrtime is one monotonic clock for all processes of the machine.
const directory = process.env.OUTPOST_BENCH_FRAME_TRACE;
const MESSAGE_SYNC = 0;
const SYNC_UPDATE = 2;
// An intent update is a few hundred bytes; smaller frames (sync steps, awareness) are skipped unread.
const MIN_INTENT_FRAME_BYTES = 200;

// Frames arrive as Buffers (ours) or ArrayBuffers (the stock server sets binaryType 'arraybuffer').
function intentHost(data: unknown): string | null {
  const bytes =
    data instanceof Uint8Array
      ? Buffer.from(data.buffer, data.byteOffset, data.byteLength)
      : data instanceof ArrayBuffer
        ? Buffer.from(data)
        : null;
  if (!bytes || bytes.length < MIN_INTENT_FRAME_BYTES) return null;
  if (bytes[0] !== MESSAGE_SYNC || bytes[1] !== SYNC_UPDATE) return null;
  return hostOfStorePath(bytes.toString('latin1'));
}

if (directory) {
  const file = join(directory, `frames-${process.pid}.tsv`);
  let lines: string[] = [];
  const record = (direction: 'in' | 'out', data: unknown): void => {
    const host = intentHost(data);
    if (host) lines.push(`${direction}\t${host}\t${process.hrtime.bigint()}`);
  };
  const flush = (): void => {
    if (lines.length === 0) return;
    appendFileSync(file, `${lines.join('\n')}\n`);
    lines = [];
  };
  const prototype = WebSocket.prototype as unknown as {
    emit: (event: string | symbol, ...args: unknown[]) => boolean;
    send: (data: unknown, ...rest: unknown[]) => void;
  };
  const emit = prototype.emit;
  prototype.emit = function (this: WebSocket, event, ...args) {
    if (event === 'message') record('in', args[0]);
    return emit.call(this, event, ...args);
  };
  const send = prototype.send;
  prototype.send = function (this: WebSocket, data, ...rest) {
    record('out', data);
    send.call(this, data, ...rest);
  };
  setInterval(flush, 1000).unref();
  process.on('exit', flush);
}
