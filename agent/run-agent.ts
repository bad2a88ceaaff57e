import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import type { Awareness } from 'y-protocols/awareness';
import * as Y from 'yjs';
import { readIntentEntries } from '../shared/documents/desired.js';
import { desiredDocName, documentGarbageCollects, statusDocName } from '../shared/documents/names.js';
import { readOwnCurrentStatus, readOwnResults, readResults } from '../shared/documents/status.js';
import type { Logger } from '../shared/log.js';
import { connectDocument, type DocumentConnection } from '../shared/node/connect.js';
import { describeRules, nextAllowedStart } from '../shared/schedule/window-rules.js';
import type {
  AgentPhase,
  DownloadProgress,
  ResultOutcome,
  StatusContent,
  TrustStatus,
} from '../shared/schemas/report.js';
import { backoffDelay } from '../shared/sync/reconnect.js';
import { findResultAnomalies } from '../shared/trust/result-replays.js';
import {
  compareRank,
  type IntentSelection,
  type IntentVerifier,
  type RefusalCode,
  selectIntent,
} from '../shared/trust/verify-intent.js';
import { type AgentConfig, type ResolvedAgentConfig, resolveAgentConfig } from './config.js';
import { kindOf, windowRules } from './effective-windows.js';
import { requestEnrollment } from './enroll-request.js';
import { startAgentMetrics } from './metrics.js';
import { pruneActivationFiles } from './nix/activation-runner.js';
import { syncGcRoots } from './nix/gc-roots.js';
import { checkNixSignatureConfig } from './nix/nix-config.js';
import { probeSyncPeer } from './peer-probe.js';
import { currentProfileTarget } from './pipeline/activate.js';
import { rebuildFloor } from './pipeline/floor.js';
import {
  enterWindowedPhase,
  type InstallGate,
  type PipelineContext,
  runPipeline,
  type Target,
} from './pipeline/pipeline.js';
import { appendSignedResult, publishStatus } from './pipeline/report.js';
import { type AgentState, freshWork, HISTORY_LENGTH, loadAgentState, saveAgentState } from './pipeline/state.js';
import { createProgressPublisher, type ProgressPublisher } from './progress-publisher.js';
import { openRolloutTracker, type RolloutTracker } from './rollout-tracker.js';
import { createStatusSaver, loadStatusDocument, purgeForeignEntries, saveStatusDocument } from './status-store.js';

export type { AgentConfig } from './config.js';

export const AGENT_VERSION = '0.2.0';

export interface RunningAgent {
  state(): AgentState;
  stop(): Promise<void>;
}

const ERROR_RETRY_MS = 5000;
const ERROR_RETRY_MAX_MS = 300_000;
const WORKING_PHASES: AgentPhase[] = ['waiting-for-window', 'downloading', 'activating', 'confirming'];
// Phases in which a newer intent replaces the target: nothing on the system has changed yet.
const PREEMPTIBLE_PHASES: AgentPhase[] = ['waiting-for-window', 'downloading'];
// What peers may make the agent hold of its documents (threat 11, an endless document stream):
// a relay or coordinator that sends more is cut off. The desired document (about 1 KiB an
// intent, history kept) is dropped and synced afresh after a backoff; from the status document,
// whose results the agent cannot drop, everything its key did not sign is deleted (it collects
// garbage, so that frees the memory). Honest documents stay far below: 64 MiB is ~60,000 intents.
export const MAX_DESIRED_DOCUMENT_BYTES = 64 * 2 ** 20;
export const MAX_STATUS_REMOTE_BYTES = 64 * 2 ** 20;
// At most this many log lines per document instance about entries a reader skips.
const MAX_ENTRY_REPORTS = 100;
// Why a target chosen earlier no longer counts when checked again before installing: its signers
// lost their power (a revocation arrived meanwhile). Time-based verdicts do not drop a target
// already being worked on.
const TIME_CODES: ReadonlySet<RefusalCode> = new Set(['expired', 'stale', 'not-yet-valid']);

