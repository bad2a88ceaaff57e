import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as Y from 'yjs';
import { isDelivered, trackDelivery } from '../../../agent/status-delivery.js';
import { type RunningCoordinator, startCoordinator } from '../../../coordinator/server.js';
import { connectDocument, type DocumentConnection } from '../../../shared/node/connect.js';
import { createMemoryLogger } from '../../../shared/node/log.js';
import { removeDirectory, temporaryDirectory, waitFor } from '../../harness/processes.js';

// What the agent learns of what its upstream holds (agent/status-delivery.ts), against a real
// coordinator over a real websocket: its step 1 at connect, then the answers to probes.

let dir = '';
let coordinator: RunningCoordinator;
const open: DocumentConnection[] = [];

test.before(async () => {
  dir = temporaryDirectory('status-delivery');
  coordinator = await startCoordinator({
    dataDir: dir,
    listen: '127.0.0.1',
    port: 0,
    maxPayload: 1024 * 1024,
    idleUnloadMs: 60_000,
    logger: createMemoryLogger('coordinator').logger,
  });
});

test.after(async () => {
  for (const c of open) c.close();
  await coordinator.close();
  removeDirectory(dir);
});

// The status document as the agent runs it: connected, tracked, probing after each own write.
function agentSide(url: string, name: string, doc: Y.Doc) {
  const connection = connectDocument(url, name, { doc, identity: null, baseBackoffMs: 50, maxBackoffMs: 200 });
  open.push(connection);
  const delivered = new Map<number, number>();
  let confirmations = 0;
  const tracker = trackDelivery(connection.provider, delivered, () => {
    confirmations += 1;
  });
  doc.on('update', (_update: Uint8Array, origin: unknown) => {
    if (origin !== connection.provider) tracker.requestProbe();
  });
  const holds = (index: number): boolean => {
    let seen = 0;
    for (let item = doc.getArray('results')._start; item !== null; item = item.right) {
      if (item.deleted) continue;
      if (index < seen + item.length)
        return isDelivered(delivered, { client: item.id.client, clock: item.id.clock + index - seen });
      seen += item.length;
    }
    return false;
  };
  return { connection, delivered, tracker, holds, confirmations: () => confirmations };
}

// A result-sized value (the coordinator refuses updates dense with tiny objects).
const value = (seq: number) => ({ seq, outputTail: 'x'.repeat(200) });

// What the coordinator holds of a document, read from its own copy.
async function serverValues(name: string): Promise<unknown[]> {
  const hosted = await coordinator.host.pin(name);
  try {
    return hosted.doc.getArray('results').toArray();
  } finally {
    coordinator.host.unpin(name);
  }
}

test('written on a live connection: delivered once the coordinator answered the probe, and it holds them', async () => {
  const doc = new Y.Doc({ gc: true });
  const side = agentSide(coordinator.url, 'hosts/d1/status', doc);
  await waitFor('the first step 1', () => side.connection.provider.synced);
  for (let seq = 1; seq <= 3; seq += 1) doc.getArray('results').push([value(seq)]);
  assert.not.ok(side.holds(2), 'not before the answer');
  await waitFor('delivery of #3', () => side.holds(2), 10_000, 20);
  assert.equal(await serverValues('hosts/d1/status'), [value(1), value(2), value(3)]);
  side.tracker.stop();
});

test('written before connecting: the server’s step 1 does not cover them; the probe after its answer does', async () => {
  const doc = new Y.Doc({ gc: true });
  for (let seq = 1; seq <= 5; seq += 1) doc.getArray('results').push([value(seq)]);
  const side = agentSide(coordinator.url, 'hosts/d2/status', doc);
  await waitFor('delivery of #5', () => side.holds(4), 10_000, 20);
  assert.equal((await serverValues('hosts/d2/status')).length, 5);
  // A second agent copy connecting later learns at once from the server's step 1.
  const again = new Y.Doc({ gc: true });
  Y.applyUpdate(again, Y.encodeStateAsUpdate(doc));
  const second = agentSide(coordinator.url, 'hosts/d2/status', again);
  await waitFor('the server step 1', () => second.confirmations() > 0, 10_000, 20);
  assert.ok(second.holds(4));
  side.tracker.stop();
  second.tracker.stop();
});

test('no upstream reachable: nothing is delivered', async () => {
  const doc = new Y.Doc({ gc: true });
  doc.getArray('results').push([value(1)]);
  const side = agentSide('ws://127.0.0.1:9', 'hosts/d3/status', doc);
  side.tracker.requestProbe();
  await new Promise((resolve) => setTimeout(resolve, 1000));
  assert.is(side.delivered.size, 0);
  assert.not.ok(side.holds(0));
  side.tracker.stop();
});

test.run();
