import { canonicalJson } from '../crypto/canonical.js';
import type { SigningKey } from '../crypto/keys.js';
import { type Signature, type SignedKind, signPayload } from '../crypto/signatures.js';
import { verifyPayloadSignatureOnce } from '../crypto/verified-once.js';
import type { Policy } from '../schemas/policy.js';
import { adminForKey, type PolicyAdmin } from './capabilities.js';

// Co-signing: where the policy wants k admins, each adds a signature to the *same* signed content
// (an intent, a release, a rollout, an approval). The content may travel in several envelopes —
// alice's alone, then one with alice's and bob's, or bob's written beside alice's while offline —
// and readers count distinct admins with valid signatures over that content across all of them.
//
// Who counts is decided here once, for every kind of signed content:
// - copies of one content are one document: the key is the canonical JSON of what was signed;
// - a signature counts only if it verifies over the content (a junk signature, even under an
//   admin's key, counts for nothing and never hides a valid one placed after it);
// - each admin counts once, however many keys or copies of a signature they have;
// - a key counts only if it belongs to the same admin under every policy given (the version the
//   content names and the one in force), is not revoked there, and that admin may act there.
// Nothing that lacks a valid admin signature can change a count; that is what makes a merged
// count safe to compute from envelopes any relay or coordinator could have written.

// What one stored envelope carries at most (signedIntentSchema, release and rollout schemas).
export const MAX_ENVELOPE_SIGNATURES = 16;

// What the signers signed, as bytes to compare: two envelopes with equal keys are one content.
export function contentKey(content: unknown): string {
  return canonicalJson(content);
}

// The distinct signatures of several lists (exact duplicates dropped), first seen first, at most
// `limit`. Nothing is verified here: a reader counts with tallyAdminSignatures. Readers merge
// without a limit: any limit would let a peer push the genuine signatures out with junk written
// first. What that costs stays bounded by the document's own size limits, and only signatures
// under keys of admins who may act cost a verification (tallyAdminSignatures).
export function mergeSignatures(lists: Iterable<readonly Signature[]>, limit = Number.POSITIVE_INFINITY): Signature[] {
  const seen = new Set<string>();
  const merged: Signature[] = [];
  for (const list of lists) {
    for (const signature of list) {
      const id = `${signature.publicKey}:${signature.signature}`;
      if (seen.has(id)) continue;
      seen.add(id);
      merged.push(signature);
      if (merged.length >= limit) return merged;
    }
  }
  return merged;
}

export interface ContentGroup<E> {
  // contentKey of what the copies carry.
  key: string;
  // The envelopes carrying this content, in the order given.
  copies: E[];
  // Every distinct signature found on them (mergeSignatures).
  signatures: Signature[];
}

// Groups envelopes by what they sign, merging their signatures. `view` says where an envelope
// keeps its content and signatures (an intent: {content: e.intent, signatures: e.signatures}).
export function groupByContent<E>(
  envelopes: Iterable<E>,
  view: (envelope: E) => { content: unknown; signatures: readonly Signature[] },
): ContentGroup<E>[] {
  const groups = new Map<string, { copies: E[]; lists: (readonly Signature[])[] }>();
  for (const envelope of envelopes) {
    const { content, signatures } = view(envelope);
    const key = contentKey(content);
    let group = groups.get(key);
    if (!group) {
      group = { copies: [], lists: [] };
      groups.set(key, group);
    }
    group.copies.push(envelope);
    group.lists.push(signatures);
  }
  return [...groups].map(([key, group]) => ({ key, copies: group.copies, signatures: mergeSignatures(group.lists) }));
}

export interface SignerRules {
  // The policies under which a signer must be the same admin and allowed to act (for an intent:
  // the version it names and the one in force). At least one.
  policies: readonly Policy[];
  // Whether `admin` may sign this content under `policy` (a capability on a host, say).
  mayAct: (policy: Policy, admin: PolicyAdmin) => boolean;
  // For messages: what the admin lacks, e.g. "'deploy' for host h1".
  lacking: string;
}

// A tally over signers: anything with a public key (a signature; for a rollout plan, a key whose
// signature over the plan already verified).
export interface AdminTally<S extends { publicKey: string }> {
  // Distinct admins whose valid signatures count, in the order found.
  admins: string[];
  // One valid signer per counted key (an admin with two keys may have two).
  counted: S[];
  // Why other signatures did not count, in words (bounded).
  problems: string[];
  // Some signature was by a key that is an admin's under every policy given.
  anyAdminKey: boolean;
  // Some admin key's admin lacked the right to act.
  lacksCapability: boolean;
}
export type AdminSignatureTally = AdminTally<Signature>;

const MAX_PROBLEMS = 8;

const short = (key: string): string => `${key.slice(0, 12)}…`;

