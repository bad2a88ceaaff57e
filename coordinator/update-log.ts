import { Level } from 'level';
import * as decoding from 'lib0/decoding';
import type { CheckpointHeads } from '../shared/audit/checkpoint.js';
import { GENESIS_HASH, type LogHead, logEntryHash } from '../shared/audit/log-chain.js';
import {
  prefixedSize,
  putFloat64,
  putVarString,
  putVarUint,
  utf8Size,
  varUintSize,
} from '../shared/audit/sized-encoding.js';

// Append-only log of every accepted Yjs update: document, sequence number, receive time,
// authenticated principal and bytes. Nothing is ever compacted or rewritten, so an auditor can
// rebuild any document as it was at any moment by replaying entries up to that time.
//
// Keys:   u!<document>!<seq as 12 hex digits>  -> encoded LogEntry
//         d!<document>                           -> "<last seq> <its hash>" (older logs: "<last seq>")
//         c!<checkpoint seq as 12 hex digits>    -> JSON CheckpointHeads: the heads behind a signed
//                                                   checkpoint that moved since the one before
// Each entry is chained to the one before it by hash (shared/audit/log-chain.ts), so a copy of
// the log that was cut short, reordered or rewritten no longer reaches a head someone kept.
// Entries written before the chain existed (version 1) get their hashes computed on reading.
// Writes are group-committed: every append waits for one fsync'ed batch, and appends that arrive
// while a batch is in flight share the next one.

export interface LogEntry {
  document: string;
  seq: number;
  receivedAt: number;
  principal: string;
  update: Uint8Array;
  prevHash: string;
  hash: string;
}

type StoredEntry = Omit<LogEntry, 'prevHash' | 'hash'> & { prevHash?: string; hash?: string };

const ENTRY_VERSION = 2;

// Written straight into a buffer of the final size (shared/audit/sized-encoding.ts says why): the
// same bytes lib0's encoder wrote for version 2.
export function encodeLogEntry(entry: LogEntry): Uint8Array {
  const { seq, receivedAt, principal, update, prevHash, hash } = entry;
  const principalSize = utf8Size(principal);
  const prevHashSize = utf8Size(prevHash);
  const hashSize = utf8Size(hash);
  const bytes = new Uint8Array(
    varUintSize(ENTRY_VERSION) +
      varUintSize(seq) +
      8 +
      prefixedSize(principalSize) +
      prefixedSize(update.length) +
      prefixedSize(prevHashSize) +
      prefixedSize(hashSize),
  );
  let pos = putVarUint(bytes, 0, ENTRY_VERSION);
  pos = putVarUint(bytes, pos, seq);
  pos = putFloat64(bytes, pos, receivedAt);
  pos = putVarString(bytes, pos, principal, principalSize);
  pos = putVarUint(bytes, pos, update.length);
  bytes.set(update, pos);
  pos = putVarString(bytes, pos + update.length, prevHash, prevHashSize);
  putVarString(bytes, pos, hash, hashSize);
  return bytes;
}

// Version 1 entries (before the hash chain) decode without hashes.
export function decodeLogEntry(document: string, bytes: Uint8Array): StoredEntry {
  const decoder = decoding.createDecoder(bytes);
  const version = decoding.readVarUint(decoder);
  if (version !== 1 && version !== 2)
    throw new Error(`update log entry of ${document} has unknown version ${version}; upgrade outpost`);
  const seq = decoding.readVarUint(decoder);
  const receivedAt = decoding.readFloat64(decoder);
  const principal = decoding.readVarString(decoder);
  const update = decoding.readVarUint8Array(decoder);
  if (version === 1) return { document, seq, receivedAt, principal, update };
  const prevHash = decoding.readVarString(decoder);
  const hash = decoding.readVarString(decoder);
  return { document, seq, receivedAt, principal, update, prevHash, hash };
}

const seqKey = (document: string, seq: number): string => `u!${document}!${seq.toString(16).padStart(12, '0')}`;
const metaKey = (document: string): string => `d!${document}`;
const metaEncoder = new TextEncoder();
const checkpointKey = (seq: number): string => `c!${seq.toString(16).padStart(12, '0')}`;

interface PendingAppend {
  entry: LogEntry;
  resolve: () => void;
  reject: (error: Error) => void;
}

