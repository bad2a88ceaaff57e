import { Level } from 'level';
import * as decoding from 'lib0/decoding';
import * as encoding from 'lib0/encoding';

// Append-only log of every accepted Yjs update: document, sequence number, receive time,
// authenticated principal and bytes. Nothing is ever compacted or rewritten, so an auditor can
// rebuild any document as it was at any moment by replaying entries up to that time.
//
// Keys:   u!<document>!<seq as 12 hex digits>  -> encoded LogEntry
//         d!<document>                           -> last sequence number (decimal text)
// Writes are group-committed: every append waits for one fsync'ed batch, and appends that arrive
// while a batch is in flight share the next one.

export interface LogEntry {
  document: string;
  seq: number;
  receivedAt: number;
  principal: string;
  update: Uint8Array;
}

const ENTRY_VERSION = 1;

export function encodeLogEntry(entry: LogEntry): Uint8Array {
  const encoder = encoding.createEncoder();
  encoding.writeVarUint(encoder, ENTRY_VERSION);
  encoding.writeVarUint(encoder, entry.seq);
  encoding.writeFloat64(encoder, entry.receivedAt);
  encoding.writeVarString(encoder, entry.principal);
  encoding.writeVarUint8Array(encoder, entry.update);
  return encoding.toUint8Array(encoder);
}

export function decodeLogEntry(document: string, bytes: Uint8Array): LogEntry {
  const decoder = decoding.createDecoder(bytes);
  const version = decoding.readVarUint(decoder);
  if (version !== ENTRY_VERSION) throw new Error(`update log entry of ${document} has unknown version ${version}`);
  const seq = decoding.readVarUint(decoder);
  const receivedAt = decoding.readFloat64(decoder);
  const principal = decoding.readVarString(decoder);
  const update = decoding.readVarUint8Array(decoder);
  return { document, seq, receivedAt, principal, update };
}

const seqKey = (document: string, seq: number): string => `u!${document}!${seq.toString(16).padStart(12, '0')}`;
const metaKey = (document: string): string => `d!${document}`;

interface PendingAppend {
  entry: LogEntry;
  resolve: () => void;
  reject: (error: Error) => void;
}

export interface UpdateLog {
  append(document: string, principal: string, update: Uint8Array): Promise<LogEntry>;
  read(document: string, options?: { untilTime?: number; untilSeq?: number }): Promise<LogEntry[]>;
  documents(): Promise<string[]>;
  // Documents and entries in the log, for /metrics: the stored counts are read once (one small
  // key per document), appends since are counted as they land.
  size(): Promise<{ documents: number; entries: number }>;
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
        load = db.get(metaKey(document)).then((stored) => {
          if (!lastSeq.has(document))
            lastSeq.set(document, stored === undefined ? 0 : Number(new TextDecoder().decode(stored)));
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

  async function flush(): Promise<void> {
    while (pending.length > 0) {
      const batch = pending;
      pending = [];
      const ops: { type: 'put'; key: string; value: Uint8Array }[] = [];
      const highest = new Map<string, number>();
      for (const { entry } of batch) {
        ops.push({ type: 'put', key: seqKey(entry.document, entry.seq), value: encodeLogEntry(entry) });
        highest.set(entry.document, Math.max(highest.get(entry.document) ?? 0, entry.seq));
      }
      for (const [document, seq] of highest) {
        ops.push({ type: 'put', key: metaKey(document), value: new TextEncoder().encode(String(seq)) });
      }
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
      const entry: LogEntry = { document, seq, receivedAt: Date.now(), principal, update };
      await new Promise<void>((resolve, reject) => {
        pending.push({ entry, resolve, reject });
        flushing ??= flush();
      });
      return entry;
    },
    async read(document, options = {}) {
      const entries: LogEntry[] = [];
      for await (const [, value] of db.iterator({ gte: seqKey(document, 0), lte: seqKey(document, 0xffffffffffff) })) {
        const entry = decodeLogEntry(document, value);
        if (options.untilSeq !== undefined && entry.seq > options.untilSeq) break;
        if (options.untilTime !== undefined && entry.receivedAt > options.untilTime) break;
        entries.push(entry);
      }
      return entries;
    },
    async documents() {
      const names: string[] = [];
      for await (const key of db.keys({ gt: 'd!', lt: 'd"' })) names.push(key.slice(2));
      return names;
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
          entries += Number(new TextDecoder().decode(value)) || 0;
        }
        return { documents, entries };
      })();
      const base = await stored;
      return { documents: base.documents + appended.documents, entries: base.entries + appended.entries };
    },
    async close() {
      await flushing;
      await db.close();
    },
  };
}
