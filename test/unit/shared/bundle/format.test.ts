import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as Y from 'yjs';
import {
  type BundleEntry,
  decodeBundle,
  encodeBundle,
  encodedBundleSize,
  manifestFor,
} from '../../../../shared/bundle/format.js';

function entries(): BundleEntry[] {
  const desired = new Y.Doc();
  desired.getMap('intents').set('h1', 'generation 2');
  const policy = new Y.Doc();
  policy.getArray('policies').push(['v1', 'v2']);
  return [
    { name: 'hosts/h1/desired', update: Y.encodeStateAsUpdate(desired), full: true },
    { name: 'fleet/policy', update: Y.encodeStateAsUpdate(policy), full: false },
    { name: 'fleet/timestamp', update: new Uint8Array(0), full: true },
  ];
}

const meta = {
  createdAt: '2026-12-02T12:00:00.000Z',
  creator: { name: 'alice', publicKey: 'AAAA' },
  source: 'ws://127.0.0.1:1',
  hosts: ['h1'],
};

test('a bundle decodes to the manifest and updates it was made from', () => {
  const list = entries();
  const manifest = manifestFor(list, meta);
  const bytes = encodeBundle(manifest, list);
  assert.is(bytes.length, encodedBundleSize(manifest));
  const decoded = decodeBundle(bytes);
  if (!decoded.ok) throw new Error(decoded.reason);
  assert.equal(decoded.bundle.manifest, manifest);
  for (const entry of list) assert.equal([...decoded.bundle.updates.get(entry.name)!], [...entry.update]);
  const doc = new Y.Doc();
  Y.applyUpdate(doc, decoded.bundle.updates.get('hosts/h1/desired')!);
  assert.is(doc.getMap('intents').get('h1'), 'generation 2');
});

test('one flipped byte in an update is refused, naming the document', () => {
  const list = entries();
  const bytes = encodeBundle(manifestFor(list, meta), list);
  // The last update is empty, the one before it (fleet/policy) ends just before the trailing hash
  // and the empty update's length field.
  const flipped = bytes.slice();
  flipped[bytes.length - 32 - 4 - 2]! ^= 0x01;
  const decoded = decodeBundle(flipped);
  assert.not.ok(decoded.ok);
  if (!decoded.ok) {
    assert.match(decoded.reason, 'fleet/policy');
    assert.match(decoded.reason, 'SHA-256');
  }
});

test('every single flipped byte and every truncation is refused', () => {
  const list = entries();
  const bytes = encodeBundle(manifestFor(list, meta), list);
  for (let i = 0; i < bytes.length; i += 1) {
    const flipped = bytes.slice();
    flipped[i]! ^= 0x80;
    assert.not.ok(decodeBundle(flipped).ok, `byte ${i} flipped was accepted`);
  }
  for (let length = 0; length < bytes.length; length += 1)
    assert.not.ok(decodeBundle(bytes.subarray(0, length)).ok, `cut to ${length} bytes was accepted`);
  const longer = new Uint8Array(bytes.length + 1);
  longer.set(bytes);
  assert.not.ok(decodeBundle(longer).ok);
});

test('a forged manifest decodes (nothing in a bundle is trusted); a stale closing hash is refused', () => {
  const list = entries();
  const edited = list.map((e) => (e.name === 'hosts/h1/desired' ? { ...e, update: new Uint8Array([0, 0]) } : e));
  const honest = encodeBundle(manifestFor(list, meta), list);
  const forged = encodeBundle(manifestFor(edited, meta), edited);
  // Someone who rewrites the manifest too can recompute the closing hash: the bundle is not
  // trusted, the signed entries inside are (docs/sneakernet.md). Both decode; only signatures
  // decide what readers accept.
  assert.ok(decodeBundle(honest).ok);
  assert.ok(decodeBundle(forged).ok);
  const spliced = forged.slice();
  spliced.set(honest.subarray(honest.length - 32), forged.length - 32);
  const decoded = decodeBundle(spliced);
  assert.not.ok(decoded.ok);
  if (!decoded.ok) assert.match(decoded.reason, 'damaged or incomplete');
});

test('garbage and foreign files are refused with a reason', () => {
  for (const bytes of [
    new Uint8Array(0),
    new TextEncoder().encode('hello world, this is no bundle at all..........................'),
  ]) {
    const decoded = decodeBundle(bytes);
    assert.not.ok(decoded.ok);
    if (!decoded.ok) assert.match(decoded.reason, 'not an outpost bundle');
  }
});

test.run();
