import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as Y from 'yjs';
import { createRefusals, DEFAULT_LIMITS, WriteLimits } from '../../../coordinator/limits.js';
import { updateValueProblem as problemWith } from '../../../coordinator/update-values.js';

const MAX_VALUE_DEPTH = DEFAULT_LIMITS.maxValueDepth;
const updateValueProblem = (update: Uint8Array): string | null => problemWith(update, DEFAULT_LIMITS);

import { createMemoryLogger } from '../../../shared/node/log.js';

function updateOf(write: (doc: Y.Doc) => void, doc = new Y.Doc()): Uint8Array {
  const updates: Uint8Array[] = [];
  const capture = (u: Uint8Array): void => void updates.push(u);
  doc.on('update', capture);
  write(doc);
  doc.off('update', capture);
  return Y.mergeUpdates(updates);
}

const nestedArrays = (levels: number): unknown => {
  let value: unknown = [];
  for (let i = 1; i < levels; i++) value = [value];
  return value;
};
const arrayTree = (depth: number): unknown[] => (depth === 0 ? [] : [arrayTree(depth - 1), arrayTree(depth - 1)]);

test('entries the project writes (objects of strings) pass', () => {
  const entry = {
    payload: { host: 'web-1', closure: `/nix/store/${'a'.repeat(32)}-system`, generation: 7, extra: { note: 'x' } },
    signatures: [{ keyId: 'alice', signature: 'A'.repeat(88) }],
  };
  assert.is(updateValueProblem(updateOf((doc) => doc.getMap('entries').set('k', entry))), null);
  assert.is(updateValueProblem(updateOf((doc) => doc.getArray('log').push([entry, entry, 'text', 5]))), null);
  assert.is(updateValueProblem(updateOf((doc) => doc.getText('t').insert(0, 'plain text'))), null);
});

test(`values nested ${MAX_VALUE_DEPTH} levels pass; one more is refused, in any kind of content`, () => {
  const padding = 'p'.repeat(4096); // so the density rule is not what refuses
  const ok = updateOf((doc) => doc.getMap('m').set('k', [padding, nestedArrays(MAX_VALUE_DEPTH - 1)]));
  assert.is(updateValueProblem(ok), null);
  const deep = updateOf((doc) => doc.getMap('m').set('k', [padding, nestedArrays(MAX_VALUE_DEPTH)]));
  assert.match(updateValueProblem(deep) ?? '', /nests deeper than 64 levels/);
  const deepObject = updateOf((doc) => {
    let value: Record<string, unknown> = { padding };
    for (let i = 0; i < 100; i++) value = { n: value };
    doc.getArray('a').push([value]);
  });
  assert.match(updateValueProblem(deepObject) ?? '', /nests deeper/);
  const deepFormat = updateOf((doc) => doc.getText('t').insert(0, padding, { bold: nestedArrays(80) }));
  assert.match(updateValueProblem(deepFormat) ?? '', /nests deeper/);
  const deepEmbed = updateOf((doc) => doc.getText('t').insertEmbed(0, { e: nestedArrays(80), padding }));
  assert.match(updateValueProblem(deepEmbed) ?? '', /nests deeper/);
});

test('an update packed with empty arrays and objects is refused, whatever the depth', () => {
  const tree = updateOf((doc) => doc.getMap('m').set('k', arrayTree(10)));
  assert.match(updateValueProblem(tree) ?? '', /objects and arrays in \d+ bytes/);
  const flat = updateOf((doc) => doc.getArray('a').push(Array.from({ length: 500 }, () => ({}))));
  assert.match(updateValueProblem(flat) ?? '', /more than 64 per KiB/);
});

test('WriteLimits refuses such a write with 4413 and counts it; resending what the document has is not refused', () => {
  const refusals = createRefusals();
  const limits = new WriteLimits(DEFAULT_LIMITS, refusals, createMemoryLogger('test').logger);
  const target = { name: 'hosts/h1/status', doc: new Y.Doc(), stateBytes: 0 };
  const dense = updateOf((doc) => doc.getMap('m').set('k', arrayTree(8)));
  const refusal = limits.check(target, dense, 'w');
  assert.is(refusal?.limit, 'value-shape');
  assert.is(refusal?.code, 4413);
  assert.is(refusals.valueShape, 1);
  const small = updateOf((doc) => doc.getMap('m').set('k', [[], [], [], [], [], [], [], []]));
  assert.ok(small.length <= 64);
  assert.is(limits.check(target, small, 'w')?.limit, 'value-shape', 'small updates are checked too');
  // Content the document already holds (stored before this check existed) resent in a sync step 2.
  Y.applyUpdate(target.doc, small);
  assert.is(limits.check(target, small, 'w'), null);
  Y.applyUpdate(target.doc, dense);
  assert.is(limits.check(target, dense, 'w'), null);
});

test.run();
