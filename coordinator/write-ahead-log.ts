import { closeSync, fdatasyncSync, fsyncSync, openSync, readSync, renameSync, statSync, writeSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { crc32 } from 'node:zlib';
import * as decoding from 'lib0/decoding';
import * as encoding from 'lib0/encoding';
import { z } from 'zod';

// The LevelDB update log's write-ahead log (coordinator/update-log.ts): one segment file that an
// append's LevelDB operations are written to, and fdatasync'ed, on the main thread before the
// append resolves; LevelDB then gets them without `sync`. Why: a LevelDB batch with `sync: true`
// is a round trip through the thread pool, and in a rollout wave that round trip waited for a
// core for milliseconds (docs/performance.md, "The write path against the stock server").
//
// The segment is preallocated, zero-filled and fsync'ed when created, so overwriting it in place
// changes no file size or block map: an fdatasync has only data to write, no journal commit.
//
// Layout (little-endian):
//   header, HEADER_BYTES:  magic "OUTPOSTW" | u32 format version | u32 epoch | u32 crc32 of the 16 bytes before
//   records, from HEADER_BYTES, back to back:
//                          u32 payload length | u32 epoch | u32 crc32(length, epoch, payload) | payload
//   payload:               varuint count, then per operation: varstring key, varuint8array value
// A record counts only if its epoch is the header's: once every record is in LevelDB durably (a
// checkpoint), the segment is reused from the start under the next epoch, and the bytes after the
// new records are the previous epoch's, which must never be replayed (they would put document
// heads back to older entries). Reading stops at the first record that is empty (zeros), torn
// (bad checksum, or longer than what is left), or of another epoch.

export const WAL_FILE_NAME = 'outpost-wal';
export const HEADER_BYTES = 512;
const RECORD_HEADER_BYTES = 12;
const MAGIC = new TextEncoder().encode('OUTPOSTW');
const FORMAT_VERSION = 1;
export const DEFAULT_SEGMENT_BYTES = 4 * 1024 * 1024;
// A segment file read back is bounded (a damaged or foreign file is not read whole into memory).
const MAX_SEGMENT_BYTES = 1024 * 1024 * 1024;
const MIN_SEGMENT_BYTES = HEADER_BYTES + 4096;
// Bounds on what a record read back may hold (the log's keys are a prefix and a document name).
const MAX_OPERATIONS_PER_RECORD = 1_000_000;
const MAX_KEY_LENGTH = 64 * 1024;

export interface WalOperation {
  key: string;
  value: Uint8Array;
}

const walOperations = z
  .array(
    z.object({
      key: z.string().min(1).max(MAX_KEY_LENGTH),
      value: z.instanceof(Uint8Array),
    }),
  )
  .min(1)
  .max(MAX_OPERATIONS_PER_RECORD);

function checksum(bytes: Uint8Array, previous = 0): number {
  return crc32(bytes, previous) >>> 0;
}

export function encodeSegmentHeader(epoch: number): Uint8Array {
  const header = new Uint8Array(HEADER_BYTES);
  const view = new DataView(header.buffer);
  header.set(MAGIC, 0);
  view.setUint32(8, FORMAT_VERSION, true);
  view.setUint32(12, epoch, true);
  view.setUint32(16, checksum(header.subarray(0, 16)), true);
  return header;
}

// The epoch of a segment, from its header; a header that is not one is an error that names the file.
export function decodeSegmentHeader(header: Uint8Array, path: string): number {
  const fix = `move ${path} aside only if ${dirname(path)} was closed cleanly (else the appends it holds are lost)`;
  if (header.length < HEADER_BYTES) throw new Error(`write-ahead log ${path} is shorter than its header; ${fix}`);
  if (!MAGIC.every((byte, i) => header[i] === byte))
    throw new Error(`${path} is not an outpost write-ahead log (no magic bytes); ${fix}`);
  const view = new DataView(header.buffer, header.byteOffset, header.byteLength);
  const version = view.getUint32(8, true);
  if (version !== FORMAT_VERSION)
    throw new Error(
      `write-ahead log ${path} has format version ${version}, this outpost reads ${FORMAT_VERSION}; upgrade outpost`,
    );
  if (view.getUint32(16, true) !== checksum(header.subarray(0, 16)))
    throw new Error(`write-ahead log ${path} has a damaged header (checksum mismatch); ${fix}`);
  return view.getUint32(12, true);
}

export function encodeWalRecord(epoch: number, operations: readonly WalOperation[]): Uint8Array {
  const encoder = encoding.createEncoder();
  encoding.writeVarUint(encoder, operations.length);
  for (const { key, value } of operations) {
    encoding.writeVarString(encoder, key);
    encoding.writeVarUint8Array(encoder, value);
  }
  const payload = encoding.toUint8Array(encoder);
  const record = new Uint8Array(RECORD_HEADER_BYTES + payload.length);
  const view = new DataView(record.buffer);
  view.setUint32(0, payload.length, true);
  view.setUint32(4, epoch, true);
  record.set(payload, RECORD_HEADER_BYTES);
  view.setUint32(8, checksum(payload, checksum(record.subarray(0, 8))), true);
  return record;
}

function decodePayload(payload: Uint8Array, where: string): WalOperation[] {
  try {
    const decoder = decoding.createDecoder(payload);
    const count = decoding.readVarUint(decoder);
    if (count > MAX_OPERATIONS_PER_RECORD) throw new Error(`${count} operations, at most ${MAX_OPERATIONS_PER_RECORD}`);
    const operations: WalOperation[] = [];
    for (let i = 0; i < count; i++)
      operations.push({ key: decoding.readVarString(decoder), value: decoding.readVarUint8Array(decoder) });
    if (decoding.hasContent(decoder)) throw new Error('bytes after the last operation');
    return walOperations.parse(operations);
  } catch (error) {
    // The checksum and epoch matched: this is not a torn write but a record this code cannot read.
    throw new Error(
      `write-ahead log record ${where} has a valid checksum but cannot be read: ${(error as Error).message}; upgrade outpost`,
      {
        cause: error,
      },
    );
  }
}

export type ReplayEnd = 'end of segment' | 'empty' | 'torn' | 'other epoch';

export interface SegmentRecords {
  records: WalOperation[][];
  // Where the next record goes, and why reading stopped there.
  end: number;
  stoppedBy: ReplayEnd;
}

// The records of `epoch` at the start of a segment (header included), up to the first that is not one.
export function decodeSegmentRecords(segment: Uint8Array, epoch: number, path: string): SegmentRecords {
  const view = new DataView(segment.buffer, segment.byteOffset, segment.byteLength);
  const records: WalOperation[][] = [];
  let offset = HEADER_BYTES;
  for (;;) {
    if (offset + RECORD_HEADER_BYTES > segment.length) return { records, end: offset, stoppedBy: 'end of segment' };
    const length = view.getUint32(offset, true);
    const recordEpoch = view.getUint32(offset + 4, true);
    if (length === 0 && recordEpoch === 0) return { records, end: offset, stoppedBy: 'empty' };
    if (recordEpoch !== epoch) return { records, end: offset, stoppedBy: 'other epoch' };
    const payloadStart = offset + RECORD_HEADER_BYTES;
    if (length === 0 || length > segment.length - payloadStart) return { records, end: offset, stoppedBy: 'torn' };
    const payload = segment.subarray(payloadStart, payloadStart + length);
    if (view.getUint32(offset + 8, true) !== checksum(payload, checksum(segment.subarray(offset, offset + 8))))
      return { records, end: offset, stoppedBy: 'torn' };
    records.push(decodePayload(payload, `at byte ${offset} of ${path}`));
    offset = payloadStart + length;
  }
}

// The segment file's I/O; a unit test gives one that keeps what was synced apart from what was not.
export interface SegmentFile {
  size: number;
  read(): Uint8Array;
  write(bytes: Uint8Array, position: number): void;
  sync(): void;
  close(): void;
}

// Creates the segment under a temporary name, zero-filled and synced, and renames it into place.
function createSegmentFile(path: string, size: number): void {
  const temporary = join(dirname(path), `${basename(path)}.new`);
  const fd = openSync(temporary, 'w');
  try {
    const zeros = new Uint8Array(1024 * 1024);
    for (let position = 0; position < size; position += zeros.length)
      writeSync(fd, zeros, 0, Math.min(zeros.length, size - position), position);
    writeSync(fd, encodeSegmentHeader(1), 0, HEADER_BYTES, 0);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(temporary, path);
  const directory = openSync(dirname(path), 'r');
  try {
    fsyncSync(directory);
  } finally {
    closeSync(directory);
  }
}

export function openSegmentFile(path: string, sizeIfNew: number): SegmentFile {
  const existing = statSync(path, { throwIfNoEntry: false });
  if (!existing) createSegmentFile(path, sizeIfNew);
  const size = existing?.size ?? sizeIfNew;
  if (size < MIN_SEGMENT_BYTES || size > MAX_SEGMENT_BYTES)
    throw new Error(
      `write-ahead log ${path} is ${size} bytes, expected ${MIN_SEGMENT_BYTES}–${MAX_SEGMENT_BYTES}; it is damaged or not outpost's`,
    );
  const fd = openSync(path, 'r+');
  return {
    size,
    read() {
      const bytes = new Uint8Array(size);
      let read = 0;
      while (read < size) {
        const n = readSync(fd, bytes, read, size - read, read);
        if (n === 0) break;
        read += n;
      }
      return bytes.subarray(0, read);
    },
    write(bytes, position) {
      let written = 0;
      while (written < bytes.length)
        written += writeSync(fd, bytes, written, bytes.length - written, position + written);
    },
    sync: () => fdatasyncSync(fd),
    close: () => closeSync(fd),
  };
}

export interface WriteAheadLog {
  path: string;
  // The records of the current epoch found on open: what the previous process may not have put into LevelDB.
  recovered: SegmentRecords;
  // Whether no record was written since the last recycle (a record that does not fit then never will).
  empty(): boolean;
  // Writes a record and waits for it to be on disk (fdatasync, on this thread). False, and nothing
  // written, when the segment has no room left for it: a checkpoint is due.
  append(operations: readonly WalOperation[]): boolean;
  // Only once every record written is durably in LevelDB: starts the segment over under a new epoch.
  recycle(): void;
  close(): void;
}

export function openWriteAheadLog(
  path: string,
  file: SegmentFile = openSegmentFile(path, DEFAULT_SEGMENT_BYTES),
): WriteAheadLog {
  let segment: Uint8Array;
  let epoch: number;
  let recovered: SegmentRecords;
  try {
    segment = file.read();
    epoch = decodeSegmentHeader(segment, path);
    recovered = decodeSegmentRecords(segment, epoch, path);
  } catch (error) {
    file.close();
    throw error;
  }
  let position = recovered.end;
  return {
    path,
    recovered,
    empty: () => position === HEADER_BYTES,
    append(operations) {
      const record = encodeWalRecord(epoch, operations);
      if (position + record.length > file.size) return false;
      file.write(record, position);
      file.sync();
      position += record.length;
      return true;
    },
    recycle() {
      // Epoch 0 is what zeros read as: never used.
      epoch = epoch >= 0xffffffff ? 1 : epoch + 1;
      file.write(encodeSegmentHeader(epoch), 0);
      file.sync();
      position = HEADER_BYTES;
    },
    close: () => file.close(),
  };
}
