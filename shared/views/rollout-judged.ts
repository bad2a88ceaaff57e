import * as Y from 'yjs';
import { toBase64 } from '../crypto/encoding.js';
import { preverifySignatures, type SignatureCheck } from '../crypto/verified-once.js';
import { type RolloutEntries, readRolloutEntries } from '../rollout/document.js';
import { findPlan, judgeRollout, type RolloutView } from '../rollout/judge.js';
import { planDigest } from '../rollout/plan.js';
import type { Policy } from '../schemas/policy.js';
import { type PendingRolloutEntries, withPendingEntries } from './rollout-actions.js';

// A rollout document judged as `outpost rollout status` judges it (the agents' code), for views
// that redraw often: the web editor redraws every second (clocks) and at every sync flush.
export type JudgedRollout = { ok: true; view: RolloutView } | { ok: false; reason: string };

// A rollout is judged again only when its document or the policy changed, when time alone may
// change it (a soak ends, the plan expires) or after JUDGE_AGAIN_MS: judging a large rollout is
// too costly to repeat every second for every rollout listed (test/bench/web-rollout.ts).
const JUDGE_AGAIN_MS = 30_000;
const judgedMemo = new WeakMap<Y.Doc, { state: string; chain: Policy[]; at: number; judged: JudgedRollout }>();

const stateOf = (doc: Y.Doc): string => toBase64(Y.encodeStateVector(doc));

// Checks the document's result and action signatures ahead with the platform's native Ed25519
// (WebCrypto), so that judging finds their verdicts: a first look at a 1,000-host rollout takes
// seconds with tweetnacl alone (test/bench/web-rollout.ts). Plan signatures are few and checked
// synchronously.
const prepared = new WeakMap<Y.Doc, string>();
export async function prepareRolloutDocument(doc: Y.Doc): Promise<void> {
  const state = stateOf(doc);
  if (prepared.get(doc) === state) return;
  const entries = readRolloutEntries(doc);
  const checks: SignatureCheck[] = [
    ...entries.actions.map((a) => ({ kind: 'rollout-action' as const, payload: a.action, signature: a.signature })),
    ...entries.evidence.map((r) => ({ kind: 'result' as const, payload: r.result, signature: r.signature })),
  ];
  await preverifySignatures(checks);
  prepared.set(doc, state);
}

// Whether the document changed since prepareRolloutDocument last ran on it.
export const rolloutDocumentPrepared = (doc: Y.Doc): boolean => prepared.get(doc) === stateOf(doc);

// The last judgement made of the document, whatever changed since (null before the first).
export const previousJudgement = (doc: Y.Doc): JudgedRollout | null => judgedMemo.get(doc)?.judged ?? null;

// `pending`: actions and co-signatures signed but not in the document yet (withPendingEntries); a
// judgement with any of them missing from the document is made afresh and not remembered.
export function judgeRolloutDocument(
  doc: Y.Doc,
  chain: Policy[],
  now: number,
  pending: PendingRolloutEntries = {},
): JudgedRollout {
  if (pending.actions?.length || pending.cosignatures?.length) {
    const entries = readRolloutEntries(doc);
    const merged = withPendingEntries(entries, pending);
    if (merged !== entries) return judgeEntries(merged, chain, now);
  }
  const state = stateOf(doc);
  const memo = judgedMemo.get(doc);
  if (memo && memo.state === state && memo.chain === chain && now - memo.at < JUDGE_AGAIN_MS) {
    const view = memo.judged.ok ? memo.judged.view : null;
    const expires = view ? Date.parse(view.plan.expiresAt) : Number.POSITIVE_INFINITY;
    if (now < (view?.nextChangeAt ?? Number.POSITIVE_INFINITY) && now < expires) return memo.judged;
  }
  const judged =
    chain.length === 0 ? judgeEntries(null, chain, now) : judgeEntries(readRolloutEntries(doc), chain, now);
  judgedMemo.set(doc, { state, chain, at: now, judged });
  return judged;
}

function judgeEntries(entries: RolloutEntries | null, chain: Policy[], now: number): JudgedRollout {
  if (chain.length === 0 || !entries)
    return { ok: false, reason: 'no policy signed by the pinned org root: a rollout cannot be judged' };
  const first = entries.plans[0];
  const signed = first ? findPlan(entries, planDigest(first.plan)) : null;
  return signed
    ? { ok: true, view: judgeRollout(entries, signed, chain, now) }
    : { ok: false, reason: 'no plan signed by its issuer (yet): loading, or not a rollout' };
}
