import { canonicalJson } from '../crypto/canonical.js';
import { type Signature, verifyPayloadSignature } from '../crypto/signatures.js';
import type { Policy, SignedPolicy } from '../schemas/policy.js';

// Distinct keys among `allowed` whose signature over the payload verifies. A key that signs twice
// counts once, so a duplicated signature can never help meet a threshold.
export function verifiedSigners(
  kind: 'policy' | 'intent' | 'enrollment' | 'enroll-token',
  payload: unknown,
  signatures: Signature[],
  allowed: ReadonlySet<string>,
): Set<string> {
  const signers = new Set<string>();
  for (const signature of signatures) {
    if (!allowed.has(signature.publicKey) || signers.has(signature.publicKey)) continue;
    if (verifyPayloadSignature(kind, payload, signature)) signers.add(signature.publicKey);
  }
  return signers;
}

function meetsRoot(signed: SignedPolicy, root: Policy['root']): boolean {
  return verifiedSigners('policy', signed.policy, signed.signatures, new Set(root.keys)).size >= root.threshold;
}

export type PolicyVerdict = { ok: true } | { ok: false; reason: string };

// A first policy is trusted when its own root threshold is met by keys the reader pinned
// (`--org-root`): the pinned keys say who the organisation is.
export function verifyAnchorPolicy(signed: SignedPolicy, pinnedRootKeys: ReadonlySet<string>): PolicyVerdict {
  const { root } = signed.policy;
  const pinnedSigners = verifiedSigners(
    'policy',
    signed.policy,
    signed.signatures,
    new Set(root.keys.filter((k) => pinnedRootKeys.has(k))),
  );
  if (pinnedSigners.size < root.threshold) {
    return {
      ok: false,
      reason: `policy version ${signed.policy.version} is signed by ${pinnedSigners.size} of the pinned org root keys, ${root.threshold} needed`,
    };
  }
  return { ok: true };
}

// Version N+1 must be signed by the threshold of version N's root keys (so only the current root
// can hand over) and by the threshold of its own root keys (so a new root accepted it), as in TUF.
export function verifyPolicySuccessor(current: Policy, next: SignedPolicy): PolicyVerdict {
  if (next.policy.version !== current.version + 1) {
    return { ok: false, reason: `policy version ${next.policy.version} does not follow version ${current.version}` };
  }
  if (next.policy.epoch < current.epoch) {
    return {
      ok: false,
      reason: `policy version ${next.policy.version} lowers the epoch from ${current.epoch} to ${next.policy.epoch}`,
    };
  }
  if (!meetsRoot(next, current.root)) {
    return {
      ok: false,
      reason: `policy version ${next.policy.version} is not signed by ${current.root.threshold} of version ${current.version}'s root keys`,
    };
  }
  if (!meetsRoot(next, next.policy.root)) {
    return {
      ok: false,
      reason: `policy version ${next.policy.version} is not signed by ${next.policy.root.threshold} of its own root keys`,
    };
  }
  return { ok: true };
}

export interface PolicyWalk {
  // Every version walked, ascending; the last is the one in force.
  chain: Policy[];
  refused: { version: number; reason: string }[];
}

function distinctByContent(candidates: SignedPolicy[]): Map<string, SignedPolicy> {
  const byContent = new Map<string, SignedPolicy>();
  for (const candidate of candidates) {
    const key = canonicalJson(candidate.policy);
    const known = byContent.get(key);
    // Signatures of identical policies are pooled: admins may add theirs in separate writes.
    byContent.set(
      key,
      known ? { policy: known.policy, signatures: [...known.signatures, ...candidate.signatures] } : candidate,
    );
  }
  return byContent;
}

// Walks from the policy the reader already trusts (or from an anchor signed by the pinned root)
// through N → N+1 → …, as far as valid successors exist. Versions never go down: anything at or
// below the current version that differs from what was walked is refused as a rollback. Two
// different valid policies for one version (equivocation) stop the walk there.
export function walkPolicyChain(
  trusted: Policy[],
  pinnedRootKeys: ReadonlySet<string>,
  candidates: SignedPolicy[],
): PolicyWalk {
  const walk: PolicyWalk = { chain: [...trusted], refused: [] };
  const byVersion = new Map<number, SignedPolicy[]>();
  for (const candidate of distinctByContent(candidates).values()) {
    const list = byVersion.get(candidate.policy.version) ?? [];
    list.push(candidate);
    byVersion.set(candidate.policy.version, list);
  }
  if (walk.chain.length === 0) {
    const versions = [...byVersion.keys()].sort((a, b) => a - b);
    for (const version of versions) {
      const anchors = byVersion.get(version)!.filter((c) => verifyAnchorPolicy(c, pinnedRootKeys).ok);
      if (anchors.length === 1) {
        walk.chain.push(anchors[0]!.policy);
        break;
      }
      if (anchors.length > 1) {
        walk.refused.push({
          version,
          reason: `${anchors.length} different policies for version ${version} are signed by the pinned root (equivocation)`,
        });
        return walk;
      }
      for (const c of byVersion.get(version)!)
        walk.refused.push({ version, reason: (verifyAnchorPolicy(c, pinnedRootKeys) as { reason: string }).reason });
    }
    if (walk.chain.length === 0) return walk;
  }
  const walked = new Set(walk.chain.map((p) => canonicalJson(p)));
  for (const [version, list] of byVersion) {
    if (version > walk.chain.at(-1)!.version) continue;
    for (const c of list)
      if (!walked.has(canonicalJson(c.policy)))
        walk.refused.push({
          version,
          reason: `policy version ${version} is not above version ${walk.chain.at(-1)!.version} already trusted (rollback)`,
        });
  }
  for (;;) {
    const current = walk.chain.at(-1)!;
    const next = byVersion.get(current.version + 1);
    if (!next) break;
    const valid = next.filter((c) => verifyPolicySuccessor(current, c).ok);
    for (const c of next) {
      const verdict = verifyPolicySuccessor(current, c);
      if (!verdict.ok) walk.refused.push({ version: c.policy.version, reason: verdict.reason });
    }
    if (valid.length !== 1) {
      if (valid.length > 1)
        walk.refused.push({
          version: current.version + 1,
          reason: `${valid.length} different valid policies claim version ${current.version + 1} (equivocation); staying on version ${current.version}`,
        });
      break;
    }
    walk.chain.push(valid[0]!.policy);
  }
  return walk;
}
