import * as encoding from 'lib0/encoding';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import WebSocket from 'ws';
import * as Y from 'yjs';
import { type RunningCoordinator, startCoordinator } from '../../coordinator/server.js';
import { connectDocument, type DocumentConnection, waitForSync } from '../../shared/node/connect.js';
import { createMemoryLogger } from '../../shared/node/log.js';
import { removeDirectory, temporaryDirectory, waitFor } from '../harness/processes.js';

const MAX_PAYLOAD = 64 * 1024;
let dir = '';
let coordinator: RunningCoordinator;
let memory: ReturnType<typeof createMemoryLogger>;
const open: DocumentConnection[] = [];

test.before(async () => {
  dir = temporaryDirectory('protocol');
  memory = createMemoryLogger('coordinator');
  coordinator = await startCoordinator({
    dataDir: dir,
    listen: '127.0.0.1',
    port: 0,
    maxPayload: MAX_PAYLOAD,
    idleUnloadMs: 200,
    logger: memory.logger,
  });
});

test.after(async () => {
  for (const c of open) c.close();
  await coordinator.close();
  removeDirectory(dir);
});

function connect(name: string): DocumentConnection {
  const connection = connectDocument(coordinator.url, name, { identity: null, maxBackoffMs: 200 });
  open.push(connection);
  return connection;
}

function rawSocket(name: string): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${coordinator.url}/${name}`);
    ws.once('open', () => resolve(ws));
    ws.once('error', reject);
  });
}

function closed(ws: WebSocket): Promise<{ code: number; reason: string }> {
  return new Promise((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })));
}

// A healthy pair of stock clients that must keep syncing while others misbehave.
async function assertStillServing(tag: string): Promise<void> {
  const a = connect('hosts/healthy/desired');
  const b = connect('hosts/healthy/desired');
  await Promise.all([waitForSync(a, 5000), waitForSync(b, 5000)]);
  a.doc.getArray('intents').push([tag]);
  await waitFor(
    `update ${tag} to reach the other client`,
    () => b.doc.getArray('intents').toArray().includes(tag),
    5000,
  );
}

test('stock y-websocket clients sync through the coordinator and every update lands in the log', async () => {
  const a = connect('hosts/h1/desired');
  const b = connect('hosts/h1/desired');
  await Promise.all([waitForSync(a, 5000), waitForSync(b, 5000)]);
  a.doc.getArray('intents').push(['one']);
  b.doc.getArray('intents').push(['two']);
  await waitFor(
    'both updates on both sides',
    () => a.doc.getArray('intents').length === 2 && b.doc.getArray('intents').length === 2,
    5000,
  );
  const entries = await coordinator.log.read('hosts/h1/desired');
  const replay = new Y.Doc();
  for (const e of entries) Y.applyUpdate(replay, e.update);
  assert.equal(replay.getArray('intents').toArray().sort(), ['one', 'two']);
  assert.ok(entries.every((e) => e.principal.startsWith('anonymous@')));
});

test('a document name outside hosts/<id>/{desired,status} and fleet/<name> is refused at the upgrade', async () => {
  const ws = new WebSocket(`${coordinator.url}/etc/passwd`);
  const error = await new Promise<Error>((resolve) => ws.once('error', resolve));
  assert.match(error.message, /404/);
});

const malformed: [string, (ws: WebSocket) => void][] = [
  [
    'undecodable bytes',
    (ws) => ws.send(new Uint8Array([0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])),
  ],
  ['unknown message type', (ws) => ws.send(new Uint8Array([42, 0]))],
  ['text frame', (ws) => ws.send('hello')],
  [
    'garbage update',
    (ws) => {
      const encoder = encoding.createEncoder();
      encoding.writeVarUint(encoder, 0);
      encoding.writeVarUint(encoder, 2);
      encoding.writeVarUint8Array(encoder, new Uint8Array([7, 200, 1, 3, 99, 99, 99, 250, 250]));
      ws.send(encoding.toUint8Array(encoder));
    },
  ],
  ['garbage awareness', (ws) => ws.send(new Uint8Array([1, 5, 9, 9, 9, 9, 9]))],
];

for (const [label, sendBad] of malformed) {
  test(`malformed message (${label}) closes only that connection, with a logged reason`, async () => {
    const ws = await rawSocket('hosts/victim/desired');
    const done = closed(ws);
    sendBad(ws);
    const { code } = await done;
    assert.is(code, 1007);
    await waitFor(
      'a logged refusal',
      () =>
        memory.events.some((e) => e.event === 'connection-refused-message' && e.document === 'hosts/victim/desired'),
      2000,
    );
    await assertStillServing(label);
  });
}

test('an oversized payload closes that connection (1009) and is logged; nothing of it is stored', async () => {
  const before = (await coordinator.log.read('hosts/big/desired')).length;
  const ws = await rawSocket('hosts/big/desired');
  const done = closed(ws);
  const encoder = encoding.createEncoder();
  encoding.writeVarUint(encoder, 0);
  encoding.writeVarUint(encoder, 2);
  encoding.writeVarUint8Array(encoder, new Uint8Array(MAX_PAYLOAD + 10));
  ws.send(encoding.toUint8Array(encoder));
  const { code } = await done;
  assert.is(code, 1009);
  await waitFor(
    'a logged error',
    () => memory.events.some((e) => e.event === 'connection-error' && /Max payload/i.test(String(e.reason))),
    2000,
  );
  assert.is((await coordinator.log.read('hosts/big/desired')).length, before);
  await assertStillServing('oversized');
});

test('awareness is relayed between peers and removed when a peer disconnects', async () => {
  const agent = connect('hosts/h9/status');
  const admin = connect('hosts/h9/status');
  await Promise.all([waitForSync(agent, 5000), waitForSync(admin, 5000)]);
  agent.provider.awareness.setLocalState({ role: 'agent', host: 'h9' });
  await waitFor(
    'admin to see the agent',
    () => [...admin.provider.awareness.getStates().values()].some((s) => (s as { role?: string }).role === 'agent'),
    5000,
  );
  agent.close();
  await waitFor(
    'agent presence to disappear',
    () => ![...admin.provider.awareness.getStates().values()].some((s) => (s as { role?: string }).role === 'agent'),
    5000,
  );
  const presence = (await (await fetch(`${coordinator.url.replace('ws:', 'http:')}/api/presence`)).json()) as {
    hosts: Record<string, { online: boolean }>;
  };
  assert.is(presence.hosts.h9?.online, false);
});

test.run();