// Everything a running agent holds, as one record the functions below take (the yjs style):
// startAgent wires it to its documents, timers and loop; unit tests build one with
// createAgentRuntime and stand-in connections (test/unit/agent/run-agent.test.ts).
export interface AgentRuntime {
  readonly config: ResolvedAgentConfig;
  readonly logger: Logger;
  state: AgentState;
  readonly statusDoc: Y.Doc;
  readonly desiredName: string;
  readonly statusName: string;
  readonly backoff: { baseBackoffMs: number; maxBackoffMs: number };
  stopped: boolean;
  // Ends the loop's current wait; `dirty` asks for another evaluation.
  wake: (() => void) | null;
  dirty: boolean;
  downloadAbort: AbortController;
  // The desired document is not kept on disk: when peers flood it, it is dropped and synced anew.
  desiredDoc: Y.Doc;
  desired: DocumentConnection | null;
  desiredBytes: number;
  desiredDrops: number;
  desiredReopen: NodeJS.Timeout | null;
  reportedMalformed: Set<string>;
  status: DocumentConnection | null;
  awareness: Pick<Awareness, 'setLocalState'> | null;
  preemptionCheck: NodeJS.Timeout | null;
  readonly statusSaver: ReturnType<typeof createStatusSaver>;
  statusRemoteBytes: number;
  statusPurge: NodeJS.Immediate | null;
  statusCheck: NodeJS.Timeout | null;
  readonly reportedAnomalies: Set<string>;
  readonly progress: ProgressPublisher;
  wasFrozen: boolean;
  // The newest intent that waits for more admins' signatures (shown in the status), if any.
  awaiting: { generation: number; reason: string } | null;
  heldFor: string;
  // Rollout intents are decided from their rollout's document (plan, evidence, actions); null
  // until startAgent follows them. `verify` is the selection's verifier (rollouts' decisions first).
  rollouts: RolloutTracker | null;
  verify: IntentVerifier;
  readonly waitingLogged: Set<string>;
  loggedWindows: string;
  errorsInARow: number;
}

// The runtime of an agent whose state and status document are loaded, before anything connects.
export function createAgentRuntime(config: ResolvedAgentConfig, state: AgentState, statusDoc: Y.Doc): AgentRuntime {
  const desiredName = desiredDocName(config.host);
  const agent: AgentRuntime = {
    config,
    logger: config.logger.child({ host: config.host }),
    state,
    statusDoc,
    desiredName,
    statusName: statusDocName(config.host),
    backoff: config.reconnect ?? { baseBackoffMs: 1000, maxBackoffMs: 300_000 },
    stopped: false,
    wake: null,
    dirty: true,
    downloadAbort: new AbortController(),
    desiredDoc: new Y.Doc({ gc: documentGarbageCollects(desiredName) }),
    desired: null,
    desiredBytes: 0,
    desiredDrops: 0,
    desiredReopen: null,
    reportedMalformed: new Set(),
    status: null,
    awareness: null,
    preemptionCheck: null,
    // Remote changes (our own results echoed back, or merged after an outage) are saved too, and
    // checked: a peer may write anything into this document, and nothing it writes may count.
    statusSaver: createStatusSaver(config.stateDir, () => statusDoc),
    statusRemoteBytes: 0,
    statusPurge: null,
    statusCheck: null,
    reportedAnomalies: new Set(),
    progress: createProgressPublisher({
      now: config.now,
      awareness: (p) => setAwareness(agent, p),
      log: (p) =>
        agent.logger.info(
          {
            event: 'download-progress',
            document: statusDocName(config.host),
            generation: agent.state.target?.signed.intent.generation,
            ...p,
          },
          `downloaded ${p.pathsDone}/${p.pathsTotal} paths, ${p.bytesDone}/${p.bytesTotal} bytes`,
        ),
      milestone: () =>
        void publishCurrentStatus(agent).catch((error: unknown) =>
          agent.logger.warn({ event: 'status-write-failed', err: error }, 'cannot write the status document'),
        ),
    }),
    wasFrozen: false,
    awaiting: null,
    rollouts: null,
    verify: config.trust.verify,
    heldFor: '',
    waitingLogged: new Set(),
    loggedWindows: '',
    errorsInARow: 0,
  };
  return agent;
}

