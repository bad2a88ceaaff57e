import type * as Y from 'yjs';
import { canonicalJson } from '../crypto/canonical.js';
import { sha256Hex } from '../crypto/encoding.js';
import { verifyPayloadSignature } from '../crypto/signatures.js';
import {
  type CollectBundle,
  collectBundleSchema,
  type SignedActionResult,
  signedActionResultSchema,
} from '../schemas/action.js';
import { type SignedResult, type SignedStatus, signedResultSchema, signedStatusSchema } from '../schemas/report.js';
import { ENTRY_LIMITS, type MalformedEntry, parseEntry } from './entries.js';

// hosts/<id>/status: the agent's current signed status under one key (rewritten only on change,
// so the document stays small with gc on) and arrays of signed results, appended to by the agent,
// which deletes its own old ones (KEPT_RESULTS). Anyone who
// can write the document (a relay, a compromised coordinator) can put anything here; readers
// bound and parse every entry, and the host's own decisions use only entries its key signed.
export const STATUS_MAP = 'status';
export const CURRENT_KEY = 'current';
export const RESULTS_KEY = 'results';

// The live document keeps only a host's recent results; the coordinator's update log keeps every
// one (the audit replays it). The agent deletes its own older results (agent/status-prune.ts) and
// always keeps at least the newest KEPT_RESULTS by number, plus what its own rebuild and rollout
// gates read. 64 because: readers look at far fewer (the views show the newest 20, a rollout
// gate the results for one intent), a burst of refusals (a peer writing many bad intents) must
// not push the results of the last real attempt out, and 64 results of at most ~10 KiB each are
// under 1 MiB, 3% of the coordinator's default document limit (32 MiB, --max-document-size).
// The audit judges a removed result against this number (shared/audit/history.ts).
export const KEPT_RESULTS = 64;
// The same for action results (numbered apart): the views show the newest 20 (MAX_VIEW_ACTION_RESULTS).
export const KEPT_ACTION_RESULTS = 64;

export function resultsArray(doc: Y.Doc): Y.Array<unknown> {
  return doc.getArray<unknown>(RESULTS_KEY);
}

export function readCurrentStatus(doc: Y.Doc): SignedStatus | null {
  const raw = doc.getMap<unknown>(STATUS_MAP).get(CURRENT_KEY);
  if (raw === undefined) return null;
  const parsed = parseEntry(raw, signedStatusSchema, ENTRY_LIMITS.status);
  return parsed.ok ? parsed.value : null;
}

// The current status only if `hostKey` signed it and the signature verifies: a status another
// key wrote (with seq = MAX_SAFE_INTEGER, say) says nothing about this host's own counters.
export function readOwnCurrentStatus(doc: Y.Doc, hostKey: string): SignedStatus | null {
  const current = readCurrentStatus(doc);
  if (!current || current.signature.publicKey !== hostKey) return null;
  return verifyPayloadSignature('status', current.status, current.signature) ? current : null;
}

export function writeCurrentStatus(doc: Y.Doc, signed: SignedStatus): void {
  doc.getMap<unknown>(STATUS_MAP).set(CURRENT_KEY, signedStatusSchema.parse(signed));
}

export function readResults(doc: Y.Doc): {
  results: SignedResult[];
  malformed: number;
  malformedEntries: MalformedEntry[];
} {
  const results: SignedResult[] = [];
  const malformedEntries: MalformedEntry[] = [];
  resultsArray(doc)
    .toArray()
    .forEach((raw, index) => {
      const parsed = parseEntry(raw, signedResultSchema, ENTRY_LIMITS.result);
      if (parsed.ok) results.push(parsed.value);
      else malformedEntries.push({ index, error: parsed.error });
    });
  return { results, malformed: malformedEntries.length, malformedEntries };
}

// The results `hostKey` signed, with valid signatures, in document order.
export function readOwnResults(doc: Y.Doc, hostKey: string): SignedResult[] {
  return readResults(doc).results.filter(
    (r) => r.signature.publicKey === hostKey && verifyPayloadSignature('result', r.result, r.signature),
  );
}

export function appendResult(doc: Y.Doc, signed: SignedResult): void {
  resultsArray(doc).push([signedResultSchema.parse(signed)]);
}

// Signed answers to remote actions, in an array of their own (numbered apart from results).
export const ACTION_RESULTS_KEY = 'actionResults';

export function actionResultsArray(doc: Y.Doc): Y.Array<unknown> {
  return doc.getArray<unknown>(ACTION_RESULTS_KEY);
}

export function readActionResults(doc: Y.Doc): { results: SignedActionResult[]; malformedEntries: MalformedEntry[] } {
  const results: SignedActionResult[] = [];
  const malformedEntries: MalformedEntry[] = [];
  actionResultsArray(doc)
    .toArray()
    .forEach((raw, index) => {
      const parsed = parseEntry(raw, signedActionResultSchema, ENTRY_LIMITS.actionResult);
      if (parsed.ok) results.push(parsed.value);
      else malformedEntries.push({ index, error: parsed.error });
    });
  return { results, malformedEntries };
}

// The action results `hostKey` signed, with valid signatures, in document order.
export function readOwnActionResults(doc: Y.Doc, hostKey: string): SignedActionResult[] {
  return readActionResults(doc).results.filter(
    (r) => r.signature.publicKey === hostKey && verifyPayloadSignature('action-result', r.result, r.signature),
  );
}

export function appendActionResult(doc: Y.Doc, signed: SignedActionResult): void {
  actionResultsArray(doc).push([signedActionResultSchema.parse(signed)]);
}

// Collect bundles, by request id: only the newest few are kept (the agent deletes older ones), and
// each counts only when its digest is the one the host's signed answer names.
export const COLLECT_BUNDLES_MAP = 'collectBundles';

export function collectBundlesMap(doc: Y.Doc): Y.Map<unknown> {
  return doc.getMap<unknown>(COLLECT_BUNDLES_MAP);
}

export function bundleDigest(bundle: CollectBundle): string {
  return sha256Hex(canonicalJson(bundle));
}

// The bundle stored for request `id` if its digest is `digest`, else why not.
export function readCollectBundle(
  doc: Y.Doc,
  id: string,
  digest: string,
): { ok: true; bundle: CollectBundle } | { ok: false; reason: string } {
  const raw = collectBundlesMap(doc).get(id);
  if (raw === undefined)
    return { ok: false, reason: 'the bundle is no longer kept (only the newest few are); collect again' };
  const parsed = parseEntry(raw, collectBundleSchema, ENTRY_LIMITS.collectBundle);
  if (!parsed.ok) return { ok: false, reason: `the stored bundle is malformed: ${parsed.error}` };
  if (bundleDigest(parsed.value) !== digest)
    return { ok: false, reason: "the stored bundle is not the one the host's signed answer names (altered)" };
  return { ok: true, bundle: parsed.value };
}
