import { verifyPayloadSignature } from '../crypto/signatures.js';
import type { Policy, SignedEnrollment, SignedEnrollRequest, SignedEnrollToken } from '../schemas/policy.js';
import { adminForKey, capabilitiesFor } from './capabilities.js';
import type { PolicyVerdict } from './policy-chain.js';

// Was this object signed by an admin who, under the current policy, may enroll `host`?
function signedByEnroller(
  kind: 'enrollment' | 'enroll-token',
  payload: unknown,
  signatures: { publicKey: string; signature: string }[],
  policy: Policy,
  host: string,
): PolicyVerdict {
  const reasons: string[] = [];
  for (const signature of signatures) {
    const admin = adminForKey(policy, signature.publicKey);
    if (!admin) {
      reasons.push(`key ${signature.publicKey.slice(0, 12)}… is not an admin key under policy ${policy.version}`);
      continue;
    }
    if (!capabilitiesFor(policy, admin, host).has('enroll')) {
      reasons.push(`admin ${admin.name} lacks 'enroll' for host ${host}`);
      continue;
    }
    if (!verifyPayloadSignature(kind, payload, signature)) {
      reasons.push(`signature by admin ${admin.name} does not verify`);
      continue;
    }
    return { ok: true };
  }
  return { ok: false, reason: reasons.join('; ') || 'no signatures' };
}

export function verifyEnrollment(signed: SignedEnrollment, policy: Policy): PolicyVerdict {
  const verdict = signedByEnroller('enrollment', signed.enrollment, signed.signatures, policy, signed.enrollment.host);
  return verdict.ok ? verdict : { ok: false, reason: `enrollment of ${signed.enrollment.host}: ${verdict.reason}` };
}

export function verifyEnrollToken(signed: SignedEnrollToken, policy: Policy, now: number): PolicyVerdict {
  if (!(Date.parse(signed.token.expiresAt) > now))
    return { ok: false, reason: `enrollment token for ${signed.token.host} expired at ${signed.token.expiresAt}` };
  const verdict = signedByEnroller('enroll-token', signed.token, signed.signatures, policy, signed.token.host);
  return verdict.ok ? verdict : { ok: false, reason: `enrollment token for ${signed.token.host}: ${verdict.reason}` };
}

// A request proves possession of the host key; with a valid token it is approved by itself.
export function verifyEnrollRequest(
  signed: SignedEnrollRequest,
  policy: Policy | null,
  now: number,
): PolicyVerdict & { viaToken?: boolean } {
  const { request } = signed;
  if (
    signed.signature.publicKey !== request.hostKey ||
    !verifyPayloadSignature('enroll-request', request, signed.signature)
  ) {
    return { ok: false, reason: `enrollment request for ${request.host} is not signed by the key it asks to bind` };
  }
  if (!request.token) return { ok: true, viaToken: false };
  if (!policy) return { ok: false, reason: 'no fleet policy to check the enrollment token against' };
  if (request.token.token.host !== request.host)
    return { ok: false, reason: `enrollment token is for ${request.token.token.host}, not ${request.host}` };
  const token = verifyEnrollToken(request.token, policy, now);
  return token.ok ? { ok: true, viaToken: true } : token;
}

export interface HostBinding {
  host: string;
  hostKey: string;
  via: 'approval' | 'token';
}

// host → key bindings under the current policy. A later approval for a host replaces an earlier
// one (key rotation); each token binds at most once: the first request that used it wins.
export function hostBindings(
  policy: Policy | null,
  enrollments: SignedEnrollment[],
  requests: SignedEnrollRequest[],
  now: number,
): Map<string, HostBinding> {
  const bindings = new Map<string, HostBinding>();
  if (!policy) return bindings;
  const usedNonces = new Set<string>();
  for (const signed of requests) {
    const token = signed.request.token;
    if (!token || usedNonces.has(token.token.nonce)) continue;
    if (!verifyEnrollRequest(signed, policy, now).ok) continue;
    usedNonces.add(token.token.nonce);
    if (!bindings.has(signed.request.host))
      bindings.set(signed.request.host, { host: signed.request.host, hostKey: signed.request.hostKey, via: 'token' });
  }
  const approved = enrollments
    .filter((e) => verifyEnrollment(e, policy).ok)
    .sort((a, b) => Date.parse(a.enrollment.approvedAt) - Date.parse(b.enrollment.approvedAt));
  for (const e of approved)
    bindings.set(e.enrollment.host, { host: e.enrollment.host, hostKey: e.enrollment.hostKey, via: 'approval' });
  return bindings;
}
