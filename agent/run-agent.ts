import { promises as fs } from 'node:fs';
import type { SigningKey } from '../shared/crypto/keys.js';
import type { Logger } from '../shared/log.js';
import { desiredDocName, statusDocName } from '../shared/documents/names.js';
import { readIntentEntries } from '../shared/documents/desired.js';
import { connectDocument, type DocumentConnection } from '../shared/sync/connect.js';
import { selectIntent, type IntentVerifier } from '../shared/trust/verify-intent.js';
import type { SignedIntent } from '../shared/schemas/intent.js';
import type { AgentPhase, ResultOutcome } from '../shared/schemas/report.js';
import { loadAgentState, saveAgentState, type AgentState } from './state.js';
import { loadStatusDocument, saveStatusDocument } from './status-store.js';
import { checkNixSignatureConfig } from './nix-config.js';
import { verifyClosureSignatures } from './verify.js';
import { realiseClosure } from './fetch.js';
import { setSystemProfile, switchToConfiguration, type ActivationConfig } from './activate.js';
import { confirmActivation } from './confirm.js';
import { appendSignedResult, publishStatus } from './report.js';

export const AGENT_VERSION = '0.1.0';

export interface AgentConfig {
  host: string;
  key: SigningKey;
  coordinators: string[];
  // Whether one intent may be installed here; the trust model (admin keys, later the policy) lives behind it.
  verifyIntent: IntentVerifier;
  substituters: string[];
  trustedCacheKeys: string[];
  store?: string;
  profile: string;
  stateDir: string;
  fetchTimeoutMs: number;
  activationTimeoutMs: number;
  logger: Logger;
  // Re-evaluates intents this often even without document changes (expiry is time-based).
  wakeIntervalMs?: number;
}

export interface RunningAgent {
  state(): AgentState;
  stop(): Promise<void>;
}

interface Target {
  signed: SignedIntent;
  digest: string;
}

const WORKING_PHASES: AgentPhase[] = ['downloading', 'activating', 'confirming'];

