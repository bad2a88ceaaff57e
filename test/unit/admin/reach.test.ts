import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { reachCoordinator } from '../../../admin/reach.js';

// Real HTTP servers on 127.0.0.1 stand in for coordinators: one answering /healthz, one failing
// it, and a port nobody listens on.

const servers: Server[] = [];

async function serve(status: number): Promise<{ url: string; hits: () => number }> {
  let hits = 0;
  const server = createServer((req, res) => {
    hits += 1;
    res.writeHead(req.url === '/healthz' ? status : 404).end('{}');
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `ws://127.0.0.1:${(server.address() as AddressInfo).port}`, hits: () => hits };
}

async function deadUrl(): Promise<string> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return `ws://127.0.0.1:${port}`;
}

test.after(async () => {
  for (const server of servers) await new Promise<void>((resolve) => server.close(() => resolve()));
});

test('one URL is used as given, without a probe', async () => {
  const up = await serve(200);
  assert.is(await reachCoordinator([up.url]), up.url);
  assert.is(up.hits(), 0);
});

test('the first coordinator that answers /healthz is used, and those skipped are named', async () => {
  const dead = await deadUrl();
  const failing = await serve(503);
  const up = await serve(200);
  const later = await serve(200);
  const warnings: string[] = [];
  const chosen = await reachCoordinator([dead, failing.url, up.url, later.url], 2_000, (line) => warnings.push(line));
  assert.is(chosen, up.url);
  assert.is(later.hits(), 0, 'no probe past the first that answers');
  assert.is(warnings.length, 1);
  assert.match(warnings[0]!, new RegExp(`using ${up.url}`));
  assert.match(warnings[0]!, /connection refused/);
  assert.match(warnings[0]!, /answered HTTP 503 at \/healthz/);
});

test('none answering: one error naming each coordinator and why', async () => {
  const dead = await deadUrl();
  const failing = await serve(500);
  try {
    await reachCoordinator([dead, failing.url], 2_000, () => {});
    assert.unreachable('resolved');
  } catch (error) {
    const message = (error as Error).message;
    assert.match(message, /none of the 2 coordinators answered/);
    assert.ok(message.includes(dead.replace('ws://', '')), message);
    assert.match(message, /answered HTTP 500/);
  }
});

test.run();
