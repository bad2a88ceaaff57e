import type * as Y from 'yjs';
import type { SignedIntent } from '../schemas/intent.js';
import type { Policy } from '../schemas/policy.js';
import { compareRank, type IntentRank } from '../trust/verify-intent.js';
import { type RolloutEntries, readRolloutEntries } from './document.js';
import { deriveRolloutIntent, placeHosts, planDigest, previousWaveHosts } from './plan.js';
import {
  type RolloutPlan,
  type SignedPlan,
  type SignedRolloutAction,
  unknownPlanFields,
  type Wave,
} from './schemas.js';
import {
  type ActionAuthority,
  actionAuthority,
  collectEvidence,
  EvidenceTally,
  type HostProof,
  planSignatureValid,
  planSignersForHost,
  type RejectedEvidence,
  type SignerVerdict,
  verifiedPlanKeys,
  type WaveEvidence,
} from './verify.js';

// Gates, actions and decisions: pure functions of a rollout document's entries, the policy chain
// and a clock. The same code runs in agents (deciding for themselves), the coordinator (when to
// deliver a wave's rollout intents) and the CLI (status, wait). See docs/rollouts.md.

// How many of a wave's n hosts must prove success: at least one, ⌈S·n/100⌉, and n − F (a host
// without proof counts against F, whatever the reason: a peer can withhold a failure, never
// forge a success).
export function successesNeeded(wave: Wave): number {
  const n = wave.hosts.length;
  const { minSuccessPercent, maxFailures } = wave.gate;
  // Rounded to a millionth first, so 100 · 3 / 100 is 3, not 3.0000000000000004 → 4.
  const byPercent = Math.ceil(Math.round(((minSuccessPercent * n) / 100) * 1e6) / 1e6);
  const byFailures = maxFailures === null ? 0 : n - maxFailures;
  return Math.min(n, Math.max(1, byPercent, byFailures));
}

export interface GateJudgement {
  hosts: number;
  needed: number;
  successes: number;
  failures: HostProof[];
  // The signed time of the success that met the threshold (the needed-th earliest), if met.
  reachedAt: number | null;
  soakEndsAt: number | null;
  // Successes, failures and soak hold (approval and pause are judged apart).
  passed: boolean;
  // It can no longer pass: too many failures, or too few hosts left to succeed.
  halted: boolean;
  reason: string;
}

export function judgeGate(wave: Wave, evidence: WaveEvidence | undefined, now: number): GateJudgement {
  const n = wave.hosts.length;
  const needed = successesNeeded(wave);
  const successes = evidence ? [...evidence.successes.values()].map((p) => p.at).sort((a, b) => a - b) : [];
  const failures = evidence ? [...evidence.failures.values()].sort((a, b) => (a.host < b.host ? -1 : 1)) : [];
  const { maxFailures, soakSeconds } = wave.gate;
  const reachedAt = successes.length >= needed ? successes[needed - 1]! : null;
  const soakEndsAt = reachedAt === null ? null : reachedAt + soakSeconds * 1000;
  const tooManyFailures = maxFailures !== null && failures.length > maxFailures;
  const halted = tooManyFailures || n - failures.length < needed;
  const failed = failures.map((f) => `${f.host} ${f.outcome}: ${f.reason.slice(0, 200)}`).join('; ');
  let reason: string;
  if (halted)
    reason = tooManyFailures
      ? `wave ${wave.name}: ${failures.length} hosts failed, at most ${maxFailures} may (${failed})`
      : `wave ${wave.name}: ${failures.length} of ${n} hosts failed, so ${needed} successes can no longer be reached (${failed})`;
  else if (reachedAt === null)
    reason = `wave ${wave.name}: ${successes.length} of ${needed} needed successes proven (${n} hosts)`;
  else if (now < soakEndsAt!)
    reason = `wave ${wave.name}: soaking until ${new Date(soakEndsAt!).toISOString()} (${Math.ceil((soakEndsAt! - now) / 1000)} s left)`;
  else reason = `wave ${wave.name}: passed (${successes.length} of ${n} succeeded, ${needed} needed)`;
  return {
    hosts: n,
    needed,
    successes: successes.length,
    failures,
    reachedAt,
    soakEndsAt,
    passed: !halted && reachedAt !== null && now >= soakEndsAt!,
    halted,
    reason,
  };
}

