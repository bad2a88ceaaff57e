import { randomBytes } from 'node:crypto';
import type * as Y from 'yjs';
import { toBase64 } from '../shared/crypto/encoding.js';
import { generateSigningKey, type SigningKey } from '../shared/crypto/keys.js';
import { signPayload } from '../shared/crypto/signatures.js';
import { readEnrollments, readEnrollRequests } from '../shared/documents/fleet.js';
import { readTokenFile as readTokenFileOnNode } from '../shared/node/token-file.js';
import {
  enrollClearSchema,
  enrollTokenSchema,
  type SignedEnrollClear,
  type SignedEnrollment,
} from '../shared/schemas/policy.js';
import { enrollmentState, type HostBinding, type TokenConflict } from '../shared/trust/enrollment.js';
import type { PolicyWalk } from '../shared/trust/policy-chain.js';
import type { EnrollTokenFile } from '../shared/trust/sign-enroll-request.js';
import { draftEnrollment, type PendingRequest, pendingRequests } from '../shared/views/enrollment-view.js';
import { highestStoredVersion, walkStoredPolicies } from './policy-remote.js';

export { type PendingRequest, pendingRequests } from '../shared/views/enrollment-view.js';

// The signed enrollment entries, built and checked against their schemas before signing, and the
// view of bound hosts, pending requests and token conflicts an admin approves from.

// The host's side (token files, requests) is core: the agent uses it too.
export { type EnrollTokenFile, enrollTokenFileSchema, signEnrollRequest } from '../shared/trust/sign-enroll-request.js';

export function signEnrollToken(
  admin: SigningKey,
  token: { host: string; expiresAt: string; policyVersion: number },
): EnrollTokenFile {
  const proof = generateSigningKey('enroll-token-proof');
  // 16 random bytes: the coordinator and readers bind each nonce at most once.
  const checked = enrollTokenSchema.parse({
    kind: 'enroll-token',
    ...token,
    nonce: randomBytes(16).toString('hex'),
    proofKey: proof.publicKey,
  });
  return {
    token: checked,
    signatures: [signPayload('enroll-token', checked, admin)],
    proofSecret: toBase64(proof.secretKey),
  };
}

export function signEnrollment(
  admin: SigningKey,
  binding: { host: string; hostKey: string; policyVersion: number },
  now: Date,
): SignedEnrollment {
  const checked = draftEnrollment(binding, now);
  return { enrollment: checked, signatures: [signPayload('enrollment', checked, admin)] };
}

export function signEnrollClear(
  admin: SigningKey,
  filter: { host?: string; hostKey?: string },
  now: Date,
): SignedEnrollClear {
  const checked = enrollClearSchema.parse({ kind: 'enroll-clear', ...filter, issuedAt: now.toISOString() });
  return { clear: checked, signatures: [signPayload('enroll-clear', checked, admin)] };
}

// The token file `outpost enroll request --token` names; errors name the flag.
export async function readTokenFile(path: string): Promise<EnrollTokenFile> {
  try {
    return await readTokenFileOnNode(path);
  } catch (error) {
    throw new Error(`--token: ${(error as Error).message}`);
  }
}

export interface EnrollmentView {
  // Null without pinned org root keys: nothing can then be verified against a policy.
  walk: PolicyWalk | null;
  policyVersion: number | undefined;
  bound: HostBinding[];
  pending: PendingRequest[];
  // Tokens presented, with a valid proof, for a key other than the one their host is bound to.
  conflicts: TokenConflict[];
}

// What fleet/policy and fleet/enrollment say about hosts. With the pinned org root the bindings
// are exactly what agents and the coordinator compute; without it (approve's shortcut), a host and
// key count as bound when fleet/enrollment holds an approval for them, which the coordinator
// stores only after checking it.
export function enrollmentView(policyDoc: Y.Doc, enrollmentDoc: Y.Doc, orgRoot: string[]): EnrollmentView {
  const requests = readEnrollRequests(enrollmentDoc);
  const enrollments = readEnrollments(enrollmentDoc);
  if (orgRoot.length === 0) {
    const approved = (host: string, hostKey: string): boolean =>
      enrollments.some((e) => e.enrollment.host === host && e.enrollment.hostKey === hostKey);
    return {
      walk: null,
      policyVersion: highestStoredVersion(policyDoc),
      bound: [],
      pending: pendingRequests(requests, approved, null, null),
      conflicts: [],
    };
  }
  const walk = walkStoredPolicies(policyDoc, orgRoot);
  const policy = walk.chain.at(-1) ?? null;
  const state = enrollmentState(policy, enrollments, requests);
  const isBound = (host: string, hostKey: string): boolean => state.bindings.get(host)?.hostKey === hostKey;
  return {
    walk,
    policyVersion: policy?.version,
    bound: [...state.bindings.values()].sort((a, b) => a.host.localeCompare(b.host)),
    pending: pendingRequests(requests, isBound, policy, state),
    conflicts: state.conflicts,
  };
}
