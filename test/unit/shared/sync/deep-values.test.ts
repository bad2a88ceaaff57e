import fc from 'fast-check';
import * as encoding from 'lib0/encoding';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as Y from 'yjs';
import {
  defuseDeepValues,
  jsonTextShape,
  MAX_VALUE_DEPTH,
  MAX_VALUE_OBJECTS_PER_KIB,
  Reader,
  skipAnyValue,
} from '../../../../shared/sync/deep-values.js';

// The walker that defuses values nested too deep or packed too dense before Yjs decodes them
// (docs/fuzzing.md, findings 10 and 8): its depth and container count must be the true ones of
// what lib0 would decode, and an update within both bounds must pass through byte-identical.

// How deep a value nests (objects, arrays and Uint8Arrays count one level each), as the servers
// (coordinator/update-values.ts) and the fuzzer (test/fuzz/known.ts) count it.
function nestingDepth(value: unknown): number {
  let deepest = 0;
  const stack: [unknown, number][] = [[value, 0]];
  while (stack.length > 0) {
    const [node, depth] = stack.pop()!;
    if (node === null || typeof node !== 'object') continue;
    deepest = Math.max(deepest, depth + 1);
    if (ArrayBuffer.isView(node)) continue;
    for (const child of Object.values(node)) stack.push([child, depth + 1]);
  }
  return deepest;
}

// How many objects, arrays and Uint8Arrays a value holds, as the servers count them.
function containerCount(value: unknown): number {
  let count = 0;
  const stack: unknown[] = [value];
  while (stack.length > 0) {
    const node = stack.pop();
    if (node === null || typeof node !== 'object') continue;
    count += 1;
    if (!ArrayBuffer.isView(node)) stack.push(...Object.values(node));
  }
  return count;
}

// Empty arrays packed two to a level: 2^(depth+1) − 1 arrays in about twice as many bytes.
function packed(depth: number): unknown[] {
  let value: unknown[] = [];
  for (let i = 0; i < depth; i++) value = [value, value];
  return value;
}

const leaf = fc.oneof(
  fc.constant(null),
  fc.constant(undefined),
  fc.boolean(),
  fc.integer(),
  fc.double({ noNaN: true }),
  fc.float({ noNaN: true }),
  fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }),
  fc.string(),
  fc.uint8Array({ maxLength: 8 }),
);

// Random trees, and random chains wrapped up to 150 levels (past the limit of 64).
const { tree } = fc.letrec((tie) => ({
  tree: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    leaf,
    fc.array(tie('tree'), { maxLength: 4 }),
    fc.dictionary(fc.string({ maxLength: 6 }), tie('tree'), { maxKeys: 4, noNullPrototype: true }),
  ),
}));
const chain = fc
  .tuple(fc.array(fc.boolean(), { maxLength: 150 }), tree)
  .map(([wrappers, inner]) =>
    wrappers.reduce<unknown>((value, asObject) => (asObject ? { k: value, n: 1 } : [1, value]), inner),
  );
const anyValue = fc.oneof(tree, chain, fc.integer({ min: 0, max: 9 }).map(packed));

test('skipAnyValue: the depth and container count of any lib0 value are its true ones, and it reads exactly its bytes', () => {
  fc.assert(
    fc.property(anyValue, fc.uint8Array({ maxLength: 4 }), (value, trailer) => {
      const encoder = encoding.createEncoder();
      encoding.writeAny(encoder, value as never);
      const valueBytes = encoding.length(encoder);
      encoding.writeUint8Array(encoder, trailer);
      const reader = new Reader(encoding.toUint8Array(encoder));
      assert.equal(skipAnyValue(reader), { depth: nestingDepth(value), containers: containerCount(value) });
      assert.is(reader.pos, valueBytes);
    }),
    { numRuns: 3000, seed: 10 },
  );
});

test('skipAnyValue: 100,000 levels without recursion', () => {
  const depth = 100_000;
  const bytes = new Uint8Array(depth * 2 + 1);
  for (let i = 0; i < depth; i++) bytes.set([117, 1], i * 2);
  bytes[depth * 2] = 126;
  assert.equal(skipAnyValue(new Reader(bytes)), { depth, containers: depth });
});

