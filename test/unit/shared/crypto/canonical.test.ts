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

// The encoder as first written (map, sort with `<`, join): canonical.ts's loop encoder, written
// for speed, must give exactly its text, and refuse exactly what it refused.
function plainEncode(value: unknown, depth = 0): string {
  if (value === null) return 'null';
  switch (typeof value) {
    case 'boolean':
      return value ? 'true' : 'false';
    case 'number':
      if (!Number.isFinite(value)) throw new CanonicalJsonError('non-finite');
      return JSON.stringify(value);
    case 'string':
      return JSON.stringify(value);
    case 'object': {
      if (depth >= 64) throw new CanonicalJsonError('deep');
      if (Array.isArray(value)) return `[${Array.from(value, (v) => plainEncode(v, depth + 1)).join(',')}]`;
      const entries = Object.entries(value as Record<string, unknown>)
        .filter(([, v]) => v !== undefined)
        .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
      return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${plainEncode(v, depth + 1)}`).join(',')}}`;
    }
    default:
      throw new CanonicalJsonError(typeof value);
  }
}

const outcome = (encode: (value: unknown) => string, value: unknown): string => {
  try {
    return `text ${encode(value)}`;
  } catch (error) {
    return error instanceof CanonicalJsonError ? 'refused' : `threw ${String(error)}`;
  }
};

test("the encoder gives the plain encoder's text for anything, and refuses what it refuses", () => {
  fc.assert(
    fc.property(
      fc.anything({
        maxDepth: 5,
        withBigInt: true,
        withSparseArray: true,
        withNullPrototype: true,
        withBoxedValues: true,
        withObjectString: true,
        withTypedArray: true,
        withDate: true,
        withMap: true,
        withSet: true,
      }),
      (value) => {
        assert.is(outcome(canonicalJson, value), outcome(plainEncode, value));
      },
    ),
    { numRuns: 5000, seed: 23 },
  );
  for (const value of [-0, 1e21, 5e-324, 0.1 + 0.2, -1.5e-7, '\u2028\ud800', { b: 1, a: undefined, A: [null] }])
    assert.is(outcome(canonicalJson, value), outcome(plainEncode, value));
});

test.run();
