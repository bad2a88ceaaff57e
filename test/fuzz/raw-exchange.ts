import { connect } from 'node:net';
import type { RawExchange } from './protocol-inputs.js';

// Delivers one input as raw bytes over its own TCP connection and returns once the server has
// reacted (answered and closed, or gone quiet), so that a crash it causes shows right after.

export interface ExchangeOutcome {
  // The response's status line, "(none)" when nothing came back, "(refused)" when connect failed.
  status: string;
  bytesIn: number;
}

const RESPONSE_WAIT_MS = 1_000;
const CLOSE_WAIT_MS = 1_500;
const LINGER_MS = 80;
const RESPOND_WAIT_MS = 5_000;

// The fuzzer's connections come from 127.0.1.1 … 127.0.1.48 in turn, the well-behaved clients of
// the health checks from 127.0.0.1: per-address limits (connections, POSTs per source, the open
// mode's writer quota) see them as different clients, as they would be on a network. 48: 16 for
// each of the default 3 workers per class slot (run-fuzz.ts), so that each address carries the
// connections and POSTs a second it carried at one worker per slot and 16 addresses.
const FUZZ_ADDRESSES = Array.from({ length: 48 }, (_, i) => `127.0.1.${i + 1}`);
let nextAddress = 0;
export function fuzzAddress(): string {
  nextAddress = (nextAddress + 1) % FUZZ_ADDRESSES.length;
  return FUZZ_ADDRESSES[nextAddress]!;
}

export function rawExchange(port: number, exchange: RawExchange): Promise<ExchangeOutcome> {
  return new Promise((resolve) => {
    const socket = connect({ port, host: '127.0.0.1', localAddress: fuzzAddress() });
    socket.setNoDelay(true);
    let status = '';
    let bytesIn = 0;
    let closed = false;
    let connected = false;
    let onActivity: (() => void) | null = null;
    const timers: NodeJS.Timeout[] = [];
    const finish = (): void => {
      for (const timer of timers) clearTimeout(timer);
      if (!socket.destroyed) socket.destroy();
      resolve({ status: status || (connected ? '(none)' : '(refused)'), bytesIn });
    };
    socket.on('data', (chunk: Buffer) => {
      if (bytesIn === 0) {
        const end = chunk.indexOf('\r\n');
        status = chunk.toString('latin1', 0, end < 0 ? Math.min(chunk.length, 60) : Math.min(end, 60));
      }
      bytesIn += chunk.length;
      onActivity?.();
    });
    socket.on('error', () => undefined);
    socket.on('close', () => {
      closed = true;
      onActivity?.();
      finish();
    });
    const wait = (ms: number, until: () => boolean): Promise<void> =>
      new Promise((done) => {
        if (until()) return done();
        const timer = setTimeout(() => {
          onActivity = null;
          done();
        }, ms);
        timers.push(timer);
        onActivity = () => {
          if (!until()) return;
          clearTimeout(timer);
          onActivity = null;
          done();
        };
      });
    const write = async (parts: Uint8Array[]): Promise<void> => {
      for (const part of parts) {
        if (closed || socket.destroyed) return;
        socket.write(part);
        // Separate TCP segments, so parsers see the request arrive in pieces.
        if (parts.length > 1) await new Promise((r) => setImmediate(r));
      }
    };
    socket.on('connect', () => {
      connected = true;
      void (async () => {
        await write(exchange.request);
        if (exchange.waitForResponse) await wait(RESPONSE_WAIT_MS, () => closed || bytesIn > 0);
        await write(exchange.after);
        if (closed) return;
        switch (exchange.ending) {
          case 'reset':
            socket.resetAndDestroy();
            return;
          case 'linger':
            await wait(LINGER_MS, () => closed);
            finish();
            return;
          case 'respond':
            // Keeps the connection open until the answer comes (a half-close would make Node's
            // HTTP server drop a request still being answered asynchronously).
            await wait(RESPOND_WAIT_MS, () => closed || bytesIn > 0);
            await wait(LINGER_MS, () => closed);
            finish();
            return;
          case 'half-close':
            socket.end();
            await wait(CLOSE_WAIT_MS, () => closed);
            finish();
            return;
        }
      })();
    });
  });
}
