import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createServer as createNetServer, type Socket } from 'node:net';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { WebSocket, WebSocketServer } from 'ws';
import { createWebForwarder, DEFAULT_FORWARDER_LIMITS } from '../../../../shared/node/web-forwarder.js';

// The forwarder of `outpost web` with several coordinators: real HTTP and websocket servers on
// 127.0.0.1 as upstreams, the first of them not listening.

const closers: (() => Promise<void>)[] = [];
test.after(async () => {
  for (const close of closers.reverse()) await close();
});

async function listen(server: Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  closers.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return (server.address() as AddressInfo).port;
}

async function deadPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

// An upstream answering every request with its name, and echoing websocket messages with it.
async function upstream(name: string): Promise<number> {
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => res.writeHead(200, { 'content-type': 'text/plain' }).end(`${name} ${req.method} ${req.url}`));
  });
  const wss = new WebSocketServer({ server });
  wss.on('connection', (socket) => socket.on('message', (data) => socket.send(`${name}: ${String(data)}`)));
  closers.push(async () => {
    for (const client of wss.clients) client.terminate();
    wss.close();
  });
  return listen(server);
}

async function front(upstreams: string[], switches: string[], limits = DEFAULT_FORWARDER_LIMITS): Promise<number> {
  const forwarder = createWebForwarder(upstreams, limits, undefined, (from, to) => switches.push(`${from} -> ${to}`));
  const server = createServer((req, res) => forwarder.forwardRequest(req, res));
  server.on('upgrade', (req, socket, head) => forwarder.forwardUpgrade(req, socket, head));
  closers.push(async () => forwarder.close());
  return listen(server);
}

function call(port: number, method: string, path: string, body = ''): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method, path }, (res) => {
      let text = '';
      res.on('data', (chunk: Buffer) => {
        text += chunk.toString();
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

function echo(port: number, message: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(`ws://127.0.0.1:${port}/doc`);
    socket.on('open', () => socket.send(message));
    socket.on('message', (data) => {
      resolve(String(data));
      socket.close();
    });
    socket.on('error', reject);
  });
}

test('a GET and a websocket go on to the next upstream when the first cannot be reached; the switch is reported once', async () => {
  const dead = await deadPort();
  const b = await upstream('b');
  const switches: string[] = [];
  const port = await front([`ws://127.0.0.1:${dead}`, `ws://127.0.0.1:${b}`], switches);
  assert.equal(await call(port, 'GET', '/api/fleet'), { status: 200, text: 'b GET /api/fleet' });
  assert.equal(switches, [`http://127.0.0.1:${dead} -> http://127.0.0.1:${b}`]);
  assert.is(await echo(port, 'hello'), 'b: hello');
  assert.equal(await call(port, 'POST', '/api/deploy', '{"x":1}'), { status: 200, text: 'b POST /api/deploy' });
  assert.is(switches.length, 1, 'requests after the switch go straight to b');
});

test('a POST whose upstream cannot be reached is answered 502 (its body is not sent twice), and the next goes to the next upstream', async () => {
  const dead = await deadPort();
  const b = await upstream('b');
  const switches: string[] = [];
  const port = await front([`ws://127.0.0.1:${dead}`, `ws://127.0.0.1:${b}`], switches);
  const refused = await call(port, 'POST', '/api/deploy', '{"x":1}');
  assert.is(refused.status, 502);
  assert.match(refused.text, new RegExp(`127.0.0.1:${dead} is not reachable`));
  assert.equal(await call(port, 'POST', '/api/deploy', '{"x":1}'), { status: 200, text: 'b POST /api/deploy' });
  assert.is(switches.length, 1);
});

test('a websocket first: the upgrade goes on to the next upstream at once', async () => {
  const dead = await deadPort();
  const b = await upstream('b');
  const switches: string[] = [];
  const port = await front([`ws://127.0.0.1:${dead}`, `ws://127.0.0.1:${b}`], switches);
  assert.is(await echo(port, 'first'), 'b: first');
  assert.is(switches.length, 1);
});

// A machine that is down behind a firewall that drops packets: nothing refuses, nothing answers.
test('an upstream that accepts and never answers: after the timeout the forwarder moves on, GETs and websockets alike', async () => {
  const sockets: Socket[] = [];
  const silent = createNetServer((socket) => {
    sockets.push(socket);
    socket.on('error', () => {});
  });
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
  closers.push(async () => {
    for (const socket of sockets) socket.destroy();
    await new Promise<void>((resolve) => silent.close(() => resolve()));
  });
  const quiet = (silent.address() as AddressInfo).port;
  const b = await upstream('b');
  const switches: string[] = [];
  const limits = { ...DEFAULT_FORWARDER_LIMITS, upstreamTimeoutMs: 300 };
  const port = await front([`ws://127.0.0.1:${quiet}`, `ws://127.0.0.1:${b}`], switches, limits);
  assert.equal(await call(port, 'GET', '/api/fleet'), { status: 200, text: 'b GET /api/fleet' });
  assert.equal(switches, [`http://127.0.0.1:${quiet} -> http://127.0.0.1:${b}`]);
  assert.is(await echo(port, 'after'), 'b: after');
});

test('every upstream down: a GET is answered 502 after trying each once', async () => {
  const first = await deadPort();
  const second = await deadPort();
  const switches: string[] = [];
  const port = await front([`ws://127.0.0.1:${first}`, `ws://127.0.0.1:${second}`], switches);
  const answer = await call(port, 'GET', '/api/fleet');
  assert.is(answer.status, 502);
  assert.match(answer.text, /is not reachable/);
  assert.is(switches.length, 2);
});

test.run();
