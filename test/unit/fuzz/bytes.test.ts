import fc from 'fast-check';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { nestedJsonText, stringifyJson, weirdJson } from '../../fuzz/bytes.js';

// The fuzzer's own serialiser: JSON.stringify's text wherever that works, and the same text where
// JSON.stringify runs out of stack (a long run's driver died there).
test('stringifyJson gives JSON.stringify’s text', () => {
  fc.assert(
    fc.property(fc.oneof(fc.jsonValue(), weirdJson(4), fc.anything()), (value) => {
      let expected: string | undefined;
      try {
        expected = JSON.stringify(value);
      } catch {
        return; // BigInt and the like: JSON.stringify throws, and so does stringifyJson
      }
      assert.is(stringifyJson(value), expected);
    }),
    { numRuns: 2000, seed: 11 },
  );
});

test('stringifyJson serialises nesting far past the stack', () => {
  let value: unknown = 1;
  for (let i = 0; i < 200_000; i += 1) value = [value];
  assert.throws(() => JSON.stringify(value), RangeError);
  assert.is(stringifyJson(value), nestedJsonText(200_000));
  let object: unknown = { leaf: [1, 'x', null] };
  for (let i = 0; i < 200_000; i += 1) object = { a: object, skipped: undefined };
  const text = stringifyJson(object)!;
  assert.ok(text.startsWith('{"a":{"a":'));
  assert.ok(text.includes('{"leaf":[1,"x",null]}'));
  assert.is(text.length, 200_000 * '{"a":}'.length + '{"leaf":[1,"x",null]}'.length);
});

test.run();