export async function startAgent(config: AgentConfig): Promise<RunningAgent> {
  const logger = config.logger.child({ host: config.host });
  await checkNixSignatureConfig(config.substituters);
  await fs.mkdir(config.stateDir, { recursive: true, mode: 0o700 });
  let state = await loadAgentState(config.stateDir);
  const statusDoc = await loadStatusDocument(config.stateDir);
  const activation: ActivationConfig = { store: config.store, profile: config.profile, timeoutMs: config.activationTimeoutMs, host: config.host };

  // Documents: the agent reads its desired document and writes its status document.
  const coordinator = config.coordinators[0]!;
  const desired: DocumentConnection = connectDocument(config.coordinators, desiredDocName(config.host));
  const status: DocumentConnection = connectDocument(config.coordinators, statusDocName(config.host), { doc: statusDoc });
  const awareness = status.provider.awareness;

  let stopped = false;
  let wake: (() => void) | null = null;
  let dirty = true;
  const poke = (): void => {
    dirty = true;
    wake?.();
  };
  desired.doc.on('update', poke);
  let savingStatusDoc = Promise.resolve();
  statusDoc.on('update', (_update: Uint8Array, origin: unknown) => {
    // Remote changes (our own results echoed back, or merged after an outage) are saved too.
    if (origin !== 'local') savingStatusDoc = savingStatusDoc.then(() => saveStatusDocument(config.stateDir, statusDoc)).catch(() => undefined);
  });

  async function persist(next: AgentState): Promise<void> {
    state = next;
    await saveAgentState(config.stateDir, state);
    awareness.setLocalState({ role: 'agent', host: config.host, phase: state.phase, generation: state.applied?.generation ?? null });
    const written = publishStatus(
      statusDoc,
      {
        kind: 'status',
        host: config.host,
        phase: state.phase,
        applied: state.applied ? { generation: state.applied.generation, closure: state.applied.closure } : null,
        target: state.target ? { generation: state.target.signed.intent.generation, closure: state.target.signed.intent.closure } : null,
        lastResultSeq: state.lastResultSeq,
        agentVersion: AGENT_VERSION,
      },
      state.statusSeq + 1,
      config.key,
    );
    if (written) {
      state = { ...state, statusSeq: written.seq };
      await saveAgentState(config.stateDir, state);
      await saveStatusDocument(config.stateDir, statusDoc);
    }
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
          at: new Date().toISOString(),
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
    logger[level]({ event: 'result', document: statusDocName(config.host), generation: intent.generation, closure: intent.closure, outcome, reason, seq }, `generation ${intent.generation}: ${outcome}`);
    return seq;
  }

  async function finish(target: Target, phase: AgentPhase, outcome: ResultOutcome, reason: string, outputTail: string, applied: boolean): Promise<void> {
    const seq = await report(target, outcome, reason, outputTail);
    const { intent } = target.signed;
    await persist({
      ...state,
      phase,
      previous: applied ? state.applied : state.previous,
      applied: applied ? { generation: intent.generation, closure: intent.closure, digest: target.digest } : state.applied,
      target: null,
      resultSeq: seq,
      lastResultSeq: seq,
    });
  }

  // Re-activates the previously active system after a failed activation.
  async function rollBack(target: Target, reason: string, outputTail: string): Promise<void> {
    const previous = state.applied;
    if (!previous) {
      await finish(target, 'failed', 'failed', `${reason}; no previous generation to return to`, outputTail, false);
      return;
    }
    logger.warn({ event: 'rollback', generation: target.signed.intent.generation, to: previous.generation }, 'activation failed: returning to the previous generation');
    const profile = await setSystemProfile(previous.closure, activation);
    const restored = profile.ok ? await switchToConfiguration(previous.closure, 'switch', activation) : profile;
    if (restored.ok) {
      await finish(target, 'rolled-back', 'rolled-back', `${reason}; returned to generation ${previous.generation}`, outputTail, false);
    } else {
      await finish(target, 'failed', 'failed', `${reason}; rollback to generation ${previous.generation} also failed: ${restored.reason}`, `${outputTail}\n--- rollback ---\n${restored.outputTail}`, false);
    }
  }

  async function runPipeline(target: Target): Promise<void> {
    const { intent } = target.signed;
    const fields = { document: desiredDocName(config.host), generation: intent.generation, closure: intent.closure };
    if (state.phase === 'downloading') {
      logger.info({ event: 'phase', phase: 'downloading', ...fields }, 'verifying and fetching closure');
      const verified = await verifyClosureSignatures(intent.closure, config.substituters, config.trustedCacheKeys);
      if (!verified.ok) {
        await finish(target, 'failed', 'refused', `narinfo check: ${verified.reason}`, '', false);
        return;
      }
      const fetched = await realiseClosure(intent.closure, { store: config.store, substituters: config.substituters, trustedCacheKeys: config.trustedCacheKeys, timeoutMs: config.fetchTimeoutMs });
      if (stopped) return;
      if (!fetched.ok) {
        await finish(target, 'failed', 'failed', fetched.reason, fetched.outputTail, false);
        return;
      }
      await persist({ ...state, phase: 'activating' });
    }
    if (state.phase === 'activating') {
      logger.info({ event: 'phase', phase: 'activating', action: intent.action, ...fields }, `switch-to-configuration ${intent.action}`);
      const profile = intent.action === 'test' ? { ok: true as const, outputTail: '' } : await setSystemProfile(intent.closure, activation);
      const switched = profile.ok ? await switchToConfiguration(intent.closure, intent.action, activation) : profile;
      if (stopped) return;
      if (!switched.ok) {
        await rollBack(target, switched.reason, switched.outputTail);
        return;
      }
      await persist({ ...state, phase: 'confirming' });
    }
    if (state.phase === 'confirming') {
      logger.info({ event: 'phase', phase: 'confirming', ...fields }, 'confirming activation');
      const confirmed = await confirmActivation(intent.closure, intent.action, activation);
      if (!confirmed.ok) {
        await rollBack(target, `not confirmed: ${confirmed.reason}`, '');
        return;
      }
      await finish(target, 'applied', 'applied', `switch-to-configuration ${intent.action} succeeded`, '', true);
    }
  }

  async function evaluate(): Promise<void> {
    if (state.target && WORKING_PHASES.includes(state.phase)) {
      logger.info({ event: 'resume', phase: state.phase, generation: state.target.signed.intent.generation }, 'resuming interrupted work');
      await runPipeline(state.target);
      return;
    }
    const { entries, malformed } = readIntentEntries(desired.doc);
    for (const entry of malformed) logger.warn({ event: 'malformed-intent', document: desiredDocName(config.host), index: entry.index, reason: entry.error }, 'ignoring malformed entry');
    const selection = selectIntent(
      entries.map((e) => e.signed),
      { verify: config.verifyIntent, floor: { epoch: 0, generation: state.floorGeneration }, appliedDigest: state.applied?.digest ?? null },
    );
    const handled = new Set(state.handledDigests);
    for (const refusal of selection.refused) {
      if (handled.has(refusal.candidate.digest)) continue;
      const seq = await report(refusal.candidate, 'refused', `${refusal.code}: ${refusal.reason}`, '');
      handled.add(refusal.candidate.digest);
      await persist({ ...state, handledDigests: [...handled], resultSeq: seq, lastResultSeq: seq });
    }
    for (const skipped of selection.superseded) {
      if (handled.has(skipped.digest)) continue;
      logger.info({ event: 'superseded', generation: skipped.signed.intent.generation }, 'a newer valid intent exists; skipping');
      handled.add(skipped.digest);
    }
    const chosen = selection.chosen;
    if (!chosen || handled.has(chosen.digest)) {
      if (handled.size !== state.handledDigests.length) await persist({ ...state, handledDigests: [...handled] });
      return;
    }
    handled.add(chosen.digest);
    await persist({
      ...state,
      phase: 'downloading',
      target: chosen,
      floorGeneration: Math.max(state.floorGeneration, chosen.signed.intent.generation),
      handledDigests: [...handled],
    });
    await runPipeline(chosen);
  }

  const loop = (async () => {
    await persist(state);
    while (!stopped) {
      if (dirty) {
        dirty = false;
        try {
          await evaluate();
        } catch (error) {
          logger.error({ event: 'agent-error', err: error }, 'evaluation failed; retrying on the next change');
        }
        continue;
      }
      await new Promise<void>((resolve) => {
        wake = resolve;
        setTimeout(resolve, config.wakeIntervalMs ?? 60_000).unref();
      });
      wake = null;
      dirty = true;
    }
  })();

  logger.info({ event: 'agent-started', phase: state.phase, applied: state.applied?.generation ?? null, coordinator }, 'agent started');
  return {
    state: () => state,
    async stop() {
      stopped = true;
      wake?.();
      await loop.catch(() => undefined);
      desired.close();
      status.close();
      await savingStatusDoc;
      await saveStatusDocument(config.stateDir, statusDoc);
    },
  };
}
