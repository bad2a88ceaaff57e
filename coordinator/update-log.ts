import { open as openFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { Level } from 'level';
import * as decoding from 'lib0/decoding';
import * as encoding from 'lib0/encoding';
import type { CheckpointHeads } from '../shared/audit/checkpoint.js';
import { GENESIS_HASH, type LogHead, logEntryHash } from '../shared/audit/log-chain.js';
import {
  DEFAULT_SEGMENT_BYTES,
  openSegmentFile,
  openWriteAheadLog,
  type ReplayEnd,
  WAL_FILE_NAME,
  type WalOperation,
  type WriteAheadLog,
} from './write-ahead-log.js';

// Append-only log of every accepted Yjs update: document, sequence number, receive time,
// authenticated principal and bytes. Nothing is ever compacted or rewritten, so an auditor can
// rebuild any document as it was at any moment by replaying entries up to that time.
//
// Keys:   u!<document>!<seq as 12 hex digits>  -> encoded LogEntry
//         d!<document>                           -> "<last seq> <its hash>" (older logs: "<last seq>")
//         c!<checkpoint seq as 12 hex digits>    -> JSON CheckpointHeads: the heads behind a signed
//                                                   checkpoint that moved since the one before
//         w!checkpoint                           -> empty: written with `sync` at each write-ahead log checkpoint
// Each entry is chained to the one before it by hash (shared/audit/log-chain.ts), so a copy of
// the log that was cut short, reordered or rewritten no longer reaches a head someone kept.
// Entries written before the chain existed (version 1) get their hashes computed on reading.
// Writes are group-committed: the appends of one turn of the event loop (of each millisecond of a
// busy one) share one record in the write-ahead log (write-ahead-log.ts: a preallocated segment, written and fdatasync'ed on the main
// thread, no thread-pool round trip), and resolve once that record is on disk; their LevelDB batch
// follows without `sync`, in order, and readers wait for it. A checkpoint (a LevelDB write with
// `sync`, and its older log files fdatasync'ed) makes LevelDB durable up to there, so the segment
// can start over; on open, the records after the last checkpoint are put into LevelDB again.

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

export function encodeLogEntry(entry: LogEntry): Uint8Array {
  const encoder = encoding.createEncoder();
  encoding.writeVarUint(encoder, ENTRY_VERSION);
  encoding.writeVarUint(encoder, entry.seq);
  encoding.writeFloat64(encoder, entry.receivedAt);
  encoding.writeVarString(encoder, entry.principal);
  encoding.writeVarUint8Array(encoder, entry.update);
  encoding.writeVarString(encoder, entry.prevHash);
  encoding.writeVarString(encoder, entry.hash);
  return encoding.toUint8Array(encoder);
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
const checkpointKey = (seq: number): string => `c!${seq.toString(16).padStart(12, '0')}`;

const CHECKPOINT_KEY = 'w!checkpoint';
// How long a turn of the event loop may keep its appends before committing them (see scheduleCommit).
const COMMIT_AFTER_MS = 1;

interface PendingAppend {
  entry: LogEntry;
  resolve: () => void;
  reject: (error: Error) => void;
}

// A group commit's operations on their way into LevelDB, and what they add to size().
interface LevelWrite {
  operations: WalOperation[];
  entries: number;
  newDocuments: number;
}

export interface WalReplay {
  path: string;
  records: number;
  entries: number;
  stoppedBy: ReplayEnd;
}

export interface UpdateLogOptions {
  // Called on open when the write-ahead log held records the previous process may not have put
  // into LevelDB (it stopped without closing the log), after they were put there again.
  onReplay?: (replay: WalReplay) => void;
  // Size of a new write-ahead log segment (an existing one keeps its size).
  segmentBytes?: number;
}

// LevelDB syncs only its current log file on a `sync` write: one it switched away from (a full
// memtable) is closed unsynced and stays until its table is written. A checkpoint syncs those too.
async function syncLevelDbLogFiles(directory: string): Promise<void> {
  const names = (await readdir(directory)).filter((name) => /^[0-9]+\.log$/.test(name)).sort();
  for (const name of names) {
    const file = await openFile(join(directory, name), 'r').catch((error: NodeJS.ErrnoException) => {
      // Compacted into a table (synced) and removed since the listing.
      if (error.code === 'ENOENT') return null;
      throw error;
    });
    if (!file) continue;
    try {
      await file.datasync();
    } finally {
      await file.close();
    }
  }
}

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve = (): void => undefined;
  const promise = new Promise<void>((r) => {
    resolve = r;
  });
  return { promise, resolve };
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
// - `append` resolves only once the entry is durable (LevelDB: its write-ahead record
//   fdatasync'ed; NATS: stored by a stream quorum), and rejects with a message that says why and
//   what to do when it is not; every read after that sees it;
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

export async function openUpdateLog(directory: string, options: UpdateLogOptions = {}): Promise<UpdateLog> {
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
  let wal: WriteAheadLog;
  try {
    const walPath = join(directory, WAL_FILE_NAME);
    wal = openWriteAheadLog(walPath, openSegmentFile(walPath, options.segmentBytes ?? DEFAULT_SEGMENT_BYTES));
  } catch (error) {
    await db.close();
    throw error;
  }
  const lastSeq = new Map<string, number>();
  const lastHash = new Map<string, string>();
  let pending: PendingAppend[] = [];
  let commitScheduled = false;
  let commitSoon = false;
  // When the oldest of the pending appends was made (performance.now()).
  let firstPendingAt = 0;
  // A checkpoint the next commits wait for (the segment was full).
  let stalled: Promise<void> | null = null;
  // Once the write-ahead log or LevelDB failed, every append and read says so: acknowledged
  // appends may then be in the write-ahead log only, and a restart puts them into LevelDB.
  let failure: Error | null = null;
  const fail = (error: unknown, what: string): Error => {
    failure ??= new Error(
      `the update log in ${directory} failed ${what}: ${(error as Error).message}; restart the coordinator (appends already acknowledged are replayed from ${wal.path})`,
      { cause: error },
    );
    return failure;
  };

  // Group commits on their way into LevelDB, one batch at a time, in order.
  let levelQueue: LevelWrite[] = [];
  let levelQueued: { promise: Promise<void>; resolve: () => void } | null = null;
  let levelInFlight: Promise<void> | null = null;

  const seqLoads = new Map<string, Promise<void>>();
  // In LevelDB since the stored counts were read (or since open, before the first size()).
  const appended = { documents: 0, entries: 0 };
  let stored: Promise<{ documents: number; entries: number }> | null = null;

  function queueLevelWrite(write: LevelWrite): void {
    levelQueue.push(write);
    if (!levelInFlight) void drainLevelWrites();
  }

  async function drainLevelWrites(): Promise<void> {
    while (levelQueue.length > 0) {
      const writes = levelQueue;
      const done = levelQueued;
      levelQueue = [];
      levelQueued = null;
      const operations = writes.flatMap((w) =>
        w.operations.map(({ key, value }) => ({ type: 'put' as const, key, value })),
      );
      levelInFlight = db.batch(operations, { sync: false }).then(
        () => {
          for (const write of writes) {
            appended.entries += write.entries;
            appended.documents += write.newDocuments;
          }
        },
        (error: unknown) => {
          fail(error, 'to write to LevelDB');
        },
      );
      await levelInFlight;
      done?.resolve();
    }
    levelInFlight = null;
  }

  // Settles once everything appended so far is in LevelDB: readers await it, so they see every
  // append that resolved before them.
  async function written(): Promise<void> {
    if (levelQueue.length > 0) {
      levelQueued ??= deferred();
      await levelQueued.promise;
    } else if (levelInFlight) await levelInFlight;
    if (failure) throw failure;
  }

  // Everything in the write-ahead log is durably in LevelDB: the segment starts over.
  async function checkpoint(): Promise<void> {
    await written();
    await db.put(CHECKPOINT_KEY, new Uint8Array(), { sync: true });
    await syncLevelDbLogFiles(directory);
    wal.recycle();
  }

  // Appends the previous process acknowledged may be in the write-ahead log only. Putting them
  // again is harmless when they did reach LevelDB: the same keys get the same values, in order.
  const { records, stoppedBy } = wal.recovered;
  if (records.length > 0) {
    try {
      const operations = records.flat().map(({ key, value }) => ({ type: 'put' as const, key, value }));
      await db.batch(operations, { sync: true });
      await checkpoint();
    } catch (error) {
      wal.close();
      await db.close();
      throw new Error(`cannot replay the write-ahead log ${wal.path} into ${directory}: ${(error as Error).message}`, {
        cause: error,
      });
    }
    const entries = records.reduce((n, record) => n + record.filter((op) => op.key.startsWith('u!')).length, 0);
    options.onReplay?.({ path: wal.path, records: records.length, entries, stoppedBy });
  }

  function operationsFor(batch: PendingAppend[]): WalOperation[] {
    const operations: WalOperation[] = [];
    const highest = new Map<string, number>();
    for (const { entry } of batch) {
      operations.push({ key: seqKey(entry.document, entry.seq), value: encodeLogEntry(entry) });
      highest.set(entry.document, Math.max(highest.get(entry.document) ?? 0, entry.seq));
    }
    for (const [document, seq] of highest) {
      const hash = batch.findLast((p) => p.entry.document === document)!.entry.hash;
      operations.push({ key: metaKey(document), value: new TextEncoder().encode(`${seq} ${hash}`) });
    }
    return operations;
  }

  const levelWrite = (batch: PendingAppend[], operations: WalOperation[]): LevelWrite => ({
    operations,
    entries: batch.length,
    newDocuments: batch.filter((p) => p.entry.seq === 1).length,
  });

  // All appends of one turn of the event loop (a rollout wave's writes arriving together) share
  // one record: setImmediate runs once the turn's I/O callbacks are done. A turn that is still
  // processing writes COMMIT_AFTER_MS after the first of its pending ones (a wave's frames piled
  // up while the main thread was busy) commits then, at the next microtask checkpoint: else the
  // first writes of the turn wait for the processing of all the others before they are handed on.
  function scheduleCommit(): void {
    if (stalled || pending.length === 0) return;
    if (!commitSoon && performance.now() - firstPendingAt >= COMMIT_AFTER_MS) {
      commitSoon = true;
      queueMicrotask(() => {
        commitSoon = false;
        commit();
      });
    }
    if (commitScheduled) return;
    commitScheduled = true;
    setImmediate(commit);
  }

  function commit(): void {
    commitScheduled = false;
    if (stalled || pending.length === 0) return;
    const batch = pending;
    pending = [];
    const rejectAll = (error: Error): void => {
      for (const item of batch) item.reject(error);
    };
    if (failure) {
      rejectAll(failure);
      return;
    }
    const operations = operationsFor(batch);
    try {
      if (wal.append(operations)) {
        // Durable: the appends resolve (and their updates are handed on) before LevelDB has them.
        for (const item of batch) item.resolve();
        queueLevelWrite(levelWrite(batch, operations));
        return;
      }
    } catch (error) {
      rejectAll(fail(error, 'to write its write-ahead log'));
      return;
    }
    // The segment is full: checkpoint, start it over and write the record there; a record larger
    // than a whole segment goes to LevelDB with `sync` instead (nothing before it is left to replay).
    stalled = (async () => {
      await checkpoint();
      if (wal.append(operations)) queueLevelWrite(levelWrite(batch, operations));
      else {
        await db.batch(
          operations.map(({ key, value }) => ({ type: 'put' as const, key, value })),
          { sync: true },
        );
        const write = levelWrite(batch, operations);
        appended.entries += write.entries;
        appended.documents += write.newDocuments;
      }
    })().then(
      () => {
        for (const item of batch) item.resolve();
      },
      (error: unknown) => rejectAll(fail(error, 'at a checkpoint')),
    );
    void stalled.finally(() => {
      stalled = null;
      scheduleCommit();
    });
  }

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
    await written();
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
    await written();
    const stored = await db.get(metaKey(document));
    if (stored === undefined) return null;
    const [seqText, hash] = new TextDecoder().decode(stored).split(' ');
    if (hash !== undefined) return { document, seq: Number(seqText), hash };
    let last: LogHead | null = null;
    for await (const entry of iterate(document)) last = { document, seq: entry.seq, hash: entry.hash };
    return last;
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
        if (pending.length === 0) firstPendingAt = performance.now();
        pending.push({ entry, resolve, reject });
        scheduleCommit();
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
      await written();
      const names: string[] = [];
      for await (const key of db.keys({ gt: 'd!', lt: 'd"' })) names.push(key.slice(2));
      return names;
    },
    async heads() {
      await written();
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
      await written();
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
      // What landed in LevelDB while the stored counts were read is in `appended`.
      await written();
      return { documents: base.documents + appended.documents, entries: base.entries + appended.entries };
    },
    // LevelDB holds the directory's lock: this process is its only writer.
    follow: () => () => undefined,
    describe: () => directory,
    claim: async () => true,
    async close() {
      // Commit what is pending, then checkpoint: a log closed cleanly has nothing to replay.
      while (pending.length > 0 || stalled || commitScheduled) {
        if (stalled) await stalled.catch(() => undefined);
        else if (commitScheduled) await new Promise((resolve) => setImmediate(resolve));
        else commit();
      }
      try {
        if (!failure) await checkpoint();
      } finally {
        wal.close();
        await db.close();
      }
    },
  };
}
