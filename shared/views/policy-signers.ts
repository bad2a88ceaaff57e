import { canonicalJson } from '../crypto/canonical.js';
import type { Policy, SignedPolicy } from '../schemas/policy.js';
import { verifiedSigners } from '../trust/policy-chain.js';

// Who signed the policy in force, for the web editor's policy view and `outpost policy show`:
// every stored copy of exactly this content pooled (admins may add signatures in separate
// writes), and each root key marked by whether its signature verifies. The walk
// (policy-chain.ts) already decided the policy counts; this only says by whose hand.
export interface PolicyRootSigner {
  key: string;
  // A key of this version's root, of the version before (the hand-over), or both.
  of: ('this version' | 'previous version')[];
  signed: boolean;
}

export function policyRootSigners(
  stored: readonly SignedPolicy[],
  policy: Policy,
  previous: Policy | undefined,
): { signers: PolicyRootSigner[]; invalid: number } {
  const content = canonicalJson(policy);
  const signatures = stored.filter((s) => canonicalJson(s.policy) === content).flatMap((s) => s.signatures);
  const keys = new Set([...policy.root.keys, ...(previous?.root.keys ?? [])]);
  const valid = verifiedSigners('policy', policy, signatures, new Set(signatures.map((s) => s.publicKey)));
  const signers = [...keys].map((key) => ({
    key,
    of: [
      ...(policy.root.keys.includes(key) ? (['this version'] as const) : []),
      ...(previous?.root.keys.includes(key) ? (['previous version'] as const) : []),
    ],
    signed: valid.has(key),
  }));
  const invalid = new Set(signatures.map((s) => s.publicKey).filter((k) => !valid.has(k))).size;
  return { signers, invalid };
}
