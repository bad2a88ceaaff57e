import fc from 'fast-check';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  decodeFrame,
  encodeFrame,
  FRAME_CHANGES,
  FRAME_CLOSE,
  FRAME_DATA,
  FRAME_OPEN,
  FRAME_PRESENCE,
  FRAME_SINCE,
  type MuxFrame,
} from '../../../../shared/sync/mux-frames.js';

// Plain objects, as the decoder builds them (fast-check's default records have no prototype).
const record = <T extends Record<string, fc.Arbitrary<unknown>>>(model: T) =>
  fc.record(model, { noNullPrototype: true });
const channel = fc.nat({ max: 2 ** 31 - 1 });
const frameArbitrary: fc.Arbitrary<MuxFrame> = fc.oneof(
  record({ type: fc.constant(FRAME_OPEN), channel, document: fc.string({ maxLength: 200 }) }),
  record({ type: fc.constant(FRAME_DATA), channel, message: fc.uint8Array({ maxLength: 512 }) }),
  record({
    type: fc.constant(FRAME_CLOSE),
    channel,
    code: fc.integer({ min: 1000, max: 4999 }),
    reason: fc.string({ maxLength: 120 }),
  }),
  record({ type: fc.constant(FRAME_SINCE), epoch: fc.string({ maxLength: 32 }), cursor: fc.nat() }),
  record({
    type: fc.constant(FRAME_CHANGES),
    epoch: fc.string({ maxLength: 32 }),
    cursor: fc.nat(),
    documents: fc.array(fc.string({ maxLength: 80 }), { maxLength: 20 }),
  }),
  record({
    type: fc.constant(FRAME_PRESENCE),
    hosts: fc.array(
      record({ host: fc.string({ maxLength: 64 }), online: fc.boolean(), lastSeen: fc.double({ noNaN: true }) }),
      { maxLength: 20 },
    ),
  }),
) as fc.Arbitrary<MuxFrame>;

test('every relay-link frame decodes to what was encoded', () => {
  fc.assert(
    fc.property(frameArbitrary, (frame) => {
      assert.equal(decodeFrame(encodeFrame(frame)), frame);
    }),
    { numRuns: 2000, seed: 42 },
  );
});

test('random bytes decode to a frame or a clear error, never anything else', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
      try {
        decodeFrame(bytes);
      } catch (error) {
        assert.instance(error, Error);
      }
    }),
    { numRuns: 5000, seed: 7 },
  );
});

test.run();
