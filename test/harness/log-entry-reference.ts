import fc from 'fast-check';
import * as encoding from 'lib0/encoding';
import { digest } from 'lib0/hash/sha256';
import type { LogEntry } from '../../coordinator/update-log.js';
import type { AuditLogEntry } from '../../shared/audit/log-chain.js';
import { toHex, utf8Bytes } from '../../shared/crypto/encoding.js';

// The log entry hash and the stored entry encoding as they were before issue 15 made them
// cheaper, written with lib0's growing encoder. Frozen on purpose: hashes in kept heads and
// entries in stored logs were made by this code, so the shipped versions must match it byte for
// byte (test/unit/shared/audit/log-chain.test.ts, test/unit/coordinator/update-log.test.ts), and
// test/bench/log-entry-encoding.ts measures them against it.

const REFERENCE_DOMAIN = utf8Bytes('outpost-log-entry-v1\n');

export function referenceLogEntryHash(
  prevHash: string,
  entry: Pick<AuditLogEntry, 'document' | 'seq' | 'receivedAt' | 'principal' | 'update'>,
): string {
  const encoder = encoding.createEncoder();
  encoding.writeUint8Array(encoder, REFERENCE_DOMAIN);
  encoding.writeVarString(encoder, entry.document);
  encoding.writeVarString(encoder, prevHash);
  encoding.writeVarUint(encoder, entry.seq);
  encoding.writeFloat64(encoder, entry.receivedAt);
  encoding.writeVarString(encoder, entry.principal);
  encoding.writeVarUint(encoder, entry.update.length);
  const header = encoding.toUint8Array(encoder);
  const bytes = new Uint8Array(header.length + entry.update.length);
  bytes.set(header, 0);
  bytes.set(entry.update, header.length);
  return toHex(digest(bytes));
}

export function referenceEncodeLogEntry(entry: LogEntry): Uint8Array {
  const encoder = encoding.createEncoder();
  encoding.writeVarUint(encoder, 2);
  encoding.writeVarUint(encoder, entry.seq);
  encoding.writeFloat64(encoder, entry.receivedAt);
  encoding.writeVarString(encoder, entry.principal);
  encoding.writeVarUint8Array(encoder, entry.update);
  encoding.writeVarString(encoder, entry.prevHash);
  encoding.writeVarString(encoder, entry.hash);
  return encoding.toUint8Array(encoder);
}

// Strings as log entries may hold them, for comparing against the code above: ASCII names and hex
// hashes, any code point, and lone surrogates (TextEncoder writes U+FFFD for those, 3 bytes).
const codeUnit = fc.integer({ min: 0, max: 0xffff }).map((unit) => String.fromCharCode(unit));
export const anyLogText = fc.oneof(
  fc.string({ maxLength: 80 }),
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.string({ unit: codeUnit, maxLength: 40 }),
);
