import { canonicalJson } from '../crypto/canonical.js';
import { envelopeDigest, verifyPayloadSignature } from '../crypto/signatures.js';
import { type SignedIntent, unknownIntentFields } from '../schemas/intent.js';
import type { HostId } from '../schemas/primitives.js';

export type RefusalCode =
  | 'unknown-signer'
  | 'bad-signature'
  | 'no-capability'
  | 'below-threshold'
  | 'unknown-policy-version'
  | 'wrong-host'
  | 'expired'
  | 'not-yet-valid'
  | 'rollback'
  | 'equivocation'
  | 'unknown-field'
  | 'rollout-aborted';

export type IntentVerdict = { ok: true } | { ok: false; code: RefusalCode; reason: string };

export interface IntentCheckContext {
  host: HostId;
  trustedAdminKeys: ReadonlySet<string>;
  now: number;
  // Allowed clock difference for issuedAt in the future (admin and host clocks drift).
  clockSkewMs?: number;
}

export function intentDigest(signed: SignedIntent): string {
  return envelopeDigest('intent', signed);
}

// Host binding and validity window, whatever the trust model: an intent for another host, expired,
// or issued in the future is never installed.
export function checkIntentBindingAndTime(
  signed: SignedIntent,
  host: HostId,
  now: number,
  clockSkewMs = 5 * 60_000,
): IntentVerdict {
  const { intent } = signed;
  const unknown = unknownIntentFields(intent);
  if (unknown.length > 0) {
    return {
      ok: false,
      code: 'unknown-field',
      reason: `intent has fields this agent does not know (${unknown.join(', ')}): it was written by a newer outpost; upgrade this host's agent`,
    };
  }
  if (intent.host !== host) {
    return { ok: false, code: 'wrong-host', reason: `intent is for host ${intent.host}, this is ${host}` };
  }
  if (!(Date.parse(intent.expiresAt) > now)) {
    return { ok: false, code: 'expired', reason: `intent expired at ${intent.expiresAt}` };
  }
  if (Date.parse(intent.issuedAt) > now + clockSkewMs) {
    return {
      ok: false,
      code: 'not-yet-valid',
      reason: `intent issued in the future (${intent.issuedAt}); check the admin's or this host's clock`,
    };
  }
  return { ok: true };
}

// Static trust (`--admin-key`): any one trusted admin key may sign any intent for this host.
export function verifyIntent(signed: SignedIntent, context: IntentCheckContext): IntentVerdict {
  const { intent } = signed;
  const trusted = signed.signatures.filter((s) => context.trustedAdminKeys.has(s.publicKey));
  if (trusted.length === 0) {
    return {
      ok: false,
      code: 'unknown-signer',
      reason: `signed by ${signed.signatures.map((s) => s.publicKey.slice(0, 12)).join(', ')}…, none of which is a trusted admin key`,
    };
  }
  if (!trusted.some((s) => verifyPayloadSignature('intent', intent, s))) {
    return {
      ok: false,
      code: 'bad-signature',
      reason: `signature by trusted key ${trusted[0]!.publicKey.slice(0, 12)}… does not verify: the intent was altered or the signature forged`,
    };
  }
  return checkIntentBindingAndTime(signed, context.host, context.now, context.clockSkewMs);
}

export interface IntentCandidate {
  signed: SignedIntent;
  digest: string;
}

export interface IntentSelection {
  chosen: IntentCandidate | null;
  refused: { candidate: IntentCandidate; code: RefusalCode; reason: string }[];
  superseded: IntentCandidate[];
  // Other envelopes of an intent that is chosen, applied or superseded: the same signed content
  // with a different set of signatures (a copy with a junk or an extra signature added). Neither
  // installed nor refused on their own.
  duplicates: IntentCandidate[];
}

// Decides whether one intent, on its own, may be installed on this host (signers, binding, time).
export type IntentVerifier = (signed: SignedIntent) => IntentVerdict;

// Where an intent ranks: by policy epoch first (raised to recover from a compromised key that
// pushed a huge generation), then by generation.
export interface IntentRank {
  epoch: number;
  generation: number;
}

export function compareRank(a: IntentRank, b: IntentRank): number {
  return a.epoch !== b.epoch ? a.epoch - b.epoch : a.generation - b.generation;
}

