import fc from 'fast-check';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { fromBase64, fromHex, toBase64, toHex } from '../../../../shared/crypto/encoding.js';

// Keys, signatures and hashes travel as base64 and hex: every byte string comes back unchanged,
// and a decoder given anything else either refuses it with its own error or accepts exactly one
// spelling per value (a second spelling of one key would make one signer look like two).

const BASE64 = [...'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/='];

test('base64 and hex: every byte string decodes to what was encoded', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
      assert.equal(fromBase64(toBase64(bytes)), bytes);
      assert.equal(fromHex(toHex(bytes)), bytes);
    }),
    { numRuns: 2000, seed: 11 },
  );
  const large = new Uint8Array(200_000).map((_, i) => i * 7);
  assert.equal(fromBase64(toBase64(large)), large, 'past the 32 KiB chunk of the encoder');
});

test('base64: anything else is refused with a clear error; what is accepted has one spelling', () => {
  const texts = fc.oneof(fc.string({ maxLength: 60 }), fc.string({ unit: fc.constantFrom(...BASE64), maxLength: 60 }));
  fc.assert(
    fc.property(texts, (text) => {
      let bytes: Uint8Array;
      try {
        bytes = fromBase64(text);
      } catch (error) {
        assert.instance(error, Error);
        assert.match((error as Error).message, /^not valid base64/);
        return;
      }
      assert.is(toBase64(bytes), text, `${JSON.stringify(text)} is not the canonical spelling`);
    }),
    { numRuns: 5000, seed: 12 },
  );
  // The last character before the padding carries unused bits: only zeros are canonical.
  assert.equal(fromBase64('AA=='), new Uint8Array([0]));
  assert.throws(() => fromBase64('AB=='), /not valid base64/);
  assert.throws(() => fromBase64('AAB='), /not valid base64/);
});

test('hex: anything else is refused; either case decodes, to the lowercase spelling', () => {
  const texts = fc.oneof(
    fc.string({ maxLength: 40 }),
    fc.string({ unit: fc.constantFrom(...'0123456789abcdefABCDEFg'), maxLength: 40 }),
  );
  fc.assert(
    fc.property(texts, (text) => {
      let bytes: Uint8Array;
      try {
        bytes = fromHex(text);
      } catch (error) {
        assert.match((error as Error).message, /^not valid hex/);
        return;
      }
      assert.is(toHex(bytes), text.toLowerCase());
    }),
    { numRuns: 5000, seed: 13 },
  );
});

test.run();
