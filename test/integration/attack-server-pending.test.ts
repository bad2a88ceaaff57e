import { join } from 'node:path';
import * as encoding from 'lib0/encoding';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { WebSocket } from 'ws';
import * as syncProtocol from 'y-protocols/sync';
import * as Y from 'yjs';
import { connectDocument, waitForSync } from '../../shared/node/connect.js';
import { startRelayProcess } from '../bench/relay-fixtures.js';
import { logEvents } from '../harness/lifecycle-fleet.js';
import {
  type DaemonProcess,
  removeDirectory,
  startCoordinatorProcess,
  temporaryDirectory,
  waitFor,
} from '../harness/processes.js';

// A writer that withholds one of its structs and sends the updates after it: each waits for the
// missing one in the server's copy of the document for ever. Nothing is stored or charged to the
// writer's quota (an update that adds nothing integrated is not a write), so before the bound a
// client could park any amount of memory in a relay or coordinator (the fuzzer's relay held 1.15
// MiB of such updates in one document). From a site client's position, against real processes:
// past 1 MiB waiting the server drops them, says so and closes the writer's connection (4413); an
// honest writer that reconnects syncs them in order.

type Server = DaemonProcess & { url: string; port: number };
let dir = '';
let coordinator: Server;
let relay: Server;

test.before(async () => {
  dir = temporaryDirectory('outpost-attack-pending-');
  // Messages and updates up to 4 MiB, so that the honest writer's step 2 (all 21 entries) fits in one.
  const limits = ['--idle-unload', '1', '--max-payload', '4194304', '--max-update-size', '4194304'];
  coordinator = await startCoordinatorProcess(join(dir, 'coordinator'), join(dir, 'coordinator.log'), 0, limits);
  relay = await startRelayProcess(join(dir, 'relay'), join(dir, 'relay.log'), [coordinator.url], { extra: limits });
});

test.after(async () => {
  await relay?.stop();
  await coordinator?.stop();
  if (!process.env.OUTPOST_KEEP_TEST_DIR) removeDirectory(dir);
});

// A writer's doc and every update it made: 21 entries of 64 KiB each.
function writerUpdates(client: number): { writer: Y.Doc; updates: Uint8Array[] } {
  const writer = new Y.Doc();
  writer.clientID = client;
  const updates: Uint8Array[] = [];
  writer.on('update', (update: Uint8Array) => updates.push(update));
  for (let i = 0; i <= 20; i++) writer.getArray('entries').push([{ n: i, note: 'x'.repeat(64 * 1024) }]);
  return { writer, updates };
}

// Sends each update as a raw y-protocols update message on one connection; how the server closed
// it, or that it was still open 20 s after the last. The bound is for a server without the
// defence (it never closes); one that has it may take over 2 s to get to the 20th update on a
// loaded machine (262 ms for the relay's at load 4), and a shorter wait then failed a good server.
async function sendUpdates(
  url: string,
  document: string,
  updates: Uint8Array[],
): Promise<{ code: number; reason: string }> {
  const ws = new WebSocket(`${url}/${document}`);
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  const closed = new Promise<{ code: number; reason: string }>((resolve) =>
    ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })),
  );
  for (const update of updates) {
    const encoder = encoding.createEncoder();
    encoding.writeVarUint(encoder, 0); // sync
    syncProtocol.writeUpdate(encoder, update);
    ws.send(encoding.toUint8Array(encoder));
  }
  const outcome = await Promise.race([
    closed,
    new Promise<{ code: number; reason: string }>((resolve) =>
      setTimeout(() => resolve({ code: 0, reason: 'open' }), 20_000),
    ),
  ]);
  ws.close();
  return outcome;
}

for (const [name, server] of [
  ['relay', () => relay],
  ['coordinator', () => coordinator],
] as const) {
  test(`${name}: updates waiting past 1 MiB for a withheld struct are dropped and reported, the writer's connection closed; synced again, they integrate`, async () => {
    const document = `hosts/pending-${name}/status`;
    const { writer, updates } = writerUpdates(name === 'relay' ? 4242 : 4343);
    const outcome = await sendUpdates(server().url, document, updates.slice(1));
    assert.is(outcome.code, 4413, `answered ${outcome.code} ${outcome.reason}`);
    assert.match(outcome.reason, /structs never sent/);
    const dropped = await waitFor(
      `the ${name} to report what it dropped`,
      () => logEvents(server(), 'updates-pending-dropped').find((e) => e.document === document),
      10_000,
    );
    assert.equal(dropped.writers, [writer.clientID]);
    assert.equal(dropped.missing, [{ client: writer.clientID, clock: 0 }]);
    assert.ok(Number(dropped.bytes) > 1024 * 1024);
    // The honest writer reconnects: its step 2 carries all of it, in order.
    const connection = connectDocument(server().url, document, { doc: writer, identity: null });
    try {
      await waitForSync(connection, 15_000);
      const reader = connectDocument(server().url, document, { identity: null });
      try {
        await waitFor(
          'all 21 entries at a reader',
          async () => {
            await waitForSync(reader, 15_000);
            return reader.doc.getArray('entries').length === 21;
          },
          15_000,
        );
      } finally {
        reader.close();
      }
    } finally {
      connection.close();
    }
  });
}

test.run();
