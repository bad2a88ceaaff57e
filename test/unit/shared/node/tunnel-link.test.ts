import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { WebSocketServer } from 'ws';
import { silentLogger } from '../../../../shared/log.js';
import { startControlLink } from '../../../../shared/node/tunnel-link.js';
import { sleep } from '../../../../shared/time/sleep.js';

// The agent's `outpost ssh` control link, stopped while its websocket is still connecting (an
// agent told to stop during start-up): the socket must not open afterwards and start pinging, or
// its interval keeps the stopped agent's process alive (seen as an agent that never exited after
// SIGTERM in an integration test).

test('stop() while the handshake is in flight: the link never comes up and the server sees it closed', async () => {
  const wss = new WebSocketServer({ noServer: true });
  const held: { request: IncomingMessage; socket: Duplex; head: Buffer }[] = [];
  const server = createServer();
  server.on('upgrade', (request, socket, head) => held.push({ request, socket, head }));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `ws://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const opened: string[] = [];
  const link = startControlLink({
    urls: [url],
    path: '_tunnel/agent',
    query: { host: 'h1' },
    proof: null,
    baseBackoffMs: 50,
    maxBackoffMs: 100,
    timeoutMs: 5_000,
    logger: silentLogger,
    onOpen: (_ws, at) => opened.push(at),
    onMessage: () => undefined,
  });
  for (let i = 0; i < 100 && held.length === 0; i++) await sleep(20);
  assert.is(held.length, 1, 'the link is connecting');
  link.stop();
  // The server completes the handshake only now, after stop().
  const { request, socket, head } = held[0]!;
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  if (!socket.destroyed) wss.handleUpgrade(request, socket, head, () => undefined);
  await Promise.race([closed, sleep(2_000)]);
  await sleep(200);
  assert.equal(opened, [], 'onOpen never ran');
  assert.is(link.connectedUrl(), null);
  assert.ok(socket.destroyed, 'the socket is closed');
  assert.is(held.length, 1, 'no new attempt after stop()');
  wss.close();
  server.close();
});

test.run();
