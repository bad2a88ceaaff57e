import { join } from 'node:path';
import { signPayload } from '../shared/crypto/signatures.js';
import { statusDocName } from '../shared/documents/names.js';
import { readOwnCurrentStatus, readOwnResults, resultsArray } from '../shared/documents/status.js';
import { describeRules, nextAllowedStart } from '../shared/schedule/window-rules.js';
import type {
  AgentPhase,
  DownloadProgress,
  Result,
  ResultOutcome,
  SignedResult,
  StatusContent,
  TrustStatus,
} from '../shared/schemas/report.js';
import { MAX_DROPPED_RANGES } from '../shared/schemas/report.js';
import { actionLock } from './actions.js';
import { kindOf, windowRules } from './effective-windows.js';
import { pruneActivationFiles } from './nix/activation-runner.js';
import { syncGcRoots } from './nix/gc-roots.js';
import type { Target } from './pipeline/pipeline.js';
import { appendOwnResult, nextStatusSeq, writeStatus } from './pipeline/report.js';
import { type AgentState, freshWork, HISTORY_LENGTH, MAX_RESERVED_RESULTS, saveAgentState } from './pipeline/state.js';
import { AGENT_VERSION, type AgentRuntime } from './runtime.js';
import {
  deliveredBy,
  highestOwnSeq,
  MAX_UNDELIVERED_RESULTS,
  planResultPrune,
  pruneOwnResults,
} from './status-prune.js';
import { saveStatusDocument } from './status-store.js';

// What the agent tells others: awareness, its signed status and results, its persisted state,
// and the GC roots of the generations it keeps.

export function setAwareness(agent: AgentRuntime, live: DownloadProgress | null): void {
  const { config, state } = agent;
  if (agent.stopped) return;
  agent.awareness?.setLocalState({
    role: 'agent',
    host: config.host,
    phase: state.phase,
    generation: state.applied?.generation ?? null,
    target: state.target?.signed.intent.generation ?? null,
    ...(live ? { progress: live } : {}),
  });
}

export function trustStatus(agent: AgentRuntime): TrustStatus {
  const { config, logger } = agent;
  const freshness = config.trust.freshness();
  if (freshness.frozen !== agent.wasFrozen) {
    agent.wasFrozen = freshness.frozen;
    if (freshness.frozen)
      logger.warn(
        { event: 'trust-frozen', document: statusDocName(config.host), lastTimestampAt: freshness.lastTimestampAt },
        freshness.reason,
      );
    else
      logger.info(
        { event: 'trust-fresh', document: statusDocName(config.host), lastTimestampAt: freshness.lastTimestampAt },
        'fresh signed timestamps again',
      );
  }
  return {
    mode: config.trust.mode,
    policyVersion: config.trust.policyVersion(),
    frozen: freshness.frozen,
    lastTimestampAt: freshness.frozen ? freshness.lastTimestampAt : null,
    ...(freshness.frozen && freshness.waitingForPolicyVersion !== null
      ? { waitingForPolicyVersion: freshness.waitingForPolicyVersion }
      : {}),
    ...(freshness.frozen ? { reason: freshness.reason.slice(0, 1000) } : {}),
  };
}

export function statusContent(agent: AgentRuntime): StatusContent {
  const { config, state, progress } = agent;
  const milestone = state.phase === 'downloading' ? progress.milestone() : null;
  const waitingFor = state.phase === 'waiting-for-window' ? state.work.waitingFor : null;
  // The windows in force now (flags, or the groups of the policy in force), not those the wait began with.
  const rules = waitingFor ? windowRules(config, kindOf(waitingFor)) : [];
  const next = waitingFor ? nextAllowedStart(rules, config.now()) : null;
  const lock = actionLock(agent);
  return {
    kind: 'status',
    host: config.host,
    phase: state.phase,
    applied: state.applied ? { generation: state.applied.generation, closure: state.applied.closure } : null,
    target: state.target
      ? { generation: state.target.signed.intent.generation, closure: state.target.signed.intent.closure }
      : null,
    lastResultSeq: state.lastResultSeq,
    agentVersion: AGENT_VERSION,
    trust: trustStatus(agent),
    ...(agent.access?.status() ? { access: agent.access.status()! } : {}),
    ...(agent.awaiting ? { awaitingSignatures: agent.awaiting } : {}),
    ...(lock ? { lock } : {}),
    ...(agent.sshSessions?.().length ? { sshSessions: agent.sshSessions() } : {}),
    ...(agent.apps ? { apps: agent.apps } : {}),
    ...(milestone ? { progress: milestone } : {}),
    ...(waitingFor
      ? {
          window: {
            waitingFor,
            windows: describeRules(rules),
            nextStart: next === null ? null : new Date(next).toISOString(),
          },
        }
      : {}),
  };
}

