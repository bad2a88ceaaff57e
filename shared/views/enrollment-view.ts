import { verifyPayloadSignature } from '../crypto/signatures.js';
import { type Enrollment, enrollmentSchema, type Policy, type SignedEnrollRequest } from '../schemas/policy.js';
import { adminForKey, capabilitiesFor } from '../trust/capabilities.js';
import { type EnrollmentState, verifyEnrollRequest } from '../trust/enrollment.js';

// The admin's side of enrollment, shared by `outpost enroll` and the web editor: which requests
// wait for an approval (checked here: the coordinator is not trusted), whether this key may
// approve one, and the enrollment it signs.

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

// The enrollment an admin signs (checked against its schema first).
export function draftEnrollment(
  binding: { host: string; hostKey: string; policyVersion: number },
  now: Date,
): Enrollment {
  return enrollmentSchema.parse({ kind: 'enrollment', ...binding, approvedAt: now.toISOString() });
}

// Whether this key's approval would bind `host` under the policy in force (verifyEnrollment's rule).
export function mayEnroll(
  policy: Policy,
  publicKey: string,
  host: string,
): { ok: true } | { ok: false; reason: string } {
  const admin = adminForKey(policy, publicKey);
  if (!admin)
    return {
      ok: false,
      reason: `this key is not an admin key under policy ${policy.version}${policy.revokedKeys.includes(publicKey) ? ' (it is revoked)' : ''}; nothing was signed`,
    };
  if (!capabilitiesFor(policy, admin, host).has('enroll'))
    return {
      ok: false,
      reason: `admin ${admin.name} lacks 'enroll' for host ${host} under policy ${policy.version}: the coordinator and agents would ignore the approval, so nothing was signed; ask a policy admin for a role with 'enroll'`,
    };
  return { ok: true };
}
