import type * as Y from 'yjs';
import { verifyPayloadSignature } from '../shared/crypto/signatures.js';
import { ENTRY_LIMITS, parseEntry } from '../shared/documents/entries.js';
import {
  actionResultsArray,
  collectBundlesMap,
  KEPT_ACTION_RESULTS,
  KEPT_RESULTS,
  resultsArray,
} from '../shared/documents/status.js';
import { type ActionResult, signedActionResultSchema } from '../shared/schemas/action.js';
import { type Result, signedResultSchema } from '../shared/schemas/report.js';
import { HISTORY_LENGTH } from './pipeline/state.js';
import { isDelivered } from './status-delivery.js';

// Results kept in the live status document. Every result stays in the coordinator's update log
// (the audit replays it, docs/audit.md); the live document needs only what its readers read, and
// without pruning it grew by up to ~10 KiB per deployment until the coordinator refused to store
// it (--max-document-size): a host unable to write its status after a few thousand deployments.
//
// Kept, whatever their age:
// - the newest KEPT_RESULTS by number (the highest one always: the agent numbers its next result
//   after it, status-publish.ts);
// - the newest HISTORY_LENGTH `applied` results: a wiped agent rebuilds `applied`, `previous` and
//   the generations a rollback may name from them (pipeline/floor.ts);
// - every result answering the intent of the newest attempt (not a refusal): it carries the
//   anti-rollback floor a wiped agent rebuilds, and it is what a rollout gate reads as evidence for
//   the intent the host works on (coordinator/rollouts.ts picks results by intent digest);
// - results answering `keepDigests` (the agent's applied and target intents);
// - every result no history keeper is known to hold yet (agent/status-delivery.ts): deleted before
//   its upstream logged it, its content would never reach the coordinator's update log (the
//   document collects garbage; a later sync carries only a tombstone) and the audit would show a
//   gap for an honest host. Up to MAX_UNDELIVERED_RESULTS of them: past that (a host cut off for
//   a very long time) the oldest go, and the result written with their deletion names them in its
//   signed `droppedUndelivered`, so the audit names them as dropped by the host, not missing.
// Only entries this host's key validly signed are ever deleted or counted: a forged "result #10⁹"
// under the host's key but with a bad signature cannot push real ones out. Other writers' entries
// are left to purgeForeignEntries (status-store.ts).

// Undelivered results kept at most, beyond the rules above (~10 KiB each at most: 5 MiB, a sixth
// of the coordinator's default --max-document-size), and undelivered action results.
export const MAX_UNDELIVERED_RESULTS = 512;
export const MAX_UNDELIVERED_ACTION_RESULTS = 256;

interface OwnEntry<T> {
  index: number;
  result: T;
  // Whether a history keeper holds the entry (its Yjs item is below the delivered vector).
  delivered: boolean;
}

// Whether the item at (client, clock) is held upstream.
export type DeliveredCheck = (id: { client: number; clock: number }) => boolean;
export const deliveredBy =
  (vector: ReadonlyMap<number, number>): DeliveredCheck =>
  (id) =>
    isDelivered(vector, id);

type Kind = 'result' | 'action-result';
type Checked = { result: Result | ActionResult; publicKey: string; valid: boolean } | null;

// Each raw value is parsed and its signature checked once per process: a report reads the same
// ~65 entries again each time, and hashing an 8 KiB payload for the verify-once cache cost more
// than everything else a report does. Keyed by the value itself, which Yjs hands out unchanged
// for as long as the entry lives (nothing here or in Yjs mutates it); a deleted entry's value is
// collected with it.
const checkedValues: Record<Kind, WeakMap<object, Checked>> = { result: new WeakMap(), 'action-result': new WeakMap() };

function check(raw: unknown, kind: Kind): Checked {
  if (typeof raw !== 'object' || raw === null) return null;
  const cache = checkedValues[kind];
  const known = cache.get(raw);
  if (known !== undefined) return known;
  const parsed =
    kind === 'result'
      ? parseEntry(raw, signedResultSchema, ENTRY_LIMITS.result)
      : parseEntry(raw, signedActionResultSchema, ENTRY_LIMITS.actionResult);
  const checked: Checked = parsed.ok
    ? {
        result: parsed.value.result,
        publicKey: parsed.value.signature.publicKey,
        valid: verifyPayloadSignature(kind, parsed.value.result, parsed.value.signature),
      }
    : null;
  cache.set(raw, checked);
  return checked;
}

// The array's values with their positions and Yjs ids, walking its items (one item may hold
// several values, each one clock apart).
function ownEntries<T extends Result | ActionResult>(
  array: Y.Array<unknown>,
  hostKey: string,
  kind: Kind,
  delivered: DeliveredCheck,
): OwnEntry<T>[] {
  const own: OwnEntry<T>[] = [];
  let index = 0;
  for (let item = array._start; item !== null; item = item.right) {
    if (item.deleted || !item.countable) continue;
    const values = item.content.getContent();
    values.forEach((raw, offset) => {
      const checked = check(raw, kind);
      if (checked?.valid && checked.publicKey === hostKey)
        own.push({
          index: index + offset,
          result: checked.result as T,
          delivered: delivered({ client: item.id.client, clock: item.id.clock + offset }),
        });
    });
    index += values.length;
  }
  return own;
}