test('jsonTextShape: the depth and container count of JSON text are the parsed value’s', () => {
  fc.assert(
    fc.property(fc.jsonValue(), (value) => {
      assert.equal(jsonTextShape(JSON.stringify(value)), {
        depth: nestingDepth(value),
        containers: containerCount(value),
      });
    }),
    { numRuns: 2000, seed: 10 },
  );
  assert.equal(jsonTextShape('"[[[\\"[{"'), { depth: 0, containers: 0 }, 'brackets inside strings do not count');
});

// A random document: maps, arrays, text with formatting and embeds, XML, subdocuments, deletions,
// with values up to `maxDepth` deep.
type Edit = { kind: number; key: string; value: unknown; at: number; text: string };
const edit = fc.record({
  kind: fc.integer({ min: 0, max: 9 }),
  key: fc.string({ maxLength: 4 }),
  value: anyValue,
  at: fc.nat(),
  text: fc.string({ maxLength: 6 }),
});

// Formatting attributes and embeds are stored as JSON text: bigints become strings, as a writer
// would have to send them.
function asJson(value: unknown): unknown {
  const text = JSON.stringify(value, (_key, v: unknown) => (typeof v === 'bigint' ? String(v) : v));
  return text === undefined ? null : JSON.parse(text);
}

// The value an edit writes (kinds 2 and 3 wrap it in one more object).
function written(e: Edit): unknown {
  if (e.kind === 2) return { level: asJson(e.value) };
  if (e.kind === 3) return { image: asJson(e.value) };
  // Yjs takes no undefined or bigint as a map's or array's own value (inside one, lib0 does).
  return e.value === undefined || typeof e.value === 'bigint' ? null : e.value;
}

function buildDoc(edits: Edit[], clientID: number): Y.Doc {
  const doc = new Y.Doc({ gc: false });
  doc.clientID = clientID;
  const map = doc.getMap('m');
  const array = doc.getArray('a');
  const text = doc.getText('t');
  const xml = doc.getXmlFragment('x');
  for (const e of edits) {
    const { kind, key, at, text: words } = e;
    const plain = written(e) as Record<string, unknown>;
    switch (kind) {
      case 0:
        map.set(key, plain);
        break;
      case 1:
        array.insert(at % (array.length + 1), [plain, words]);
        break;
      case 2:
        text.insert(at % (text.length + 1), words || 'w', { bold: plain });
        break;
      case 3:
        text.insertEmbed(at % (text.length + 1), plain);
        break;
      case 4:
        if (array.length > 0) array.delete(at % array.length, 1);
        break;
      case 5:
        if (text.length > 0) text.delete(at % text.length, Math.min(2, text.length - (at % text.length)));
        break;
      case 6: {
        const element = new Y.XmlElement(`e${key.length}`);
        xml.insert(0, [element]);
        element.setAttribute('a', words);
        element.insert(0, [new Y.XmlText(words)]);
        break;
      }
      case 7:
        map.set(key, new Y.Doc({ guid: `sub-${at}` }));
        break;
      case 8:
        map.delete(key);
        break;
      default: {
        const nested = new Y.Map<unknown>();
        array.insert(0, [nested]);
        nested.set(key, plain);
      }
    }
  }
  return doc;
}

function hasDeepValue(edits: Edit[]): boolean {
  return edits.some((e) => [0, 1, 2, 3, 9].includes(e.kind) && nestingDepth(written(e)) > MAX_VALUE_DEPTH);
}

// The values an update holds as Yjs decodes them (any, JSON, embeds, formats, subdocument
// options), read back with Yjs itself: the oracle for the walk's measure of the whole update.
function decodedValues(update: Uint8Array): unknown[] {
  const values: unknown[] = [];
  for (const struct of Y.decodeUpdate(update).structs) {
    if (!(struct instanceof Y.Item)) continue;
    const content = struct.content;
    if (content instanceof Y.ContentAny || content instanceof Y.ContentJSON) values.push(...content.arr);
    else if (content instanceof Y.ContentEmbed) values.push(content.embed);
    else if (content instanceof Y.ContentFormat) values.push(content.value);
    else if (content instanceof Y.ContentDoc) values.push(content.opts);
  }
  return values;
}