export interface ActionState {
  paused: { by: string; at: string; reason?: string } | null;
  aborted: { by: string; at: string; reason?: string } | null;
  // 1-based wave → the admins who approved its start.
  approvals: Map<number, string[]>;
  // Actions that do not count, and why (forged, another plan, no capability).
  rejected: { verb: string; reason: string }[];
  // The highest sequence number seen on a counted pause or resume (the CLI goes one above).
  highestSeq: number;
}

// Which actions count for `authority` (an agent: its own host; the coordinator: every host they
// concern). Pauses and resumes are ordered by their sequence number (an admin's CLI or web editor
// takes one above every action it has seen), and the highest decides. Two admins acting at the
// same moment each take one above the same highest, so equal numbers mean neither saw the other:
// then a pause wins over a resume, whatever their signed times (an admin's clock could decide
// otherwise, and the resume was not a decision to override a pause it never saw). Whoever means
// to resume after it resumes again, one above. An abort is final.
export function judgeActions(
  id: string,
  digest: string,
  actions: SignedRolloutAction[],
  authority: ActionAuthority,
): ActionState {
  const state: ActionState = { paused: null, aborted: null, approvals: new Map(), rejected: [], highestSeq: 0 };
  type Candidate = { seq: number; at: string; signature: string; verb: string; by: string; reason?: string };
  // The deciding action: highest seq; at equal seq a pause over a resume; then the later signed
  // time and the larger signature, so that every reader picks the same one.
  const decides = (a: Candidate, b: Candidate): boolean =>
    a.seq !== b.seq
      ? a.seq > b.seq
      : a.verb !== b.verb
        ? a.verb === 'pause'
        : a.at !== b.at
          ? a.at > b.at
          : a.signature > b.signature;
  let newest: Candidate | null = null;
  for (const signed of actions) {
    const { action } = signed;
    if (action.rollout !== id || action.plan !== digest) {
      state.rejected.push({
        verb: action.verb,
        reason: `names rollout ${action.rollout}, plan ${action.plan.slice(0, 12)}…`,
      });
      continue;
    }
    const verdict = authority(signed);
    if (!verdict.ok) {
      state.rejected.push({ verb: action.verb, reason: verdict.reason });
      continue;
    }
    const who = { by: verdict.admin, at: action.at, ...(action.reason ? { reason: action.reason } : {}) };
    if (action.verb === 'abort') {
      if (!state.aborted || action.at < state.aborted.at) state.aborted = who;
    } else if (action.verb === 'approve') {
      const wave = action.wave!;
      const admins = state.approvals.get(wave) ?? [];
      if (!admins.includes(verdict.admin)) state.approvals.set(wave, [...admins, verdict.admin]);
    } else {
      state.highestSeq = Math.max(state.highestSeq, action.seq);
      const candidate = { ...who, seq: action.seq, signature: signed.signature.signature, verb: action.verb };
      if (!newest || decides(candidate, newest)) newest = candidate;
    }
  }
  if (newest?.verb === 'pause')
    state.paused = { by: newest.by, at: newest.at, ...(newest.reason ? { reason: newest.reason } : {}) };
  return state;
}

// The plan a rollout intent names, if the document holds it with a valid own signature. Plans
// whose signature fails are skipped (a peer can append anything). Among copies with equal
// content, the smallest signature wins, so every reader picks the same one.
export function findPlan(entries: RolloutEntries, digest: string): SignedPlan | null {
  let found: SignedPlan | null = null;
  for (const signed of entries.plans) {
    if (planDigest(signed.plan) !== digest || !planSignatureValid(signed)) continue;
    if (!found || signed.signature.signature < found.signature.signature) found = signed;
  }
  return found;
}

export type HostDecision =
  // May be installed now (the intent still goes through selection: floor, expiry, equivocation).
  | { decision: 'go'; intent: SignedIntent; wave: number }
  // Not yet; `retryAt` when only time is missing (a soak).
  | { decision: 'wait'; reason: string; intent: SignedIntent | null; wave: number | null; retryAt?: number }
  // Never: a signed refusal.
  | {
      decision: 'refuse';
      code: 'rollout-aborted' | 'unknown-field' | 'rollback';
      reason: string;
      intent: SignedIntent;
      wave: number;
    };

