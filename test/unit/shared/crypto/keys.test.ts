import fc from 'fast-check';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  generateSigningKey,
  keyFileFromSigningKey,
  keyFileSchema,
  signingKeyFromKeyFile,
} from '../../../../shared/crypto/keys.js';

// A key file holds the key it was written from; a file whose halves do not belong together, or
// that is not a key file, is refused with the file named and the fix.

test('a signing key survives its key file (as JSON text, as it is stored)', () => {
  fc.assert(
    fc.property(fc.string({ minLength: 1, maxLength: 128 }), (name) => {
      const key = generateSigningKey(name);
      const text = JSON.stringify(keyFileFromSigningKey(key));
      const file = keyFileSchema.parse(JSON.parse(text));
      assert.equal(signingKeyFromKeyFile(file, 'alice.key'), key);
    }),
    { numRuns: 100, seed: 31 },
  );
});

test('mismatched halves and malformed files are refused', () => {
  const key = keyFileFromSigningKey(generateSigningKey('alice'));
  const other = keyFileFromSigningKey(generateSigningKey('bob'));
  assert.throws(
    () => signingKeyFromKeyFile({ ...key, publicKey: other.publicKey }, '/keys/alice.key'),
    /\/keys\/alice\.key: publicKey does not match secretKey.*outpost keygen/,
  );
  fc.assert(
    fc.property(fc.jsonValue({ maxDepth: 3 }), (value) => {
      assert.not.ok(keyFileSchema.safeParse(value).success);
    }),
    { numRuns: 1000, seed: 32 },
  );
});

test.run();
