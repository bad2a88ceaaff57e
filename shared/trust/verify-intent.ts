import { envelopeDigest, type Signature } from '../crypto/signatures.js';
import { verifyPayloadSignatureOnce } from '../crypto/verified-once.js';
import { type SignedIntent, unknownIntentFields } from '../schemas/intent.js';
import type { HostId } from '../schemas/primitives.js';
import { groupByContent, MAX_ENVELOPE_SIGNATURES } from './co-signatures.js';

export type RefusalCode =
  | 'unknown-signer'
  | 'bad-signature'
  | 'no-capability'
  | 'below-threshold'
  | 'unknown-policy-version'
  | 'wrong-host'
  | 'expired'
  | 'stale'
  | 'not-yet-valid'
  | 'rollback'
  | 'equivocation'
  | 'unknown-field'
  | 'rollout-aborted';

// `counted`: the signatures that made the intent valid (each admin's valid one), so copies of one
// content can be merged into an envelope that carries exactly what counts.
export type IntentVerdict = { ok: true; counted?: Signature[] } | { ok: false; code: RefusalCode; reason: string };

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

// How long an intent may take to reach a host that is in contact with the fleet, and when the
// host last was out of contact (docs/trust.md, "Expiry and hosts offline for weeks"). An intent
// issued while the host was in contact must arrive within the window of its issue: later, a peer
// withheld it (the freeze defence's concern: a stale but validly signed intent released when a
// newer one is withheld). One issued while the host was out of contact (no fresh signed timestamp
// for longer than its freeze limit) could not have arrived earlier: its window starts when
// contact resumed. Either way `expiresAt` stays the hard limit.
export interface DeliveryWindow {
  windowMs: number;
  // The host's latest contact gap, from the trust reader's signed timestamps: the last one before
  // it (null: the host never had one) and the first after it.
  gap: { from: number | null; until: number } | null;
}

// When an intent issued at `issuedAt` could first have reached the host.
export function deliveryStart(issuedAt: number, delivery: DeliveryWindow, clockSkewMs: number): number {
  const { gap } = delivery;
  if (gap && issuedAt <= gap.until && (gap.from === null || issuedAt >= gap.from - clockSkewMs)) return gap.until;
  return issuedAt;
}

// Host binding and validity window, whatever the trust model: an intent for another host, expired,
// stale (see DeliveryWindow) or issued in the future is never installed.
export function checkIntentBindingAndTime(
  signed: SignedIntent,
  host: HostId,
  now: number,
  clockSkewMs = 5 * 60_000,
  delivery?: DeliveryWindow,
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
  if (delivery) {
    const issuedAt = Date.parse(intent.issuedAt);
    const start = deliveryStart(issuedAt, delivery, clockSkewMs);
    if (now > start + delivery.windowMs) {
      const days = (ms: number): string => `${Math.round((ms / 86_400_000) * 10) / 10} days`;
      return {
        ok: false,
        code: 'stale',
        reason: `intent issued at ${intent.issuedAt} reached this host ${days(now - start)} after it could first have (window ${days(delivery.windowMs)}, --delivery-window), although the host was in contact with the fleet${start === issuedAt ? ' when it was issued' : ''}: a relay or coordinator may have withheld it; deploy it again if it is still wanted`,
      };
    }
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
  // Once per signature and content (shared/crypto/verified-once.ts): the agent checks every
  // candidate in its desired document again at each wake-up, as policy trust does.
  const good = trusted.find((s) => verifyPayloadSignatureOnce('intent', intent, s));
  if (!good) {
    return {
      ok: false,
      code: 'bad-signature',
      reason: `signature by trusted key ${trusted[0]!.publicKey.slice(0, 12)}… does not verify: the intent was altered or the signature forged`,
    };
  }
  const verdict = checkIntentBindingAndTime(signed, context.host, context.now, context.clockSkewMs);
  return verdict.ok ? { ok: true, counted: [good] } : verdict;
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

// Picks the newest valid intent above the floor. Copies of one signed content (envelopes with
// the same intent and any signatures) are one intent, judged once with their signatures merged
// (co-signatures.ts): a second admin's signature written in an envelope of its own counts with
// the first, and a copy with junk signatures added neither vetoes nor changes anything. Two
// valid intents with one rank and different signed content are an equivocation: both are
// refused, deterministically, whichever order they arrived in; so nobody without a signing key
// can turn a valid intent into an "equivocation".
export function selectIntent(intents: SignedIntent[], context: SelectionContext): IntentSelection {
  const rankOf = (signed: SignedIntent): IntentRank => ({
    epoch: context.epochOf?.(signed) ?? 0,
    generation: signed.intent.generation,
  });
  const selection: IntentSelection = { chosen: null, refused: [], superseded: [], duplicates: [] };
  const known = context.knownDigests ?? new Set<string>();
  const seen = new Set<string>();
  const candidates: IntentCandidate[] = [];
  for (const signed of intents) {
    const digest = intentDigest(signed);
    if (seen.has(digest)) continue;
    seen.add(digest);
    candidates.push({ signed, digest });
  }
  const valid: IntentCandidate[] = [];
  for (const group of groupByContent(candidates, (c) => ({
    content: c.signed.intent,
    signatures: c.signed.signatures,
  }))) {
    const { copies } = group;
    const first = copies[0]!;
    const merged: SignedIntent =
      copies.length === 1 ? first.signed : { intent: first.signed.intent, signatures: group.signatures };
    const verdict = context.verify(merged);
    // One envelope stands for each content: the applied one, else one already known, else one
    // that carries every signature that counts, else the smallest digest (the same choice in any
    // arrival order). Its digest names the intent in results.
    const counted = verdict.ok ? (verdict.counted ?? merged.signatures) : [];
    const carriesAll = (c: IntentCandidate): boolean =>
      counted.every((s) => c.signed.signatures.some((t) => t.publicKey === s.publicKey && t.signature === s.signature));
    const smallest = (list: IntentCandidate[]): IntentCandidate | undefined =>
      list.length ? list.reduce((best, c) => (c.digest < best.digest ? c : best)) : undefined;
    const representative =
      copies.find((c) => c.digest === context.appliedDigest) ??
      copies.find((c) => known.has(c.digest)) ??
      smallest(copies.filter(carriesAll)) ??
      smallest(copies)!;
    for (const copy of copies) if (copy !== representative) selection.duplicates.push(copy);
    if (!verdict.ok) {
      selection.refused.push({ candidate: representative, code: verdict.code, reason: verdict.reason });
      continue;
    }
    // The envelope worked on holds the signatures that count, whichever copies they came from
    // (bounded as any stored envelope is).
    const chosen: IntentCandidate = carriesAll(representative)
      ? representative
      : {
          signed: { intent: representative.signed.intent, signatures: counted.slice(0, MAX_ENVELOPE_SIGNATURES) },
          digest: representative.digest,
        };
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
