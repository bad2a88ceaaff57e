import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { readIntentEntries } from '../shared/documents/desired.js';
import { desiredDocName, statusDocName } from '../shared/documents/names.js';
import { readCurrentStatus, readResults } from '../shared/documents/status.js';
import { connectDocument, type DocumentConnection } from '../shared/node/connect.js';
import { describeRules, nextAllowedStart } from '../shared/schedule/window-rules.js';
import type {
  AgentPhase,
  DownloadProgress,
  ResultOutcome,
  StatusContent,
  TrustStatus,
} from '../shared/schemas/report.js';
import { compareRank, type IntentSelection, selectIntent } from '../shared/trust/verify-intent.js';
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
import { enterWindowedPhase, type PipelineContext, runPipeline, type Target } from './pipeline/pipeline.js';
import { appendSignedResult, publishStatus } from './pipeline/report.js';
import { type AgentState, freshWork, HISTORY_LENGTH, loadAgentState, saveAgentState } from './pipeline/state.js';
import { createProgressPublisher } from './progress-publisher.js';
import { loadStatusDocument, saveStatusDocument } from './status-store.js';

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

export async function startAgent(agentConfig: AgentConfig): Promise<RunningAgent> {
  const config = resolveAgentConfig(agentConfig);
  const logger = config.logger.child({ host: config.host });
  await checkNixSignatureConfig(config.substituters);
  await fs.mkdir(config.stateDir, { recursive: true, mode: 0o700 });
  let state = await loadAgentState(config.stateDir);
  const statusDoc = await loadStatusDocument(config.stateDir);

  // Documents: the agent reads its desired document and writes its status document.
  const coordinator = config.coordinators[0]!;
  const desired: DocumentConnection = connectDocument(config.coordinators, desiredDocName(config.host), {
    ...config.reconnect,
  });
  const status: DocumentConnection = connectDocument(config.coordinators, statusDocName(config.host), {
    doc: statusDoc,
    ...config.reconnect,
  });
  const awareness = status.provider.awareness;
  const metrics = config.metricsListen
    ? await startAgentMetrics(config.metricsListen, { statusDoc, awareness, logger })
    : null;

  let stopped = false;
  let wake: (() => void) | null = null;
  let dirty = true;
  let downloadAbort = new AbortController();
  const poke = (): void => {
    dirty = true;
    wake?.();
  };
  desired.doc.on('update', () => {
    poke();
    // A newer intent replaces one still waiting or downloading (days on a slow link).
    if (state.target && state.phase === 'downloading' && selectNow().chosen) downloadAbort.abort();
  });
  // A new policy version or a fresh timestamp may change what is valid, or end a freeze.
  config.trust.onChange(poke);
  const enrollment = config.enrollment
    ? requestEnrollment({
        endpoints: config.coordinators,
        host: config.host,
        key: config.key,
        token: config.enrollment.token,
        logger,
        backoff: config.reconnect ?? { baseBackoffMs: 1000, maxBackoffMs: 300_000 },
      })
    : null;
  let savingStatusDoc = Promise.resolve();
  statusDoc.on('update', (_update: Uint8Array, origin: unknown) => {
    // Remote changes (our own results echoed back, or merged after an outage) are saved too.
    if (origin !== 'local')
      savingStatusDoc = savingStatusDoc
        .then(() => saveStatusDocument(config.stateDir, statusDoc))
        .catch(() => undefined);
  });

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
    const { entries, malformed } = readIntentEntries(desired.doc);
    for (const entry of malformed)
      logger.warn(
        { event: 'malformed-intent', document: desiredDocName(config.host), index: entry.index, reason: entry.error },
        'ignoring malformed entry',
      );
    return selectIntent(
      entries.map((e) => e.signed),
      {
        verify: config.trust.verify,
        floor: { epoch: state.floorEpoch, generation: state.floorGeneration },
        appliedDigest: state.applied?.digest ?? null,
        epochOf: config.trust.epochOf,
      },
    );
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
    probePeer: (timeoutMs) => probeSyncPeer(config.coordinators, desiredDocName(config.host), timeoutMs),
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
    if (state.target && WORKING_PHASES.includes(state.phase)) {
      // Until the system is touched (a kernel change already set the boot entry), a newer intent wins.
      const preemptible = PREEMPTIBLE_PHASES.includes(state.phase) && state.work.waitingFor !== 'reboot';
      const newer = preemptible ? selection.chosen : null;
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
    const handled = new Set(state.handledDigests);
    for (const refusal of selection.refused) {
      if (handled.has(refusal.candidate.digest)) continue;
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
        if (stopped || (desired.provider.synced && status.provider.synced)) {
          clearInterval(timer);
          resolve();
        }
      };
      const timer = setInterval(check, 200);
      check();
    });
    if (stopped) return;
    await savingStatusDoc;
    const rebuilt = rebuildFloor({
      hostKey: config.key.publicKey,
      results: readResults(statusDoc).results,
      intents: readIntentEntries(desired.doc).entries.map((e) => e.signed),
      epochOf: config.trust.epochOf,
      running: await currentProfileTarget({ profile: config.profile }),
    });
    const phase: AgentPhase = rebuilt.applied ? 'applied' : state.phase;
    state = {
      ...state,
      ...rebuilt,
      phase,
      statusSeq: Math.max(state.statusSeq, readCurrentStatus(statusDoc)?.status.seq ?? 0),
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
      desired.close();
      status.close();
      await config.trust.close();
      await savingStatusDoc;
      await saveStatusDocument(config.stateDir, statusDoc);
      await metrics?.close();
    },
  };
}
