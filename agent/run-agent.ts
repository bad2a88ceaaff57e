import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import * as Y from 'yjs';
import { readIntentEntries } from '../shared/documents/desired.js';
import { desiredDocName, documentGarbageCollects, statusDocName } from '../shared/documents/names.js';
import { readOwnCurrentStatus, readOwnResults, readResults } from '../shared/documents/status.js';
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
import { compareRank, type IntentSelection, type RefusalCode, selectIntent } from '../shared/trust/verify-intent.js';
import { type AgentConfig, resolveAgentConfig } from './config.js';
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
import { createProgressPublisher } from './progress-publisher.js';
import { openRolloutTracker } from './rollout-tracker.js';
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
const TIME_CODES: ReadonlySet<RefusalCode> = new Set(['expired', 'not-yet-valid']);

export async function startAgent(agentConfig: AgentConfig): Promise<RunningAgent> {
  const config = resolveAgentConfig(agentConfig);
  const logger = config.logger.child({ host: config.host });
  await checkNixSignatureConfig(config.substituters);
  await fs.mkdir(config.stateDir, { recursive: true, mode: 0o700 });
  let state = await loadAgentState(config.stateDir);
  const statusDoc = await loadStatusDocument(config.stateDir);
  const desiredName = desiredDocName(config.host);
  const statusName = statusDocName(config.host);
  const backoff = config.reconnect ?? { baseBackoffMs: 1000, maxBackoffMs: 300_000 };

  let stopped = false;
  let wake: (() => void) | null = null;
  let dirty = true;
  let downloadAbort = new AbortController();
  const poke = (): void => {
    dirty = true;
    wake?.();
  };

  // Documents: the agent reads its desired document and writes its status document.
  const coordinator = config.coordinators[0]!;
  // The desired document is not kept on disk: when peers flood it, it is dropped and synced anew.
  let desiredDoc = new Y.Doc({ gc: documentGarbageCollects(desiredName) });
  let desired: DocumentConnection | null = null;
  let desiredBytes = 0;
  let desiredDrops = 0;
  let desiredReopen: NodeJS.Timeout | null = null;
  let reportedMalformed = new Set<string>();
  function openDesired(): void {
    const doc = new Y.Doc({ gc: documentGarbageCollects(desiredName) });
    desiredDoc = doc;
    desiredBytes = 0;
    reportedMalformed = new Set();
    doc.on('update', (update: Uint8Array) => {
      if (doc !== desiredDoc) return;
      desiredBytes += update.length;
      if (desiredBytes > MAX_DESIRED_DOCUMENT_BYTES) {
        dropDesired();
        return;
      }
      poke();
      schedulePreemptionCheck();
    });
    desired = connectDocument(config.coordinators, desiredName, { doc, ...config.reconnect });
  }
  function dropDesired(): void {
    const connection = desired;
    desired = null;
    desiredDrops += 1;
    const delayMs = backoffDelay(desiredDrops, backoff.baseBackoffMs, backoff.maxBackoffMs);
    logger.error(
      {
        event: 'document-too-large',
        document: desiredName,
        bytes: desiredBytes,
        limit: MAX_DESIRED_DOCUMENT_BYTES,
        retryInMs: Math.round(delayMs),
      },
      `peers sent more than ${MAX_DESIRED_DOCUMENT_BYTES} bytes for ${desiredName}: dropped it, syncing it afresh in ${Math.round(delayMs / 1000)} s (a relay or coordinator may be flooding it)`,
    );
    // Closed outside the update handler that noticed it; an empty document stands in meanwhile.
    setImmediate(() => connection?.close());
    desiredDoc = new Y.Doc({ gc: documentGarbageCollects(desiredName) });
    desiredReopen = setTimeout(() => {
      desiredReopen = null;
      if (!stopped) openDesired();
    }, delayMs);
    poke();
  }
  openDesired();
  const status: DocumentConnection = connectDocument(config.coordinators, statusName, {
    doc: statusDoc,
    ...config.reconnect,
  });
  const awareness = status.provider.awareness;
  const metrics = config.metricsListen
    ? await startAgentMetrics(config.metricsListen, { statusDoc, awareness, logger })
    : null;

  // A newer intent replaces one still downloading (days on a slow link); checked at most every
  // 250 ms however fast the document changes.
  let preemptionCheck: NodeJS.Timeout | null = null;
  function schedulePreemptionCheck(): void {
    if (preemptionCheck || !state.target || state.phase !== 'downloading') return;
    preemptionCheck = setTimeout(() => {
      preemptionCheck = null;
      if (!state.target || state.phase !== 'downloading' || config.trust.freshness().frozen) return;
      const chosen = selectNow().chosen;
      if (chosen && !state.handledDigests.includes(chosen.digest)) downloadAbort.abort();
    }, 250);
  }
  // A new policy version or a fresh timestamp may change what is valid, or end a freeze.
  config.trust.onChange(poke);
  // Rollout intents are decided from their rollout's document (plan, evidence, actions).
  const rollouts = openRolloutTracker({
    endpoints: config.coordinators,
    host: config.host,
    trust: config.trust,
    logger,
    ...(config.reconnect ? { reconnect: config.reconnect } : {}),
  });
  rollouts.onChange(poke);
  const verify = rollouts.verifier(config.trust.verify);
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
  // Remote changes (our own results echoed back, or merged after an outage) are saved too, and
  // checked: a peer may write anything into this document, and nothing it writes may count.
  const statusSaver = createStatusSaver(config.stateDir, () => statusDoc);
  let statusRemoteBytes = 0;
  let statusPurge: NodeJS.Immediate | null = null;
  let statusCheck: NodeJS.Timeout | null = null;
  statusDoc.on('update', (update: Uint8Array, origin: unknown) => {
    if (origin === 'local') return;
    statusRemoteBytes += update.length;
    if (statusRemoteBytes > MAX_STATUS_REMOTE_BYTES && !statusPurge)
      statusPurge = setImmediate(() => {
        statusPurge = null;
        const bytes = statusRemoteBytes;
        statusRemoteBytes = 0;
        const removed = purgeForeignEntries(statusDoc, config.key.publicKey);
        logger.error(
          { event: 'document-too-large', document: statusName, bytes, limit: MAX_STATUS_REMOTE_BYTES, removed },
          `peers sent more than ${MAX_STATUS_REMOTE_BYTES} bytes for ${statusName}: deleted the ${removed} entries this host did not sign (a relay or coordinator may be flooding it)`,
        );
        statusSaver.request();
        poke();
      });
    statusSaver.request();
    if (!statusCheck)
      statusCheck = setTimeout(() => {
        statusCheck = null;
        checkStatusDocument();
      }, 500);
  });

  // Entries in the status document this agent did not write, or replayed copies of its own: the
  // agent's counters never read them (only its own validly signed entries count); they are
  // reported once each, and a current status that is not the agent's newest is written again.
  const reportedAnomalies = new Set<string>();
  function checkStatusDocument(): void {
    if (stopped) return;
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
    if (!own || own.status.seq < state.statusSeq) poke();
  }

  const progress = createProgressPublisher({
    now: config.now,
    awareness: (p) => setAwareness(p),
    log: (p) =>
      logger.info(
        {
          event: 'download-progress',
          document: statusDocName(config.host),
          generation: state.target?.signed.intent.generation,
          ...p,
        },
        `downloaded ${p.pathsDone}/${p.pathsTotal} paths, ${p.bytesDone}/${p.bytesTotal} bytes`,
      ),
    milestone: () =>
      void publishCurrentStatus().catch((error: unknown) =>
        logger.warn({ event: 'status-write-failed', err: error }, 'cannot write the status document'),
      ),
  });

  function setAwareness(live: DownloadProgress | null): void {
    if (stopped) return;
    awareness.setLocalState({
      role: 'agent',
      host: config.host,
      phase: state.phase,
      generation: state.applied?.generation ?? null,
      target: state.target?.signed.intent.generation ?? null,
      ...(live ? { progress: live } : {}),
    });
  }

  let wasFrozen = false;
  function trustStatus(): TrustStatus {
    const freshness = config.trust.freshness();
    if (freshness.frozen !== wasFrozen) {
      wasFrozen = freshness.frozen;
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

  function statusContent(): StatusContent {
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
      trust: trustStatus(),
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

  async function publishCurrentStatus(): Promise<void> {
    const written = publishStatus(statusDoc, statusContent(), state.statusSeq + 1, config.key);
    if (!written) return;
    state = { ...state, statusSeq: written.seq };
    await saveAgentState(config.stateDir, state);
    await saveStatusDocument(config.stateDir, statusDoc);
  }

  async function persist(next: AgentState): Promise<void> {
    const phaseChanged = next.phase !== state.phase;
    // A milestone written meanwhile may have raised the status counter.
    state = { ...next, statusSeq: Math.max(next.statusSeq, state.statusSeq) };
    await saveAgentState(config.stateDir, state);
    if (phaseChanged && state.phase !== 'downloading') progress.reset();
    setAwareness(null);
    await publishCurrentStatus();
  }

  async function report(target: Target, outcome: ResultOutcome, reason: string, outputTail: string): Promise<number> {
    const seq = state.resultSeq + 1;
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

  async function pinGenerations(): Promise<void> {
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

  async function finish(
    target: Target,
    phase: AgentPhase,
    outcome: ResultOutcome,
    reason: string,
    outputTail: string,
    applied: boolean,
  ): Promise<void> {
    const seq = await report(target, outcome, reason, outputTail);
    const { intent } = target.signed;
    const generation = { generation: intent.generation, closure: intent.closure, digest: target.digest };
    await persist({
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
    await pinGenerations();
    await pruneActivationFiles(join(config.stateDir, 'activations'), (id) =>
      id.startsWith(`generation-${intent.generation}-`),
    );
  }

  function selectNow(): IntentSelection {
    const { entries, malformed } = readIntentEntries(desiredDoc);
    // Each skipped entry is reported once (per copy of the document), not on every evaluation.
    for (const entry of malformed) {
      if (reportedMalformed.has(`${entry.index}`) || reportedMalformed.size >= MAX_ENTRY_REPORTS) continue;
      reportedMalformed.add(`${entry.index}`);
      logger.warn(
        { event: 'malformed-intent', document: desiredName, index: entry.index, reason: entry.error },
        `ignoring malformed entry ${entry.index}: ${entry.error}`,
      );
    }
    return selectIntent(
      rollouts.admit(
        entries.map((e) => e.signed),
        { floorGeneration: state.floorGeneration, current: state.target?.signed ?? null },
      ),
      {
        verify,
        floor: { epoch: state.floorEpoch, generation: state.floorGeneration },
        appliedDigest: state.applied?.digest ?? null,
        epochOf: config.trust.epochOf,
        knownDigests: new Set([...state.handledDigests, ...(state.target ? [state.target.digest] : [])]),
      },
    );
  }

  // Checked again right before the system is first touched for a target: the policy may have
  // moved on (a revocation) since it was chosen, or trust may be frozen (withheld updates).
  let heldFor = '';
  function installGate(target: Target): InstallGate {
    const rollout = rollouts.installGate(target.signed);
    if (rollout && rollout.decision !== 'go') return rollout;
    const verdict = verify(target.signed);
    if (!verdict.ok && !TIME_CODES.has(verdict.code))
      return {
        decision: 'refuse',
        reason: `${verdict.code}: ${verdict.reason} (checked again before installing, under policy version ${config.trust.policyVersion() ?? 'none'})`,
      };
    const freshness = config.trust.freshness();
    if (freshness.frozen) {
      holdLog(freshness.reason, target);
      return { decision: 'hold', reason: freshness.reason };
    }
    heldFor = '';
    return { decision: 'go' };
  }
  function holdLog(reason: string, target: Target | null): void {
    if (heldFor === reason) return;
    heldFor = reason;
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
  const waitingLogged = new Set<string>();
  function namesNewerPolicy(signed: Target['signed']): boolean {
    return config.trust.mode === 'policy' && (signed.intent.policyVersion ?? 0) > (config.trust.policyVersion() ?? 0);
  }

  const context = (): PipelineContext => ({
    config,
    logger,
    state: () => state,
    persist,
    finish,
    stopping: () => stopped,
    downloadSignal: downloadAbort.signal,
    publishProgress: (p) => progress.publish(p),
    probePeer: (timeoutMs) => probeSyncPeer(config.coordinators, desiredName, timeoutMs),
    installGate,
  });

  async function startTarget(chosen: Target): Promise<void> {
    // Persisted once, by enterWindowedPhase: downloading now, or waiting for the window first.
    progress.reset();
    // The floor rises to the chosen intent's rank (epoch first) before anything is done for it.
    const rank = { epoch: config.trust.epochOf(chosen.signed), generation: chosen.signed.intent.generation };
    const floor =
      compareRank(rank, { epoch: state.floorEpoch, generation: state.floorGeneration }) > 0
        ? rank
        : { epoch: state.floorEpoch, generation: state.floorGeneration };
    state = {
      ...state,
      phase: 'downloading',
      target: chosen,
      work: freshWork(),
      floorEpoch: floor.epoch,
      floorGeneration: floor.generation,
      handledDigests: [...new Set([...state.handledDigests, chosen.digest])],
    };
    await enterWindowedPhase(context(), 'downloading');
  }

  async function evaluate(): Promise<void> {
    downloadAbort = new AbortController();
    const selection = selectNow();
    const frozen = config.trust.freshness().frozen;
    if (state.target && WORKING_PHASES.includes(state.phase)) {
      // Until the system is touched (a kernel change already set the boot entry), a newer intent
      // wins, and a target whose signers lost their power since it was chosen is dropped.
      const preemptible = PREEMPTIBLE_PHASES.includes(state.phase) && state.work.waitingFor !== 'reboot';
      if (preemptible) {
        const gate = installGate(state.target);
        if (gate.decision === 'refuse') {
          await finish(state.target, state.applied ? 'applied' : 'idle', 'refused', gate.reason, '', false);
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
        await startTarget(newer);
      } else {
        logger.info(
          { event: 'resume', phase: state.phase, generation: state.target.signed.intent.generation },
          'resuming work on the target',
        );
      }
      await runPipeline(context(), state.target!);
      return;
    }
    if (frozen) {
      // Neither installs nor refusals: both would be decided under a policy that may be stale.
      holdLog(config.trust.freshness().reason, null);
      return;
    }
    const handled = new Set(state.handledDigests);
    for (const refusal of selection.refused) {
      if (handled.has(refusal.candidate.digest)) continue;
      if (refusal.code === 'unknown-policy-version' && namesNewerPolicy(refusal.candidate.signed)) {
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
      const seq = await report(refusal.candidate, 'refused', `${refusal.code}: ${refusal.reason}`, '');
      handled.add(refusal.candidate.digest);
      await persist({ ...state, handledDigests: [...handled], resultSeq: seq, lastResultSeq: seq });
    }
    for (const skipped of selection.superseded) {
      if (handled.has(skipped.digest)) continue;
      logger.info(
        { event: 'superseded', generation: skipped.signed.intent.generation },
        'a newer valid intent exists; skipping',
      );
      handled.add(skipped.digest);
    }
    const chosen = selection.chosen;
    if (!chosen || handled.has(chosen.digest)) {
      if (handled.size !== state.handledDigests.length) await persist({ ...state, handledDigests: [...handled] });
      return;
    }
    await persist({ ...state, handledDigests: [...handled] });
    await startTarget(chosen);
    await runPipeline(context(), chosen);
  }

  // While waiting for a window, wake when it opens (rechecked at least every wakeInterval).
  function sleepMs(): number {
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
  let loggedWindows = '';
  function logWindows(): void {
    const maintenance = describeRules(windowRules(config, 'maintenance'));
    const reboot = describeRules(windowRules(config, 'reboot'));
    if (`${maintenance}\n${reboot}` === loggedWindows) return;
    loggedWindows = `${maintenance}\n${reboot}`;
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

  let errorsInARow = 0;
  // Threat 14: a state created from nothing waits for a sync peer and rebuilds the floor from
  // the host's own signed results and the running system before it looks at any intent.
  async function verifyFloor(): Promise<void> {
    if (!state.floorUnverified) return;
    logger.info(
      { event: 'floor-rebuild-waiting', document: statusDocName(config.host) },
      "no agent state: waiting for a sync peer to rebuild the anti-rollback floor from this host's signed results",
    );
    await new Promise<void>((resolve) => {
      const check = (): void => {
        if (stopped || (desired?.provider.synced && status.provider.synced)) {
          clearInterval(timer);
          resolve();
        }
      };
      const timer = setInterval(check, 200);
      check();
    });
    if (stopped) return;
    await statusSaver.idle();
    const rebuilt = rebuildFloor({
      hostKey: config.key.publicKey,
      results: readOwnResults(statusDoc, config.key.publicKey),
      intents: readIntentEntries(desiredDoc).entries.map((e) => e.signed),
      epochOf: config.trust.epochOf,
      running: await currentProfileTarget({ profile: config.profile }),
    });
    const phase: AgentPhase = rebuilt.applied ? 'applied' : state.phase;
    state = {
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
        floorEpoch: state.floorEpoch,
        floorGeneration: state.floorGeneration,
        applied: state.applied?.generation ?? null,
        results: rebuilt.lastResultSeq ?? 0,
      },
      `anti-rollback floor rebuilt: generation ${state.floorGeneration}${state.floorEpoch ? ` (epoch ${state.floorEpoch})` : ''}`,
    );
  }

  const loop = (async () => {
    await verifyFloor();
    if (stopped) return;
    await persist(state);
    await pinGenerations();
    while (!stopped) {
      if (dirty) {
        dirty = false;
        try {
          logWindows();
          await evaluate();
          // Trust changes (a freeze, a new policy version) show in the status without other work.
          await publishCurrentStatus();
          errorsInARow = 0;
        } catch (error) {
          // Work in progress (a confirm deadline runs) must not wait for the next document change;
          // an error that persists is retried less and less often.
          errorsInARow += 1;
          const delayMs = Math.min(ERROR_RETRY_MAX_MS, ERROR_RETRY_MS * 2 ** (errorsInARow - 1));
          logger.error(
            { event: 'agent-error', phase: state.phase, err: error },
            `evaluation failed; retrying in ${delayMs / 1000} s`,
          );
          await new Promise<void>((resolve) => {
            wake = resolve;
            setTimeout(resolve, delayMs).unref();
          });
          wake = null;
          dirty = true;
        }
        continue;
      }
      await new Promise<void>((resolve) => {
        wake = resolve;
        setTimeout(resolve, sleepMs()).unref();
      });
      wake = null;
      dirty = true;
    }
  })();

  logger.info(
    {
      event: 'agent-started',
      phase: state.phase,
      applied: state.applied?.generation ?? null,
      coordinator,
      version: AGENT_VERSION,
    },
    'agent started',
  );
  return {
    state: () => state,
    async stop() {
      stopped = true;
      downloadAbort.abort();
      wake?.();
      await loop.catch(() => undefined);
      enrollment?.stop();
      rollouts.close();
      for (const timer of [desiredReopen, preemptionCheck, statusCheck]) if (timer) clearTimeout(timer);
      if (statusPurge) clearImmediate(statusPurge);
      desired?.close();
      status.close();
      await config.trust.close();
      await statusSaver.idle();
      await saveStatusDocument(config.stateDir, statusDoc);
      await metrics?.close();
    },
  };
}
