import type { AddressInfo } from 'node:net';
import { connect, createServer, type Server, type Socket } from 'node:net';

// A TCP proxy the tests control, put between two real processes (agent → relay, relay →
// coordinator, agent → cache): cut the link, blackhole it (connections stay open, bytes vanish),
// add latency, limit bandwidth, or reset the connection after N more bytes (in the middle of a
// message). It counts the bytes it delivers each way, which is how benches measure traffic.
//
// Directions: "up" is client → target, "down" is target → client.
export type Direction = 'up' | 'down';

export interface FaultProxy {
  port: number;
  // ws:// or http:// URL of the proxy, for the target's scheme.
  url(scheme?: string): string;
  // Resets every open connection and refuses new ones until restore().
  cut(): void;
  // Open connections stay open but nothing arrives any more; new ones too.
  blackhole(): void;
  // Back to forwarding, with no delay and no bandwidth limit.
  restore(): void;
  delay(ms: number): void;
  bandwidth(bytesPerSecond: number | null): void;
  // After `bytes` more bytes in that direction (delivered exactly), reset the connection.
  resetAfter(bytes: number, direction: Direction): Promise<void>;
  bytes(): { up: number; down: number };
  resetCounters(): void;
  connections(): number;
  close(): Promise<void>;
}

type Mode = 'pass' | 'cut' | 'blackhole';

interface Pair {
  client: Socket;
  target: Socket;
  nextAt: Record<Direction, number>;
  // Deliveries waiting for their time, oldest first: they leave strictly in this order (a timer
  // firing late must not let a newer chunk overtake an older one).
  queued: Record<Direction, { at: number; deliver: () => void }[]>;
  // Called once a direction's queue is empty (its sender closed: the rest still goes out first).
  whenDrained: Record<Direction, (() => void) | null>;
  // A reset is due: nothing after the cut-off byte is delivered.
  dying: boolean;
}

export async function startFaultProxy(targetPort: number, targetHost = '127.0.0.1'): Promise<FaultProxy> {
  let mode: Mode = 'pass';
  let delayMs = 0;
  let bytesPerSecond: number | null = null;
  const counted = { up: 0, down: 0 };
  const pairs = new Set<Pair>();
  let trip: { remaining: number; direction: Direction; done: () => void } | null = null;

  const reset = (pair: Pair): void => {
    pairs.delete(pair);
    pair.client.resetAndDestroy();
    pair.target.resetAndDestroy();
  };

  const forward = (pair: Pair, direction: Direction, chunk: Buffer): void => {
    if (mode === 'blackhole' || pair.dying) return;
    const to = direction === 'up' ? pair.target : pair.client;
    let data = chunk;
    let resetNow = false;
    if (trip && trip.direction === direction) {
      if (data.length >= trip.remaining) {
        data = data.subarray(0, trip.remaining);
        resetNow = true;
        pair.dying = true;
      } else trip.remaining -= data.length;
    }
    const now = Date.now();
    const at = Math.max(now + delayMs, pair.nextAt[direction]);
    pair.nextAt[direction] = at + (bytesPerSecond ? (data.length / bytesPerSecond) * 1000 : 0);
    const deliver = (): void => {
      if (mode === 'blackhole' || to.destroyed || (pair.dying && !resetNow)) return;
      counted[direction] += data.length;
      to.write(data);
      if (resetNow) {
        const done = trip!.done;
        trip = null;
        // Let the partial bytes leave before the reset.
        setTimeout(() => {
          reset(pair);
          done();
        }, 20);
      }
    };
    const queue = pair.queued[direction];
    if (queue.length === 0 && at <= now && !resetNow) {
      deliver();
      return;
    }
    queue.push({ at, deliver });
    if (queue.length === 1) drain(pair, direction);
  };

  const drain = (pair: Pair, direction: Direction): void => {
    const queue = pair.queued[direction];
    while (queue.length > 0) {
      const wait = queue[0]!.at - Date.now();
      if (wait > 0) {
        setTimeout(() => drain(pair, direction), wait);
        return;
      }
      queue.shift()!.deliver();
    }
    pair.whenDrained[direction]?.();
  };

  const server: Server = createServer((client) => {
    if (mode === 'cut') {
      client.resetAndDestroy();
      return;
    }
    client.pause();
    const target = connect(targetPort, targetHost);
    const pair: Pair = {
      client,
      target,
      nextAt: { up: 0, down: 0 },
      queued: { up: [], down: [] },
      whenDrained: { up: null, down: null },
      dying: false,
    };
    pairs.add(pair);
    target.on('connect', () => client.resume());
    client.on('data', (chunk: Buffer) => forward(pair, 'up', chunk));
    target.on('data', (chunk: Buffer) => forward(pair, 'down', chunk));
    const end = (): void => {
      if (!pairs.delete(pair)) return;
      client.destroy();
      target.destroy();
    };
    // A side that closes after sending still has its bytes delivered (at the limited rate)
    // before the other side is ended, gracefully: destroying it would drop what is still in its
    // write buffer (a server closing after a response must not truncate it for a slow reader).
    const finish = (direction: Direction) => (): void => {
      const to = direction === 'up' ? target : client;
      if (client.destroyed && target.destroyed) end();
      else if (mode !== 'pass' || pair.dying) end();
      else if (pair.queued[direction].length > 0) pair.whenDrained[direction] = () => to.end();
      else to.end();
    };
    client.on('error', end);
    target.on('error', end);
    client.on('close', finish('up'));
    target.on('close', finish('down'));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;

  return {
    port,
    url: (scheme = 'ws') => `${scheme}://127.0.0.1:${port}`,
    cut() {
      mode = 'cut';
      for (const pair of [...pairs]) reset(pair);
    },
    blackhole() {
      mode = 'blackhole';
    },
    restore() {
      mode = 'pass';
      delayMs = 0;
      bytesPerSecond = null;
    },
    delay(ms) {
      delayMs = ms;
    },
    bandwidth(limit) {
      bytesPerSecond = limit;
    },
    resetAfter(bytes, direction) {
      return new Promise((resolve) => {
        trip = { remaining: bytes, direction, done: resolve };
      });
    },
    bytes: () => ({ ...counted }),
    resetCounters() {
      counted.up = 0;
      counted.down = 0;
    },
    connections: () => pairs.size,
    close() {
      for (const pair of [...pairs]) reset(pair);
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
