import type { Signature } from '../crypto/signatures.js';
import type { Intent, SignedIntent } from '../schemas/intent.js';
import type { Capability, Policy } from '../schemas/policy.js';
import { capabilitiesFor, type PolicyAdmin, signatureThreshold } from './capabilities.js';
import {
  type AdminSignatureTally,
  type CoSignProgress,
  coSignProgress,
  type SignerRules,
  tallyAdminSignatures,
} from './co-signatures.js';
import { checkIntentBindingAndTime, type DeliveryWindow, type IntentVerdict } from './verify-intent.js';

export interface PolicyIntentContext {
  host: string;
  // Every policy version the reader has walked, ascending; the last is in force.
  chain: Policy[];
  now: number;
  clockSkewMs?: number;
  capability?: Capability;
  // With freshness enforced: how late an intent may arrive (verify-intent.ts, DeliveryWindow).
  delivery?: DeliveryWindow;
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
  // Distinct admins with valid signatures and the capability under both versions; junk and
  // duplicate signatures count for nothing and hide nothing (co-signatures.ts).
  const tally = tallyAdminSignatures(
    'intent',
    intent,
    signed.signatures,
    intentSignerRules(intent, named, current, capability),
  );
  const threshold = Math.max(signatureThreshold(named, intent.host), signatureThreshold(current, intent.host));
  if (tally.admins.length < threshold) {
    const code =
      tally.admins.length > 0
        ? 'below-threshold'
        : !tally.anyAdminKey
          ? 'unknown-signer'
          : tally.lacksCapability
            ? 'no-capability'
            : 'bad-signature';
    return {
      ok: false,
      code,
      reason: `${tally.admins.length} of ${threshold} required admin signatures${tally.admins.length ? ` (${tally.admins.join(', ')})` : ''}${tally.problems.length ? `: ${tally.problems.join('; ')}` : ''}`,
    };
  }
  const verdict = checkIntentBindingAndTime(signed, context.host, context.now, context.clockSkewMs, context.delivery);
  return verdict.ok ? { ok: true, counted: tally.counted } : verdict;
}

function intentSignerRules(intent: Intent, named: Policy, current: Policy, capability: Capability): SignerRules {
  return {
    policies: named === current ? [named] : [named, current],
    mayAct: (policy, admin) => capabilitiesFor(policy, admin, intent.host).has(capability),
    lacking: `'${capability}' for host ${intent.host}`,
  };
}

export interface IntentCoSigning {
  tally: AdminSignatureTally;
  threshold: number;
  // Who signed and who may still sign, under the policy in force.
  progress: CoSignProgress;
}

// Who has signed an intent (its copies' signatures merged) and who is still needed, for the admin
// views (`outpost approve`, `outpost status`): the same count the agents make.
export function intentCoSigning(
  intent: Intent,
  signatures: readonly Signature[],
  chain: Policy[],
  capability: Capability = 'deploy',
): IntentCoSigning | { error: string } {
  const current = chain.at(-1);
  if (!current) return { error: 'no fleet policy is trusted yet' };
  const named = chain.find((p) => p.version === intent.policyVersion);
  if (!named)
    return {
      error:
        intent.policyVersion === undefined
          ? 'the intent names no policy version'
          : `the intent names policy version ${intent.policyVersion}, not in the chain walked from the org root (${chain[0]?.version}..${current.version})`,
    };
  const rules = intentSignerRules(intent, named, current, capability);
  const tally = tallyAdminSignatures('intent', intent, signatures, rules);
  const threshold = Math.max(signatureThreshold(named, intent.host), signatureThreshold(current, intent.host));
  // Could still sign: the same admin may act under every version the signature must hold in.
  const mayStillSign = (_: Policy, admin: PolicyAdmin): boolean =>
    rules.policies.every((policy) => {
      const there = policy.admins.find((a) => a.name === admin.name);
      return there !== undefined && rules.mayAct(policy, there);
    });
  return { tally, threshold, progress: coSignProgress(tally, threshold, current, mayStillSign) };
}
