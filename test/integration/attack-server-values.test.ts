import { join } from 'node:path';
import * as decoding from 'lib0/decoding';
import * as encoding from 'lib0/encoding';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { WebSocket } from 'ws';
import { readSyncMessage } from 'y-protocols/sync';
import * as Y from 'yjs';
import { httpBaseFromWs } from '../../shared/sync/reconnect.js';
import { startRelayProcess } from '../bench/relay-fixtures.js';
import {
  type DaemonProcess,
  removeDirectory,
  startCoordinatorProcess,
  temporaryDirectory,
  waitFor,
} from '../harness/processes.js';

// Fuzz finding 8 (docs/fuzzing.md): a writer packs its updates with empty arrays and objects, or
// nests them thousands of levels deep. Yjs keeps every one as a JavaScript object of ~100 bytes
// while it costs 2 bytes in the update, so every server that opens the document (the relay it was
// written to, the coordinator above, every relay that syncs it) holds 50–110 times the update's
// size in memory, and the size limits, which count encoded bytes, do not see it. From a site
// client's position: the relay refuses such a write (4413, naming what is wrong), the coordinator
// refuses it from a client of its own, neither stores it, and a well-formed write still goes
// through the relay to the coordinator.

type Server = DaemonProcess & { url: string; port: number };
let dir = '';
let coordinator: Server;
let relay: Server;

const arrayTree = (depth: number): unknown[] => (depth === 0 ? [] : [arrayTree(depth - 1), arrayTree(depth - 1)]);
const nestedObjects = (levels: number): unknown => {
  let value: unknown = { leaf: 'x'.repeat(4096) };
  for (let i = 0; i < levels; i++) value = { n: value };
  return value;
};

function updateSetting(key: string, value: unknown): Uint8Array {
  const doc = new Y.Doc();
  doc.getMap('entries').set(key, value);
  return Y.encodeStateAsUpdate(doc);
}

function updateMessage(update: Uint8Array): Uint8Array {
  const encoder = encoding.createEncoder();
  encoding.writeVarUint(encoder, 0); // sync
  encoding.writeVarUint(encoder, 2); // update
  encoding.writeVarUint8Array(encoder, update);
  return encoding.toUint8Array(encoder);
}

// How long a write is given to be refused: one the server must refuse is awaited up to 20 s (a
// loaded machine can take over 2 s to get to it; a server without the check never closes), one
// it must take gets 2 s to be refused wrongly, and is then read back.
const REFUSAL_WAIT_MS = 20_000;
const ACCEPTED_WAIT_MS = 2000;

// Sends one update as a raw y-protocols message and reports how the server closes (or that it did
// not within `waitMs`).
async function write(
  url: string,
  document: string,
  update: Uint8Array,
  waitMs = REFUSAL_WAIT_MS,
): Promise<{ code: number; reason: string }> {
  const ws = new WebSocket(`${url}/${document}`);
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  const closed = new Promise<{ code: number; reason: string }>((resolve) =>
    ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })),
  );
  ws.send(updateMessage(update));
  const outcome = await Promise.race([
    closed,
    new Promise<{ code: number; reason: string }>((resolve) =>
      setTimeout(() => resolve({ code: 0, reason: 'open' }), waitMs),
    ),
  ]);
  ws.close();
  return outcome;
}

async function health(url: string): Promise<{ refusals: Record<string, number> }> {
  return (await (await fetch(`${httpBaseFromWs(url)}/healthz`)).json()) as { refusals: Record<string, number> };
}