// The result numbers to keep, by the rules above.
export function keptResultSeqs(results: readonly Result[], keepDigests: ReadonlySet<string>): Set<number> {
  const newestFirst = [...results].sort((a, b) => b.seq - a.seq);
  const keep = new Set<number>();
  for (const r of newestFirst) {
    if (keep.size >= KEPT_RESULTS) break;
    keep.add(r.seq);
  }
  for (const r of newestFirst.filter((r) => r.outcome === 'applied').slice(0, HISTORY_LENGTH)) keep.add(r.seq);
  const attempt = newestFirst.find((r) => r.outcome !== 'refused');
  for (const r of newestFirst)
    if (r.intentDigest === attempt?.intentDigest || keepDigests.has(r.intentDigest)) keep.add(r.seq);
  return keep;
}

// Deletes the positions in `indices` (ascending), a run of neighbours at a time, last run first.
function deleteIndices(array: Y.Array<unknown>, indices: number[]): void {
  let end = indices.length;
  while (end > 0) {
    let start = end - 1;
    while (start > 0 && indices[start - 1] === indices[start]! - 1) start -= 1;
    array.delete(indices[start]!, end - start);
    end = start;
  }
}

export interface ResultPrune {
  // Positions to delete (ascending).
  indices: number[];
  // The numbers of the undelivered results among them (past MAX_UNDELIVERED_RESULTS).
  undelivered: number[];
}

// What pruning would delete: results no rule keeps that a history keeper holds, and the oldest
// undelivered ones past `maxUndelivered` (by number, the kept ones never).
export function planResultPrune(
  doc: Y.Doc,
  hostKey: string,
  keepDigests: ReadonlySet<string>,
  delivered: DeliveredCheck,
  maxUndelivered = MAX_UNDELIVERED_RESULTS,
): ResultPrune {
  const array = resultsArray(doc);
  // Cheap first: at most this many entries means nothing to prune.
  if (array.length <= KEPT_RESULTS) return { indices: [], undelivered: [] };
  const own = ownEntries<Result>(array, hostKey, 'result', delivered);
  const keep = keptResultSeqs(
    own.map((e) => e.result),
    keepDigests,
  );
  const prunable = own.filter((e) => !keep.has(e.result.seq));
  const held = prunable.filter((e) => !e.delivered).sort((a, b) => a.result.seq - b.result.seq);
  const over = held.slice(0, Math.max(0, held.length - maxUndelivered));
  const dropped = new Set(over);
  const drop = prunable.filter((e) => e.delivered || dropped.has(e));
  return {
    indices: drop.map((e) => e.index).sort((a, b) => a - b),
    undelivered: over.map((e) => e.result.seq),
  };
}

// Deletes this host's results that none of the rules keep, in a transaction of its own (see
// report in status-publish.ts), and those named in `alsoDrop` (the undelivered ones a signed
// result names); the number deleted.
export function pruneOwnResults(
  doc: Y.Doc,
  hostKey: string,
  keepDigests: ReadonlySet<string>,
  delivered: DeliveredCheck,
  alsoDrop: ReadonlySet<number> = new Set(),
): number {
  // Nothing over the bound here: only what a signed note names goes undelivered.
  const plan = planResultPrune(doc, hostKey, keepDigests, delivered, Number.POSITIVE_INFINITY);
  const array = resultsArray(doc);
  const extra =
    alsoDrop.size === 0
      ? []
      : ownEntries<Result>(array, hostKey, 'result', delivered)
          .filter((e) => alsoDrop.has(e.result.seq))
          .map((e) => e.index);
  const drop = [...new Set([...plan.indices, ...extra])].sort((a, b) => a - b);
  if (drop.length) doc.transact(() => deleteIndices(array, drop), 'local');
  return drop.length;
}

// Action results: the newest KEPT_ACTION_RESULTS by number, those naming a collect bundle still
// kept beside them (an admin fetches a bundle through the signed answer that names its digest),
// and those no history keeper holds yet, up to MAX_UNDELIVERED_ACTION_RESULTS (the oldest past it
// go: the audit checks no numbering of action results, and their requests stay in the log).
export function pruneOwnActionResults(
  doc: Y.Doc,
  hostKey: string,
  delivered: DeliveredCheck,
  maxUndelivered = MAX_UNDELIVERED_ACTION_RESULTS,
): number {
  const array = actionResultsArray(doc);
  if (array.length <= KEPT_ACTION_RESULTS) return 0;
  const own = ownEntries<ActionResult>(array, hostKey, 'action-result', delivered);
  const bundles = new Set(collectBundlesMap(doc).keys());
  const keep = new Set(
    [...own]
      .sort((a, b) => b.result.seq - a.result.seq)
      .slice(0, KEPT_ACTION_RESULTS)
      .map((e) => e.result.seq),
  );
  const prunable = own.filter(
    (e) => !keep.has(e.result.seq) && !(e.result.bundleDigest !== undefined && bundles.has(e.result.id)),
  );
  const held = prunable.filter((e) => !e.delivered).sort((a, b) => a.result.seq - b.result.seq);
  const over = new Set(held.slice(0, Math.max(0, held.length - maxUndelivered)));
  const drop = prunable
    .filter((e) => e.delivered || over.has(e))
    .map((e) => e.index)
    .sort((a, b) => a - b);
  if (drop.length) doc.transact(() => deleteIndices(array, drop), 'local');
  return drop.length;
}

// The highest number among this host's own results that is above `counter` (or `counter`): only
// entries claiming a higher number can change the next one, so only their signatures are checked,
// instead of every own result's at every report.
export function highestOwnSeq(array: Y.Array<unknown>, hostKey: string, counter: number, kind: Kind): number {
  let highest = counter;
  for (const raw of array.toArray()) {
    const checked = check(raw, kind);
    if (checked?.valid && checked.publicKey === hostKey && checked.result.seq > highest) highest = checked.result.seq;
  }
  return highest;
}