// A write the log refused, with a reason fit for the writers' close frames: the message (for the
// operator's log) may name servers or paths that peers have no business seeing.
export class LogRefusal extends Error {
  constructor(
    message: string,
    readonly peerReason: string,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

// The update log a coordinator keeps, whatever stores it: LevelDB in --data-dir (openUpdateLog
// below, the default) or a NATS JetStream stream that several coordinators share
// (backends/nats-log.ts). Both run test/harness/update-log-conformance.ts. What every backend
// promises:
// - `append` resolves only once the entry is durable (fsync'ed; stored by a stream quorum), and
//   rejects with a message that says why and what to do when it is not;
// - per document, entries are numbered 1, 2, 3… and each is chained to the one before by hash,
//   whoever wrote it;
// - nothing is ever compacted, rewritten or deleted.
// After `missed`, a comparison with the log that could not finish (a shared log with no quorum
// answers nothing) is tried again this much later: nothing else reports once the log is back.
// Used by both kinds of follower (hosted-documents.ts, followed-changes.ts).
export const CATCH_UP_RETRY_MS = 5000;

export interface UpdateLog {
  append(document: string, principal: string, update: Uint8Array): Promise<LogEntry>;
  read(document: string, options?: { untilTime?: number; untilSeq?: number }): Promise<LogEntry[]>;
  // Every entry in order, without holding them all in memory (the audit endpoint streams them).
  iterate(document: string): AsyncIterable<LogEntry>;
  // The last entry's seq and hash: what an auditor, agent or relay keeps to compare later.
  head(document: string): Promise<LogHead | null>;
  documents(): Promise<string[]>;
  // Every document's head, from the stored meta keys (what is on disk, fsync'ed).
  heads(): Promise<LogHead[]>;
  // The heads behind a signed checkpoint, stored (fsync'ed) before the checkpoint is published.
  putCheckpoint(checkpoint: CheckpointHeads): Promise<void>;
  checkpoints(): AsyncIterable<CheckpointHeads>;
  // Documents and entries in the log, for /metrics: the stored counts are read once (one small
  // key per document), appends since are counted as they land.
  // `bytes` where the log knows its own size (NATS: the stream's); else the caller measures the files.
  size(): Promise<{ documents: number; entries: number; bytes?: number }>;
  // Entries that other writers of a shared log (other coordinators) append from now on, in log
  // order, each once; never this log's own appends. A log with one writer has none to deliver.
  // Returns the function that stops the delivery. `missed` is called when the delivery may have
  // lost entries (a shared log's connection dropped and came back): whoever keeps state from it
  // should compare that with the log (the document host does per loaded document; followers
  // that act per document use coordinator/followed-changes.ts).
  follow(deliver: (entry: LogEntry) => void, missed?: () => void): () => void;
  // Where the log is, for log lines and errors (a directory, NATS servers and stream).
  describe(): string;
  // Whether this process is the one that does `task` now (freshness timestamps: one signer at a
  // time). Each call renews the claim; a holder that stops calling loses it after leaseMs. A log
  // with one writer always says yes.
  claim(task: string, leaseMs: number): Promise<boolean>;
  close(): Promise<void>;
}

export async function openUpdateLog(directory: string): Promise<UpdateLog> {
  const db = new Level<string, Uint8Array>(directory, { keyEncoding: 'utf8', valueEncoding: 'view' });
  try {
    await db.open();
  } catch (error) {
    // LevelDB says only "Database failed to open"; the cause (often the LOCK another process holds)
    // is in error.cause.
    const cause = (error as Error & { cause?: Error }).cause?.message ?? (error as Error).message;
    throw new Error(
      `cannot open the update log in ${directory}: ${cause}; is another coordinator or relay using this --data-dir? Stop it, or give this one its own directory`,
    );
  }
  const lastSeq = new Map<string, number>();
  const lastHash = new Map<string, string>();
  let pending: PendingAppend[] = [];
  let flushing: Promise<void> | null = null;

  const seqLoads = new Map<string, Promise<void>>();
  // Appended since the stored counts were read (or since open, before the first size()).
  const appended = { documents: 0, entries: 0 };
  let stored: Promise<{ documents: number; entries: number }> | null = null;

  // Sequence numbers are assigned synchronously after the document's last number is known, so
  // concurrent appends to one document never share a number.
  async function nextSeq(document: string): Promise<number> {
    if (!lastSeq.has(document)) {
      let load = seqLoads.get(document);
      if (!load) {
        load = db.get(metaKey(document)).then(async (stored) => {
          const [seqText, hash] = stored === undefined ? ['0'] : new TextDecoder().decode(stored).split(' ');
          const seq = Number(seqText);
          // A log from before the hash chain: chain its entries once, as readers will.
          let head = hash ?? GENESIS_HASH;
          if (hash === undefined && seq > 0) for await (const entry of iterate(document)) head = entry.hash;
          if (!lastSeq.has(document)) {
            lastSeq.set(document, seq);
            lastHash.set(document, head);
          }
        });
        seqLoads.set(document, load);
      }
      await load;
      seqLoads.delete(document);
    }
    const seq = (lastSeq.get(document) ?? 0) + 1;
    lastSeq.set(document, seq);
    return seq;
  }

  async function* iterate(document: string): AsyncGenerator<LogEntry> {
    let prev = GENESIS_HASH;
    for await (const [, value] of db.iterator({ gte: seqKey(document, 0), lte: seqKey(document, 0xffffffffffff) })) {
      const stored = decodeLogEntry(document, value);
      const prevHash = stored.prevHash ?? prev;
      const hash = stored.hash ?? logEntryHash(prevHash, stored);
      prev = hash;
      yield { ...stored, prevHash, hash };
    }
  }

  async function head(document: string): Promise<LogHead | null> {
    const stored = await db.get(metaKey(document));
    if (stored === undefined) return null;
    const [seqText, hash] = new TextDecoder().decode(stored).split(' ');
    if (hash !== undefined) return { document, seq: Number(seqText), hash };
    let last: LogHead | null = null;
    for await (const entry of iterate(document)) last = { document, seq: entry.seq, hash: entry.hash };
    return last;
  }

  async function flush(): Promise<void> {
    while (pending.length > 0) {
      const batch = pending;
      pending = [];
      const ops: { type: 'put'; key: string; value: Uint8Array }[] = [];
      // Per document: the highest seq and the hash of its last entry in the batch, in one pass (a
      // search of the batch per document cost a rollout wave's batch of n documents n² steps).
      const heads = new Map<string, { seq: number; hash: string }>();
      for (const { entry } of batch) {
        ops.push({ type: 'put', key: seqKey(entry.document, entry.seq), value: encodeLogEntry(entry) });
        const head = heads.get(entry.document);
        if (head === undefined) heads.set(entry.document, { seq: entry.seq, hash: entry.hash });
        else {
          head.seq = Math.max(head.seq, entry.seq);
          head.hash = entry.hash;
        }
      }
      for (const [document, { seq, hash }] of heads)
        ops.push({ type: 'put', key: metaKey(document), value: metaEncoder.encode(`${seq} ${hash}`) });
      try {
        await db.batch(ops, { sync: true });
        appended.entries += batch.length;
        for (const { entry } of batch) if (entry.seq === 1) appended.documents += 1;
        for (const item of batch) item.resolve();
      } catch (error) {
        for (const item of batch) item.reject(error as Error);
      }
    }
    flushing = null;
  }

  return {
    async append(document, principal, update) {
      const seq = await nextSeq(document);
      // Seq and previous hash are taken together, synchronously, so concurrent appends chain in order.
      const prevHash = lastHash.get(document) ?? GENESIS_HASH;
      const partial = { document, seq, receivedAt: Date.now(), principal, update };
      const entry: LogEntry = { ...partial, prevHash, hash: logEntryHash(prevHash, partial) };
      lastHash.set(document, entry.hash);
      await new Promise<void>((resolve, reject) => {
        pending.push({ entry, resolve, reject });
        flushing ??= flush();
      });
      return entry;
    },
    async read(document, options = {}) {
      const entries: LogEntry[] = [];
      for await (const entry of iterate(document)) {
        if (options.untilSeq !== undefined && entry.seq > options.untilSeq) break;
        if (options.untilTime !== undefined && entry.receivedAt > options.untilTime) break;
        entries.push(entry);
      }
      // A whole read (a document loading) ends at the head: the first append to the document then
      // needs no LevelDB read of its meta key (a rollout's wave appends to hundreds of documents at
      // once). Only while no append has numbered an entry of it: this process is the log's only
      // writer, so until then the log holds what the read saw.
      if (options.untilSeq === undefined && options.untilTime === undefined && !lastSeq.has(document)) {
        const last = entries.at(-1);
        lastSeq.set(document, last?.seq ?? 0);
        lastHash.set(document, last?.hash ?? GENESIS_HASH);
      }
      return entries;
    },
    iterate,
    head,
    async documents() {
      const names: string[] = [];
      for await (const key of db.keys({ gt: 'd!', lt: 'd"' })) names.push(key.slice(2));
      return names;
    },
    async heads() {
      const heads: LogHead[] = [];
      const legacy: string[] = [];
      for await (const [key, value] of db.iterator({ gt: 'd!', lt: 'd"' })) {
        const document = key.slice(2);
        const [seqText, hash] = new TextDecoder().decode(value).split(' ');
        if (hash === undefined) legacy.push(document);
        else heads.push({ document, seq: Number(seqText), hash });
      }
      for (const document of legacy) {
        const last = await head(document);
        if (last) heads.push(last);
      }
      return heads;
    },
    async putCheckpoint(checkpoint) {
      await db.put(checkpointKey(checkpoint.seq), new TextEncoder().encode(JSON.stringify(checkpoint)), { sync: true });
    },
    async *checkpoints() {
      for await (const value of db.values({ gt: 'c!', lt: 'c"' }))
        yield JSON.parse(new TextDecoder().decode(value)) as CheckpointHeads;
    },
    async size() {
      stored ??= (async () => {
        // The counts from here on are the appends after this snapshot of the meta keys.
        appended.documents = 0;
        appended.entries = 0;
        let documents = 0;
        let entries = 0;
        for await (const value of db.values({ gt: 'd!', lt: 'd"' })) {
          documents += 1;
          // "<last seq> <hash>" (or "<last seq>" in older logs): the count is the seq.
          entries += Number(new TextDecoder().decode(value).split(' ')[0]) || 0;
        }
        return { documents, entries };
      })();
      const base = await stored;
      return { documents: base.documents + appended.documents, entries: base.entries + appended.entries };
    },
    // LevelDB holds the directory's lock: this process is its only writer.
    follow: () => () => undefined,
    describe: () => directory,
    claim: async () => true,
    async close() {
      await flushing;
      await db.close();
    },
  };
}