export interface HostContext {
  host: string;
  chain: Policy[];
  now: number;
  // The host's anti-rollback floor, when the placement is to be answered against it (the agent's
  // admission; not the check before installing a target, whose own rank the floor already is).
  floor?: IntentRank;
}

// A placement at or below the floor can never be installed here. Answered with a refusal (the
// host's signed result is then evidence against its wave's gate) rather than left waiting: a
// placement no host ever answers holds its wave's gate open for ever, with no reason shown.
function belowFloor(plan: RolloutPlan, generation: number, chain: Policy[], floor: IntentRank): string | null {
  // The placement ranks as its intent does: by the epoch of the policy version the plan names.
  const epoch = chain.find((p) => p.version === plan.policyVersion)?.epoch ?? 0;
  if (compareRank({ epoch, generation }, floor) > 0) return null;
  return `rollout ${plan.id}: generation ${generation} (epoch ${epoch}) is at or below this host's floor, generation ${floor.generation} (epoch ${floor.epoch}), already applied or attempted here`;
}

// What one host may do about the plan with `digest`: everything an agent checks before a rollout
// intent may enter its selection (docs/rollouts.md, "Agent check").
export function decideForHost(entries: RolloutEntries, digest: string, context: HostContext): HostDecision {
  const { host, chain, now } = context;
  const signed = findPlan(entries, digest);
  if (!signed)
    return {
      decision: 'wait',
      reason: `no plan with digest ${digest.slice(0, 12)}… signed by its issuer in this rollout's document yet`,
      intent: null,
      wave: null,
    };
  const { plan } = signed;
  const placed = placeHosts(plan).get(host);
  if (!placed)
    return { decision: 'wait', reason: `rollout ${plan.id} has no wave for ${host}`, intent: null, wave: null };
  const intent = deriveRolloutIntent(signed, digest, placed);
  const wave = placed.wave + 1;
  const unknown = unknownPlanFields(plan);
  if (unknown.length)
    return {
      decision: 'refuse',
      code: 'unknown-field',
      reason: `rollout ${plan.id}: the plan has fields this agent does not know (${unknown.slice(0, 8).join(', ')}): it was written by a newer outpost; upgrade this host's agent`,
      intent,
      wave,
    };
  const signers = planSignersForHost(plan, verifiedPlanKeys(signed, digest, entries.cosignatures), chain, host);
  if (!signers.ok) return { decision: 'wait', reason: `rollout ${plan.id}: ${signers.reason}`, intent, wave };
  const actions = judgeActions(
    plan.id,
    digest,
    entries.actions,
    actionAuthority(chain, () => [host]),
  );
  if (actions.aborted)
    return {
      decision: 'refuse',
      code: 'rollout-aborted',
      reason: `rollout ${plan.id} was aborted by ${actions.aborted.by} at ${actions.aborted.at}${actions.aborted.reason ? `: ${actions.aborted.reason}` : ''}`,
      intent,
      wave,
    };
  const floorRefusal = context.floor && belowFloor(plan, placed.entry.generation, chain, context.floor);
  if (floorRefusal) return { decision: 'refuse', code: 'rollback', reason: floorRefusal, intent, wave };
  if (actions.paused)
    return {
      decision: 'wait',
      reason: `rollout ${plan.id} is paused (by ${actions.paused.by} at ${actions.paused.at}${actions.paused.reason ? `: ${actions.paused.reason}` : ''})`,
      intent,
      wave,
    };
  if (placed.wave === 0) return { decision: 'go', intent, wave };
  const previous = plan.waves[placed.wave - 1]!;
  const revoked = new Set(chain.at(-1)?.revokedKeys ?? []);
  const { waves } = collectEvidence(signed, digest, entries.evidence, {
    waves: new Set([placed.wave - 1]),
    revokedKeys: revoked,
  });
  const gate = judgeGate(previous, waves.get(placed.wave - 1), now);
  if (!gate.passed)
    return {
      decision: 'wait',
      reason: `rollout ${plan.id}, wave ${plan.waves[placed.wave]!.name} waits for the gate of ${gate.halted ? 'a halted ' : ''}${gate.reason}`,
      intent,
      wave,
      ...(gate.soakEndsAt !== null && !gate.halted && now < gate.soakEndsAt ? { retryAt: gate.soakEndsAt } : {}),
    };
  if (previous.gate.approval && !actions.approvals.has(wave))
    return {
      decision: 'wait',
      reason: `rollout ${plan.id}, wave ${plan.waves[placed.wave]!.name}: the gate passed; waiting for an admin's approval ('outpost rollout approve ${plan.id} --wave ${wave}')`,
      intent,
      wave,
    };
  return { decision: 'go', intent, wave };
}

