import { canonicalJson } from '../crypto/canonical.js';
import type { Signature } from '../crypto/signatures.js';
import type { Policy, SignedPolicy } from '../schemas/policy.js';
import { type PolicyVerdict, verifiedSigners, verifyPolicySuccessor } from '../trust/policy-chain.js';

// A draft of the next policy version, shared by `outpost policy sign` and the web editor's
// policy drafts: how many root signatures it has, whether this key's signature would count, what
// changes against the version in force, and whether readers would walk to it (the readers' own
// check, verifyPolicySuccessor). A policy version is signed by the org root keys: those of the
// version in force (only the current root hands over) and those the draft names (a new root
// accepted it). No admin key counts, whatever its roles say.

export interface SignatureTally {
  signatures: number;
  // Keys of this version's own root whose signature verifies, and how many are needed.
  ownRoot: { signed: number; threshold: number };
  // Signatures that do not verify over this policy (made over other content, or corrupt).
  invalid: string[];
}

export function tallySignatures(policy: Policy, signatures: Signature[]): SignatureTally {
  const everyone = new Set(signatures.map((s) => s.publicKey));
  const valid = verifiedSigners('policy', policy, signatures, everyone);
  return {
    signatures: signatures.length,
    ownRoot: {
      signed: verifiedSigners('policy', policy, signatures, new Set(policy.root.keys)).size,
      threshold: policy.root.threshold,
    },
    invalid: signatures.filter((s) => !valid.has(s.publicKey)).map((s) => s.publicKey),
  };
}

// Checked before anything is signed: whether this key's signature on `draft` (the successor of
// `current`) would count toward either root threshold, and that the draft is the next version.
export function maySignPolicyDraft(
  current: Policy,
  draft: SignedPolicy,
  publicKey: string,
): { ok: true } | { ok: false; reason: string } {
  if (draft.policy.version !== current.version + 1)
    return {
      ok: false,
      reason: `the draft is version ${draft.policy.version}, but version ${current.version} is in force: only version ${current.version + 1} can follow it; start the draft again`,
    };
  if (current.revokedKeys.includes(publicKey) || draft.policy.revokedKeys.includes(publicKey))
    return { ok: false, reason: 'this key is revoked and never counts again; nothing was signed' };
  if (!current.root.keys.includes(publicKey) && !draft.policy.root.keys.includes(publicKey))
    return {
      ok: false,
      reason: `this key is not one of the org root keys (version ${current.version} needs ${current.root.threshold} of its ${current.root.keys.length} root key(s) to sign version ${draft.policy.version}); admin keys never sign a policy, whatever their roles: unlock a root key here, or download the draft for the root holders ('outpost policy sign'); nothing was signed`,
    };
  if (draft.signatures.some((s) => s.publicKey === publicKey))
    return {
      ok: false,
      reason:
        'this key has signed the draft already; a key counts once toward a threshold, so sign with another root key',
    };
  return { ok: true };
}

export interface DraftProgress {
  // Root keys of the version in force / of the draft whose signatures verify, and how many each needs.
  previousRoot: { signed: number; threshold: number };
  ownRoot: { signed: number; threshold: number };
  invalid: string[];
  // What readers (agents, the coordinator) say: accepted, or why not yet.
  verdict: PolicyVerdict;
}

export function draftProgress(current: Policy, draft: SignedPolicy): DraftProgress {
  const tally = tallySignatures(draft.policy, draft.signatures);
  return {
    previousRoot: {
      signed: verifiedSigners('policy', draft.policy, draft.signatures, new Set(current.root.keys)).size,
      threshold: current.root.threshold,
    },
    ownRoot: tally.ownRoot,
    invalid: tally.invalid,
    verdict: draft.signatures.length
      ? verifyPolicySuccessor(current, draft)
      : { ok: false, reason: `policy version ${draft.policy.version} has no signatures` },
  };
}

export interface PolicyChange {
  section: string;
  name: string;
  change: 'added' | 'removed' | 'changed';
  // The entry as it is (added, changed) or was (removed), in short form.
  detail: string;
}

const SECTIONS = ['admins', 'roles', 'groups', 'relays', 'channels', 'logins'] as const;

function describe(item: Record<string, unknown>): string {
  return Object.entries(item)
    .filter(([key]) => key !== 'name')
    .map(([key, value]) => `${key}: ${Array.isArray(value) ? value.join(', ') || '—' : String(value)}`)
    .join('; ');
}

// What the draft changes, entry by entry (named entries compared by their canonical JSON), then
// the key lists and the root; the version, epoch and issue time are not listed.
export function policyDiff(current: Policy, next: Policy): PolicyChange[] {
  const changes: PolicyChange[] = [];
  for (const section of SECTIONS) {
    const before = new Map(((current[section] ?? []) as { name: string }[]).map((x) => [x.name, x]));
    const after = new Map(((next[section] ?? []) as { name: string }[]).map((x) => [x.name, x]));
    for (const [name, item] of after) {
      const old = before.get(name);
      if (!old) changes.push({ section, name, change: 'added', detail: describe(item) });
      else if (canonicalJson(old) !== canonicalJson(item))
        changes.push({ section, name, change: 'changed', detail: describe(item) });
    }
    for (const [name, item] of before)
      if (!after.has(name)) changes.push({ section, name, change: 'removed', detail: describe(item) });
  }
  for (const section of ['timestampKeys', 'revokedKeys'] as const) {
    const before = new Set(current[section]);
    const after = new Set(next[section]);
    for (const key of after) if (!before.has(key)) changes.push({ section, name: key, change: 'added', detail: '' });
    for (const key of before) if (!after.has(key)) changes.push({ section, name: key, change: 'removed', detail: '' });
  }
  if (canonicalJson(current.root) !== canonicalJson(next.root))
    changes.push({
      section: 'root',
      name: 'root',
      change: 'changed',
      detail: `${next.root.threshold} of ${next.root.keys.join(', ')} (was ${current.root.threshold} of ${current.root.keys.join(', ')})`,
    });
  return changes;
}
