import { digest } from 'lib0/hash/sha256';
import { toHex, utf8Bytes } from '../crypto/encoding.js';
import { prefixedSize, putFloat64, putVarString, putVarUint, utf8Size, varUintSize } from './sized-encoding.js';

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

const DOMAIN = utf8Bytes('outpost-log-entry-v1\n');
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
    prefixedSize(documentSize) +
    prefixedSize(prevHashSize) +
    varUintSize(seq) +
    8 +
    prefixedSize(principalSize) +
    prefixedSize(update.length);
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
