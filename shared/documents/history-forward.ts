import * as encoding from 'lib0/encoding';
import * as Y from 'yjs';
import { ACTION_RESULTS_KEY, RESULTS_KEY } from './status.js';

// Passing on a garbage-collected document's history without losing what was deleted since.
//
// A status document collects garbage: once an item is deleted, the copy in memory keeps only its
// length, and a state diff (sync step 2) carries a tombstone for it. A relay that logged a host's
// result and then the host's deletion of it (the agent prunes what its upstream holds,
// agent/status-delivery.ts) would so pass on neither the result nor its signature: the
// coordinator's update log, which the audit replays, would never see it. The relay's own log has
// it, so the relay passes on its log's updates instead, merged in batches, each batch as two
// updates: its items with their content first, then its deletions. A receiver stores what each
// update adds (coordinator/hosted-documents.ts): an update that inserted and deleted an item at
// once would be stored as a tombstone too, hence the split.

function encodeVector(vector: ReadonlyMap<number, number>): Uint8Array {
  const encoder = encoding.createEncoder();
  encoding.writeVarUint(encoder, vector.size);
  for (const [client, clock] of vector) {
    encoding.writeVarUint(encoder, client);
    encoding.writeVarUint(encoder, clock);
  }
  return encoding.toUint8Array(encoder);
}

const EMPTY = 0;

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i += 1) if (a[i] !== b[i]) return false;
  return true;
}

// An update (Yjs v1) as its items alone and its deletions alone; null for a part it lacks. An
// update whose encoding is not what Yjs writes (it never happens with Yjs' own) stays whole.
export function splitItemsFirst(update: Uint8Array): { items: Uint8Array | null; deletions: Uint8Array | null } {
  const { to } = Y.parseUpdateMeta(update);
  // Everything below the update's own ends removed: its deletions alone (an empty item section).
  const deletions = Y.diffUpdate(update, encodeVector(to));
  const deleteSet = deletions.subarray(1);
  const hasDeletions = !(deleteSet.length === 1 && deleteSet[0] === EMPTY);
  const hasItems = to.size > 0;
  if (!hasDeletions) return { items: hasItems ? update : null, deletions: null };
  if (!hasItems) return { items: null, deletions };
  // A v1 update is its item section, then its delete set: cut the one off and end with an empty one.
  const cut = update.length - deleteSet.length;
  if (deletions[0] !== EMPTY || cut <= 0 || !sameBytes(update.subarray(cut), deleteSet))
    return { items: update, deletions: null };
  const items = new Uint8Array(cut + 1);
  items.set(update.subarray(0, cut));
  items[cut] = EMPTY;
  return { items, deletions };
}

// Whether a diff against `vector` (what a receiver holds) would lose content: the document
// deleted an item the receiver does not hold yet, so the diff carries its tombstone only.
export function diffLosesContent(doc: Y.Doc, vector: Uint8Array): boolean {
  if (!doc.gc) return false;
  const held = Y.decodeStateVector(vector);
  // The document's own delete set: what a diff would carry (every diff carries all of it), read
  // from the store instead of encoding the diff and decoding it again.
  for (const [client, deleted] of Y.createDeleteSetFromStructStore(doc.store).clients)
    for (const range of deleted) if (range.clock + range.len > (held.get(client) ?? 0)) return true;
  return false;
}

// Batches of logged updates are merged up to this size: well under a coordinator's
// --max-update-size (256 KiB by default), which each logged update was held to already.
export const HISTORY_BATCH_BYTES = 96 * 1024;

// The updates to send a receiver that holds `vector` so it gets every item `updates` (a log, in
// order) ever held with its content, then the deletions: items-first pairs per batch.
export async function historySince(
  updates: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  vector: Uint8Array,
  batchBytes = HISTORY_BATCH_BYTES,
): Promise<Uint8Array[]> {
  const parts: Uint8Array[] = [];
  let batch: Uint8Array[] = [];
  let bytes = 0;
  const flush = (): void => {
    if (batch.length === 0) return;
    const missing = Y.diffUpdate(batch.length === 1 ? batch[0]! : Y.mergeUpdates(batch), vector);
    batch = [];
    bytes = 0;
    const { items, deletions } = splitItemsFirst(missing);
    if (items) parts.push(items);
    if (deletions) parts.push(deletions);
  };
  for await (const update of updates) {
    if (bytes > 0 && bytes + update.length > batchBytes) flush();
    batch.push(update);
    bytes += update.length;
  }
  flush();
  return parts;
}

// An update as the updates to apply in turn so a garbage-collecting receiver keeps the content of
// what the update both carries and deletes (a return bundle's status document, admin/bundle.ts).
export function itemsFirst(update: Uint8Array): Uint8Array[] {
  const { items, deletions } = splitItemsFirst(update);
  const parts = [items, deletions].filter((part): part is Uint8Array => part !== null);
  return parts.length ? parts : [update];
}

// A copy of a status document that collects garbage except the content of deleted results and
// action results: its state carries them (a return bundle: results the site's agents pruned after
// the site relay logged them), while overwritten statuses go as usual.
export function historyKeepingDoc(gc: boolean): Y.Doc {
  const kept: unknown[] = [];
  const doc = new Y.Doc({ gc, gcFilter: (item) => !kept.includes(item.parent) });
  // Made before any update arrives, so every item of theirs has these very types as parent.
  kept.push(doc.getArray(RESULTS_KEY), doc.getArray(ACTION_RESULTS_KEY));
  return doc;
}