export interface SelectionContext {
  verify: IntentVerifier;
  // Highest rank applied or attempted: nothing at or below it is installed again.
  floor: IntentRank;
  appliedDigest: string | null;
  epochOf?: (signed: SignedIntent) => number;
  // Envelopes already answered or being worked on: among copies of one signed content, these are
  // kept, so a copy arriving later never restarts work under a new digest.
  knownDigests?: ReadonlySet<string>;
}

// What the signers signed, without the signatures: two envelopes with the same content are one
// intent, whatever else their signature lists carry.
function contentKey(signed: SignedIntent): string {
  return canonicalJson(signed.intent);
}

// Picks the newest valid intent above the floor. Two valid intents with one rank and different
// signed content are an equivocation: both are refused, deterministically, whichever order they
// arrived in. Only envelopes that verify on their own take part, and copies of one content count
// once, so nobody without a signing key can turn a valid intent into an "equivocation" (a copy
// with a junk signature added is the same intent, and a copy that does not verify is refused on
// its own).
export function selectIntent(intents: SignedIntent[], context: SelectionContext): IntentSelection {
  const rankOf = (signed: SignedIntent): IntentRank => ({
    epoch: context.epochOf?.(signed) ?? 0,
    generation: signed.intent.generation,
  });
  const selection: IntentSelection = { chosen: null, refused: [], superseded: [], duplicates: [] };
  const known = context.knownDigests ?? new Set<string>();
  // Valid envelopes grouped by signed content, in first-seen order.
  const groups = new Map<string, IntentCandidate[]>();
  const seen = new Set<string>();
  for (const signed of intents) {
    const candidate = { signed, digest: intentDigest(signed) };
    if (seen.has(candidate.digest)) continue;
    seen.add(candidate.digest);
    const verdict = context.verify(signed);
    if (!verdict.ok) {
      selection.refused.push({ candidate, code: verdict.code, reason: verdict.reason });
      continue;
    }
    const key = contentKey(signed);
    groups.set(key, [...(groups.get(key) ?? []), candidate]);
  }
  // One envelope stands for each content: the applied one, else one already known, else the
  // smallest digest (the same choice in any arrival order).
  const representative = (copies: IntentCandidate[]): IntentCandidate =>
    copies.find((c) => c.digest === context.appliedDigest) ??
    copies.find((c) => known.has(c.digest)) ??
    copies.reduce((best, c) => (c.digest < best.digest ? c : best));
  const valid: IntentCandidate[] = [];
  for (const copies of groups.values()) {
    const chosen = representative(copies);
    for (const copy of copies) if (copy !== chosen) selection.duplicates.push(copy);
    const { signed } = chosen;
    if (compareRank(rankOf(signed), context.floor) <= 0) {
      const isApplied = copies.some((c) => c.digest === context.appliedDigest);
      if (!isApplied) {
        const floor =
          context.floor.epoch > 0
            ? `epoch ${context.floor.epoch}, generation ${context.floor.generation}`
            : `generation ${context.floor.generation}`;
        selection.refused.push({
          candidate: chosen,
          code: 'rollback',
          reason: `generation ${signed.intent.generation} is not above ${floor} already applied or attempted on this host`,
        });
      }
      continue;
    }
    valid.push(chosen);
  }
  const byRank = new Map<string, IntentCandidate[]>();
  for (const candidate of valid) {
    const rank = rankOf(candidate.signed);
    const key = `${rank.epoch}:${rank.generation}`;
    byRank.set(key, [...(byRank.get(key) ?? []), candidate]);
  }
  const ranked = [...byRank.values()].sort((a, b) => compareRank(rankOf(b[0]!.signed), rankOf(a[0]!.signed)));
  for (const list of ranked) {
    if (list.length > 1) {
      for (const candidate of list) {
        selection.refused.push({
          candidate,
          code: 'equivocation',
          reason: `${list.length} different validly signed intents claim generation ${candidate.signed.intent.generation}; refusing all of them`,
        });
      }
      continue;
    }
    if (!selection.chosen) selection.chosen = list[0]!;
    else selection.superseded.push(list[0]!);
  }
  return selection;
}