// Something changed (a document, trust, a timer): evaluate again.
export function poke(agent: AgentRuntime): void {
  agent.dirty = true;
  agent.wake?.();
}

export function openDesired(agent: AgentRuntime): void {
  const { config, desiredName } = agent;
  const doc = new Y.Doc({ gc: documentGarbageCollects(desiredName) });
  agent.desiredDoc = doc;
  agent.desiredBytes = 0;
  agent.reportedMalformed = new Set();
  doc.on('update', (update: Uint8Array) => {
    if (doc !== agent.desiredDoc) return;
    agent.desiredBytes += update.length;
    if (agent.desiredBytes > MAX_DESIRED_DOCUMENT_BYTES) {
      dropDesired(agent);
      return;
    }
    poke(agent);
    schedulePreemptionCheck(agent);
  });
  agent.desired = connectDocument(config.coordinators, desiredName, {
    doc,
    identity: config.key,
    ...config.reconnect,
  });
}

export function dropDesired(agent: AgentRuntime): void {
  const { logger, desiredName, backoff } = agent;
  const connection = agent.desired;
  agent.desired = null;
  agent.desiredDrops += 1;
  const delayMs = backoffDelay(agent.desiredDrops, backoff.baseBackoffMs, backoff.maxBackoffMs);
  logger.error(
    {
      event: 'document-too-large',
      document: desiredName,
      bytes: agent.desiredBytes,
      limit: MAX_DESIRED_DOCUMENT_BYTES,
      retryInMs: Math.round(delayMs),
    },
    `peers sent more than ${MAX_DESIRED_DOCUMENT_BYTES} bytes for ${desiredName}: dropped it, syncing it afresh in ${Math.round(delayMs / 1000)} s (a relay or coordinator may be flooding it)`,
  );
  // Closed outside the update handler that noticed it; an empty document stands in meanwhile.
  setImmediate(() => connection?.close());
  agent.desiredDoc = new Y.Doc({ gc: documentGarbageCollects(desiredName) });
  agent.desiredReopen = setTimeout(() => {
    agent.desiredReopen = null;
    if (!agent.stopped) openDesired(agent);
  }, delayMs);
  poke(agent);
}

// A newer intent replaces one still downloading (days on a slow link); checked at most every
// 250 ms however fast the document changes.
export function schedulePreemptionCheck(agent: AgentRuntime): void {
  const { config } = agent;
  if (agent.preemptionCheck || !agent.state.target || agent.state.phase !== 'downloading') return;
  agent.preemptionCheck = setTimeout(() => {
    agent.preemptionCheck = null;
    if (!agent.state.target || agent.state.phase !== 'downloading' || config.trust.freshness().frozen) return;
    const chosen = selectNow(agent).chosen;
    if (chosen && !agent.state.handledDigests.includes(chosen.digest)) agent.downloadAbort.abort();
  }, 250);
}

// A change of the status document from a peer: counted against the bound, saved, and checked.
export function statusDocumentChanged(agent: AgentRuntime, update: Uint8Array, origin: unknown): void {
  const { config, logger, statusDoc, statusName } = agent;
  if (origin === 'local') return;
  agent.statusRemoteBytes += update.length;
  if (agent.statusRemoteBytes > MAX_STATUS_REMOTE_BYTES && !agent.statusPurge)
    agent.statusPurge = setImmediate(() => {
      agent.statusPurge = null;
      const bytes = agent.statusRemoteBytes;
      agent.statusRemoteBytes = 0;
      const removed = purgeForeignEntries(statusDoc, config.key.publicKey);
      logger.error(
        { event: 'document-too-large', document: statusName, bytes, limit: MAX_STATUS_REMOTE_BYTES, removed },
        `peers sent more than ${MAX_STATUS_REMOTE_BYTES} bytes for ${statusName}: deleted the ${removed} entries this host did not sign (a relay or coordinator may be flooding it)`,
      );
      agent.statusSaver.request();
      poke(agent);
    });
  agent.statusSaver.request();
  if (!agent.statusCheck)
    agent.statusCheck = setTimeout(() => {
      agent.statusCheck = null;
      checkStatusDocument(agent);
    }, 500);
}

