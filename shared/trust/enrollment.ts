import { verifyPayloadSignature } from '../crypto/signatures.js';
import { verifyPayloadSignatureOnce } from '../crypto/verified-once.js';
import type {
  Policy,
  SignedEnrollClear,
  SignedEnrollment,
  SignedEnrollRequest,
  SignedEnrollToken,
} from '../schemas/policy.js';
import { adminForKey, capabilitiesFor, type PolicyAdmin } from './capabilities.js';
import type { PolicyVerdict } from './policy-chain.js';

// Bindings are recomputed from every stored entry whenever fleet/enrollment or the policy changes;
// the signatures in it do not change, so each is checked once (verified-once.ts).
const verifiedOnce = verifyPayloadSignatureOnce;

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
    if (!verifiedOnce(kind, payload, signature)) {
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

// Could the token be used at `at` (ms since the epoch)? Expiry limits when a token can be used,
// never how long the binding it made lasts.
export function tokenUsableAt(signed: SignedEnrollToken, at: number): PolicyVerdict {
  return Date.parse(signed.token.expiresAt) > at
    ? { ok: true }
    : { ok: false, reason: `enrollment token for ${signed.token.host} expired at ${signed.token.expiresAt}` };
}

export function verifyEnrollToken(signed: SignedEnrollToken, policy: Policy, at: number): PolicyVerdict {
  const usable = tokenUsableAt(signed, at);
  if (!usable.ok) return usable;
  const verdict = signedByEnroller('enroll-token', signed.token, signed.signatures, policy, signed.token.host);
  return verdict.ok ? verdict : { ok: false, reason: `enrollment token for ${signed.token.host}: ${verdict.reason}` };
}

// Signed by the key it asks to bind.
export function provesHostKey(signed: SignedEnrollRequest): boolean {
  return (
    signed.signature.publicKey === signed.request.hostKey &&
    verifiedOnce('enroll-request', signed.request, signed.signature)
  );
}

// A request proves possession of the host key. With a token it must also prove it holds the token
// file — the same request signed by the token's proof key — so a relay or coordinator that
// forwards one host's request cannot lift the token out of it for a key of its own. The token must
// have been valid when the request was made (`requestedAt`, signed by both keys): a binding made in
// time outlives the token. The coordinator also checks the token against its own clock when the
// request arrives (fleet-api.ts), so a late request cannot claim an earlier time to get in.
export function verifyEnrollRequest(
  signed: SignedEnrollRequest,
  policy: Policy | null,
): PolicyVerdict & { viaToken?: boolean } {
  const { request } = signed;
  if (!provesHostKey(signed))
    return { ok: false, reason: `enrollment request for ${request.host} is not signed by the key it asks to bind` };
  if (!request.token) return { ok: true, viaToken: false };
  if (!policy) return { ok: false, reason: 'no fleet policy to check the enrollment token against' };
  const { token } = request.token;
  if (token.host !== request.host)
    return { ok: false, reason: `enrollment token is for ${token.host}, not ${request.host}` };
  if (!token.proofKey)
    return {
      ok: false,
      reason: `enrollment token for ${token.host} has no proof key (made by an older outpost), so anyone who forwarded a request carrying it could reuse it; make a new one with 'outpost enroll token'`,
    };
  if (
    !signed.tokenProof ||
    signed.tokenProof.publicKey !== token.proofKey ||
    !verifiedOnce('enroll-token-proof', request, signed.tokenProof)
  ) {
    return {
      ok: false,
      reason: `enrollment request for ${request.host} does not prove it holds the token file (no valid signature by the token's proof key); a token copied out of another host's request binds nothing`,
    };
  }
  const verdict = verifyEnrollToken(request.token, policy, Date.parse(request.requestedAt));
  return verdict.ok ? { ok: true, viaToken: true } : verdict;
}

export interface HostBinding {
  host: string;
  hostKey: string;
  via: 'approval' | 'token';
}

// A token presented, with a valid proof, for a key other than the one it (or an earlier token
// for the same host) bound: the token file was copied, or the host was reinstalled with a new
// key. Reported to admins until one of them approves the right key.
export interface TokenConflict {
  host: string;
  boundKey: string;
  otherKey: string;
  requestedAt: string;
  nonce: string;
}

export interface EnrollmentState {
  bindings: Map<string, HostBinding>;
  conflicts: TokenConflict[];
  // Positions (in the requests given) of the requests that bind by token: the first valid use of
  // each token, when its host had no token binding yet. They must never be pruned.
  tokenBindings: Set<number>;
  // Positions of requests that carry a valid token use but bind nothing (conflicts, repeats).
  tokenRepeats: Set<number>;
}

// host → key bindings under the current policy. A later approval for a host replaces an earlier
// one (key rotation) and settles any token conflict; each token binds at most once — the first
// valid request that used it — and a host is bound by the first token used for it.
export function enrollmentState(
  policy: Policy | null,
  enrollments: SignedEnrollment[],
  requests: SignedEnrollRequest[],
): EnrollmentState {
  const bindings = new Map<string, HostBinding>();
  const tokenBindings = new Set<number>();
  const tokenRepeats = new Set<number>();
  const found: TokenConflict[] = [];
  if (!policy) return { bindings, conflicts: [], tokenBindings, tokenRepeats };
  const usedNonces = new Set<string>();
  requests.forEach((signed, index) => {
    const { request } = signed;
    if (!request.token) return;
    if (!verifyEnrollRequest(signed, policy).ok) return;
    const nonce = request.token.token.nonce;
    const bound = bindings.get(request.host);
    if (!usedNonces.has(nonce) && !bound) {
      usedNonces.add(nonce);
      tokenBindings.add(index);
      bindings.set(request.host, { host: request.host, hostKey: request.hostKey, via: 'token' });
      return;
    }
    usedNonces.add(nonce);
    tokenRepeats.add(index);
    if (bound && bound.hostKey !== request.hostKey)
      found.push({
        host: request.host,
        boundKey: bound.hostKey,
        otherKey: request.hostKey,
        requestedAt: request.requestedAt,
        nonce,
      });
  });
  const approved = enrollments
    .filter((e) => verifyEnrollment(e, policy).ok)
    .sort((a, b) => Date.parse(a.enrollment.approvedAt) - Date.parse(b.enrollment.approvedAt));
  for (const e of approved)
    bindings.set(e.enrollment.host, { host: e.enrollment.host, hostKey: e.enrollment.hostKey, via: 'approval' });
  // An approval of either key settles the conflict.
  const conflicts = found.filter((c) => bindings.get(c.host)?.via === 'token');
  return { bindings, conflicts, tokenBindings, tokenRepeats };
}

export function hostBindings(
  policy: Policy | null,
  enrollments: SignedEnrollment[],
  requests: SignedEnrollRequest[],
): Map<string, HostBinding> {
  return enrollmentState(policy, enrollments, requests).bindings;
}

// An `outpost enroll clear` order: signed by an admin under the policy in force, issued within
// `maxAgeMs` of `now`. Which requests it may clear is decided per host (mayClear).
export function verifyEnrollClear(
  signed: SignedEnrollClear,
  policy: Policy,
  now: number,
  maxAgeMs: number,
): { ok: true; admin: PolicyAdmin; mayClear(host: string): boolean } | { ok: false; reason: string } {
  const issued = Date.parse(signed.clear.issuedAt);
  if (Math.abs(now - issued) > maxAgeMs)
    return {
      ok: false,
      reason: `the clear order was issued at ${signed.clear.issuedAt}, more than ${Math.round(maxAgeMs / 60_000)} minutes from the coordinator's clock (${new Date(now).toISOString()}); check this machine's clock and run it again`,
    };
  const reasons: string[] = [];
  for (const signature of signed.signatures) {
    const admin = adminForKey(policy, signature.publicKey);
    if (!admin) {
      reasons.push(`key ${signature.publicKey.slice(0, 12)}… is not an admin key under policy ${policy.version}`);
      continue;
    }
    if (!verifyPayloadSignature('enroll-clear', signed.clear, signature)) {
      reasons.push(`signature by admin ${admin.name} does not verify`);
      continue;
    }
    const mayClear = (host: string): boolean => capabilitiesFor(policy, admin, host).has('enroll');
    if (signed.clear.host !== undefined && !mayClear(signed.clear.host)) {
      reasons.push(`admin ${admin.name} lacks 'enroll' for host ${signed.clear.host}`);
      continue;
    }
    return { ok: true, admin, mayClear };
  }
  return { ok: false, reason: `clear order: ${reasons.join('; ') || 'no signatures'}` };
}
