import { type Signature, verifyPayloadSignature } from '../crypto/signatures.js';
import type { SignedIntent } from '../schemas/intent.js';
import type { Capability, Policy } from '../schemas/policy.js';
import { adminForKey, capabilitiesFor, signatureThreshold } from './capabilities.js';
import { checkIntentBindingAndTime, type IntentVerdict } from './verify-intent.js';

export interface PolicyIntentContext {
  host: string;
  // Every policy version the reader has walked, ascending; the last is in force.
  chain: Policy[];
  now: number;
  clockSkewMs?: number;
  capability?: Capability;
  // How one signature is checked; readers that verified signatures before (the web editor's
  // cache, filled by WebCrypto) pass their own. Default: verifyPayloadSignature.
  verifySignature?: (kind: 'intent', payload: unknown, signature: Signature) => boolean;
}

// An intent counts only when admins whose capabilities cover this host, under the policy version
// the intent names *and* under the policy in force now (so a key revoked or an admin removed
// since can no longer push anything), sign it with valid signatures, meeting the strictest
// threshold of the host's groups with distinct admins.
export function verifyIntentUnderPolicy(signed: SignedIntent, context: PolicyIntentContext): IntentVerdict {
  const { intent } = signed;
  const current = context.chain.at(-1);
  if (!current)
    return {
      ok: false,
      code: 'unknown-policy-version',
      reason: 'no fleet policy is trusted yet; waiting for fleet/policy',
    };
  if (intent.policyVersion === undefined) {
    return {
      ok: false,
      code: 'unknown-policy-version',
      reason: 'the intent names no policy version; this fleet requires policy-signed intents',
    };
  }
  const named = context.chain.find((p) => p.version === intent.policyVersion);
  if (!named) {
    return {
      ok: false,
      code: 'unknown-policy-version',
      reason: `the intent names policy version ${intent.policyVersion}, not known here (have ${context.chain[0]?.version}..${current.version})`,
    };
  }
  const capability = context.capability ?? 'deploy';
  const admins = new Set<string>();
  const problems: string[] = [];
  // A key counts once, and only through a signature that verifies: a junk signature under an
  // admin's key, placed before the real one by whoever copied the intent, must not hide it.
  const verifiedKeys = new Set<string>();
  let anyKnown = false;
  for (const signature of signed.signatures) {
    if (verifiedKeys.has(signature.publicKey)) {
      problems.push(`key ${signature.publicKey.slice(0, 12)}… signed twice (counted once)`);
      continue;
    }
    const thenAdmin = adminForKey(named, signature.publicKey);
    const nowAdmin = adminForKey(current, signature.publicKey);
    if (!thenAdmin || !nowAdmin || thenAdmin.name !== nowAdmin.name) {
      problems.push(
        `key ${signature.publicKey.slice(0, 12)}… is not an admin key under policy ${!thenAdmin ? named.version : current.version}${current.revokedKeys.includes(signature.publicKey) ? ' (revoked)' : ''}`,
      );
      continue;
    }
    anyKnown = true;
    if (
      !capabilitiesFor(named, thenAdmin, intent.host).has(capability) ||
      !capabilitiesFor(current, nowAdmin, intent.host).has(capability)
    ) {
      problems.push(`admin ${nowAdmin.name} lacks '${capability}' for host ${intent.host}`);
      continue;
    }
    if (!(context.verifySignature ?? verifyPayloadSignature)('intent', intent, signature)) {
      problems.push(`signature by admin ${nowAdmin.name} does not verify (altered or forged)`);
      continue;
    }
    verifiedKeys.add(signature.publicKey);
    admins.add(nowAdmin.name);
  }
  const threshold = Math.max(signatureThreshold(named, intent.host), signatureThreshold(current, intent.host));
  if (admins.size < threshold) {
    const code =
      admins.size > 0
        ? 'below-threshold'
        : !anyKnown
          ? 'unknown-signer'
          : problems.some((p) => p.includes('lacks'))
            ? 'no-capability'
            : 'bad-signature';
    return {
      ok: false,
      code,
      reason: `${admins.size} of ${threshold} required admin signatures${problems.length ? `: ${problems.join('; ')}` : ''}`,
    };
  }
  return checkIntentBindingAndTime(signed, context.host, context.now, context.clockSkewMs);
}
