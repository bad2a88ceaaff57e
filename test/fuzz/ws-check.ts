import { createRequire } from 'node:module';
import { isServedDocument } from '../../coordinator/server.js';
import { MUX_PATH } from '../../shared/sync/mux-frames.js';

// What the servers make of a raw request, computed the way they do, so the seeded run can leave
// out inputs that reproduce crashes already reported and not yet fixed on main.

interface FrameReceiver {
  on(event: 'error', listener: (error: Error) => void): void;
  write(chunk: Uint8Array): void;
  // Set synchronously when a write fails; the 'error' event itself comes a tick later.
  readonly errored: Error | null;
}
type ReceiverConstructor = new (options: { isServer: boolean; maxPayload: number }) => FrameReceiver;

// ws's own frame parser, as the servers run it (isServer, 1 MiB + slack for the relay link).
// (ws exports it on its CommonJS entry point; its type declarations do not list it.)
const Receiver = (createRequire(import.meta.url)('ws') as { Receiver: ReceiverConstructor }).Receiver;

// Whether ws would refuse these bytes as websocket frames (bad opcode, RSV bits, unmasked,
// oversized, invalid close code or UTF-8, …): the server side then emits 'error' on the socket.
export function framesRejected(bytes: Uint8Array[], maxPayload: number): boolean {
  const receiver = new Receiver({ isServer: true, maxPayload });
  receiver.on('error', () => undefined);
  try {
    for (const chunk of bytes) {
      receiver.write(chunk);
      if (receiver.errored) return true;
    }
  } catch {
    return true;
  }
  return receiver.errored !== null;
}

// The largest message each endpoint accepts (coordinator/server.ts with the default --max-payload).
export function maxPayloadFor(path: string): number {
  return path === MUX_PATH ? 1024 * 1024 + 1024 : 1024 * 1024;
}

export interface RequestHead {
  method: string;
  target: string;
  upgrade: boolean;
}

export function requestHead(request: Uint8Array[]): RequestHead | null {
  const text = Buffer.concat(request).toString('latin1');
  const end = text.indexOf('\r\n\r\n');
  const head = end < 0 ? text : text.slice(0, end);
  const [line, ...headers] = head.split('\r\n');
  const parts = (line ?? '').split(' ');
  if (parts.length < 2) return null;
  return {
    method: parts[0]!,
    target: parts[1]!,
    upgrade: headers.some((h) => /^upgrade\s*:/i.test(h)),
  };
}

// coordinator/server.ts: `new URL(req.url, 'http://localhost')` in both handlers, and
// decodeURIComponent of the path in the upgrade handler.
export function urlThrows(head: RequestHead): boolean {
  try {
    const path = new URL(head.target, 'http://localhost').pathname;
    if (head.upgrade) decodeURIComponent(path);
    return false;
  } catch {
    return true;
  }
}

// The document the upgrade handler would serve, or null when it answers 404.
export function servedPath(head: RequestHead): string | null {
  try {
    const path = decodeURIComponent(new URL(head.target, 'http://localhost').pathname).replace(/^\/+/, '');
    return path === MUX_PATH || isServedDocument(path) ? path : null;
  } catch {
    return null;
  }
}