// Entries in the status document this agent did not write, or replayed copies of its own: the
// agent's counters never read them (only its own validly signed entries count); they are
// reported once each, and a current status that is not the agent's newest is written again.
export function checkStatusDocument(agent: AgentRuntime): void {
  const { config, logger, statusDoc, statusName, reportedAnomalies } = agent;
  if (agent.stopped) return;
  const { results, malformedEntries } = readResults(statusDoc);
  const problems = [
    ...malformedEntries.map((m) => ({
      key: `malformed:${m.index}`,
      problem: 'malformed',
      seq: null,
      detail: `results[${m.index}]: ${m.error}`,
    })),
    ...findResultAnomalies(results, config.key.publicKey).map((a) => ({
      key: `${a.problem}:${a.seq}:${a.detail}`,
      problem: a.problem,
      seq: a.seq,
      detail: a.detail,
    })),
  ];
  for (const p of problems) {
    if (reportedAnomalies.has(p.key) || reportedAnomalies.size >= MAX_ENTRY_REPORTS) continue;
    reportedAnomalies.add(p.key);
    logger.warn(
      { event: 'status-document-anomaly', document: statusName, problem: p.problem, seq: p.seq, detail: p.detail },
      `${statusName}: ${p.detail}; not written by this agent as it stands (a relay or coordinator?), ignored: this host counts only its own signed entries`,
    );
  }
  const own = readOwnCurrentStatus(statusDoc, config.key.publicKey);
  if (!own || own.status.seq < agent.state.statusSeq) poke(agent);
}

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
    ...(agent.awaiting ? { awaitingSignatures: agent.awaiting } : {}),
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

export async function publishCurrentStatus(agent: AgentRuntime): Promise<void> {
  const { config, statusDoc } = agent;
  const written = publishStatus(statusDoc, statusContent(agent), agent.state.statusSeq + 1, config.key);
  if (!written) return;
  agent.state = { ...agent.state, statusSeq: written.seq };
  await saveAgentState(config.stateDir, agent.state);
  await saveStatusDocument(config.stateDir, statusDoc);
}

export async function persist(agent: AgentRuntime, next: AgentState): Promise<void> {
  const { config } = agent;
  const phaseChanged = next.phase !== agent.state.phase;
  // A milestone written meanwhile may have raised the status counter.
  agent.state = { ...next, statusSeq: Math.max(next.statusSeq, agent.state.statusSeq) };
  await saveAgentState(config.stateDir, agent.state);
  if (phaseChanged && agent.state.phase !== 'downloading') agent.progress.reset();
  setAwareness(agent, null);
  await publishCurrentStatus(agent);
}

export async function report(
  agent: AgentRuntime,
  target: Target,
  outcome: ResultOutcome,
  reason: string,
  outputTail: string,
): Promise<number> {
  const { config, logger, statusDoc } = agent;
  const seq = agent.state.resultSeq + 1;
  const { intent } = target.signed;
  statusDoc.transact(() => {
    appendSignedResult(
      statusDoc,
      {
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
      },
      config.key,
    );
  }, 'local');
  await saveStatusDocument(config.stateDir, statusDoc);
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

export function selectNow(agent: AgentRuntime): IntentSelection {
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
  return selectIntent(
    agent.rollouts
      ? agent.rollouts.admit(signed, { floorGeneration: state.floorGeneration, current: state.target?.signed ?? null })
      : signed,
    {
      verify: agent.verify,
      floor: { epoch: state.floorEpoch, generation: state.floorGeneration },
      appliedDigest: state.applied?.digest ?? null,
      epochOf: config.trust.epochOf,
      knownDigests: new Set([...state.handledDigests, ...(state.target ? [state.target.digest] : [])]),
    },
  );
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
  const freshness = config.trust.freshness();
  if (freshness.frozen) {
    holdLog(agent, freshness.reason, target);
    return { decision: 'hold', reason: freshness.reason };
  }
  agent.heldFor = '';
  return { decision: 'go' };
}
function holdLog(agent: AgentRuntime, reason: string, target: Target | null): void {
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
    `trust is frozen: installing nothing new until it is fresh again (${reason})`,
  );
}
// Intents naming a policy version this agent does not have yet are not refused for good: the
// version may still be on its way (or withheld); they are decided when it arrives.
function newestAwaiting(
  current: { generation: number; reason: string } | null,
  candidate: { signed: Target['signed'] },
  reason: string,
): { generation: number; reason: string } {
  const generation = candidate.signed.intent.generation;
  return current && current.generation >= generation ? current : { generation, reason: reason.slice(0, 1000) };
}

