import { randomBytes } from 'node:crypto';
import type * as Y from 'yjs';
import { toBase64 } from '../shared/crypto/encoding.js';
import { generateSigningKey, type SigningKey } from '../shared/crypto/keys.js';
import { signPayload, verifyPayloadSignature } from '../shared/crypto/signatures.js';
import { readEnrollments, readEnrollRequests } from '../shared/documents/fleet.js';
import { readTokenFile as readTokenFileOnNode } from '../shared/node/token-file.js';
import {
  enrollClearSchema,
  enrollmentSchema,
  enrollTokenSchema,
  type Policy,
  type SignedEnrollClear,
  type SignedEnrollment,
  type SignedEnrollRequest,
} from '../shared/schemas/policy.js';
import {
  type EnrollmentState,
  enrollmentState,
  type HostBinding,
  type TokenConflict,
  verifyEnrollRequest,
} from '../shared/trust/enrollment.js';
import type { PolicyWalk } from '../shared/trust/policy-chain.js';
import type { EnrollTokenFile } from '../shared/trust/sign-enroll-request.js';
import { highestStoredVersion, walkStoredPolicies } from './policy-remote.js';

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
  const checked = enrollmentSchema.parse({ kind: 'enrollment', ...binding, approvedAt: now.toISOString() });
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

export interface PendingRequest {
  host: string;
  hostKey: string;
  requestedAt: string;
  // Why a request that carried a token did not bind by itself (expired, no proof, host already
  // bound, wrong signer).
  tokenProblem: string | null;
}

const short = (key: string): string => `${key.slice(0, 12)}…`;

// Requests that prove possession of their key (checked here: the coordinator is not trusted) and
// whose host is not bound to that key. One entry per host and key, the earliest request.
export function pendingRequests(
  requests: SignedEnrollRequest[],
  isBound: (host: string, hostKey: string) => boolean,
  policy: Policy | null,
  state: EnrollmentState | null,
): PendingRequest[] {
  const pending = new Map<string, PendingRequest>();
  for (const signed of requests) {
    const { request } = signed;
    if (
      signed.signature.publicKey !== request.hostKey ||
      !verifyPayloadSignature('enroll-request', request, signed.signature)
    )
      continue;
    if (isBound(request.host, request.hostKey)) continue;
    const id = `${request.host} ${request.hostKey}`;
    const known = pending.get(id);
    if (known && Date.parse(known.requestedAt) <= Date.parse(request.requestedAt)) continue;
    let tokenProblem: string | null = null;
    if (request.token) {
      if (!policy) tokenProblem = 'no trusted policy to check its token against';
      else {
        const verdict = verifyEnrollRequest(signed, policy);
        const bound = state?.bindings.get(request.host);
        tokenProblem = !verdict.ok
          ? verdict.reason
          : bound
            ? `${request.host} was already bound to key ${short(bound.hostKey)} (by ${bound.via}) when this key presented a token`
            : 'its token was already used by another request';
      }
    }
    pending.set(id, { host: request.host, hostKey: request.hostKey, requestedAt: request.requestedAt, tokenProblem });
  }
  return [...pending.values()].sort(
    (a, b) => a.host.localeCompare(b.host) || a.requestedAt.localeCompare(b.requestedAt),
  );
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