function withinBounds(update: Uint8Array): boolean {
  const values = decodedValues(update);
  const containers = values.reduce<number>((sum, value) => sum + containerCount(value), 0);
  return (
    values.every((value) => nestingDepth(value) <= MAX_VALUE_DEPTH) &&
    containers * 1024 <= update.length * MAX_VALUE_OBJECTS_PER_KIB
  );
}

test('defuseDeepValues: an update within both bounds passes through byte-identical, and only such an update', () => {
  const edits = fc.array(edit, { maxLength: 12 });
  let passed = 0;
  fc.assert(
    fc.property(edits, fc.integer({ min: 1, max: 2 ** 32 }), (edits, clientID) => {
      const doc = buildDoc(edits, clientID);
      for (const update of [Y.encodeStateAsUpdate(doc), Y.encodeStateAsUpdate(doc, Y.encodeStateVector(doc))]) {
        const scan = defuseDeepValues(update);
        assert.is(scan.malformed, false);
        const within = withinBounds(update);
        assert.is(scan.update === update, within, 'the same bytes exactly when within both bounds');
        if (within) {
          assert.equal(scan.replaced, []);
          assert.equal(scan.counts, { depth: 0, objects: 0 });
          passed += 1;
        }
      }
    }),
    { numRuns: 400, seed: 10 },
  );
  assert.ok(passed > 200, `${passed} updates within the bounds`);
});

test('defuseDeepValues: deep and dense values become null, the result is within both bounds, later updates still integrate', () => {
  fc.assert(
    fc.property(fc.array(edit, { maxLength: 10 }), anyValue, (edits, later) => {
      const doc = buildDoc(edits, 7);
      const before = Y.encodeStateVector(doc);
      const first = Y.encodeStateAsUpdate(doc);
      doc.getMap('m').set('later', 'written after');
      doc.getArray('a').insert(0, [typeof later === 'bigint' ? 1 : 'x']);
      const second = Y.encodeStateAsUpdate(doc, before);
      const scan = defuseDeepValues(first);
      assert.is(scan.malformed, false);
      assert.is(scan.counts.depth > 0, hasDeepValue(edits));
      assert.is(scan.replaced.length, Math.min(64, scan.counts.depth + scan.counts.objects));
      for (const value of scan.replaced) {
        if (value.bound === 'depth') assert.ok(value.depth > MAX_VALUE_DEPTH);
        else assert.ok(value.containers * 1024 > value.bytes * MAX_VALUE_OBJECTS_PER_KIB);
        assert.is(value.client, 7);
      }
      assert.ok(withinBounds(scan.update), 'what is left is within both bounds');
      const reader = new Y.Doc({ gc: false });
      Y.applyUpdate(reader, scan.update);
      Y.applyUpdate(reader, defuseDeepValues(second).update);
      assert.is(reader.store.pendingStructs, null, 'nothing waits for a lost update');
      assert.is(reader.getMap('m').get('later'), 'written after');
      assert.is(reader.getArray('a').length, doc.getArray('a').length);
      assert.is(reader.getText('t').length, doc.getText('t').length);
      if (scan.replaced.length === 0) assert.equal(Y.encodeStateAsUpdate(reader), Y.encodeStateAsUpdate(doc));
    }),
    { numRuns: 300, seed: 11 },
  );
});