function namesNewerPolicy(agent: AgentRuntime, signed: Target['signed']): boolean {
  const { config } = agent;
  return config.trust.mode === 'policy' && (signed.intent.policyVersion ?? 0) > (config.trust.policyVersion() ?? 0);
}

export const pipelineContext = (agent: AgentRuntime): PipelineContext => ({
  config: agent.config,
  logger: agent.logger,
  state: () => agent.state,
  persist: (next) => persist(agent, next),
  finish: (target, phase, outcome, reason, outputTail, applied) =>
    finish(agent, target, phase, outcome, reason, outputTail, applied),
  stopping: () => agent.stopped,
  downloadSignal: agent.downloadAbort.signal,
  publishProgress: (p) => agent.progress.publish(p),
  probePeer: (timeoutMs) => probeSyncPeer(agent.config.coordinators, agent.desiredName, timeoutMs, agent.config.key),
  installGate: (target) => installGate(agent, target),
});

export async function startTarget(agent: AgentRuntime, chosen: Target): Promise<void> {
  const { config } = agent;
  // Persisted once, by enterWindowedPhase: downloading now, or waiting for the window first.
  agent.progress.reset();
  const state = agent.state;
  // The floor rises to the chosen intent's rank (epoch first) before anything is done for it.
  const rank = { epoch: config.trust.epochOf(chosen.signed), generation: chosen.signed.intent.generation };
  const floor =
    compareRank(rank, { epoch: state.floorEpoch, generation: state.floorGeneration }) > 0
      ? rank
      : { epoch: state.floorEpoch, generation: state.floorGeneration };
  agent.state = {
    ...state,
    phase: 'downloading',
    target: chosen,
    work: freshWork(),
    floorEpoch: floor.epoch,
    floorGeneration: floor.generation,
    handledDigests: [...new Set([...state.handledDigests, chosen.digest])],
  };
  await enterWindowedPhase(pipelineContext(agent), 'downloading');
}