// decideForHost on a rollout document, reading only what the host's decision needs: the plans and
// actions, and the evidence of the wave before its own.
export function decideFromDocument(doc: Y.Doc, digest: string, context: HostContext): HostDecision {
  const signed = findPlan(readRolloutEntries(doc, { arrays: new Set(['plans']) }), digest);
  const evidenceHosts = signed ? previousWaveHosts(signed.plan, context.host) : new Set<string>();
  return decideForHost(readRolloutEntries(doc, { evidenceHosts }), digest, context);
}

export interface WaveView {
  index: number;
  name: string;
  hosts: string[];
  // May the wave's hosts start (previous gate passed and approved, not paused or aborted)?
  open: boolean;
  // The plan's signers meet every host's threshold for this wave.
  signed: boolean;
  signersMissing: string[];
  // This wave's own gate (what it must prove before the next wave).
  gate: GateJudgement;
  // The approval the wave's start needs (previous wave's gate), and who gave it.
  approvalNeeded: boolean;
  approvedBy: string[];
  // Why it is not open yet (or 'open').
  reason: string;
}

export interface RolloutView {
  plan: RolloutPlan;
  signed: SignedPlan;
  digest: string;
  signers: string[];
  actions: ActionState;
  waves: WaveView[];
  rejectedEvidence: RejectedEvidence[];
  // 0-based wave → the hosts that proved success.
  succeeded: Map<number, Set<string>>;
  state: 'running' | 'paused' | 'halted' | 'aborted' | 'complete' | 'expired';
  // The first wave whose gate cannot pass any more.
  halted: { wave: string; reason: string } | null;
  // When the view may change by time alone (a soak ends), if it may.
  nextChangeAt: number | null;
}

// The hosts whose threshold the plan's signers do not meet, and why. The coordinator judges the
// rollout at every batch of evidence; the answer changes only with the signers or the policy.
const signerMemo = new WeakMap<SignedPlan, { key: string; unsigned: Map<string, SignerVerdict> }>();
function hostsWithoutSigners(signed: SignedPlan, keys: string[], chain: Policy[]): Map<string, SignerVerdict> {
  const key = `${[...keys].sort().join(',')} ${chain.map((p) => p.version).join(',')}`;
  const memo = signerMemo.get(signed);
  if (memo?.key === key) return memo.unsigned;
  const unsigned = new Map<string, SignerVerdict>();
  for (const wave of signed.plan.waves)
    for (const entry of wave.hosts) {
      const verdict = planSignersForHost(signed.plan, keys, chain, entry.host);
      if (!verdict.ok) unsigned.set(entry.host, verdict);
    }
  signerMemo.set(signed, { key, unsigned });
  return unsigned;
}

// What a reader that judges one rollout again and again keeps between judgements (the
// coordinator: one per rollout it follows): the evidence tallied so far, for the plan and the
// revoked keys it was tallied under (another plan or revocation starts a new tally).
export interface RolloutJudgeMemo {
  tally: EvidenceTally | null;
  revoked: string;
}

export const newJudgeMemo = (): RolloutJudgeMemo => ({ tally: null, revoked: '' });

function evidenceOf(
  entries: RolloutEntries,
  signed: SignedPlan,
  digest: string,
  revokedKeys: ReadonlySet<string>,
  memo: RolloutJudgeMemo | undefined,
): ReturnType<typeof collectEvidence> {
  if (!memo) return collectEvidence(signed, digest, entries.evidence, { revokedKeys });
  const revoked = [...revokedKeys].sort().join(',');
  if (!memo.tally || memo.tally.signed !== signed || memo.tally.digest !== digest || memo.revoked !== revoked) {
    memo.tally = new EvidenceTally(signed, digest, { revokedKeys });
    memo.revoked = revoked;
  }
  const { waves, rejected } = memo.tally.collect(entries.evidence);
  return { waves, rejected: [...rejected] };
}