// The status number is taken synchronously (milestones, tunnel sessions and app checks publish
// beside the loop) and saved in state.json before the status goes into the document, as result
// numbers are (report): a number peers saw must never be signed again over other content (the
// audit's stale-status). The content written is the newest, read after the save.
export async function publishCurrentStatus(agent: AgentRuntime): Promise<void> {
  const { config, statusDoc } = agent;
  const seq = nextStatusSeq(statusDoc, statusContent(agent), agent.state.statusSeq, config.key.publicKey);
  if (seq === null) return;
  agent.state = { ...agent.state, statusSeq: seq };
  await saveAgentState(config.stateDir, agent.state);
  // A sync may have brought back a newer status of this host meanwhile (one signed before a
  // restart whose counter was lost): numbered after it instead.
  if ((readOwnCurrentStatus(statusDoc, config.key.publicKey)?.status.seq ?? 0) >= seq)
    return publishCurrentStatus(agent);
  writeStatus(statusDoc, statusContent(agent), seq, config.key);
  await saveStatusDocument(config.stateDir, statusDoc);
}

export async function persist(agent: AgentRuntime, next: AgentState): Promise<void> {
  const { config } = agent;
  const phaseChanged = next.phase !== agent.state.phase;
  // Counters never go back, whatever snapshot `next` was built from (a milestone written
  // meanwhile may have raised the status counter).
  agent.state = {
    ...next,
    statusSeq: Math.max(next.statusSeq, agent.state.statusSeq),
    resultSeq: Math.max(next.resultSeq, agent.state.resultSeq),
  };
  await saveAgentState(config.stateDir, agent.state);
  if (phaseChanged && agent.state.phase !== 'downloading') agent.progress.reset();
  setAwareness(agent, null);
  await publishCurrentStatus(agent);
}

// Result numbers. A number is taken synchronously, after both the saved counter and this host's
// own signed results in the document (only entries this key validly signed count, so no peer can
// push it; each entry's signature is checked once per process, status-prune.ts), so two reports
// in flight never read the same highest one. It is saved in state.json, with the signed result,
// before the result goes into the status document: peers see every change of that document at
// once, and a counter saved only after it (as it was) could be lost by a stop in between; an
// agent whose document on disk lacked the result too then signed a second, different result under
// a number peers already had (result-seq-reuse in the audit, docs/audit.md).
function takeResultSeq(agent: AgentRuntime): number {
  const { config, statusDoc } = agent;
  const seq = highestOwnSeq(resultsArray(statusDoc), config.key.publicKey, agent.state.resultSeq, 'result') + 1;
  agent.state = { ...agent.state, resultSeq: seq };
  return seq;
}

// [first, last] ranges of ascending numbers.
export function seqRanges(seqs: readonly number[]): [number, number][] {
  const ranges: [number, number][] = [];
  for (const seq of seqs) {
    const last = ranges.at(-1);
    if (last && seq === last[1] + 1) last[1] = seq;
    else ranges.push([seq, seq]);
  }
  return ranges;
}

