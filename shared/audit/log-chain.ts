import { digest } from 'lib0/hash/sha256';
import { toHex } from '../crypto/encoding.js';

// One stored Yjs update as the coordinator logged it. `hash` chains it to the entry before it in
// the same document, so a bundle cut short, reordered or rewritten no longer ends in a head that
// someone kept (docs/audit.md says who keeps heads and what that does and does not prove).
export interface AuditLogEntry {
  document: string;
  seq: number;
  receivedAt: number;
  principal: string;
  update: Uint8Array;
  // Absent on entries stored before the log kept hashes; computed on reading.
  prevHash?: string;
  hash?: string;
}

export interface LogHead {
  document: string;
  seq: number;
  hash: string;
}

export const GENESIS_HASH = '0'.repeat(64);

// Writers into a buffer sized beforehand, for the two encodings every appended entry goes through
// (its hash input here, its stored form in coordinator/update-log.ts). Both are stored or chained,
// so they must write exactly what lib0's encoding wrote (varuint, UTF-8 with a varuint length,
// big-endian float64; test/harness/log-entry-reference.ts keeps that code), without its growing
// chunks, per-byte capacity checks and closing copy, which cost more than the sha256 itself.
const utf8Encoder = new TextEncoder();

// lib0's writeVarUint, operation for operation (so even a fractional or negative number encodes
// the same).
export function varUintSize(num: number): number {
  let size = 1;
  for (; num > 0x7f; size++) num = Math.floor(num / 128);
  return size;
}

export function putVarUint(bytes: Uint8Array, pos: number, num: number): number {
  while (num > 0x7f) {
    bytes[pos++] = 0x80 | (0x7f & num);
    num = Math.floor(num / 128);
  }
  bytes[pos++] = 0x7f & num;
  return pos;
}

// Bytes of the string in UTF-8 as TextEncoder writes it: a lone surrogate becomes U+FFFD (3 bytes).
export function utf8Size(text: string): number {
  let size = text.length;
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    if (unit < 0x80) continue;
    if (unit < 0x800) size += 1;
    else if (unit >= 0xd800 && unit <= 0xdbff && i + 1 < text.length && (text.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      size += 2; // a pair: 2 units, 4 bytes
      i++;
    } else size += 2;
  }
  return size;
}

// `size` is utf8Size(text); equal to text.length only when every character is ASCII.
export function putVarString(bytes: Uint8Array, pos: number, text: string, size: number): number {
  pos = putVarUint(bytes, pos, size);
  if (size === text.length) for (let i = 0; i < size; i++) bytes[pos + i] = text.charCodeAt(i);
  else utf8Encoder.encodeInto(text, bytes.subarray(pos, pos + size));
  return pos + size;
}

export function putFloat64(bytes: Uint8Array, pos: number, num: number): number {
  new DataView(bytes.buffer, bytes.byteOffset + pos, 8).setFloat64(0, num, false);
  return pos + 8;
}

const DOMAIN = utf8Encoder.encode('outpost-log-entry-v1\n');
// Hash inputs up to this size are built in one reused buffer that starts with the domain.
const SCRATCH_BYTES = 64 * 1024;
const scratch = new Uint8Array(SCRATCH_BYTES);
scratch.set(DOMAIN);

// H(domain ‖ document ‖ prevHash ‖ seq ‖ receivedAt ‖ principal ‖ update), each length-prefixed:
// an entry cannot move to another document or position without changing every later hash.
export function logEntryHash(
  prevHash: string,
  entry: Pick<AuditLogEntry, 'document' | 'seq' | 'receivedAt' | 'principal' | 'update'>,
): string {
  const { document, seq, receivedAt, principal, update } = entry;
  const documentSize = utf8Size(document);
  const prevHashSize = utf8Size(prevHash);
  const principalSize = utf8Size(principal);
  const size =
    DOMAIN.length +
    varUintSize(documentSize) +
    documentSize +
    varUintSize(prevHashSize) +
    prevHashSize +
    varUintSize(seq) +
    8 +
    varUintSize(principalSize) +
    principalSize +
    varUintSize(update.length) +
    update.length;
  let bytes = scratch;
  if (size > SCRATCH_BYTES) {
    bytes = new Uint8Array(size);
    bytes.set(DOMAIN);
  }
  let pos = putVarString(bytes, DOMAIN.length, document, documentSize);
  pos = putVarString(bytes, pos, prevHash, prevHashSize);
  pos = putVarUint(bytes, pos, seq);
  pos = putFloat64(bytes, pos, receivedAt);
  pos = putVarString(bytes, pos, principal, principalSize);
  pos = putVarUint(bytes, pos, update.length);
  bytes.set(update, pos);
  return toHex(digest(bytes.subarray(0, size)));
}

