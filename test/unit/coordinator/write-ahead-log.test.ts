import { crc32 } from 'node:zlib';
import fc from 'fast-check';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  decodeSegmentHeader,
  decodeSegmentRecords,
  encodeSegmentHeader,
  encodeWalRecord,
  HEADER_BYTES,
  openWriteAheadLog,
  type SegmentFile,
  type WalOperation,
} from '../../../coordinator/write-ahead-log.js';

const operation: fc.Arbitrary<WalOperation> = fc.record(
  { key: fc.string({ minLength: 1, maxLength: 60 }), value: fc.uint8Array({ maxLength: 300 }) },
  { noNullPrototype: true },
);
const record = fc.array(operation, { minLength: 1, maxLength: 6 });

// A segment of `size` bytes: header, then the records back to back; the rest zeros.
function segmentOf(epoch: number, records: WalOperation[][], size = 64 * 1024): { bytes: Uint8Array; ends: number[] } {
  const bytes = new Uint8Array(size);
  bytes.set(encodeSegmentHeader(epoch), 0);
  let offset = HEADER_BYTES;
  const ends: number[] = [];
  for (const operations of records) {
    const encoded = encodeWalRecord(epoch, operations);
    bytes.set(encoded, offset);
    offset += encoded.length;
    ends.push(offset);
  }
  return { bytes, ends };
}

// The segment file as a disk keeps it: what was written is visible at once, what survives a
// crash is only what was there at the last sync.
function memorySegment(size: number): SegmentFile & { durable: Uint8Array } {
  const current = new Uint8Array(size);
  current.set(encodeSegmentHeader(1), 0);
  const file = {
    size,
    durable: current.slice(),
    read: () => current.slice(),
    write(bytes: Uint8Array, position: number) {
      current.set(bytes, position);
    },
    sync() {
      file.durable = current.slice();
    },
    close: () => undefined,
  };
  return file;
}

const replayed = (segment: Uint8Array): WalOperation[][] =>
  decodeSegmentRecords(segment, decodeSegmentHeader(segment, 'seg'), 'seg').records;

test('records decode to what was encoded, in order, up to the first empty bytes', () => {
  fc.assert(
    fc.property(fc.array(record, { maxLength: 12 }), fc.integer({ min: 1, max: 0xffffffff }), (records, epoch) => {
      const { bytes, ends } = segmentOf(epoch, records);
      const decoded = decodeSegmentRecords(bytes, epoch, 'seg');
      assert.equal(decoded.records, records);
      assert.is(decoded.end, ends.at(-1) ?? HEADER_BYTES);
      assert.is(decoded.stoppedBy, 'empty');
      assert.is(decodeSegmentHeader(bytes, 'seg'), epoch);
    }),
    { numRuns: 500, seed: 151 },
  );
});

test('a torn last record (cut or zeroed at any byte) replays exactly the records before it', () => {
  fc.assert(
    fc.property(fc.array(record, { minLength: 1, maxLength: 5 }), (records) => {
      const { bytes, ends } = segmentOf(7, records);
      const lastStart = ends.length > 1 ? ends.at(-2)! : HEADER_BYTES;
      const before = records.slice(0, -1);
      for (let cut = lastStart; cut < ends.at(-1)!; cut++) {
        // The file ends there (a shorter copy), or the rest of the write never reached the disk.
        assert.equal(decodeSegmentRecords(bytes.subarray(0, cut), 7, 'seg').records, before, `cut at ${cut}`);
        // (Zeroing bytes that were zeros already leaves the record whole.)
        const zeroed = bytes.slice();
        zeroed.fill(0, cut);
        const torn = bytes.subarray(cut, ends.at(-1)!).some((byte) => byte !== 0);
        assert.equal(decodeSegmentRecords(zeroed, 7, 'seg').records, torn ? before : records, `zeroed from ${cut}`);
      }
      // A changed byte anywhere in the last record is caught by its checksum.
      for (let at = lastStart; at < ends.at(-1)!; at++) {
        const damaged = bytes.slice();
        damaged[at] = damaged[at]! ^ 0x40;
        const decoded = decodeSegmentRecords(damaged, 7, 'seg');
        assert.equal(decoded.records, before, `byte ${at} changed`);
      }
    }),
    { numRuns: 40, seed: 152 },
  );
});

