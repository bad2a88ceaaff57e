import { readIntentEntries } from '../shared/documents/desired.js';
import { type IntentSelection, intentDigest, type RefusalCode, selectIntent } from '../shared/trust/verify-intent.js';
import { actionLock, describeLock } from './actions.js';
import type { InstallGate, Target } from './pipeline/pipeline.js';
import type { AgentState } from './pipeline/state.js';
import { type AgentRuntime, MAX_ENTRY_REPORTS } from './runtime.js';

// Which intent the agent would take now, and the check right before installing one.

// Why a target chosen earlier no longer counts when checked again before installing: its signers
// lost their power (a revocation arrived meanwhile). Time-based verdicts do not drop a target
// already being worked on.
const TIME_CODES: ReadonlySet<RefusalCode> = new Set(['expired', 'stale', 'not-yet-valid']);

// The selection, and the digests of every intent entry in the desired document when it is a
// complete copy (synced with a peer, no updates waiting for missing ones), else null.
export type AgentSelection = IntentSelection & { present: ReadonlySet<string> | null };

export function selectNow(agent: AgentRuntime): AgentSelection {
  const { config, logger, desiredName, reportedMalformed, state } = agent;
  const { entries, malformed } = readIntentEntries(agent.desiredDoc);
  // Each skipped entry is reported once (per copy of the document), not on every evaluation.
  for (const entry of malformed) {
    if (reportedMalformed.has(`${entry.index}`) || reportedMalformed.size >= MAX_ENTRY_REPORTS) continue;
    reportedMalformed.add(`${entry.index}`);
    logger.warn(
      { event: 'malformed-intent', document: desiredName, index: entry.index, reason: entry.error },
      `ignoring malformed entry ${entry.index}: ${entry.error}`,
    );
  }
  const signed = entries.map((e) => e.signed);
  const complete =
    agent.desired?.doc === agent.desiredDoc &&
    agent.desired.provider.synced &&
    agent.desiredDoc.store.pendingStructs === null &&
    agent.desiredDoc.store.pendingDs === null;
  const admitted = agent.rollouts
    ? agent.rollouts.admit(signed, {
        floor: { epoch: state.floorEpoch, generation: state.floorGeneration },
        current: state.target?.signed ?? null,
        answered: new Set([
          ...state.handledDigests,
          ...(state.applied ? [state.applied.digest] : []),
          ...(state.target ? [state.target.digest] : []),
        ]),
        applied: state.applied?.digest ?? null,
      })
    : signed;
  // An intent the rollout tracker derived from a pointer in the document is there while its
  // pointer is (its answer is remembered as long, even when the pointer's digest differs). The
  // inner Set drops the intents admitted as written (the same objects): each is hashed once.
  const present = complete ? new Set([...new Set([...signed, ...admitted])].map(intentDigest)) : null;
  const selection = selectIntent(admitted, {
    verify: agent.verify,
    floor: { epoch: state.floorEpoch, generation: state.floorGeneration },
    appliedDigest: state.applied?.digest ?? null,
    epochOf: config.trust.epochOf,
    knownDigests: new Set([...state.handledDigests, ...(state.target ? [state.target.digest] : [])]),
  });
  return { ...selection, present };
}

// The answered intents worth remembering: those still in the desired document (so each gets at
// most one result while it is there), the target and what runs. Forgetting the rest keeps the
// state file and its rewrite at each refusal bounded by the document, not by every digest a peer
// ever wrote (the fuzzer's agent was given ~17,700 intents). An intent deleted and written again
// is judged again: it may be refused once more (one more result), never installed again, as the
// anti-rollback floor, not this list, keeps what was attempted from running again.
export function rememberedDigests(state: AgentState, present: ReadonlySet<string> | null): Set<string> {
  if (present === null) return new Set(state.handledDigests);
  const keep = new Set([state.target?.digest, state.applied?.digest]);
  return new Set(state.handledDigests.filter((digest) => present.has(digest) || keep.has(digest)));
}

// Checked again right before the system is first touched for a target: the policy may have
// moved on (a revocation) since it was chosen, or trust may be frozen (withheld updates).
export function installGate(agent: AgentRuntime, target: Target): InstallGate {
  const { config } = agent;
  const rollout = agent.rollouts?.installGate(target.signed) ?? null;
  if (rollout && rollout.decision !== 'go') return rollout;
  const verdict = agent.verify(target.signed);
  if (!verdict.ok && !TIME_CODES.has(verdict.code))
    return {
      decision: 'refuse',
      reason: `${verdict.code}: ${verdict.reason} (checked again before installing, under policy version ${config.trust.policyVersion() ?? 'none'})`,
    };
  // A locked host (outpost action lock) installs nothing new; unlocked, the target goes on.
  const lock = actionLock(agent);
  if (lock) {
    holdLog(agent, describeLock(lock), target);
    return { decision: 'hold', reason: describeLock(lock) };
  }
  const freshness = config.trust.freshness();
  if (freshness.frozen) {
    holdLog(agent, freshness.reason, target);
    return { decision: 'hold', reason: freshness.reason };
  }
  agent.heldFor = '';
  return { decision: 'go' };
}

// Logged once per reason while trust is frozen, with or without a target.
export function holdLog(agent: AgentRuntime, reason: string, target: Target | null): void {
  const { logger, statusName } = agent;
  if (agent.heldFor === reason) return;
  agent.heldFor = reason;
  logger.warn(
    {
      event: 'install-held',
      document: statusName,
      reason,
      ...(target ? { generation: target.signed.intent.generation } : {}),
    },
    `holding: installing nothing new (${reason})`,
  );
}
