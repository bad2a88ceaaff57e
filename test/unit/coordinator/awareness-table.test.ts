import fc from 'fast-check';
import * as encoding from 'lib0/encoding';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Awareness, applyAwarenessUpdate, encodeAwarenessUpdate, removeAwarenessStates } from 'y-protocols/awareness';
import * as Y from 'yjs';
import { type AwarenessChanges, AwarenessTable } from '../../../coordinator/awareness-table.js';

// The coordinator's awareness table must behave exactly like a y-protocols Awareness that holds
// no local state (what the coordinator used before, and what stock y-websocket servers use).

function update(entries: [id: number, clock: number, state: unknown][]): Uint8Array {
  const encoder = encoding.createEncoder();
  encoding.writeVarUint(encoder, entries.length);
  for (const [id, clock, state] of entries) {
    encoding.writeVarUint(encoder, id);
    encoding.writeVarUint(encoder, clock);
    encoding.writeVarString(encoder, JSON.stringify(state));
  }
  return encoding.toUint8Array(encoder);
}

// A y-protocols Awareness holding no state of its own, and a table, each recording its changes.
function pair(): {
  reference: Awareness;
  expected: AwarenessChanges[];
  table: AwarenessTable;
  seen: AwarenessChanges[];
} {
  const reference = new Awareness(new Y.Doc());
  // Its own interval timer would keep the test process alive.
  clearInterval(reference._checkInterval);
  reference.setLocalState(null);
  const expected: AwarenessChanges[] = [];
  reference.on('update', (changes: AwarenessChanges) => expected.push(changes));
  const seen: AwarenessChanges[] = [];
  const table = new AwarenessTable((changes) => seen.push(changes));
  return { reference, expected, table, seen };
}

test('the same updates give the same changes and the same encoded states as y-protocols', () => {
  const { reference, expected, table, seen } = pair();
  const steps: (() => [Uint8Array, number[]] | [null, number[]])[] = [
    () => [update([[7, 0, { role: 'agent' }]]), [7]], // clock 0 of an unknown client: ignored
    () => [update([[7, 1, { role: 'agent' }]]), [7]],
    () => [update([[7, 1, { role: 'other' }]]), [7]], // same clock: ignored
    () => [
      update([
        [7, 2, { role: 'agent' }],
        [8, 3, { role: 'admin' }],
      ]),
      [7, 8],
    ],
    () => [update([[8, 3, null]]), [7, 8]], // same clock, null: removed
    () => [update([[8, 3, { role: 'admin' }]]), [7, 8]], // stale: stays removed
    () => [update([[8, 4, { role: 'admin' }]]), [7, 8]], // back, as "updated"
    () => [update([[9, 5, null]]), [7, 8, 9]],
    () => [null, [7, 9]], // remove 7 and 9 (a connection closed)
    () => [update([[7, 2, { role: 'agent' }]]), [7]],
    () => [update([[7, 3, { role: 'agent' }]]), [7]],
  ];
  for (const step of steps) {
    const [bytes, ids] = step();
    if (bytes) {
      applyAwarenessUpdate(reference, bytes, 'peer');
      table.apply(bytes, 'peer');
    } else {
      removeAwarenessStates(reference, ids, null);
      table.remove(ids, null);
    }
    assert.equal(seen, expected);
    assert.equal(table.size, reference.getStates().size);
    assert.equal(table.ids(), [...reference.getStates().keys()]);
    const known = ids.filter((id) => reference.meta.has(id));
    assert.equal([...table.encode(known)], [...encodeAwarenessUpdate(reference, known)]);
  }
  assert.ok(expected.length >= 6, 'the steps changed something');
});

test('any sequence of updates: the same changes, states and encoding as y-protocols', () => {
  const entry = fc.tuple(
    fc.integer({ min: 1, max: 6 }),
    fc.integer({ min: 0, max: 6 }),
    fc.oneof(fc.constant(null), fc.jsonValue({ maxDepth: 2 })),
  );
  fc.assert(
    fc.property(fc.array(fc.array(entry, { minLength: 1, maxLength: 4 }), { maxLength: 12 }), (updates) => {
      const { reference, expected, table, seen } = pair();
      for (const entries of updates) {
        const bytes = update(entries);
        applyAwarenessUpdate(reference, bytes, 'peer');
        table.apply(bytes, 'peer');
        assert.equal(seen, expected);
        assert.equal(table.ids(), [...reference.getStates().keys()]);
        // The reference's own client (no state, like the coordinator) is not the peers'.
        const known = [...reference.meta.keys()].filter((id) => id !== reference.clientID);
        assert.equal([...table.encode(known)], [...encodeAwarenessUpdate(reference, known)]);
      }
      reference.destroy();
    }),
    { numRuns: 500, seed: 95 },
  );
});

test('a malformed update throws and changes nothing', () => {
  const table = new AwarenessTable(() => assert.unreachable('no change expected'));
  assert.throws(() => table.apply(new Uint8Array([5, 9, 9, 9, 9, 9]), null));
  assert.is(table.size, 0);
});

test('states not renewed within 30 s expire, clocks stay', () => {
  const removed: number[] = [];
  const table = new AwarenessTable((changes, origin) => {
    if (origin === 'timeout') removed.push(...changes.removed);
  });
  table.apply(update([[1, 1, { role: 'agent' }]]), null);
  table.expire(Date.now() + 29_000);
  assert.equal(removed, []);
  table.expire(Date.now() + 30_000);
  assert.equal(removed, [1]);
  assert.is(table.size, 0);
  assert.equal([...table.encode([1])], [...update([[1, 1, null]])]);
});

test.run();
