import type * as Y from 'yjs';
import type { z } from 'zod';
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

// Fleet-wide documents. Their entries are self-authenticating (root-, admin- or host-signed), so
// every reader verifies them and the coordinator only appends entries it verified itself.
export const POLICY_DOC = 'fleet/policy';
export const ENROLLMENT_DOC = 'fleet/enrollment';
export const TIMESTAMP_DOC = 'fleet/timestamp';

// Entries of a loaded document are the same objects at every read (Yjs keeps the values it
// decoded) and never change, so each is parsed once: the coordinator re-reads fleet/enrollment at
// every update, and it may hold a thousand requests.
const parsedEntries = new WeakMap<z.ZodType, WeakMap<object, { data: unknown } | null>>();

export function parseStoredEntry<S extends z.ZodType>(schema: S, raw: unknown): z.infer<S> | null {
  if (typeof raw !== 'object' || raw === null) return null;
  let cache = parsedEntries.get(schema);
  if (!cache) {
    cache = new WeakMap();
    parsedEntries.set(schema, cache);
  }
  let entry = cache.get(raw);
  if (entry === undefined) {
    const parsed = schema.safeParse(raw);
    entry = parsed.success ? { data: parsed.data } : null;
    cache.set(raw, entry);
  }
  return entry ? (entry.data as z.infer<S>) : null;
}

function readArray<S extends z.ZodType>(doc: Y.Doc, key: string, schema: S): z.infer<S>[] {
  const items: z.infer<S>[] = [];
  for (const raw of doc.getArray<unknown>(key).toArray()) {
    const parsed = parseStoredEntry(schema, raw);
    if (parsed !== null) items.push(parsed);
  }
  return items;
}

export const readPolicies = (doc: Y.Doc): SignedPolicy[] => readArray(doc, 'policies', signedPolicySchema);
export const appendPolicy = (doc: Y.Doc, signed: SignedPolicy): void =>
  doc.getArray<unknown>('policies').push([signedPolicySchema.parse(signed)]);

export const readEnrollRequests = (doc: Y.Doc): SignedEnrollRequest[] =>
  readArray(doc, 'requests', signedEnrollRequestSchema);
// The raw list, for the coordinator's pruning of pending requests (coordinator/fleet-api.ts).
export const enrollRequestsArray = (doc: Y.Doc): Y.Array<unknown> => doc.getArray<unknown>('requests');
export const appendEnrollRequest = (doc: Y.Doc, signed: SignedEnrollRequest): void =>
  doc.getArray<unknown>('requests').push([signedEnrollRequestSchema.parse(signed)]);
export const readEnrollments = (doc: Y.Doc): SignedEnrollment[] =>
  readArray(doc, 'enrollments', signedEnrollmentSchema);
export const appendEnrollment = (doc: Y.Doc, signed: SignedEnrollment): void =>
  doc.getArray<unknown>('enrollments').push([signedEnrollmentSchema.parse(signed)]);

export function readTimestamp(doc: Y.Doc): SignedTimestamp | null {
  const parsed = signedTimestampSchema.safeParse(doc.getMap<unknown>('timestamp').get('current'));
  return parsed.success ? parsed.data : null;
}
export function writeTimestamp(doc: Y.Doc, signed: SignedTimestamp): void {
  doc.getMap<unknown>('timestamp').set('current', signedTimestampSchema.parse(signed));
}
