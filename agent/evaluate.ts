import type { AgentPhase } from '../shared/schemas/report.js';
import { compareRank } from '../shared/trust/verify-intent.js';
import { actionLock, describeLock } from './actions.js';
import { probeSyncPeer } from './peer-probe.js';
import { enterWindowedPhase, type PipelineContext, runPipeline, type Target } from './pipeline/pipeline.js';
import { freshWork } from './pipeline/state.js';
import { type AgentRuntime, MAX_ENTRY_REPORTS } from './runtime.js';
import { holdLog, installGate, rememberedDigests, selectNow } from './select.js';
import { finish, persist, publishCurrentStatus, report } from './status-publish.js';

// One evaluation: refusals reported, a target chosen or replaced, and the pipeline run for it.

const WORKING_PHASES: AgentPhase[] = ['waiting-for-window', 'downloading', 'activating', 'confirming'];
// Phases in which a newer intent replaces the target: nothing on the system has changed yet.
const PREEMPTIBLE_PHASES: AgentPhase[] = ['waiting-for-window', 'downloading'];

// Of the intents waiting for more admins' signatures, the newest (the one the status shows).
function newestAwaiting(
  current: { generation: number; reason: string } | null,
  candidate: { signed: Target['signed'] },
  reason: string,
): { generation: number; reason: string } {
  const generation = candidate.signed.intent.generation;
  return current && current.generation >= generation ? current : { generation, reason: reason.slice(0, 1000) };
}

// Intents naming a policy version this agent does not have yet are not refused for good: the
// version may still be on its way (or withheld); they are decided when it arrives.
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
  probePeer: (timeoutMs) =>
    probeSyncPeer(agent.config.coordinators, agent.desiredName, agent.desiredDoc, timeoutMs, agent.config.key),
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

// Forgotten digests and new ones may balance: the contents, not the sizes, say whether to save.
function sameDigests(handled: ReadonlySet<string>, saved: readonly string[]): boolean {
  return handled.size === saved.length && saved.every((digest) => handled.has(digest));
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
    // A locked host (outpost action lock) neither downloads nor activates a target not yet
    // installed; one whose activation began (the system already changed) is finished.
    const lock = actionLock(agent);
    if (lock && preemptible) {
      holdLog(agent, describeLock(lock), state.target);
      return;
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
  const handled = rememberedDigests(state, selection.present);
  // Built aside and set once the refusals are reported: a status published beside the loop while
  // a report is awaited (apps, tunnels, milestones) must still name what waits for signatures.
  let awaiting: { generation: number; reason: string } | null = null;
  for (const refusal of selection.refused) {
    if (handled.has(refusal.candidate.digest)) continue;
    if (refusal.code === 'unknown-policy-version' && namesNewerPolicy(agent, refusal.candidate.signed)) {
      const logged = `waiting-for-policy ${refusal.candidate.digest}`;
      if (!waitingLogged.has(logged) && waitingLogged.size < MAX_ENTRY_REPORTS) {
        waitingLogged.add(logged);
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
      awaiting = newestAwaiting(awaiting, refusal.candidate, refusal.reason);
      const logged = `waiting-for-signatures ${refusal.candidate.digest}`;
      if (!waitingLogged.has(logged) && waitingLogged.size < MAX_ENTRY_REPORTS) {
        waitingLogged.add(logged);
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
  if (awaiting && awaiting.generation <= (state.applied?.generation ?? 0)) awaiting = null;
  const awaitingChanged = JSON.stringify(awaiting) !== JSON.stringify(agent.awaiting);
  agent.awaiting = awaiting;
  if (awaitingChanged) await publishCurrentStatus(agent);
  const chosen = selection.chosen;
  if (!chosen || handled.has(chosen.digest)) {
    if (!sameDigests(handled, state.handledDigests)) await persist(agent, { ...state, handledDigests: [...handled] });
    return;
  }
  const lock = actionLock(agent);
  if (lock) {
    // Waits, neither taken on nor refused: after the unlock the newest valid intent goes on.
    if (!sameDigests(handled, state.handledDigests)) await persist(agent, { ...state, handledDigests: [...handled] });
    holdLog(agent, describeLock(lock), chosen);
    return;
  }
  await persist(agent, { ...state, handledDigests: [...handled] });
  await startTarget(agent, chosen);
  await runPipeline(pipelineContext(agent), chosen);
}