export async function evaluate(agent: AgentRuntime): Promise<void> {
  const { config, logger, desiredName, waitingLogged } = agent;
  agent.downloadAbort = new AbortController();
  const selection = selectNow(agent);
  const frozen = config.trust.freshness().frozen;
  let state = agent.state;
  if (state.target && WORKING_PHASES.includes(state.phase)) {
    // Until the system is touched (a kernel change already set the boot entry), a newer intent
    // wins, and a target whose signers lost their power since it was chosen is dropped.
    const preemptible = PREEMPTIBLE_PHASES.includes(state.phase) && state.work.waitingFor !== 'reboot';
    if (preemptible) {
      const gate = installGate(agent, state.target);
      if (gate.decision === 'refuse') {
        await finish(agent, state.target, state.applied ? 'applied' : 'idle', 'refused', gate.reason, '', false);
        return;
      }
    }
    // While frozen nothing new is taken on: the newer intent may be judged under a stale policy.
    const newer = preemptible && !frozen ? selection.chosen : null;
    if (newer && !state.handledDigests.includes(newer.digest)) {
      logger.info(
        {
          event: 'superseded',
          generation: state.target.signed.intent.generation,
          by: newer.signed.intent.generation,
        },
        'a newer intent replaces the one not yet activated',
      );
      await startTarget(agent, newer);
    } else {
      logger.info(
        { event: 'resume', phase: state.phase, generation: state.target.signed.intent.generation },
        'resuming work on the target',
      );
    }
    await runPipeline(pipelineContext(agent), agent.state.target!);
    return;
  }
  if (frozen) {
    // Neither installs nor refusals: both would be decided under a policy that may be stale.
    holdLog(agent, config.trust.freshness().reason, null);
    return;
  }
  const handled = new Set(state.handledDigests);
  const wasAwaiting = agent.awaiting;
  agent.awaiting = null;
  for (const refusal of selection.refused) {
    if (handled.has(refusal.candidate.digest)) continue;
    if (refusal.code === 'unknown-policy-version' && namesNewerPolicy(agent, refusal.candidate.signed)) {
      if (!waitingLogged.has(refusal.candidate.digest) && waitingLogged.size < MAX_ENTRY_REPORTS) {
        waitingLogged.add(refusal.candidate.digest);
        logger.info(
          {
            event: 'waiting-for-policy',
            document: desiredName,
            generation: refusal.candidate.signed.intent.generation,
            policyVersion: refusal.candidate.signed.intent.policyVersion,
            have: config.trust.policyVersion(),
          },
          `generation ${refusal.candidate.signed.intent.generation} names policy version ${refusal.candidate.signed.intent.policyVersion}, not here yet: deciding when it arrives`,
        );
      }
      continue;
    }
    if (refusal.code === 'below-threshold') {
      // Some admins signed, not enough yet: more may co-sign the same content (outpost approve),
      // so this is no refusal, only a wait that the status shows.
      agent.awaiting = newestAwaiting(agent.awaiting, refusal.candidate, refusal.reason);
      if (!waitingLogged.has(refusal.candidate.digest) && waitingLogged.size < MAX_ENTRY_REPORTS) {
        waitingLogged.add(refusal.candidate.digest);
        logger.info(
          {
            event: 'waiting-for-signatures',
            document: desiredName,
            generation: refusal.candidate.signed.intent.generation,
            reason: refusal.reason,
          },
          `generation ${refusal.candidate.signed.intent.generation} has ${refusal.reason}: waiting for more admins to co-sign it (outpost approve)`,
        );
      }
      continue;
    }
    const seq = await report(agent, refusal.candidate, 'refused', `${refusal.code}: ${refusal.reason}`, '');
    handled.add(refusal.candidate.digest);
    await persist(agent, { ...agent.state, handledDigests: [...handled], resultSeq: seq, lastResultSeq: seq });
  }
  state = agent.state;
  for (const skipped of selection.superseded) {
    if (handled.has(skipped.digest)) continue;
    logger.info(
      { event: 'superseded', generation: skipped.signed.intent.generation },
      'a newer valid intent exists; skipping',
    );
    handled.add(skipped.digest);
  }
  // Only an intent newer than what runs is worth waiting for.
  if (agent.awaiting && agent.awaiting.generation <= (state.applied?.generation ?? 0)) agent.awaiting = null;
  if (JSON.stringify(agent.awaiting) !== JSON.stringify(wasAwaiting)) await publishCurrentStatus(agent);
  const chosen = selection.chosen;
  if (!chosen || handled.has(chosen.digest)) {
    if (handled.size !== state.handledDigests.length) await persist(agent, { ...state, handledDigests: [...handled] });
    return;
  }
  await persist(agent, { ...state, handledDigests: [...handled] });
  await startTarget(agent, chosen);
  await runPipeline(pipelineContext(agent), chosen);
}