// What a reader of the document gets: the entries' keys.
async function keysAt(url: string, document: string): Promise<string[]> {
  const doc = new Y.Doc();
  const ws = new WebSocket(`${url}/${document}`);
  ws.binaryType = 'nodebuffer';
  const encoder = encoding.createEncoder();
  encoding.writeVarUint(encoder, 0);
  encoding.writeVarUint(encoder, 0); // step 1
  encoding.writeVarUint8Array(encoder, Y.encodeStateVector(doc));
  const step1 = encoding.toUint8Array(encoder);
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => ws.send(step1));
    ws.once('error', reject);
    ws.on('message', (data: Buffer) => {
      const decoder = decoding.createDecoder(new Uint8Array(data));
      if (decoding.readVarUint(decoder) !== 0) return;
      const type = readSyncMessage(decoder, encoding.createEncoder(), doc, null);
      if (type === 1) resolve();
    });
  });
  ws.close();
  return [...doc.getMap('entries').keys()].sort();
}

test.before(async () => {
  dir = temporaryDirectory('outpost-attack-values-');
  coordinator = await startCoordinatorProcess(join(dir, 'coordinator'), join(dir, 'coordinator.log'), 0, [
    '--idle-unload',
    '1',
  ]);
  relay = await startRelayProcess(join(dir, 'relay'), join(dir, 'relay.log'), [coordinator.url], {
    extra: ['--idle-unload', '1'],
  });
});

test.after(async () => {
  await relay?.stop();
  await coordinator?.stop();
  removeDirectory(dir);
});

test('a site client packing empty arrays into an update is refused by the relay (4413), and nothing is stored', async () => {
  // 8,191 arrays in ~16 KB: ~1 MB of heap in every server that opens the document.
  const dense = updateSetting('dense', arrayTree(12));
  const outcome = await write(relay.url, 'hosts/site-1/status', dense);
  assert.is(outcome.code, 4413, `relay answered ${outcome.code} ${outcome.reason}`);
  assert.match(outcome.reason, /objects and arrays in \d+ bytes, more than 64 per KiB/);
  assert.ok((await health(relay.url)).refusals.valueShape! >= 1, 'counted in /healthz');
  // A well-formed entry still goes through the relay to the coordinator.
  const good = await write(
    relay.url,
    'hosts/site-1/status',
    updateSetting('good', { note: 'x'.repeat(200) }),
    ACCEPTED_WAIT_MS,
  );
  assert.is(good.code, 0, `a well-formed write was refused: ${good.code} ${good.reason}`);
  await waitFor(
    'the good entry upstream',
    async () => (await keysAt(coordinator.url, 'hosts/site-1/status')).includes('good'),
    15_000,
  );
  assert.equal(await keysAt(relay.url, 'hosts/site-1/status'), ['good']);
  assert.equal(await keysAt(coordinator.url, 'hosts/site-1/status'), ['good']);
});

test('values nested past 64 levels are refused by the relay and by the coordinator', async () => {
  const deep = updateSetting('deep', nestedObjects(200));
  for (const server of [relay, coordinator]) {
    const outcome = await write(server.url, 'hosts/site-2/status', deep);
    assert.is(outcome.code, 4413, `answered ${outcome.code} ${outcome.reason}`);
    assert.match(outcome.reason, /nests deeper than 64 levels/);
  }
  // 64 levels are what canonical JSON signs: accepted.
  const ok = await write(
    coordinator.url,
    'hosts/site-2/status',
    updateSetting('ok', nestedObjects(62)),
    ACCEPTED_WAIT_MS,
  );
  assert.is(ok.code, 0, `answered ${ok.code} ${ok.reason}`);
  assert.equal(await keysAt(coordinator.url, 'hosts/site-2/status'), ['ok']);
  assert.ok((await health(coordinator.url)).refusals.valueShape! >= 1);
});

test('the coordinator refuses packed updates from its own clients too', async () => {
  const flat = updateSetting(
    'flat',
    Array.from({ length: 4000 }, () => ({})),
  );
  const outcome = await write(coordinator.url, 'hosts/site-3/status', flat);
  assert.is(outcome.code, 4413, `answered ${outcome.code} ${outcome.reason}`);
  assert.equal(await keysAt(coordinator.url, 'hosts/site-3/status'), []);
});

test.run();
