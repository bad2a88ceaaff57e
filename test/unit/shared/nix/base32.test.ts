import fc from 'fast-check';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  decodeNixBase32,
  encodeNixBase32,
  NIX_BASE32_ALPHABET,
  nixBase32Length,
} from '../../../../shared/nix/base32.js';

// Nix's base-32 (store path hashes, NAR hashes): every byte string comes back unchanged, and a
// string that is not one canonical nix32 value is refused with a message saying why.

test('every byte string decodes to what was encoded, at the length Nix gives it', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
      const text = encodeNixBase32(bytes);
      assert.is(text.length, nixBase32Length(bytes.length));
      assert.equal(decodeNixBase32(text, bytes.length), bytes);
    }),
    { numRuns: 3000, seed: 41 },
  );
  // A store path hash Nix printed (20 bytes, 32 characters).
  const hash = '0c0jszq1wp8ls5hgklmfn2cbfi3y4k8a';
  assert.is(encodeNixBase32(decodeNixBase32(hash, 20)), hash);
});

test('anything else is refused; what is accepted has one spelling', () => {
  const texts = fc.oneof(
    fc.string({ maxLength: 60 }),
    fc.string({ unit: fc.constantFrom(...NIX_BASE32_ALPHABET, 'e', 'o', 'u', 't'), maxLength: 60 }),
  );
  fc.assert(
    fc.property(texts, (text) => {
      let bytes: Uint8Array;
      try {
        bytes = decodeNixBase32(text);
      } catch (error) {
        assert.match((error as Error).message, /^not nix-base32/);
        return;
      }
      assert.is(encodeNixBase32(bytes), text);
    }),
    { numRuns: 5000, seed: 42 },
  );
  assert.throws(() => decodeNixBase32('0'.repeat(52), 20), /not a 20-byte nix-base32 value/);
  assert.throws(() => decodeNixBase32(`z${'0'.repeat(51)}`), /sets bits beyond 32 bytes/);
});

test.run();
