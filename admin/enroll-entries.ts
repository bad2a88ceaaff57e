import { randomBytes } from 'node:crypto';
import type * as Y from 'yjs';
import type { SigningKey } from '../shared/crypto/keys.js';
import { signPayload, verifyPayloadSignature } from '../shared/crypto/signatures.js';
import { readEnrollments, readEnrollRequests } from '../shared/documents/fleet.js';
import {
  enrollmentSchema,
  enrollRequestSchema,
  enrollTokenSchema,
  type Policy,
  type SignedEnrollment,
  type SignedEnrollRequest,
  type SignedEnrollToken,
  signedEnrollTokenSchema,
} from '../shared/schemas/policy.js';
import { type HostBinding, hostBindings, verifyEnrollRequest } from '../shared/trust/enrollment.js';
import type { PolicyVerdict, PolicyWalk } from '../shared/trust/policy-chain.js';
import { readJsonFile } from './policy-file.js';
import { highestStoredVersion, walkStoredPolicies } from './policy-remote.js';

// The three signed enrollment entries, built and checked against their schemas before signing,
// and the view of pending requests an admin approves from.

export function signEnrollToken(
  admin: SigningKey,
  token: { host: string; expiresAt: string; policyVersion: number },
): SignedEnrollToken {
  // 16 random bytes: the coordinator and readers bind each nonce at most once.
  const checked = enrollTokenSchema.parse({ kind: 'enroll-token', ...token, nonce: randomBytes(16).toString('hex') });
  return { token: checked, signatures: [signPayload('enroll-token', checked, admin)] };
}

// Signed by the host key itself: proof that whoever asks holds the key to be bound.
export function signEnrollRequest(
  hostKey: SigningKey,
  host: string,
  token: SignedEnrollToken | undefined,
  now: Date,
): SignedEnrollRequest {
  const checked = enrollRequestSchema.parse({
    kind: 'enroll-request',
    host,
    hostKey: hostKey.publicKey,
    requestedAt: now.toISOString(),
    ...(token ? { token } : {}),
  });
  return { request: checked, signature: signPayload('enroll-request', checked, hostKey) };
}

export function signEnrollment(
  admin: SigningKey,
  binding: { host: string; hostKey: string; policyVersion: number },
  now: Date,
): SignedEnrollment {
  const checked = enrollmentSchema.parse({ kind: 'enrollment', ...binding, approvedAt: now.toISOString() });
  return { enrollment: checked, signatures: [signPayload('enrollment', checked, admin)] };
}

export async function readTokenFile(path: string): Promise<SignedEnrollToken> {
  try {
    return await readJsonFile(
      path,
      signedEnrollTokenSchema,
      'enrollment token',
      "an admin makes one with 'outpost enroll token'",
    );
  } catch (error) {
    throw new Error(`--token: ${(error as Error).message}`);
  }
}

export interface PendingRequest {
  host: string;
  hostKey: string;
  requestedAt: string;
  // Why a request that carried a token did not bind by itself (expired, used, wrong signer).
  tokenProblem: string | null;
}

// Requests that prove possession of their key (checked here: the coordinator is not trusted) and
// whose host is not bound to that key. One entry per host and key, the earliest request.
export function pendingRequests(
  requests: SignedEnrollRequest[],
  isBound: (host: string, hostKey: string) => boolean,
  policy: Policy | null,
  now: number,
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
      const verdict: PolicyVerdict = policy
        ? verifyEnrollRequest(signed, policy, now)
        : { ok: false, reason: 'no trusted policy to check its token against' };
      tokenProblem = verdict.ok ? 'its token was already used by another request' : verdict.reason;
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
}

// What fleet/policy and fleet/enrollment say about hosts. With the pinned org root the bindings
// are exactly what agents and the coordinator compute; without it (approve's shortcut), a host and
// key count as bound when fleet/enrollment holds an approval for them, which the coordinator
// stores only after checking it.
export function enrollmentView(policyDoc: Y.Doc, enrollmentDoc: Y.Doc, orgRoot: string[], now: number): EnrollmentView {
  const requests = readEnrollRequests(enrollmentDoc);
  const enrollments = readEnrollments(enrollmentDoc);
  if (orgRoot.length === 0) {
    const approved = (host: string, hostKey: string): boolean =>
      enrollments.some((e) => e.enrollment.host === host && e.enrollment.hostKey === hostKey);
    return {
      walk: null,
      policyVersion: highestStoredVersion(policyDoc),
      bound: [],
      pending: pendingRequests(requests, approved, null, now),
    };
  }
  const walk = walkStoredPolicies(policyDoc, orgRoot);
  const policy = walk.chain.at(-1) ?? null;
  const bindings = hostBindings(policy, enrollments, requests, now);
  const isBound = (host: string, hostKey: string): boolean => bindings.get(host)?.hostKey === hostKey;
  return {
    walk,
    policyVersion: policy?.version,
    bound: [...bindings.values()].sort((a, b) => a.host.localeCompare(b.host)),
    pending: pendingRequests(requests, isBound, policy, now),
  };
}
