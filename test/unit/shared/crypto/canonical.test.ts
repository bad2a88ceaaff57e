import fc from 'fast-check';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { CanonicalJsonError, canonicalJson } from '../../../../shared/crypto/canonical.js';

// Canonical JSON is what signatures cover: any JSON value survives the trip through it and
// JSON.parse, the text does not depend on key order, and what cannot be JSON is refused with
// CanonicalJsonError, never turned into text another reader would parse differently.

// Reverses the key order at every level: the same value, written differently.
function reordered(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(reordered);
  if (value === null || typeof value !== 'object') return value;
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(value).reverse())
    Object.defineProperty(out, key, {
      value: reordered((value as Record<string, unknown>)[key]),
      enumerable: true,
      writable: true,
      configurable: true,
    });
  return out;
}

test('every JSON value comes back from its canonical text, which is the same whatever the key order', () => {
  fc.assert(
    fc.property(fc.jsonValue({ maxDepth: 5 }), (value) => {
      const text = canonicalJson(value);
      const parsed: unknown = JSON.parse(text);
      assert.equal(parsed, value);
      assert.is(canonicalJson(parsed), text, 'parsing and re-encoding changes nothing');
      assert.is(canonicalJson(reordered(value)), text, 'key order does not matter');
    }),
    { numRuns: 3000, seed: 21 },
  );
});

test('anything else is refused with CanonicalJsonError or encodes to text that parses', () => {
  fc.assert(
    fc.property(
      fc.anything({ maxDepth: 4, withBigInt: true, withSparseArray: true, withNullPrototype: true }),
      (value) => {
        let text: string;
        try {
          text = canonicalJson(value);
        } catch (error) {
          assert.instance(error, CanonicalJsonError);
          return;
        }
        JSON.parse(text);
      },
    ),
    { numRuns: 5000, seed: 22 },
  );
  const refused = (error: unknown): boolean => error instanceof CanonicalJsonError;
  const holey: unknown[] = new Array(3);
  holey[0] = 1;
  holey[2] = 2;
  assert.throws(() => canonicalJson(holey), refused, 'an array hole is not JSON (map would skip it: "[1,,2]")');
  assert.throws(() => canonicalJson([undefined]), refused);
  assert.throws(() => canonicalJson(10n), refused);
});

test.run();
