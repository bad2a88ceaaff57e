import { readIntentEntries } from '../documents/desired.js';
import { ENROLLMENT_DOC, POLICY_DOC, readEnrollments, readEnrollRequests, readPolicies } from '../documents/fleet.js';
import { parseDocName } from '../documents/names.js';
import { readCurrentStatus, readResults } from '../documents/status.js';
import { intentDigest } from '../trust/verify-intent.js';
import type { AuditLogEntry } from './log-chain.js';
import { replayDocument } from './replay.js';

// A document as it was at a moment: its log replayed up to that receive time and read with the
// same readers agents and admins use. Values are shown as stored; `audit verify` judges them.
export interface DocumentAt {
  document: string;
  at: number;
  entriesApplied: number;
  lastLogSeq: number | null;
  content: Record<string, unknown>;
}

export function documentAt(document: string, entries: Iterable<AuditLogEntry>, at: number): DocumentAt {
  let applied = 0;
  let lastSeq: number | null = null;
  const doc = replayDocument(
    entries,
    { arrays: [], maps: [] },
    (change) => {
      applied += 1;
      lastSeq = change.entry.seq;
    },
    at,
  );
  const role = parseDocName(document)?.role;
  let content: Record<string, unknown>;
  if (role === 'desired') {
    const { entries: intents, malformed } = readIntentEntries(doc);
    content = { intents: intents.map((e) => ({ ...e.signed, digest: intentDigest(e.signed) })), malformed };
  } else if (role === 'status') {
    const { results, malformed } = readResults(doc);
    content = { status: readCurrentStatus(doc), results, malformedResults: malformed };
  } else if (document === POLICY_DOC) content = { policies: readPolicies(doc) };
  else if (document === ENROLLMENT_DOC)
    content = { enrollments: readEnrollments(doc), requests: readEnrollRequests(doc) };
  else content = doc.toJSON();
  doc.destroy();
  return { document, at, entriesApplied: applied, lastLogSeq: lastSeq, content };
}
