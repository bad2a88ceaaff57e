import * as Y from 'yjs';
import type { AuditLogEntry } from './log-chain.js';

// What one log entry changed in a document: values appended to its arrays, keys set or removed
// in its maps. Signed values are judged later (history.ts); this only attributes them.
export interface EntryChange {
  entry: AuditLogEntry;
  inserted: { array: string; values: unknown[] }[];
  set: { map: string; key: string; value: unknown }[];
  // `values`: what an array lost, when the replay still holds it (gc is off, so it does).
  removed: { from: string; count: number; values?: unknown[] }[];
  // The update could not be applied (corrupt bytes).
  error?: string;
}

export interface ReplayShape {
  arrays: readonly string[];
  maps: readonly string[];
}

// Replays entries in log order into a Y.Doc with gc off, one update at a time, so what each
// entry changed is known. Never Y.mergeUpdates: it is super-linear on long histories.
// `until` stops before the first entry received after it (ms).
export function replayDocument(
  entries: Iterable<AuditLogEntry>,
  shape: ReplayShape,
  onChange: (change: EntryChange) => void,
  until?: number,
): Y.Doc {
  const doc = new Y.Doc({ gc: false });
  let current: EntryChange | null = null;
  for (const name of shape.arrays) {
    doc.getArray<unknown>(name).observe((event) => {
      for (const op of event.changes.delta)
        if (op.insert !== undefined)
          current?.inserted.push({ array: name, values: Array.isArray(op.insert) ? op.insert : [op.insert] });
      // One entry per array and update, with the values it deleted.
      const deleted = [...event.changes.deleted];
      const count = deleted.reduce((n, item) => n + item.length, 0);
      if (count > 0)
        current?.removed.push({ from: name, count, values: deleted.flatMap((item) => item.content.getContent()) });
    });
  }
  for (const name of shape.maps) {
    const map = doc.getMap<unknown>(name);
    map.observe((event) => {
      for (const key of event.keysChanged) {
        if (map.has(key)) current?.set.push({ map: name, key, value: map.get(key) });
        else current?.removed.push({ from: `${name}.${key}`, count: 1 });
      }
    });
  }
  for (const entry of entries) {
    if (until !== undefined && entry.receivedAt > until) break;
    current = { entry, inserted: [], set: [], removed: [] };
    try {
      Y.applyUpdate(doc, entry.update, 'audit');
    } catch (error) {
      current.error = `update does not decode: ${(error as Error).message}`;
    }
    onChange(current);
  }
  current = null;
  return doc;
}
