import { Readable, Writable } from 'node:stream';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import WebSocket, { WebSocketServer } from 'ws';
import { pipeSockets, pipeStreamAndSocket } from '../../../../shared/node/tunnel-stream.js';
import { sleep } from '../../../../shared/time/sleep.js';
import { TUNNEL_HIGH_WATER_BYTES } from '../../../../shared/tunnel/wire.js';

// Backpressure of the `outpost ssh` byte plumbing over real loopback websockets: a source that
// never ends, towards a peer that stops reading, must stop being read itself (no unbounded queue).
async function socketPair(): Promise<{ client: WebSocket; server: WebSocket; close(): Promise<void> }> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise((resolve) => wss.once('listening', resolve));
  const accepted = new Promise<WebSocket>((resolve) => wss.once('connection', resolve));
  const client = new WebSocket(`ws://127.0.0.1:${(wss.address() as { port: number }).port}`);
  await new Promise((resolve) => client.once('open', resolve));
  const server = await accepted;
  return {
    client,
    server,
    close: async () => {
      client.terminate();
      server.terminate();
      await new Promise((resolve) => wss.close(resolve));
    },
  };
}

// An endless source that counts what was taken from it.
function endless(): { stream: Readable; produced(): number } {
  let produced = 0;
  const chunk = Buffer.alloc(64 * 1024, 1);
  // One chunk per event-loop turn, so timers still run when nothing pauses the source.
  const stream = new Readable({
    read() {
      setImmediate(() => {
        produced += chunk.length;
        this.push(chunk);
      });
    },
  });
  return { stream, produced: () => produced };
}

// What a stalled reader can absorb anyway: our high-water mark plus the kernel's socket buffers
// on both ends of a loopback connection (a few MiB on Linux), with room to spare.
const BOUND = TUNNEL_HIGH_WATER_BYTES + 32 * 1024 * 1024;

test('stream → websocket: a peer that stops reading stops the source (pipeStreamAndSocket)', async () => {
  const pair = await socketPair();
  const source = endless();
  pair.server.pause();
  pipeStreamAndSocket(source.stream, new Writable({ write: (_c, _e, done) => done() }), pair.client, {
    activity: () => undefined,
    onError: () => undefined,
  });
  await sleep(1500);
  const first = source.produced();
  await sleep(1000);
  assert.ok(first < BOUND, `${first} bytes taken from the source`);
  assert.is(source.produced(), first, 'nothing more is read while the peer does not read');
  await pair.close();
});

test('websocket → websocket (a hub): a slow far end pauses the near end (pipeSockets)', async () => {
  const near = await socketPair();
  const far = await socketPair();
  // The hub holds near.server and far.client; the admin writes into near.client, the host (far.server) stalls.
  pipeSockets(near.server, far.client, { activity: () => undefined, onEnd: () => undefined });
  far.server.pause();
  const source = endless();
  pipeStreamAndSocket(source.stream, new Writable({ write: (_c, _e, done) => done() }), near.client, {
    activity: () => undefined,
    onError: () => undefined,
  });
  await sleep(2000);
  const first = source.produced();
  await sleep(1000);
  assert.ok(first < 2 * BOUND, `${first} bytes taken from the source`);
  assert.is(source.produced(), first, 'the whole chain stands still');
  await near.close();
  await far.close();
});

test.run();
