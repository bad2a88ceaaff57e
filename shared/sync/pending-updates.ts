import * as Y from 'yjs';

// Updates a document holds back because structs they build on never arrived.
//
// Yjs integrates an update only after every struct it depends on (the writer's earlier ones, the
// items it is inserted next to); until then it waits in the document's pending structs (and
// deletions of unknown items in its pending delete set), merged again with every later update
// that also waits (CPU proportional to what waits, per update). A writer that withholds one
// struct (the fuzzer's y-sync classes; any compromised coordinator or relay) makes every later
// update of its own wait for ever, unseen by readers and unbounded: one relay of the fuzzer's
// second long run held 1.15 MiB of them in one document (docs/fuzzing.md, "The long run").
// Honest peers send updates in order, so what waits is resolved by the next message or two.

// The largest a document's waiting updates may grow: one update of the servers' largest message
// (--max-payload, 1 MiB by default) arriving before the one it depends on still fits. Past it
// they are dropped: they stay with their writer, who sends them again at its next sync (its step
// 2 answers the reader's state vector, which never covered them).
export const MAX_PENDING_UPDATE_BYTES = 1024 * 1024;

export interface PendingUpdates {
  document: string;
  // The Yjs client ids of the writers whose updates wait, and of those whose structs are awaited
  // (with the first clock missing): usually the same writer, who withheld one of its own.
  writers: number[];
  missing: { client: number; clock: number }[];
  // Encoded bytes waiting (structs and deletions).
  bytes: number;
}

export function pendingUpdateBytes(doc: Y.Doc): number {
  return (doc.store.pendingStructs?.update.length ?? 0) + (doc.store.pendingDs?.length ?? 0);
}

// What waits in `doc`, for a log line; null when nothing does.
export function describePendingUpdates(doc: Y.Doc, document: string): PendingUpdates | null {
  const bytes = pendingUpdateBytes(doc);
  if (bytes === 0) return null;
  const pending = doc.store.pendingStructs;
  let writers: number[] = [];
  if (pending) {
    try {
      // Pending updates are kept in Yjs's v2 encoding.
      writers = [...Y.parseUpdateMetaV2(pending.update).from.keys()];
    } catch {
      // What Yjs itself merged: readable; an empty list is still a report.
    }
  }
  return {
    document,
    writers,
    missing: [...(pending?.missing ?? [])].map(([client, clock]) => ({ client, clock })),
    bytes,
  };
}

// Drops what waits (see MAX_PENDING_UPDATE_BYTES) and returns what it was; null when it was within
// the bound.
export function boundPendingUpdates(
  doc: Y.Doc,
  document: string,
  maxBytes = MAX_PENDING_UPDATE_BYTES,
): PendingUpdates | null {
  if (pendingUpdateBytes(doc) <= maxBytes) return null;
  const dropped = describePendingUpdates(doc, document);
  doc.store.pendingStructs = null;
  doc.store.pendingDs = null;
  return dropped;
}