test('defuseDeepValues: packed arrays become null, a signed-entry-like value beside them stays, later entries apply', () => {
  const writer = new Y.Doc();
  writer.clientID = 43;
  const intents = writer.getMap('intents');
  const entry = { v: 1, generation: 2, closure: `/nix/store/${'a'.repeat(32)}-system`, signature: 'x'.repeat(88) };
  // 8,191 arrays in ~16 KB beside one genuine entry, in one update (finding 8's value).
  writer.transact(() => {
    intents.set('hostile', packed(12));
    intents.set('genuine', entry);
  });
  const first = Y.encodeStateAsUpdate(writer);
  // Then 2,000 empty arrays, one struct each: each value alone is small, the update is dense.
  const list = writer.getArray('list');
  const vector = Y.encodeStateVector(writer);
  for (let i = 0; i < 2000; i++) list.push([[]]);
  intents.set('later', entry);
  const second = Y.encodeStateAsUpdate(writer, vector);

  const scan = defuseDeepValues(first);
  assert.equal(scan.counts, { depth: 0, objects: 1 });
  assert.equal(
    scan.replaced.map(({ client, depth, containers, bound }) => ({ client, depth, containers, bound })),
    [{ client: 43, depth: 13, containers: 8_191, bound: 'objects' }],
  );
  const secondScan = defuseDeepValues(second);
  assert.equal(secondScan.counts, { depth: 0, objects: 2000 });
  assert.is(secondScan.replaced.length, 64, 'the first 64 are listed');
  assert.ok(withinBounds(scan.update) && withinBounds(secondScan.update));
  const reader = new Y.Doc();
  Y.applyUpdate(reader, scan.update);
  Y.applyUpdate(reader, secondScan.update);
  assert.is(reader.store.pendingStructs, null);
  assert.is(reader.getMap('intents').get('hostile'), null);
  assert.equal(reader.getMap('intents').get('genuine'), entry);
  assert.equal(reader.getMap('intents').get('later'), entry);
  assert.equal(reader.getArray('list').toArray(), new Array(2000).fill(null));
});

test('defuseDeepValues: an entry 4,500 levels deep becomes null and the next entry applies', () => {
  const writer = new Y.Doc();
  writer.clientID = 42;
  let deep: unknown = 'bottom';
  for (let i = 0; i < 4_500; i++) deep = { payload: deep };
  const intents = writer.getMap('intents');
  intents.set('hostile', { v: 1, payload: deep });
  const first = Y.encodeStateAsUpdate(writer);
  const vector = Y.encodeStateVector(writer);
  intents.set('genuine', { v: 1, generation: 2 });
  const second = Y.encodeStateAsUpdate(writer, vector);

  const scan = defuseDeepValues(first);
  assert.equal(
    scan.replaced.map(({ client, clock, depth, containers, bound }) => ({ client, clock, depth, containers, bound })),
    [{ client: 42, clock: 0, depth: 4_501, containers: 4_501, bound: 'depth' }],
  );
  const reader = new Y.Doc();
  Y.applyUpdate(reader, scan.update);
  Y.applyUpdate(reader, defuseDeepValues(second).update);
  assert.is(reader.getMap('intents').get('hostile'), null);
  assert.equal(reader.getMap('intents').get('genuine'), { v: 1, generation: 2 });
});

test('defuseDeepValues: truncated or unknown bytes become an empty update, marked malformed', () => {
  const doc = new Y.Doc();
  doc.getMap('m').set('k', { a: [1, 2, 3] });
  const update = Y.encodeStateAsUpdate(doc);
  // Cut inside the structs (the last two bytes are the empty delete set, which is not walked).
  for (let cut = 1; cut < update.length - 2; cut++) {
    const scan = defuseDeepValues(update.subarray(0, cut));
    assert.is(scan.malformed, true, `cut at ${cut}`);
    assert.equal(scan.update, Uint8Array.of(0, 0));
  }
  assert.is(defuseDeepValues(Uint8Array.of(1, 1, 5, 0, 0x1b)).malformed, true, 'unknown content');
});

test('defuseDeepValues: numbers padded with zero bytes, which lib0 accepts, are read as lib0 reads them', () => {
  const doc = new Y.Doc();
  doc.clientID = 5;
  let deep: unknown = 1;
  for (let i = 0; i < 100; i++) deep = [deep];
  doc.getMap('m').set('k', deep as unknown[]);
  const update = Y.encodeStateAsUpdate(doc);
  // The first byte is the count of clients (1): written as 1 followed by twenty zero bytes.
  const padded = new Uint8Array(update.length + 20);
  padded.set([0x81, ...new Array<number>(19).fill(0x80), 0], 0);
  padded.set(update.subarray(1), 21);
  const scan = defuseDeepValues(padded);
  assert.is(scan.malformed, false);
  assert.equal(
    scan.replaced.map((value) => value.depth),
    [100],
  );
  const reader = new Y.Doc();
  Y.applyUpdate(reader, scan.update);
  assert.is(reader.getMap('m').get('k'), null);
});

test.run();
