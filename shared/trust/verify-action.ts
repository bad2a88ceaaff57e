import { envelopeDigest } from '../crypto/signatures.js';
import { verifyPayloadSignatureOnce } from '../crypto/verified-once.js';
import {
  ACTION_CAPABILITY,
  type ActionRefusalCode,
  MAX_ACTION_VALIDITY_MS,
  type SignedAction,
  unknownActionFields,
} from '../schemas/action.js';
import type { Policy } from '../schemas/policy.js';
import type { HostId } from '../schemas/primitives.js';
import { adminForKey, capabilitiesFor } from './capabilities.js';
import { tallyAdminSignatures } from './co-signatures.js';

// Whether one signed remote-action request may be executed on this host: signed by an admin whose
// role grants the action's capability on this host, under the policy version the request names
// *and* the one in force (a key revoked or an admin removed since counts for nothing), for this
// host, inside its validity. One admin suffices: a group's deploy threshold is about what runs,
// not about turning the host off and on (docs/access.md).
//
// `fromAdmin`: a signature under a key of an admin of the policy in force (or a trusted
// --admin-key) verifies over the request. Only such refusals are answered with a signed result:
// anything a relay or coordinator can write without an admin's key (junk, forged signatures, a
// revoked key) is logged, never answered, so it cannot make the host write without bound.
export type ActionVerdict =
  | { ok: true; admin: string }
  | { ok: false; code: ActionRefusalCode; reason: string; fromAdmin: boolean; waitForPolicy?: boolean };

export interface ActionCheckContext {
  host: HostId;
  now: number;
  // Policy trust: every version walked, ascending (the last is in force). Empty with static keys.
  chain: Policy[];
  mode: 'policy' | 'admin-keys';
  // Static trust only (--admin-key): any of these keys may request any action.
  trustedAdminKeys?: ReadonlySet<string>;
  clockSkewMs?: number;
}

export const DEFAULT_ACTION_CLOCK_SKEW_MS = 5 * 60_000;

export function actionDigest(signed: SignedAction): string {
  return envelopeDigest('action', signed);
}

const short = (key: string): string => `${key.slice(0, 12)}…`;

function checkBindingAndTime(signed: SignedAction, context: ActionCheckContext, fromAdmin: boolean): ActionVerdict {
  const { request } = signed;
  const refuse = (code: ActionRefusalCode, reason: string): ActionVerdict => ({ ok: false, code, reason, fromAdmin });
  const unknown = unknownActionFields(request);
  if (unknown.length > 0)
    return refuse(
      'unknown-field',
      `the request has fields this agent does not know (${unknown.join(', ')}): it was written by a newer outpost; upgrade this host's agent`,
    );
  if (request.host !== context.host)
    return refuse('wrong-host', `the request is for host ${request.host}, this is ${context.host}`);
  const issuedAt = Date.parse(request.issuedAt);
  const expiresAt = Date.parse(request.expiresAt);
  if (!(expiresAt > context.now)) return refuse('expired', `the request expired at ${request.expiresAt}`);
  if (issuedAt > context.now + (context.clockSkewMs ?? DEFAULT_ACTION_CLOCK_SKEW_MS))
    return refuse(
      'not-yet-valid',
      `the request was issued in the future (${request.issuedAt}); check the admin's or this host's clock`,
    );
  if (expiresAt - issuedAt > MAX_ACTION_VALIDITY_MS)
    return refuse(
      'too-long',
      `the request is valid for ${Math.round((expiresAt - issuedAt) / 86_400_000)} days, more than the ${MAX_ACTION_VALIDITY_MS / 86_400_000} an action may be; sign it again with a shorter --expires`,
    );
  return { ok: true, admin: request.issuer };
}

export function verifyAction(signed: SignedAction, context: ActionCheckContext): ActionVerdict {
  const { request, signatures } = signed;
  if (context.mode === 'admin-keys') {
    const trusted = context.trustedAdminKeys ?? new Set<string>();
    const good = signatures.find((s) => trusted.has(s.publicKey) && verifyPayloadSignatureOnce('action', request, s));
    if (!good) {
      const anyTrusted = signatures.some((s) => trusted.has(s.publicKey));
      return {
        ok: false,
        code: anyTrusted ? 'bad-signature' : 'unknown-signer',
        reason: anyTrusted
          ? 'the signature by a trusted admin key does not verify: the request was altered or the signature forged'
          : `signed by ${signatures.map((s) => short(s.publicKey)).join(', ')}, none of which is a trusted admin key`,
        fromAdmin: false,
      };
    }
    const verdict = checkBindingAndTime(signed, context, true);
    return verdict.ok ? { ok: true, admin: request.issuer } : verdict;
  }
  const current = context.chain.at(-1);
  if (!current)
    return {
      ok: false,
      code: 'unknown-policy-version',
      reason: 'no fleet policy is trusted yet; waiting for fleet/policy',
      fromAdmin: false,
      waitForPolicy: true,
    };
  const fromAdmin = signatures.some(
    (s) => adminForKey(current, s.publicKey) !== null && verifyPayloadSignatureOnce('action', request, s),
  );
  if (request.policyVersion === undefined)
    return {
      ok: false,
      code: 'unknown-policy-version',
      reason: 'the request names no policy version; this fleet requires policy-signed requests',
      fromAdmin,
    };
  const named = context.chain.find((p) => p.version === request.policyVersion);
  if (!named)
    return {
      ok: false,
      code: 'unknown-policy-version',
      reason: `the request names policy version ${request.policyVersion}, not known here (have ${context.chain[0]?.version}..${current.version})`,
      fromAdmin,
      // A newer version may still be on its way: decided when it arrives.
      waitForPolicy: request.policyVersion > current.version,
    };
  const capability = ACTION_CAPABILITY[request.action];
  const tally = tallyAdminSignatures('action', request, signatures, {
    policies: named === current ? [named] : [named, current],
    mayAct: (policy, admin) => capabilitiesFor(policy, admin, request.host).has(capability),
    lacking: `'${capability}' for host ${request.host}`,
  });
  if (tally.admins.length === 0) {
    // The capability is checked before the signature (co-signatures.ts): a "lacks" problem
    // alone, from a signature that does not verify, is no admin's request.
    const code: ActionRefusalCode = !tally.anyAdminKey
      ? 'unknown-signer'
      : tally.lacksCapability && fromAdmin
        ? 'no-capability'
        : 'bad-signature';
    return {
      ok: false,
      code,
      reason: `${request.action} needs one admin with '${capability}' on ${request.host}${tally.problems.length ? `: ${tally.problems.join('; ')}` : ''}`,
      fromAdmin,
    };
  }
  const verdict = checkBindingAndTime(signed, context, true);
  return verdict.ok ? { ok: true, admin: tally.admins[0]! } : verdict;
}