// While waiting for a window, wake when it opens (rechecked at least every wakeInterval).
export function sleepMs(agent: AgentRuntime): number {
  const { config, state } = agent;
  // Wake when a freeze would begin, so it shows in the status when it does.
  const { frozen, freezesAt } = config.trust.freshness();
  const untilFreeze =
    !frozen && freezesAt !== null ? Math.max(100, freezesAt - config.trust.now() + 100) : Number.POSITIVE_INFINITY;
  const interval = Math.min(config.wakeIntervalMs ?? 60_000, untilFreeze);
  if (state.phase !== 'waiting-for-window') return interval;
  const next = nextAllowedStart(windowRules(config, kindOf(state.work.waitingFor)), config.now());
  return next === null ? interval : Math.min(interval, Math.max(1000, next - config.now()));
}

// The effective windows, logged at start and whenever a policy version (or nothing) changes them.
function logWindows(agent: AgentRuntime): void {
  const { config, logger } = agent;
  const maintenance = describeRules(windowRules(config, 'maintenance'));
  const reboot = describeRules(windowRules(config, 'reboot'));
  if (`${maintenance}\n${reboot}` === agent.loggedWindows) return;
  agent.loggedWindows = `${maintenance}\n${reboot}`;
  logger.info(
    {
      event: 'windows',
      document: statusDocName(config.host),
      policyVersion: config.trust.policyVersion(),
      maintenance,
      reboot,
    },
    `work starts in: ${maintenance}; reboots in: ${reboot}`,
  );
}

// Both documents have synced with a peer (a coordinator or relay) on their current connections.
export function syncPeerReached(agent: AgentRuntime): boolean {
  return Boolean(agent.desired?.provider.synced && agent.status?.provider.synced);
}

// Threat 14: a state created from nothing waits for a sync peer and rebuilds the floor from
// the host's own signed results and the running system before it looks at any intent.
export async function verifyFloor(agent: AgentRuntime): Promise<void> {
  const { config, logger, statusDoc } = agent;
  if (!agent.state.floorUnverified) return;
  logger.info(
    { event: 'floor-rebuild-waiting', document: statusDocName(config.host) },
    "no agent state: waiting for a sync peer to rebuild the anti-rollback floor from this host's signed results",
  );
  await new Promise<void>((resolve) => {
    const check = (): void => {
      if (agent.stopped || syncPeerReached(agent)) {
        clearInterval(timer);
        resolve();
      }
    };
    const timer = setInterval(check, 200);
    check();
  });
  if (agent.stopped) return;
  await agent.statusSaver.idle();
  const rebuilt = rebuildFloor({
    hostKey: config.key.publicKey,
    results: readOwnResults(statusDoc, config.key.publicKey),
    intents: readIntentEntries(agent.desiredDoc).entries.map((e) => e.signed),
    epochOf: config.trust.epochOf,
    running: await currentProfileTarget({ profile: config.profile }),
  });
  const state = agent.state;
  const phase: AgentPhase = rebuilt.applied ? 'applied' : state.phase;
  agent.state = {
    ...state,
    ...rebuilt,
    phase,
    // Only this host's own signed status counts: a peer's seq = MAX_SAFE_INTEGER must not stick.
    statusSeq: Math.max(state.statusSeq, readOwnCurrentStatus(statusDoc, config.key.publicKey)?.status.seq ?? 0),
    floorUnverified: false,
  };
  logger.info(
    {
      event: 'floor-rebuilt',
      document: statusDocName(config.host),
      floorEpoch: agent.state.floorEpoch,
      floorGeneration: agent.state.floorGeneration,
      applied: agent.state.applied?.generation ?? null,
      results: rebuilt.lastResultSeq ?? 0,
    },
    `anti-rollback floor rebuilt: generation ${agent.state.floorGeneration}${agent.state.floorEpoch ? ` (epoch ${agent.state.floorEpoch})` : ''}`,
  );
}

