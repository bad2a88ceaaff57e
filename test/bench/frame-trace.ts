import { appendFileSync } from 'node:fs';
import { join } from 'node:path';
import WebSocket from 'ws';
import { MESSAGE_COMMIT_TENTATIVE, MESSAGE_TENTATIVE_UPDATE } from '../../shared/sync/tentative.js';
import { hostOfStorePath } from './bench-intents.js';

// Preloaded into a benchmarked server process (`node --import`, dispatch.ts --trace-frames DIR):
// times every websocket frame that carries a bench intent (a sync update naming the intent's
// store path, bench-intents.ts) as the server receives it and as it hands it to a socket, from
// `ws` itself, so the same hook times our coordinator and the stock server alike. Lines
// "in|out <host> <hrtime ns>" go to DIR/frames-<pid>.tsv, about once a second and at exit;
// frame-residency.ts pairs them. hrtime is one monotonic clock for all processes of the machine.
// Tentative delivery (shared/sync/tentative.ts): a TENTATIVE frame is timed as "out" (the update
// handed on), and the COMMIT that follows on the same socket as "commit" for the same host.
const directory = process.env.OUTPOST_BENCH_FRAME_TRACE;
const MESSAGE_SYNC = 0;
const SYNC_UPDATE = 2;
// An intent update is a few hundred bytes; smaller frames (sync steps, awareness) are skipped unread.
const MIN_INTENT_FRAME_BYTES = 200;

// Frames arrive as Buffers (ours) or ArrayBuffers (the stock server sets binaryType 'arraybuffer').
function frameBytes(data: unknown): Buffer | null {
  if (data instanceof Uint8Array) return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  return data instanceof ArrayBuffer ? Buffer.from(data) : null;
}

function intentHost(bytes: Buffer | null): string | null {
  if (!bytes || bytes.length < MIN_INTENT_FRAME_BYTES) return null;
  const update = (bytes[0] === MESSAGE_SYNC && bytes[1] === SYNC_UPDATE) || bytes[0] === MESSAGE_TENTATIVE_UPDATE;
  return update ? hostOfStorePath(bytes.toString('latin1')) : null;
}

if (directory) {
  const file = join(directory, `frames-${process.pid}.tsv`);
  let lines: string[] = [];
  // The host of the tentative update last sent on a socket, whose commit is still to come.
  const tentativeHost = new WeakMap<WebSocket, string>();
  const record = (direction: 'in' | 'out', data: unknown, socket: WebSocket): void => {
    const bytes = frameBytes(data);
    if (direction === 'out' && bytes?.[0] === MESSAGE_COMMIT_TENTATIVE) {
      const host = tentativeHost.get(socket);
      tentativeHost.delete(socket);
      if (host) lines.push(`commit\t${host}\t${process.hrtime.bigint()}`);
      return;
    }
    const host = intentHost(bytes);
    if (!host) return;
    lines.push(`${direction}\t${host}\t${process.hrtime.bigint()}`);
    if (direction === 'out' && bytes?.[0] === MESSAGE_TENTATIVE_UPDATE) tentativeHost.set(socket, host);
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
    if (event === 'message') record('in', args[0], this);
    return emit.call(this, event, ...args);
  };
  const send = prototype.send;
  prototype.send = function (this: WebSocket, data, ...rest) {
    record('out', data, this);
    send.call(this, data, ...rest);
  };
  setInterval(flush, 1000).unref();
  process.on('exit', flush);
}
