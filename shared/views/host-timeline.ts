import type * as Y from 'yjs';
import { verifyPayloadSignatureOnce } from '../crypto/verified-once.js';
import { readIntentEntries } from '../documents/desired.js';
import { rolloutDocName } from '../rollout/document.js';
import { contentKey, describeCoSignProgress, groupByContent } from '../trust/co-signatures.js';
import { intentCoSigning } from '../trust/policy-intent.js';
import { intentDigest } from '../trust/verify-intent.js';
import { checkRolloutIntent, type HostKeyAuthority, type HostView, intentSignersCount } from './host-view.js';

// A host's history as an admin reads it: every intent in its desired document and every result
// in its status document, oldest first, each marked by what its signatures prove. 'trusted': the
// signers count under the policy walked from the pinned org root (intents) or it is signed by the
// host's enrolled key (results); 'untrusted': they do not, with why; 'unverified': a valid
// signature, but no pinned root to say whose key it is.
// 'awaiting': admins who may sign it did, but fewer than the host's group needs (co-signing).
export type SignatureMark = 'trusted' | 'untrusted' | 'unverified' | 'awaiting';

export interface TimelineIntent {
  kind: 'intent';
  at: string;
  digest: string;
  generation: number;
  closure: string;
  action: string;
  issuer: string;
  expiresAt: string;
  signers: string[];
  mark: SignatureMark;
  // Why the mark is not 'trusted'; for a trusted intent, that it expired (still trusted history).
  note: string | null;
}

export interface TimelineResult {
  kind: 'result';
  at: string;
  seq: number;
  generation: number;
  closure: string;
  outcome: string;
  reason: string;
  intentDigest: string;
  mark: SignatureMark;
  note: string | null;
}

export type TimelineEntry = TimelineIntent | TimelineResult;

export function hostTimeline(
  host: string,
  desired: Y.Doc,
  view: Pick<HostView, 'results' | 'hostKeys'>,
  authority: HostKeyAuthority | null,
  now: number,
  // fleet/rollout-<id> documents by name (host-view.ts): without one, a rollout intent is
  // 'unverified' (its envelope's signature is over the plan, not the intent).
  rolloutDocument?: (name: string) => Y.Doc | null,
): TimelineEntry[] {
  // The same envelope appended twice (two offline copies merging) is one event.
  const seen = new Set<string>();
  const own = readIntentEntries(desired).entries.filter((e) => e.signed.intent.host === host);
  // Copies of one content (an intent and its co-signatures) are judged together, as agents count
  // them: each envelope shows whether the content it carries counts.
  const merged = new Map(
    groupByContent(
      own.map((e) => e.signed),
      (signed) => ({ content: signed.intent, signatures: signed.signatures }),
    ).map((group) => [group.key, group.signatures]),
  );
  const intents: TimelineIntent[] = own
    .filter((e) => {
      const digest = intentDigest(e.signed);
      if (seen.has(digest)) return false;
      seen.add(digest);
      return true;
    })
    .map(({ signed }) => {
      const { intent } = signed;
      let mark: SignatureMark;
      let note: string | null = null;
      if (intent.rollout) {
        const verdict = checkRolloutIntent(
          signed,
          host,
          rolloutDocument?.(rolloutDocName(intent.rollout.id)) ?? null,
          authority,
        );
        const { check } = verdict;
        mark =
          check.verdict === 'invalid' || verdict.trustedSigner === false
            ? 'untrusted'
            : check.verdict === 'valid' && verdict.trustedSigner
              ? 'trusted'
              : 'unverified';
        note =
          check.reason ??
          verdict.untrustedBecause ??
          (authority ? null : 'the plan is signed, signers not checked: no org root is pinned');
      } else if (authority) {
        const all = { intent, signatures: merged.get(contentKey(intent)) ?? signed.signatures };
        const verdict = intentSignersCount(all, host, authority, now);
        mark = verdict.trusted ? 'trusted' : 'untrusted';
        note = verdict.trusted
          ? Date.parse(intent.expiresAt) > now
            ? null
            : `expired at ${intent.expiresAt}`
          : (verdict.reason ?? null);
        if (!verdict.trusted) {
          const signing = intentCoSigning(intent, all.signatures, authority.chain);
          if (!('error' in signing) && signing.tally.admins.length > 0 && signing.progress.missing > 0) {
            mark = 'awaiting';
            note = describeCoSignProgress(signing.progress);
          }
        }
      } else {
        const valid = signed.signatures.some((s) => verifyPayloadSignatureOnce('intent', intent, s));
        mark = valid ? 'unverified' : 'untrusted';
        note = valid
          ? 'signature valid, signer not checked: no org root is pinned'
          : 'no signature verifies: altered or forged';
      }
      return {
        kind: 'intent',
        at: intent.issuedAt,
        digest: intentDigest(signed),
        generation: intent.generation,
        closure: intent.closure,
        action: intent.action,
        issuer: intent.issuer,
        expiresAt: intent.expiresAt,
        signers: signed.signatures.map((s) => s.publicKey),
        mark,
        note,
      };
    });
  const results: TimelineResult[] = view.results.map((r) => ({
    kind: 'result',
    at: r.result.at,
    seq: r.result.seq,
    generation: r.result.generation,
    closure: r.result.closure,
    outcome: r.result.outcome,
    reason: r.result.reason,
    intentDigest: r.result.intentDigest,
    mark: !r.signatureValid ? 'untrusted' : view.hostKeys === 'enrollment' ? 'trusted' : 'unverified',
    note: r.problem ?? (view.hostKeys === 'enrollment' ? null : 'host key not checked: no org root is pinned'),
  }));
  return [...intents, ...results].sort((a, b) => (a.at < b.at ? -1 : a.at > b.at ? 1 : 0));
}