// The agent's loop: evaluate whenever something changed, else sleep until the next reason to look.
export async function runLoop(agent: AgentRuntime): Promise<void> {
  const { logger } = agent;
  await verifyFloor(agent);
  if (agent.stopped) return;
  await persist(agent, agent.state);
  await pinGenerations(agent);
  while (!agent.stopped) {
    if (agent.dirty) {
      agent.dirty = false;
      try {
        logWindows(agent);
        await evaluate(agent);
        // Trust changes (a freeze, a new policy version) show in the status without other work.
        await publishCurrentStatus(agent);
        agent.errorsInARow = 0;
      } catch (error) {
        // Work in progress (a confirm deadline runs) must not wait for the next document change;
        // an error that persists is retried less and less often.
        agent.errorsInARow += 1;
        const delayMs = Math.min(ERROR_RETRY_MAX_MS, ERROR_RETRY_MS * 2 ** (agent.errorsInARow - 1));
        logger.error(
          { event: 'agent-error', phase: agent.state.phase, err: error },
          `evaluation failed; retrying in ${delayMs / 1000} s`,
        );
        await new Promise<void>((resolve) => {
          agent.wake = resolve;
          setTimeout(resolve, delayMs).unref();
        });
        agent.wake = null;
        agent.dirty = true;
      }
      continue;
    }
    await new Promise<void>((resolve) => {
      agent.wake = resolve;
      setTimeout(resolve, sleepMs(agent)).unref();
    });
    agent.wake = null;
    agent.dirty = true;
  }
}

export async function startAgent(agentConfig: AgentConfig): Promise<RunningAgent> {
  const config = resolveAgentConfig(agentConfig);
  await checkNixSignatureConfig(config.substituters);
  await fs.mkdir(config.stateDir, { recursive: true, mode: 0o700 });
  const state = await loadAgentState(config.stateDir);
  const statusDoc = await loadStatusDocument(config.stateDir);
  const agent = createAgentRuntime(config, state, statusDoc);
  const { logger, backoff } = agent;

  // Documents: the agent reads its desired document and writes its status document.
  const coordinator = config.coordinators[0]!;
  openDesired(agent);
  const status: DocumentConnection = connectDocument(config.coordinators, agent.statusName, {
    doc: statusDoc,
    identity: config.key,
    ...config.reconnect,
  });
  agent.status = status;
  const awareness = status.provider.awareness;
  agent.awareness = awareness;
  const metrics = config.metricsListen
    ? await startAgentMetrics(config.metricsListen, { statusDoc, awareness, logger })
    : null;

  // A new policy version or a fresh timestamp may change what is valid, or end a freeze.
  config.trust.onChange(() => poke(agent));
  const rollouts = openRolloutTracker({
    endpoints: config.coordinators,
    host: config.host,
    identity: config.key,
    trust: config.trust,
    logger,
    ...(config.reconnect ? { reconnect: config.reconnect } : {}),
  });
  rollouts.onChange(() => poke(agent));
  agent.rollouts = rollouts;
  agent.verify = rollouts.verifier(config.trust.verify);
  const enrollment = config.enrollment
    ? requestEnrollment({
        endpoints: config.coordinators,
        host: config.host,
        key: config.key,
        token: config.enrollment.token,
        logger,
        backoff,
      })
    : null;
  statusDoc.on('update', (update: Uint8Array, origin: unknown) => statusDocumentChanged(agent, update, origin));

  const loop = runLoop(agent);

  logger.info(
    {
      event: 'agent-started',
      phase: agent.state.phase,
      applied: agent.state.applied?.generation ?? null,
      coordinator,
      version: AGENT_VERSION,
    },
    'agent started',
  );
  return {
    state: () => agent.state,
    async stop() {
      agent.stopped = true;
      agent.downloadAbort.abort();
      agent.wake?.();
      await loop.catch(() => undefined);
      enrollment?.stop();
      rollouts.close();
      for (const timer of [agent.desiredReopen, agent.preemptionCheck, agent.statusCheck])
        if (timer) clearTimeout(timer);
      if (agent.statusPurge) clearImmediate(agent.statusPurge);
      agent.desired?.close();
      status.close();
      await config.trust.close();
      await agent.statusSaver.idle();
      await saveStatusDocument(config.stateDir, statusDoc);
      await metrics?.close();
    },
  };
}
