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
import { ENTRY_LIMITS, parseEntry } from './entries.js';

// Fleet-wide documents. Their entries are self-authenticating (root-, admin- or host-signed), so
// every reader verifies them and the coordinator only appends entries it verified itself.
export const POLICY_DOC = 'fleet/policy';
export const ENROLLMENT_DOC = 'fleet/enrollment';
export const TIMESTAMP_DOC = 'fleet/timestamp';

// Entries that fail their bounds or schema are skipped: every one that counts is verified by
// signature afterwards, so a skipped one could only have been refused later.
function readArray<S extends z.ZodType>(
  doc: Y.Doc,
  key: string,
  schema: S,
  limits: (typeof ENTRY_LIMITS)[keyof typeof ENTRY_LIMITS],
): z.infer<S>[] {
  const items: z.infer<S>[] = [];
  for (const raw of doc.getArray<unknown>(key).toArray()) {
    const parsed = parseEntry(raw, schema, limits);
    if (parsed.ok) items.push(parsed.value);
  }
  return items;
}

export const readPolicies = (doc: Y.Doc): SignedPolicy[] =>
  readArray(doc, 'policies', signedPolicySchema, ENTRY_LIMITS.policy);
export const appendPolicy = (doc: Y.Doc, signed: SignedPolicy): void =>
  doc.getArray<unknown>('policies').push([signedPolicySchema.parse(signed)]);

export const readEnrollRequests = (doc: Y.Doc): SignedEnrollRequest[] =>
  readArray(doc, 'requests', signedEnrollRequestSchema, ENTRY_LIMITS.enrollment);
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
