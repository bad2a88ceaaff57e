import type * as Y from 'yjs';
import type { z } from 'zod';
import { type SignedCheckpoint, signedCheckpointSchema } from '../schemas/checkpoint.js';
import {
  type SignedEnrollment,
  type SignedEnrollRequest,
  type SignedPolicy,
  type SignedTimestamp,
  signedEnrollmentSchema,
  signedEnrollRequestSchema,
  signedPolicySchema,
  signedTimestampSchema,
} from '../schemas/policy.js';
import { ENTRY_LIMITS, type EntryVerdict, type MalformedEntry, parseEntry } from './entries.js';

// Fleet-wide documents. Their entries are self-authenticating (root-, admin- or host-signed), so
// every reader verifies them and the coordinator only appends entries it verified itself.
export const POLICY_DOC = 'fleet/policy';
export const ENROLLMENT_DOC = 'fleet/enrollment';
export const TIMESTAMP_DOC = 'fleet/timestamp';

// Entries of a loaded document are the same objects at every read (Yjs keeps the values it
// decoded) and never change, so each is checked once: the coordinator re-reads fleet/enrollment at
// every update, and it may hold a thousand requests. Entries that fail their bounds or schema are
// skipped: every one that counts is verified by signature afterwards, so a skipped one could only
// have been refused later.
const parsedEntries = new WeakMap<z.ZodType, WeakMap<object, EntryVerdict<unknown>>>();

// The verdict on one stored entry, from the cache when the entry was checked before.
function storedVerdict<S extends z.ZodType>(
  schema: S,
  raw: unknown,
  limits: (typeof ENTRY_LIMITS)[keyof typeof ENTRY_LIMITS],
): EntryVerdict<z.infer<S>> {
  if (typeof raw !== 'object' || raw === null) return parseEntry(raw, schema, limits);
  let cache = parsedEntries.get(schema);
  if (!cache) {
    cache = new WeakMap();
    parsedEntries.set(schema, cache);
  }
  let verdict = cache.get(raw);
  if (verdict === undefined) {
    verdict = parseEntry(raw, schema, limits);
    cache.set(raw, verdict);
  }
  return verdict as EntryVerdict<z.infer<S>>;
}

export function parseStoredEntry<S extends z.ZodType>(
  schema: S,
  raw: unknown,
  limits: (typeof ENTRY_LIMITS)[keyof typeof ENTRY_LIMITS],
): z.infer<S> | null {
  const verdict = storedVerdict(schema, raw, limits);
  return verdict.ok ? verdict.value : null;
}

function readArray<S extends z.ZodType>(
  doc: Y.Doc,
  key: string,
  schema: S,
  limits: (typeof ENTRY_LIMITS)[keyof typeof ENTRY_LIMITS],
): z.infer<S>[] {
  const items: z.infer<S>[] = [];
  for (const raw of doc.getArray<unknown>(key).toArray()) {
    const parsed = parseStoredEntry(schema, raw, limits);
    if (parsed !== null) items.push(parsed);
  }
  return items;
}

export const readPolicies = (doc: Y.Doc): SignedPolicy[] =>
  readArray(doc, 'policies', signedPolicySchema, ENTRY_LIMITS.policy);

// The policies, and which entries were skipped and why (for a reader's log).
export function readPolicyEntries(doc: Y.Doc): { entries: SignedPolicy[]; malformed: MalformedEntry[] } {
  const entries: SignedPolicy[] = [];
  const malformed: MalformedEntry[] = [];
  doc
    .getArray<unknown>('policies')
    .toArray()
    .forEach((raw, index) => {
      const parsed = storedVerdict(signedPolicySchema, raw, ENTRY_LIMITS.policy);
      if (parsed.ok) entries.push(parsed.value);
      else malformed.push({ index, error: parsed.error });
    });
  return { entries, malformed };
}
export const appendPolicy = (doc: Y.Doc, signed: SignedPolicy): void =>
  doc.getArray<unknown>('policies').push([signedPolicySchema.parse(signed)]);

export const readEnrollRequests = (doc: Y.Doc): SignedEnrollRequest[] =>
  readArray(doc, 'requests', signedEnrollRequestSchema, ENTRY_LIMITS.enrollment);
// The raw list, for the coordinator's pruning of pending requests (coordinator/fleet-api.ts).
export const enrollRequestsArray = (doc: Y.Doc): Y.Array<unknown> => doc.getArray<unknown>('requests');
export const appendEnrollRequest = (doc: Y.Doc, signed: SignedEnrollRequest): void =>
  doc.getArray<unknown>('requests').push([signedEnrollRequestSchema.parse(signed)]);
export const readEnrollments = (doc: Y.Doc): SignedEnrollment[] =>
  readArray(doc, 'enrollments', signedEnrollmentSchema, ENTRY_LIMITS.enrollment);
export const appendEnrollment = (doc: Y.Doc, signed: SignedEnrollment): void =>
  doc.getArray<unknown>('enrollments').push([signedEnrollmentSchema.parse(signed)]);

export function readTimestamp(doc: Y.Doc): SignedTimestamp | null {
  const parsed = parseEntry(
    doc.getMap<unknown>('timestamp').get('current'),
    signedTimestampSchema,
    ENTRY_LIMITS.timestamp,
  );
  return parsed.ok ? parsed.value : null;
}
export function writeTimestamp(doc: Y.Doc, signed: SignedTimestamp): void {
  doc.getMap<unknown>('timestamp').set('current', signedTimestampSchema.parse(signed));
}

// The signed checkpoint of the log heads, next to the timestamp (shared/audit/checkpoint.ts).
export function readCheckpoint(doc: Y.Doc): SignedCheckpoint | null {
  const parsed = parseEntry(
    doc.getMap<unknown>('timestamp').get('checkpoint'),
    signedCheckpointSchema,
    ENTRY_LIMITS.checkpoint,
  );
  return parsed.ok ? parsed.value : null;
}
export function writeCheckpoint(doc: Y.Doc, signed: SignedCheckpoint): void {
  doc.getMap<unknown>('timestamp').set('checkpoint', signedCheckpointSchema.parse(signed));
}