// Counts the distinct admins among `signers` under the rules: the one rule every kind of signed
// content follows (intents, rollout plans). Cheap checks come first: only a key that is an
// admin's with the right to act costs `verify`, and a key already counted costs nothing more.
export function tallyAdminSigners<S extends { publicKey: string }>(
  signers: readonly S[],
  rules: SignerRules,
  verify: (signer: S) => boolean,
): AdminTally<S> {
  const tally: AdminTally<S> = {
    admins: [],
    counted: [],
    problems: [],
    anyAdminKey: false,
    lacksCapability: false,
  };
  const problem = (text: string): void => {
    if (tally.problems.length < MAX_PROBLEMS) tally.problems.push(text);
    else if (tally.problems.length === MAX_PROBLEMS) tally.problems.push('…');
  };
  const countedKeys = new Set<string>();
  const [first, ...others] = rules.policies;
  if (!first) return tally;
  for (const signer of signers) {
    const key = signer.publicKey;
    if (countedKeys.has(key)) {
      problem(`key ${short(key)} signed twice (counted once)`);
      continue;
    }
    const admin = adminForKey(first, key);
    const sameEverywhere = admin !== null && others.every((p) => adminForKey(p, key)?.name === admin.name);
    if (!admin || !sameEverywhere) {
      const revoked = rules.policies.some((p) => p.revokedKeys.includes(key));
      const missingIn = rules.policies.find((p) => adminForKey(p, key) === null) ?? first;
      problem(`key ${short(key)} is not an admin key under policy ${missingIn.version}${revoked ? ' (revoked)' : ''}`);
      continue;
    }
    tally.anyAdminKey = true;
    if (!rules.policies.every((policy) => rules.mayAct(policy, adminForKey(policy, key)!))) {
      tally.lacksCapability = true;
      problem(`admin ${admin.name} lacks ${rules.lacking}`);
      continue;
    }
    if (!verify(signer)) {
      problem(`signature by admin ${admin.name} does not verify (altered or forged)`);
      continue;
    }
    countedKeys.add(key);
    tally.counted.push(signer);
    if (!tally.admins.includes(admin.name)) tally.admins.push(admin.name);
  }
  return tally;
}

// Counts the distinct admins who validly signed `content` under the rules (tallyAdminSigners).
// Each signature is verified once per content (verified-once.ts): readers count again on every
// change of a document (and every minute), and each junk signature under an admin key would
// otherwise cost a full Ed25519 verification each time. The web editor fills the same verdicts
// ahead with WebCrypto.
export function tallyAdminSignatures(
  kind: SignedKind,
  content: unknown,
  signatures: readonly Signature[],
  rules: SignerRules,
): AdminSignatureTally {
  return tallyAdminSigners(signatures, rules, (signature) => verifyPayloadSignatureOnce(kind, content, signature));
}

export interface CoSignProgress {
  threshold: number;
  // Admins whose signatures count.
  signed: string[];
  // How many more distinct admins must sign.
  missing: number;
  // Admins who may still sign under `policy` (not yet counted).
  couldSign: string[];
}

// Who has signed and who is still needed: for `outpost approve`, `status` and `rollout status`.
export function coSignProgress(
  tally: AdminSignatureTally,
  threshold: number,
  policy: Policy,
  mayAct: (policy: Policy, admin: PolicyAdmin) => boolean,
): CoSignProgress {
  const couldSign = policy.admins
    .filter((admin) => !tally.admins.includes(admin.name) && admin.keys.some((k) => !policy.revokedKeys.includes(k)))
    .filter((admin) => mayAct(policy, admin))
    .map((admin) => admin.name);
  return {
    threshold,
    signed: [...tally.admins],
    missing: Math.max(0, threshold - tally.admins.length),
    couldSign,
  };
}

// "1 of 2 admin signatures (alice); needs 1 more of: bob, carol".
export function describeCoSignProgress(progress: CoSignProgress): string {
  const have = `${progress.signed.length} of ${progress.threshold} admin signature${progress.threshold === 1 ? '' : 's'}${progress.signed.length ? ` (${progress.signed.join(', ')})` : ''}`;
  if (progress.missing === 0) return have;
  return `${have}; needs ${progress.missing} more of: ${progress.couldSign.length ? progress.couldSign.join(', ') : 'nobody (no other admin may sign it under this policy)'}`;
}

// Adds `key`'s signature over `content` to the signatures that already count, for a new envelope
// of the same content. Only `counted` (from tallyAdminSignatures) is carried over, so junk a peer
// added is not copied forward; a key that already counted is not signed again.
export function addSignature(
  kind: SignedKind,
  content: unknown,
  counted: readonly Signature[],
  key: SigningKey,
  limit = MAX_ENVELOPE_SIGNATURES,
): Signature[] {
  const own = counted.find((s) => s.publicKey === key.publicKey) ?? signPayload(kind, content, key);
  return withOwnSignature(counted, own, limit);
}

// `own` (made by any signer: tweetnacl here, WebCrypto in the web editor) placed before the
// signatures that already count, for a new envelope of the same content.
export function withOwnSignature(
  counted: readonly Signature[],
  own: Signature,
  limit = MAX_ENVELOPE_SIGNATURES,
): Signature[] {
  const kept = counted.filter((s) => s.publicKey !== own.publicKey);
  // Our own signature first: it is the one this envelope exists for.
  return [own, ...kept].slice(0, limit);
}
