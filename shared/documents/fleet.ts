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

function readArray<S extends z.ZodType>(doc: Y.Doc, key: string, schema: S): z.infer<S>[] {
  const items: z.infer<S>[] = [];
  for (const raw of doc.getArray<unknown>(key).toArray()) {
    const parsed = schema.safeParse(raw);
    if (parsed.success) items.push(parsed.data);
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