test("after a checkpoint starts the segment over, the previous epoch's records are never replayed", () => {
  const file = memorySegment(8192);
  const wal = openWriteAheadLog('seg', file);
  // Records of one size: after the recycle, the new record ends exactly where an old one begins.
  const old = (n: number): WalOperation[] => [{ key: `d!doc`, value: new TextEncoder().encode(`${n} old-head`) }];
  for (let n = 1; n <= 5; n++) assert.ok(wal.append(old(n)));
  wal.recycle();
  const fresh: WalOperation[] = [{ key: `d!doc`, value: new TextEncoder().encode(`9 new-head`) }];
  assert.ok(wal.append(fresh));
  // The crash: what the disk holds is what was synced.
  assert.equal(replayed(file.durable), [fresh], 'only the new epoch replays (else the head goes back to "5 old-head")');
  const reopened = openWriteAheadLog('seg', { ...file, read: () => file.durable.slice() });
  assert.equal(reopened.recovered.records, [fresh]);
  assert.is(reopened.recovered.stoppedBy, 'other epoch');
});

test('an append returns only once its record is synced; a full segment refuses it whole', () => {
  const file = memorySegment(HEADER_BYTES + 4096);
  const wal = openWriteAheadLog('seg', file);
  const appended: WalOperation[][] = [];
  for (let n = 0; ; n++) {
    const operations = [{ key: `u!doc!${n}`, value: new Uint8Array(300).fill(n) }];
    if (!wal.append(operations)) break;
    appended.push(operations);
    assert.equal(replayed(file.durable), appended, `append ${n} is on disk when it returns`);
  }
  assert.ok(appended.length > 5 && appended.length < 20, `${appended.length} records of 300 bytes in 4 KiB`);
  assert.equal(replayed(file.durable), appended, 'the refused record left nothing behind');
  assert.not.ok(wal.empty());
  wal.recycle();
  assert.ok(wal.empty());
  assert.is(decodeSegmentHeader(file.durable, 'seg'), 2, 'the new epoch is on disk before any record of it');
  assert.equal(replayed(file.durable), []);
});

test('a file that is not a write-ahead log, or a record this code cannot read, is a clear error', () => {
  assert.throws(
    () => decodeSegmentHeader(new Uint8Array(HEADER_BYTES), '/d/outpost-wal'),
    /\/d\/outpost-wal is not an outpost write-ahead log/,
  );
  const header = encodeSegmentHeader(3);
  header[12] = 4;
  assert.throws(() => decodeSegmentHeader(header, '/d/outpost-wal'), /damaged header/);
  assert.throws(() => decodeSegmentHeader(header.subarray(0, 20), '/d/outpost-wal'), /shorter than its header/);
  // A record whose checksum and epoch hold but whose operations do not decode (another version wrote it).
  const { bytes } = segmentOf(2, [[{ key: 'd!x', value: new Uint8Array([1]) }]]);
  const view = new DataView(bytes.buffer);
  const payload = new Uint8Array([5, 1]);
  const forged = encodeWalRecord(2, [{ key: 'k', value: new Uint8Array() }]);
  const forgedView = new DataView(forged.buffer);
  forgedView.setUint32(0, payload.length, true);
  bytes.set(forged.subarray(0, 8), HEADER_BYTES);
  bytes.set(payload, HEADER_BYTES + 12);
  view.setUint32(HEADER_BYTES + 8, crc32(payload, crc32(bytes.subarray(HEADER_BYTES, HEADER_BYTES + 8))) >>> 0, true);
  assert.throws(
    () => decodeSegmentRecords(bytes, 2, '/d/outpost-wal'),
    /at byte 512 of \/d\/outpost-wal has a valid checksum but cannot be read/,
  );
});

test.run();