export async function report(
  agent: AgentRuntime,
  target: Target,
  outcome: ResultOutcome,
  reason: string,
  outputTail: string,
): Promise<number> {
  const { config, logger, statusDoc } = agent;
  const seq = takeResultSeq(agent);
  const { intent } = target.signed;
  const keepDigests = new Set([
    target.digest,
    ...(agent.state.applied ? [agent.state.applied.digest] : []),
    ...(agent.state.target ? [agent.state.target.digest] : []),
  ]);
  const delivered = deliveredBy(agent.delivered);
  // Past the bound of undelivered results, the oldest go, and this result says so (signed).
  const dropped = seqRanges(planResultPrune(statusDoc, config.key.publicKey, keepDigests, delivered).undelivered).slice(
    0,
    MAX_DROPPED_RANGES,
  );
  const result: Result = {
    kind: 'result',
    host: config.host,
    seq,
    at: new Date(config.now()).toISOString(),
    outcome,
    generation: intent.generation,
    closure: intent.closure,
    action: intent.action,
    intentDigest: target.digest,
    reason: reason.slice(0, 2000),
    outputTail: outputTail.slice(-8192),
    ...(dropped.length ? { droppedUndelivered: dropped } : {}),
  };
  const signed: SignedResult = { result, signature: signPayload('result', result, config.key) };
  agent.state = {
    ...agent.state,
    reservedResults: [...agent.state.reservedResults, signed].slice(-MAX_RESERVED_RESULTS),
  };
  await saveAgentState(config.stateDir, agent.state);
  // Old results go first, in an update of their own: an update that only deletes is stored even by
  // a coordinator whose copy is over --max-document-size (it adds nothing), and then the result fits.
  // Only those a history keeper holds, and the undelivered ones this result names.
  const droppedSeqs = new Set(
    dropped.flatMap(([first, last]) => Array.from({ length: last - first + 1 }, (_, i) => first + i)),
  );
  const pruned = pruneOwnResults(statusDoc, config.key.publicKey, keepDigests, delivered, droppedSeqs);
  if (pruned)
    logger.debug(
      { event: 'results-pruned', document: statusDocName(config.host), results: pruned },
      `${pruned} old results deleted from the live status document (an upstream that keeps history holds them)`,
    );
  if (dropped.length)
    logger.warn(
      { event: 'results-dropped-undelivered', document: statusDocName(config.host), ranges: dropped, seq },
      `no upstream has confirmed holding the ${droppedSeqs.size} oldest of more than ${MAX_UNDELIVERED_RESULTS} undelivered results: deleted them from the status document (result #${seq} names them, signed; the audit shows them as dropped by this host)`,
    );
  statusDoc.transact(() => appendOwnResult(statusDoc, signed, config.key.publicKey), 'local');
  await saveStatusDocument(config.stateDir, statusDoc);
  // In the document on disk now; the caller's next save of the state forgets the reservation.
  agent.state = {
    ...agent.state,
    reservedResults: agent.state.reservedResults.filter((r) => r.result.seq !== seq),
  };
  const level = outcome === 'applied' ? 'info' : 'warn';
  logger[level](
    {
      event: 'result',
      document: statusDocName(config.host),
      generation: intent.generation,
      closure: intent.closure,
      outcome,
      reason,
      seq,
    },
    `generation ${intent.generation}: ${outcome}`,
  );
  return seq;
}

// Results reserved before the agent stopped that may never have reached its status document (it
// stopped after saving the reservation and before saving the document). Written once the document
// has synced with a peer, and only those neither copy has: a peer may have received one before
// the stop, and a second copy of it would look like a replay. Until then later results are
// numbered after them (the saved counter).
export async function writeReservedResults(agent: AgentRuntime): Promise<void> {
  const { config, logger, statusDoc } = agent;
  const reserved = agent.state.reservedResults;
  if (reserved.length === 0 || !agent.status?.provider.synced) return;
  const present = new Set(readOwnResults(statusDoc, config.key.publicKey).map((r) => r.result.seq));
  const missing = reserved.filter((r) => !present.has(r.result.seq));
  if (missing.length) {
    statusDoc.transact(() => {
      for (const signed of missing) appendOwnResult(statusDoc, signed, config.key.publicKey);
    }, 'local');
    await saveStatusDocument(config.stateDir, statusDoc);
    for (const { result } of missing)
      logger.warn(
        {
          event: 'reserved-result-written',
          document: statusDocName(config.host),
          generation: result.generation,
          outcome: result.outcome,
          seq: result.seq,
        },
        `result #${result.seq} (generation ${result.generation}: ${result.outcome}) was numbered before the agent stopped and is written now`,
      );
  }
  agent.state = {
    ...agent.state,
    reservedResults: agent.state.reservedResults.filter((r) => !reserved.includes(r)),
  };
  await saveAgentState(config.stateDir, agent.state);
}

export async function pinGenerations(agent: AgentRuntime): Promise<void> {
  const { config, logger, state } = agent;
  try {
    await syncGcRoots(config.store, config.stateDir, {
      current: state.applied?.closure ?? null,
      previous: state.previous?.closure ?? null,
      target: state.target && state.work.downloaded ? state.target.signed.intent.closure : null,
    });
  } catch (error) {
    logger.warn(
      { event: 'gc-roots-failed', err: error },
      'cannot update the GC roots of the current and previous generation',
    );
  }
}

export async function finish(
  agent: AgentRuntime,
  target: Target,
  phase: AgentPhase,
  outcome: ResultOutcome,
  reason: string,
  outputTail: string,
  applied: boolean,
): Promise<void> {
  const { config } = agent;
  const seq = await report(agent, target, outcome, reason, outputTail);
  const { intent } = target.signed;
  const generation = { generation: intent.generation, closure: intent.closure, digest: target.digest };
  const state = agent.state;
  await persist(agent, {
    ...state,
    phase,
    previous: applied ? state.applied : state.previous,
    applied: applied ? generation : state.applied,
    history: applied ? [...state.history, generation].slice(-HISTORY_LENGTH) : state.history,
    target: null,
    work: freshWork(),
    resultSeq: seq,
    lastResultSeq: seq,
  });
  await pinGenerations(agent);
  await pruneActivationFiles(join(config.stateDir, 'activations'), (id) =>
    id.startsWith(`generation-${intent.generation}-`),
  );
}