// The whole rollout as the coordinator and admins see it: every wave judged under the policy in
// force, with actions counted only when their signer may act on every host they concern. With a
// memo, the evidence is tallied incrementally (the same verdicts: EvidenceTally).
export function judgeRollout(
  entries: RolloutEntries,
  signed: SignedPlan,
  chain: Policy[],
  now: number,
  memo?: RolloutJudgeMemo,
): RolloutView {
  const { plan } = signed;
  const digest = planDigest(plan);
  const keys = verifiedPlanKeys(signed, digest, entries.cosignatures);
  const current = chain.at(-1);
  const admins = new Set<string>();
  for (const key of keys) {
    const admin = current?.admins.find((a) => a.keys.includes(key));
    if (admin) admins.add(admin.name);
  }
  const allHosts = (): string[] => plan.waves.flatMap((w) => w.hosts.map((h) => h.host));
  const everyHost = actionAuthority(chain, allHosts);
  const byWave: ActionAuthority = (action) =>
    action.action.verb === 'approve'
      ? actionAuthority(
          chain,
          () => plan.waves[action.action.wave! - 1]?.hosts.map((h) => h.host) ?? ['(no such wave)'],
        )(action)
      : everyHost(action);
  const actions = judgeActions(plan.id, digest, entries.actions, byWave);
  const { waves: evidence, rejected } = evidenceOf(entries, signed, digest, new Set(current?.revokedKeys ?? []), memo);
  const gates = plan.waves.map((wave, index) => judgeGate(wave, evidence.get(index), now));
  let halted: RolloutView['halted'] = null;
  let nextChangeAt: number | null = null;
  const unsigned = hostsWithoutSigners(signed, keys, chain);
  const views: WaveView[] = plan.waves.map((wave, index) => {
    const missing = wave.hosts.flatMap((h) => {
      const verdict = unsigned.get(h.host);
      return verdict ? [{ host: h.host, verdict }] : [];
    });
    const previous = index > 0 ? plan.waves[index - 1]! : null;
    const previousGate = index > 0 ? gates[index - 1]! : null;
    const approvedBy = actions.approvals.get(index + 1) ?? [];
    const approvalNeeded = previous?.gate.approval ?? false;
    let reason = 'open';
    if (actions.aborted) reason = `aborted by ${actions.aborted.by}`;
    else if (actions.paused) reason = `paused by ${actions.paused.by}`;
    else if (missing.length)
      reason = `not signed enough: ${missing[0]!.verdict.ok ? '' : missing[0]!.verdict.reason}${missing.length > 1 ? ` (and ${missing.length - 1} more hosts)` : ''}`;
    else if (previousGate && !previousGate.passed) reason = `waiting for the gate of ${previousGate.reason}`;
    else if (approvalNeeded && approvedBy.length === 0)
      reason = `waiting for approval ('outpost rollout approve ${plan.id} --wave ${index + 1}')`;
    if (previousGate?.soakEndsAt && !previousGate.passed && !previousGate.halted && now < previousGate.soakEndsAt)
      nextChangeAt = Math.min(nextChangeAt ?? Number.POSITIVE_INFINITY, previousGate.soakEndsAt);
    const gate = gates[index]!;
    if (gate.halted && !halted) halted = { wave: wave.name, reason: gate.reason };
    return {
      index,
      name: wave.name,
      hosts: wave.hosts.map((h) => h.host),
      open: reason === 'open',
      signed: missing.length === 0,
      signersMissing: missing.map((m) => m.host),
      gate,
      approvalNeeded,
      approvedBy,
      reason,
    };
  });
  const last = gates.at(-1)!;
  if (last.soakEndsAt && !last.passed && !last.halted && now < last.soakEndsAt)
    nextChangeAt = Math.min(nextChangeAt ?? Number.POSITIVE_INFINITY, last.soakEndsAt);
  const complete = gates.every((g) => g.passed);
  const state: RolloutView['state'] = actions.aborted
    ? 'aborted'
    : complete
      ? 'complete'
      : halted
        ? 'halted'
        : Date.parse(plan.expiresAt) <= now
          ? 'expired'
          : actions.paused
            ? 'paused'
            : 'running';
  return {
    plan,
    signed,
    digest,
    signers: [...admins],
    actions,
    waves: views,
    rejectedEvidence: rejected,
    succeeded: new Map([...evidence].map(([index, wave]) => [index, new Set(wave.successes.keys())])),
    state,
    halted,
    nextChangeAt,
  };
}
