import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as Y from 'yjs';
import {
  CanonicalJsonError,
  canonicalJson,
  checkJsonBounds,
  MAX_CANONICAL_DEPTH,
} from '../../../../shared/crypto/canonical.js';

function nested(depth: number): unknown {
  let value: unknown = 1;
  for (let i = 0; i < depth; i++) value = { x: value };
  return value;
}

test('canonicalJson refuses values nested deeper than its bound with its own error, never a stack overflow', () => {
  assert.is(canonicalJson(nested(MAX_CANONICAL_DEPTH - 1)).length > 0, true);
  for (const depth of [MAX_CANONICAL_DEPTH + 1, 4200, 100_000]) {
    try {
      canonicalJson({ a: nested(depth) });
      assert.unreachable('expected a CanonicalJsonError');
    } catch (error) {
      assert.instance(error, CanonicalJsonError);
      assert.match((error as Error).message, /nested deeper than 64 levels/);
    }
  }
});

test('checkJsonBounds inspects any depth without recursion and names where the problem is', () => {
  const limits = { maxDepth: 32, maxBytes: 1024 };
  assert.equal(checkJsonBounds({ a: [1, 'x', null, true] }, limits).ok, true);
  const deep = checkJsonBounds({ intent: { extra: nested(1_000_000) } }, limits);
  assert.equal(
    deep.ok ? 'ok' : deep.reason.replace(/(\.x)+/, '.x…'),
    'intent.extra.x… is nested deeper than 32 levels',
  );
  const large = checkJsonBounds({ a: 'x'.repeat(2000) }, limits);
  assert.equal(large.ok ? 'ok' : large.reason, 'larger than 1024 bytes of JSON');
  const wide = checkJsonBounds(Object.fromEntries(Array.from({ length: 10_000 }, (_, i) => [`k${i}`, i])), limits);
  assert.is(wide.ok, false, 'many small fields add up');
  const nan = checkJsonBounds({ a: [Number.NaN] }, limits);
  assert.equal(nan.ok ? 'ok' : nan.reason, 'a[0] is the non-finite number NaN');
  const inner = checkJsonBounds([{ a: [1, { b: Number.POSITIVE_INFINITY }] }], limits);
  assert.equal(inner.ok ? 'ok' : inner.reason, '[0].a[1].b is the non-finite number Infinity');
  const top = checkJsonBounds(Number.NaN, limits);
  assert.equal(top.ok ? 'ok' : top.reason, 'the value is the non-finite number NaN');
  const binary = checkJsonBounds({ a: new Uint8Array(4) }, limits);
  assert.equal(binary.ok ? 'ok' : binary.reason, 'a is not JSON data (Uint8Array)');
  const shared = checkJsonBounds({ a: new Y.Map() }, limits);
  assert.equal(shared.ok ? 'ok' : shared.reason, 'a is not JSON data (YMap)');
  assert.equal(
    checkJsonBounds({ a: undefined }, limits).ok,
    true,
    'undefined fields are dropped, as canonicalJson does',
  );
  assert.is(checkJsonBounds([1, undefined], limits).ok, false);
  assert.is(checkJsonBounds(10n, limits).ok, false);
});

test.run();
