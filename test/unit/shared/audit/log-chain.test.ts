import fc from 'fast-check';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { GENESIS_HASH, logEntryHash } from '../../../../shared/audit/log-chain.js';
import { anyLogText, referenceLogEntryHash } from '../../../harness/log-entry-reference.js';

// logEntryHash writes its input without lib0's encoder (issue 15); kept heads and stored hashes
// were made by the encoder, so every byte must stay the same. The fixed vectors in history.test.ts
// pin two entries; these compare against the previous code over random ones.

// Sequence numbers are validated integers, but the varuint must match lib0's for any finite
// number it was given (fractions and negatives included).
const anySeq = fc.oneof(
  fc.nat(),
  fc.maxSafeNat(),
  fc.double({ min: -1e30, max: 1e30, noNaN: true }),
  fc.constant(Number.NaN),
);
const anyEntry = fc.record({
  document: anyLogText,
  seq: anySeq,
  receivedAt: fc.double(),
  principal: anyLogText,
  update: fc.uint8Array({ maxLength: 3000 }),
});

test('logEntryHash gives the same hash as the lib0-encoder version for random entries', () => {
  fc.assert(
    fc.property(fc.oneof(anyLogText, fc.constant(GENESIS_HASH)), anyEntry, (prevHash, entry) => {
      assert.is(logEntryHash(prevHash, entry), referenceLogEntryHash(prevHash, entry));
    }),
    { numRuns: 5000, seed: 151 },
  );
});

test('logEntryHash matches for updates around its reused buffer size, views and long strings', () => {
  // The hash input is built in a reused 64 KiB buffer, or a buffer of its own when larger: a
  // shorter entry after a longer one must not pick up the longer one's tail.
  const base = { document: 'hosts/h1/desired', seq: 9, receivedAt: 1735689600123, principal: 'admin:ålice' };
  for (const size of [0, 1, 65_300, 65_400, 65_436, 65_437, 65_438, 65_536, 70_000, 3, 200_000, 17]) {
    const update = new Uint8Array(size).map((_, i) => (i * 13 + size) & 255);
    assert.is(
      logEntryHash('ab'.repeat(32), { ...base, update }),
      referenceLogEntryHash('ab'.repeat(32), { ...base, update }),
    );
  }
  // An update that is a view into a larger buffer (as decoded entries are).
  const backing = new Uint8Array(500).map((_, i) => i & 255);
  const view = backing.subarray(37, 411);
  assert.is(
    logEntryHash(GENESIS_HASH, { ...base, update: view }),
    referenceLogEntryHash(GENESIS_HASH, { ...base, update: view }),
  );
  // lib0 encodes strings of 10,000 characters and more another way.
  const long = { ...base, document: 'ü\ud800'.repeat(6000), principal: 'p'.repeat(12_000), update: backing };
  assert.is(logEntryHash('x'.repeat(20_000), long), referenceLogEntryHash('x'.repeat(20_000), long));
});

test.run();
