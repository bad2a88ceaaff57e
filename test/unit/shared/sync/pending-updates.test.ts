import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as Y from 'yjs';
import {
  boundPendingUpdates,
  describePendingUpdates,
  MAX_PENDING_UPDATE_BYTES,
  pendingUpdateBytes,
} from '../../../../shared/sync/pending-updates.js';

// Updates that wait for a struct their writer withholds (shared/sync/pending-updates.ts).

// `count` updates of ~`size` bytes each from writer `client`, the first of which a reader never gets.
function withheld(client: number, count: number, size: number): { first: Uint8Array; rest: Uint8Array[] } {
  const writer = new Y.Doc();
  writer.clientID = client;
  const updates: Uint8Array[] = [];
  writer.on('update', (update: Uint8Array) => updates.push(update));
  for (let i = 0; i < count; i++) writer.getArray('a').push([{ n: i, padding: 'x'.repeat(size) }]);
  return { first: updates[0]!, rest: updates.slice(1) };
}

test('updates waiting for a withheld struct are described: writer, what is missing, bytes', () => {
  const reader = new Y.Doc();
  assert.is(describePendingUpdates(reader, 'd'), null);
  const { first, rest } = withheld(9, 4, 100);
  for (const update of rest) Y.applyUpdate(reader, update);
  assert.equal(reader.getArray('a').toArray(), []);
  const pending = describePendingUpdates(reader, 'd');
  assert.equal(pending?.writers, [9]);
  assert.equal(pending?.missing, [{ client: 9, clock: 0 }]);
  assert.is(pending?.bytes, pendingUpdateBytes(reader));
  assert.ok(pending!.bytes > 300);
  // Within the bound: kept, and integrated once the missing struct arrives.
  assert.is(boundPendingUpdates(reader, 'd'), null);
  Y.applyUpdate(reader, first);
  assert.is(reader.getArray('a').length, 4);
  assert.is(describePendingUpdates(reader, 'd'), null);
});

test('past the bound they are dropped; the writer sends them again at its next sync and they integrate', () => {
  const reader = new Y.Doc();
  const writer = new Y.Doc();
  writer.clientID = 11;
  const updates: Uint8Array[] = [];
  writer.on('update', (update: Uint8Array) => updates.push(update));
  for (let i = 0; i < 20; i++) writer.getArray('a').push([{ n: i, padding: 'x'.repeat(64 * 1024) }]);
  let dropped = null;
  for (const update of updates.slice(1)) {
    Y.applyUpdate(reader, update);
    dropped ??= boundPendingUpdates(reader, 'd');
    assert.ok(pendingUpdateBytes(reader) <= MAX_PENDING_UPDATE_BYTES);
  }
  assert.ok(dropped && dropped.bytes > MAX_PENDING_UPDATE_BYTES, JSON.stringify(dropped));
  assert.equal(dropped.writers, [11]);
  // An honest writer's step 2 answers the reader's state vector, which never covered them.
  Y.applyUpdate(reader, Y.encodeStateAsUpdate(writer, Y.encodeStateVector(reader)));
  assert.is(reader.getArray('a').length, 20);
  assert.is(pendingUpdateBytes(reader), 0);
});

test('deletions of items never received wait too, and count', () => {
  const writer = new Y.Doc();
  writer.getArray('a').push([1, 2, 3]);
  const vector = Y.encodeStateVector(writer);
  writer.getArray('a').delete(0, 3);
  const reader = new Y.Doc();
  Y.applyUpdate(reader, Y.encodeStateAsUpdate(writer, vector));
  assert.ok(pendingUpdateBytes(reader) > 0);
  assert.ok(describePendingUpdates(reader, 'd')!.bytes > 0);
});

test.run();