export interface ChainProblem {
  seq: number;
  code: 'log-seq-gap' | 'hash-chain-broken';
  detail: string;
}

export interface ChainCheck {
  problems: ChainProblem[];
  // Recomputed hash after each entry, by seq (only the seqs asked for, when a set was given).
  hashes: Map<number, string>;
  head: LogHead | null;
}

export interface ChainChecker {
  add(entry: AuditLogEntry): void;
  finish(): ChainCheck;
}

// Recomputes a document's chain from its first entry, one entry at a time (so a replay checks it
// in the same pass). Stored hashes that disagree, and sequence numbers that skip or go back, are
// problems; entries without stored hashes (older logs) are simply chained as they are.
export function createChainChecker(document: string, keepSeqs?: ReadonlySet<number>): ChainChecker {
  const problems: ChainProblem[] = [];
  const hashes = new Map<number, string>();
  let prev = GENESIS_HASH;
  let expectedSeq = 1;
  let lastSeq = 0;
  let lastStored = GENESIS_HASH;
  return {
    add(entry) {
      if (entry.seq !== expectedSeq)
        problems.push({
          seq: entry.seq,
          code: 'log-seq-gap',
          detail: `${document}: log entry #${entry.seq} follows #${expectedSeq - 1} (entries missing or out of order)`,
        });
      // Linkage and content are checked against the stored chain, so one altered entry is named
      // once, not again by every entry after it; heads use the chain recomputed from genesis.
      if (entry.prevHash !== undefined && entry.prevHash !== lastStored)
        problems.push({
          seq: entry.seq,
          code: 'hash-chain-broken',
          detail: `${document}: log entry #${entry.seq} names a previous hash that is not the hash of the entry before it (an entry was removed, inserted or moved)`,
        });
      const hash = logEntryHash(prev, entry);
      const own = entry.prevHash !== undefined && entry.prevHash !== prev ? logEntryHash(entry.prevHash, entry) : hash;
      if (entry.hash !== undefined && entry.hash !== own)
        problems.push({
          seq: entry.seq,
          code: 'hash-chain-broken',
          detail: `${document}: log entry #${entry.seq} does not hash to its stored hash (its content was changed)`,
        });
      lastStored = entry.hash ?? own;
      if (!keepSeqs || keepSeqs.has(entry.seq)) hashes.set(entry.seq, hash);
      prev = hash;
      lastSeq = entry.seq;
      expectedSeq = entry.seq + 1;
    },
    finish() {
      return { problems, hashes, head: lastSeq > 0 ? { document, seq: lastSeq, hash: prev } : null };
    },
  };
}

export function checkLogChain(document: string, entries: Iterable<AuditLogEntry>): ChainCheck {
  const checker = createChainChecker(document);
  for (const entry of entries) checker.add(entry);
  return checker.finish();
}

// Does this (recomputed) chain still contain the head someone kept earlier? A shorter chain was
// truncated; a different hash at that position means history was rewritten or reordered.
export function checkKeptHead(check: ChainCheck, kept: LogHead): { ok: true } | { ok: false; detail: string } {
  const hash = check.hashes.get(kept.seq);
  if (hash === undefined && (check.head?.seq ?? 0) >= kept.seq)
    return { ok: false, detail: `${kept.document}: entry #${kept.seq} of a kept head is missing (history rewritten)` };
  if (hash === undefined)
    return {
      ok: false,
      detail: `${kept.document}: a kept head names entry #${kept.seq}, but the log ends at #${check.head?.seq ?? 0} (truncated)`,
    };
  if (hash !== kept.hash)
    return {
      ok: false,
      detail: `${kept.document}: entry #${kept.seq} hashes to ${hash.slice(0, 16)}…, the kept head says ${kept.hash.slice(0, 16)}… (history rewritten or reordered)`,
    };
  return { ok: true };
}
