import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as Y from 'yjs';
import { diffLosesContent, historySince, splitItemsFirst } from '../../../../shared/documents/history-forward.js';

// A relay passes on a status document's history from its log, items first, so a result deleted
// after the relay logged it still reaches the coordinator with its content (relay/bridge.ts).

// A garbage-collecting document like a status document, its updates logged as a server logs them.
function loggedDoc(): { doc: Y.Doc; log: Uint8Array[] } {
  const doc = new Y.Doc({ gc: true });
  const log: Uint8Array[] = [];
  doc.on('update', (update: Uint8Array) => log.push(update));
  return { doc, log };
}

const values = (doc: Y.Doc): unknown[] => doc.getArray('results').toArray();

// Every value ever inserted into 'results', in the order the updates are applied one by one to a
// garbage-collecting receiver that logs what each adds (as the coordinator does).
function receivedHistory(updates: Uint8Array[], base?: Uint8Array): { seen: unknown[]; doc: Y.Doc } {
  const doc = new Y.Doc({ gc: true });
  if (base) Y.applyUpdate(doc, base);
  const seen: unknown[] = [];
  doc.getArray('results').observe((event) => {
    for (const delta of event.changes.delta) if (delta.insert) seen.push(...(delta.insert as unknown[]));
  });
  for (const update of updates) Y.applyUpdate(doc, update);
  return { seen, doc };
}

test('split: items alone, then deletions alone; together they make the same document', () => {
  const update = Y.encodeStateAsUpdate(new Y.Doc({ gc: false }));
  assert.equal(splitItemsFirst(update), { items: null, deletions: null }, 'an empty update has neither');
  const full = (() => {
    const keeper = new Y.Doc({ gc: false });
    keeper.getArray('results').push([{ seq: 1 }, { seq: 2 }, { seq: 3 }]);
    keeper.getArray('results').delete(0, 2);
    return Y.encodeStateAsUpdate(keeper);
  })();
  const { items, deletions } = splitItemsFirst(full);
  assert.ok(items && deletions);
  assert.is(Y.decodeUpdate(items!).ds.clients.size, 0, 'no deletions in the items part');
  assert.is(Y.decodeUpdate(deletions!).structs.length, 0, 'no items in the deletions part');
  const { seen, doc: receiver } = receivedHistory([items!, deletions!]);
  assert.equal(seen, [{ seq: 1 }, { seq: 2 }, { seq: 3 }], 'every value arrives with its content');
  assert.equal(values(receiver), [{ seq: 3 }]);
  // Deletions alone stay as they are.
  const onlyDeletions = splitItemsFirst(deletions!);
  assert.is(onlyDeletions.items, null);
  assert.ok(onlyDeletions.deletions);
});

test('a state diff of a garbage-collected document loses what was deleted; the log history since does not', async () => {
  const { doc, log } = loggedDoc();
  const results = doc.getArray('results');
  // The receiver (the coordinator) held #1 and #2 when the link went down.
  results.push([{ seq: 1 }]);
  results.push([{ seq: 2 }]);
  const heldVector = Y.encodeStateVector(doc);
  const heldState = Y.encodeStateAsUpdate(doc);
  // Offline: 100 more results, and the agent pruning all but the newest 10 (each in its own update).
  for (let seq = 3; seq <= 102; seq += 1) {
    if (results.length > 10) results.delete(0, results.length - 10);
    results.push([{ seq, output: 'x'.repeat(2000) }]);
  }
  assert.ok(diffLosesContent(doc, heldVector));
  const diff = receivedHistory([Y.encodeStateAsUpdate(doc, heldVector)], heldState);
  assert.is(diff.seen.length, values(doc).length, 'the diff carries only the values still there');
  // 2 KiB per value, batches of 16 KiB: several batches, in order.
  const parts = await historySince(log, heldVector, 16 * 1024);
  assert.ok(parts.length >= 10, `${parts.length} parts`);
  const history = receivedHistory([...parts, Y.encodeStateAsUpdate(doc, heldVector)], heldState);
  assert.equal(
    history.seen.map((v) => (v as { seq: number }).seq),
    Array.from({ length: 100 }, (_, i) => i + 3),
    'every result since, with its content',
  );
  assert.equal(values(history.doc), values(doc), 'and the same document in the end');
  // Nothing deleted beyond what the receiver holds: a plain diff loses nothing.
  assert.not.ok(diffLosesContent(doc, Y.encodeStateVector(doc)));
  const fresh = loggedDoc();
  fresh.doc.getArray('results').push([{ seq: 1 }]);
  assert.not.ok(diffLosesContent(fresh.doc, Uint8Array.of(0)));
});

test.run();
