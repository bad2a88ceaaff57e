import type * as Y from 'yjs';
import { type SignedResult, type SignedStatus, signedResultSchema, signedStatusSchema } from '../schemas/report.js';

// hosts/<id>/status: the agent's current signed status under one key (rewritten only on change,
// so the document stays small with gc on) and an append-only array of signed results.
export const STATUS_MAP = 'status';
export const CURRENT_KEY = 'current';
export const RESULTS_KEY = 'results';

export function resultsArray(doc: Y.Doc): Y.Array<unknown> {
  return doc.getArray<unknown>(RESULTS_KEY);
}

export function readCurrentStatus(doc: Y.Doc): SignedStatus | null {
  const raw = doc.getMap<unknown>(STATUS_MAP).get(CURRENT_KEY);
  if (raw === undefined) return null;
  const parsed = signedStatusSchema.safeParse(raw);
  return parsed.success ? parsed.data : null;
}

export function writeCurrentStatus(doc: Y.Doc, signed: SignedStatus): void {
  doc.getMap<unknown>(STATUS_MAP).set(CURRENT_KEY, signedStatusSchema.parse(signed));
}

export function readResults(doc: Y.Doc): { results: SignedResult[]; malformed: number } {
  const results: SignedResult[] = [];
  let malformed = 0;
  for (const raw of resultsArray(doc).toArray()) {
    const parsed = signedResultSchema.safeParse(raw);
    if (parsed.success) results.push(parsed.data);
    else malformed += 1;
  }
  return { results, malformed };
}

export function appendResult(doc: Y.Doc, signed: SignedResult): void {
  resultsArray(doc).push([signedResultSchema.parse(signed)]);
}
