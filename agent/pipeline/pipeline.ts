import { join } from 'node:path';
import { desiredDocName } from '../../shared/documents/names.js';
import type { Logger } from '../../shared/log.js';
import { describeRules, nextAllowedStart, rulesAllow } from '../../shared/schedule/window-rules.js';
import type { SignedIntent } from '../../shared/schemas/intent.js';
import type { ActivationAction } from '../../shared/schemas/primitives.js';
import type { AgentPhase, DownloadProgress, ResultOutcome } from '../../shared/schemas/report.js';
import { sleep } from '../../shared/time/sleep.js';
import type { ResolvedAgentConfig } from '../config.js';
import { downloadClosure, planDownload } from '../download/download.js';
import { kindOf, windowRules } from '../effective-windows.js';
import {
  type ActivationExit,
  ensureLaunched,
  planActivation,
  readBootId,
  waitForActivation,
} from '../nix/activation-runner.js';
import { bootedClosure, rebootNeeded } from '../nix/boot-change.js';
import { gcRootPath } from '../nix/gc-roots.js';
import { confirmHealth } from '../nix/health.js';
import { runCommand } from '../nix/run-command.js';
import { activationCommand, currentProfileTarget, setSystemProfile, setsProfile } from './activate.js';
import { confirmProfile } from './confirm.js';
import type { AgentState, Work } from './state.js';
import { verifyClosureSignatures } from './verify.js';

// The per-intent state machine:
//   waiting-for-window → downloading → (waiting-for-window) → activating → confirming → applied
//                                                             ↘ (kernel changed) waiting-for-window → reboot → confirming
//   any failure after the system changed → re-activate the previously active generation → rolled-back | failed
// Each step persists where it is before it acts, so an agent restarted at any point resumes.

export interface Target {
  signed: SignedIntent;
  digest: string;
}

export interface PipelineContext {
  config: ResolvedAgentConfig;
  logger: Logger;
  state(): AgentState;
  persist(next: AgentState): Promise<void>;
  // Reports the signed result and leaves the pipeline in a final phase.
  finish(
    target: Target,
    phase: AgentPhase,
    outcome: ResultOutcome,
    reason: string,
    outputTail: string,
    applied: boolean,
  ): Promise<void>;
  stopping(): boolean;
  // Aborted when the agent stops or a newer intent supersedes a download.
  downloadSignal: AbortSignal;
  publishProgress(progress: DownloadProgress): void;
  probePeer(timeoutMs: number): Promise<string | null>;
  // Asked right before the system is first touched for the target: 'hold' while trust is frozen
  // (a newer policy may be withheld: nothing new is installed), 'refuse' when the intent no
  // longer verifies under the policy in force (its key was revoked meanwhile).
  installGate(target: Target): InstallGate;
}

export type InstallGate =
  | { decision: 'go' }
  | { decision: 'hold'; reason: string }
  | { decision: 'refuse'; reason: string };

type StepResult = 'next' | 'wait';

// Every log line about the target names the document the intent came from and its generation.
function fields(target: Target): Record<string, unknown> {
  return {
    document: desiredDocName(target.signed.intent.host),
    generation: target.signed.intent.generation,
    closure: target.signed.intent.closure,
  };
}

async function updateWork(ctx: PipelineContext, phase: AgentPhase, changes: Partial<Work>): Promise<void> {
  const state = ctx.state();
  await ctx.persist({ ...state, phase, work: { ...state.work, ...changes } });
}

async function waitForWindow(
  ctx: PipelineContext,
  waitingFor: 'download' | 'activation' | 'reboot',
  changes: Partial<Work>,
): Promise<void> {
  const { config } = ctx;
  const rules = windowRules(config, kindOf(waitingFor));
  const next = nextAllowedStart(rules, config.now());
  const target = ctx.state().target;
  ctx.logger.info(
    {
      event: 'waiting-for-window',
      waitingFor,
      windows: describeRules(rules),
      policyVersion: config.trust.policyVersion(),
      nextStart: next === null ? null : new Date(next).toISOString(),
      ...(target ? fields(target) : {}),
    },
    `waiting for a ${waitingFor === 'reboot' ? 'reboot' : 'maintenance'} window`,
  );
  await updateWork(ctx, 'waiting-for-window', { ...changes, waitingFor });
}

// Moves on to `phase` now, or waits for the next maintenance window first.
export async function enterWindowedPhase(
  ctx: PipelineContext,
  phase: 'downloading' | 'activating',
  changes: Partial<Work> = {},
): Promise<void> {
  if (rulesAllow(windowRules(ctx.config, 'maintenance'), ctx.config.now())) {
    await updateWork(ctx, phase, { ...changes, waitingFor: null });
    return;
  }
  await waitForWindow(ctx, phase === 'downloading' ? 'download' : 'activation', changes);
}

async function stepWindow(ctx: PipelineContext, target: Target): Promise<StepResult> {
  const { waitingFor } = ctx.state().work;
  if (!rulesAllow(windowRules(ctx.config, kindOf(waitingFor)), ctx.config.now())) return 'wait';
  ctx.logger.info({ event: 'window-open', waitingFor, ...fields(target) }, `window open: ${waitingFor}`);
  if (waitingFor === 'reboot') return requestReboot(ctx, target);
  await updateWork(ctx, waitingFor === 'activation' ? 'activating' : 'downloading', { waitingFor: null });
  return 'next';
}

async function stepDownload(ctx: PipelineContext, target: Target): Promise<StepResult> {
  const { config } = ctx;
  const { closure } = target.signed.intent;
  ctx.logger.info(
    { event: 'phase', phase: 'downloading', ...fields(target) },
    'verifying narinfos and downloading the closure',
  );
  const verified = await verifyClosureSignatures(closure, config.substituters, config.trustedCacheKeys);
  if (!verified.ok) {
    await ctx.finish(target, 'failed', 'refused', `narinfo check: ${verified.reason}`, '', false);
    return 'wait';
  }
  const startedAt = ctx.state().work.downloadStartedAt ?? config.now();
  if (ctx.state().work.downloadStartedAt === null)
    await updateWork(ctx, 'downloading', { downloadStartedAt: startedAt });
  const stagingDir = join(config.stateDir, 'downloads');
  let planned: Awaited<ReturnType<typeof planDownload>>;
  try {
    planned = await planDownload(verified.infos, {
      store: config.store,
      stagingDir,
      maxClosureBytes: config.download.maxClosureBytes,
      minFreeBytes: config.download.minFreeBytes,
    });
  } catch (error) {
    // The store cannot even be asked what it has (a full disk refuses Nix's database).
    planned = {
      ok: false,
      reason: `cannot check what the store ${config.store ?? '/nix/store'} already has: ${(error as Error).message}; nothing was downloaded`,
    };
  }
  if (!planned.ok) {
    await ctx.finish(target, 'failed', 'failed', planned.reason, '', false);
    return 'wait';
  }
  ctx.logger.info(
    {
      event: 'download-plan',
      ...fields(target),
      closurePaths: verified.paths,
      closureNarBytes: verified.narBytes,
      missingPaths: planned.plan.missing.length,
    },
    `${planned.plan.missing.length} of ${verified.paths} paths to fetch`,
  );
  const outcome = await downloadClosure(closure, planned.plan, {
    store: config.store,
    stagingDir,
    substituter: verified.substituter,
    trustedCacheKeys: config.trustedCacheKeys,
    maxClosureBytes: config.download.maxClosureBytes,
    minFreeBytes: config.download.minFreeBytes,
    throughput: { minBytesPerSecond: config.download.minBytesPerSecond, windowMs: config.download.throughputWindowMs },
    retries: config.download.retries,
    concurrency: config.download.concurrency,
    retryDelayMs: config.download.retryDelayMs,
    deadline: startedAt + config.fetchTimeoutMs,
    startedAt,
    now: config.now,
    signal: ctx.downloadSignal,
    onProgress: (progress) => ctx.publishProgress(progress),
    onRetry: (retry) =>
      ctx.logger.warn(
        { event: 'download-retry', ...fields(target), ...retry },
        `retrying ${retry.storePath} in ${retry.delayMs} ms: ${retry.reason}`,
      ),
    gcRoot: gcRootPath(config.stateDir, 'target'),
  });
  if (!outcome.ok) {
    if (outcome.cancelled) return 'wait';
    await ctx.finish(target, 'failed', 'failed', outcome.reason, outcome.outputTail, false);
    return 'wait';
  }
  ctx.logger.info(
    {
      event: 'downloaded',
      ...fields(target),
      paths: outcome.paths,
      bytes: outcome.bytes,
      imported: outcome.imported,
      streamingFailed: outcome.streamingFailed,
    },
    'closure downloaded and registered by Nix',
  );
  await enterWindowedPhase(ctx, 'activating', { downloaded: true });
  return 'next';
}

// `switch` that changes the kernel or initrd becomes `boot` plus a reboot in the reboot window.
async function decideAction(
  ctx: PipelineContext,
  target: Target,
): Promise<{ action: ActivationAction; reboot: boolean }> {
  const { action, closure } = target.signed.intent;
  if (action !== 'switch' || ctx.config.profileType !== 'nixos') return { action, reboot: false };
  const decision = await rebootNeeded(ctx.config.store, closure, ctx.config.bootedSystem);
  ctx.logger.info(
    { event: 'boot-decision', ...fields(target), reboot: decision.reboot, why: decision.why },
    decision.reboot ? 'switch becomes boot + reboot' : 'switching live',
  );
  return decision.reboot ? { action: 'boot', reboot: true } : { action, reboot: false };
}

function describeExit(
  what: string,
  exit: Exclude<ActivationExit, { kind: 'agent-stopping' }>,
  timeoutMs: number,
): string {
  if (exit.kind === 'exited') return `${what} exited with code ${exit.code}`;
  if (exit.kind === 'timed-out')
    return `${what} did not finish within ${Math.round(timeoutMs / 1000)} s and was killed`;
  return `${what} was interrupted (the machine or its process died) and left no exit status`;
}

function activationEnv(ctx: PipelineContext, closure: string, action: ActivationAction): Record<string, string> {
  return {
    OUTPOST_HOST: ctx.config.host,
    OUTPOST_CLOSURE: closure,
    OUTPOST_ACTION: action,
    OUTPOST_STORE_ROOT: ctx.config.store ?? '',
    // Lets an activation tell the agent's process apart from its own (and tests kill the agent).
    OUTPOST_AGENT_PID: String(process.pid),
  };
}

// Plans (and persists) the run before launching it, so an agent killed by the switch it just
// started finds the running switch instead of starting a second one.
async function launchAndWait(
  ctx: PipelineContext,
  id: string,
  closure: string,
  action: ActivationAction,
  command: { command: string; args: string[] },
): Promise<ActivationExit> {
  const { config } = ctx;
  const tools = { dir: join(config.stateDir, 'activations'), systemctl: config.health.systemctl };
  let run = ctx.state().work.activation;
  if (!run || run.id !== id) {
    run = await planActivation(
      id,
      config.activationRunner,
      [command.command, ...command.args].join(' '),
      config.activationTimeoutMs,
      config.now,
    );
    await updateWork(ctx, 'activating', { activation: run });
  }
  let resumed: boolean;
  try {
    resumed = await ensureLaunched(run, {
      ...tools,
      command: command.command,
      args: command.args,
      env: activationEnv(ctx, closure, action),
    });
  } catch (error) {
    return { kind: 'lost', outputTail: (error as Error).message };
  }
  if (resumed)
    ctx.logger.info(
      { event: 'resume-activation', generation: ctx.state().target?.signed.intent.generation, run: run.id },
      'waiting for the activation started before the agent restarted',
    );
  return waitForActivation(run, { ...tools, now: config.now, stopping: ctx.stopping });
}

async function stepActivate(ctx: PipelineContext, target: Target): Promise<StepResult> {
  const { config } = ctx;
  const { closure, generation } = target.signed.intent;
  const profileConfig = { store: config.store, profile: config.profile, profileType: config.profileType };
  let action = ctx.state().work.effectiveAction;
  if (action === null) {
    // Nothing on the host has changed for this target yet: the last point to hold or drop it.
    const gate = ctx.installGate(target);
    if (gate.decision === 'hold') return 'wait';
    if (gate.decision === 'refuse') {
      const unchanged = ctx.state().applied ? 'applied' : 'idle';
      await ctx.finish(target, unchanged, 'refused', gate.reason, '', false);
      return 'wait';
    }
    const decision = await decideAction(ctx, target);
    action = decision.action;
    const command = await activationCommand(closure, action, profileConfig);
    if (!command.ok) {
      // Nothing on the host changed yet.
      await ctx.finish(target, 'failed', 'failed', command.reason, '', false);
      return 'wait';
    }
    ctx.logger.info(
      { event: 'phase', phase: 'activating', action, ...fields(target) },
      `${command.command} ${command.args.join(' ')}`,
    );
    if (setsProfile(action)) {
      const profile = await setSystemProfile(closure, profileConfig);
      if (!profile.ok) return startRollback(ctx, target, profile.reason, profile.outputTail);
    }
    await updateWork(ctx, 'activating', { effectiveAction: action, rebootNeeded: decision.reboot });
  }
  const command = await activationCommand(closure, action, profileConfig);
  if (!command.ok) return startRollback(ctx, target, command.reason, '');
  const exit = await launchAndWait(ctx, `generation-${generation}-${action}`, closure, action, command);
  if (exit.kind === 'agent-stopping') return 'wait';
  const work = ctx.state().work;
  const what = `${command.command.split('/').pop()} ${command.args.join(' ')}`.trim();
  if (exit.kind !== 'exited' || exit.code !== 0)
    return startRollback(ctx, target, describeExit(what, exit, config.activationTimeoutMs), exit.outputTail);
  if (work.rebootNeeded) {
    await waitForWindow(ctx, 'reboot', { activation: null });
    return 'next';
  }
  if (action === 'boot') {
    const profile = await confirmProfile(closure, action, config.profile);
    if (!profile.ok) return startRollback(ctx, target, `not confirmed: ${profile.reason}`, exit.outputTail);
    await ctx.finish(
      target,
      'applied',
      'applied',
      `installed as the default boot entry (${what}); it runs after the next reboot`,
      exit.outputTail,
      true,
    );
    return 'wait';
  }
  await updateWork(ctx, 'confirming', {
    activation: null,
    confirmDeadline: config.now() + config.health.confirmTimeoutMs,
  });
  return 'next';
}

async function requestReboot(ctx: PipelineContext, target: Target): Promise<StepResult> {
  const { config } = ctx;
  const now = config.now();
  await updateWork(ctx, 'confirming', {
    waitingFor: null,
    rebootRequestedAt: now,
    rebootBootId: await readBootId(),
    confirmDeadline: now + config.health.confirmTimeoutMs,
  });
  ctx.logger.warn(
    { event: 'reboot', ...fields(target), command: config.rebootCommand },
    'rebooting into the new generation',
  );
  const env = { ...process.env, ...activationEnv(ctx, target.signed.intent.closure, 'boot') };
  const outcome = await runCommand('/bin/sh', ['-c', config.rebootCommand], { timeoutMs: 120_000, env });
  if (outcome.code !== 0)
    return startRollback(
      ctx,
      target,
      `the reboot command (${config.rebootCommand}) exited with ${outcome.code ?? outcome.signal}`,
      outcome.outputTail,
    );
  return 'next';
}

// After the reboot command: the host must come back running the target, in time.
async function awaitReboot(ctx: PipelineContext, target: Target): Promise<StepResult | 'rebooted'> {
  const { config } = ctx;
  const { closure, generation } = target.signed.intent;
  for (;;) {
    const booted = await bootedClosure(config.bootedSystem);
    if (booted === closure) {
      ctx.logger.info({ event: 'rebooted', ...fields(target) }, 'running the new generation after the reboot');
      await updateWork(ctx, 'confirming', {
        rebootNeeded: false,
        confirmDeadline: config.now() + config.health.confirmTimeoutMs,
      });
      return 'rebooted';
    }
    const work = ctx.state().work;
    const bootId = await readBootId();
    if (work.rebootBootId && bootId && bootId !== work.rebootBootId) {
      return startRollback(
        ctx,
        target,
        `the host rebooted into ${booted ?? 'an unknown system'}, not generation ${generation}: the boot loader fell back to another entry`,
        '',
      );
    }
    if (config.now() >= (work.rebootRequestedAt ?? 0) + config.health.confirmTimeoutMs) {
      return startRollback(
        ctx,
        target,
        `the host did not reboot into generation ${generation} within ${Math.round(config.health.confirmTimeoutMs / 1000)} s of the reboot command`,
        '',
      );
    }
    if (ctx.stopping()) return 'wait';
    await sleep(1000);
  }
}

async function stepConfirm(ctx: PipelineContext, target: Target): Promise<StepResult> {
  const { config } = ctx;
  if (ctx.state().work.rebootNeeded) {
    const rebooted = await awaitReboot(ctx, target);
    if (rebooted !== 'rebooted') return rebooted;
  }
  const deadline = ctx.state().work.confirmDeadline ?? config.now() + config.health.confirmTimeoutMs;
  ctx.logger.info(
    { event: 'phase', phase: 'confirming', ...fields(target), deadline: new Date(deadline).toISOString() },
    'confirming: fresh sync with a peer and health checks',
  );
  if (config.now() >= deadline) {
    return startRollback(
      ctx,
      target,
      `not confirmed: the confirm timeout (${Math.round(config.health.confirmTimeoutMs / 1000)} s) passed before the checks could run (the agent was not running)`,
      '',
    );
  }
  const health = await confirmHealth({
    ...config.health,
    probePeer: ctx.probePeer,
    deadline,
    now: config.now,
    stopping: ctx.stopping,
  });
  if (health.ok === null) return 'wait';
  if (!health.ok) return startRollback(ctx, target, health.reason, health.outputTail);
  const action = ctx.state().work.effectiveAction ?? target.signed.intent.action;
  const profile = await confirmProfile(target.signed.intent.closure, action, config.profile);
  if (!profile.ok) return startRollback(ctx, target, `not confirmed: ${profile.reason}`, '');
  const how =
    ctx.state().work.rebootRequestedAt !== null
      ? 'the kernel or initrd changed: installed with boot and rebooted'
      : `${action} succeeded`;
  await ctx.finish(target, 'applied', 'applied', `${how}; confirmed: ${health.detail}`, '', true);
  return 'wait';
}

// Re-activates the previously *active* generation (state.applied), not `nix-env --rollback`,
// which picks the next profile generation down, whatever that is.
async function startRollback(
  ctx: PipelineContext,
  target: Target,
  reason: string,
  outputTail: string,
): Promise<StepResult> {
  const previous = ctx.state().applied;
  if (!previous) {
    await ctx.finish(target, 'failed', 'failed', `${reason}; no previous generation to return to`, outputTail, false);
    return 'wait';
  }
  ctx.logger.warn(
    { event: 'rollback', ...fields(target), to: previous.generation, reason },
    `returning to generation ${previous.generation}`,
  );
  await updateWork(ctx, 'activating', { rollback: { reason, outputTail }, activation: null, waitingFor: null });
  return 'next';
}

async function stepRollback(ctx: PipelineContext, target: Target): Promise<StepResult> {
  const { config } = ctx;
  const previous = ctx.state().applied!;
  const { reason, outputTail } = ctx.state().work.rollback!;
  const fail = async (why: string, tail: string): Promise<StepResult> => {
    await ctx.finish(
      target,
      'failed',
      'failed',
      `${reason}; rollback to generation ${previous.generation} also failed: ${why}`,
      `${outputTail}\n--- rollback ---\n${tail}`,
      false,
    );
    return 'wait';
  };
  const profileConfig = { store: config.store, profile: config.profile, profileType: config.profileType };
  const command = await activationCommand(previous.closure, 'switch', profileConfig);
  if (!command.ok) return fail(command.reason, '');
  if ((await currentProfileTarget(profileConfig)) !== previous.closure) {
    const profile = await setSystemProfile(previous.closure, profileConfig);
    if (!profile.ok) return fail(profile.reason, profile.outputTail);
  }
  const exit = await launchAndWait(
    ctx,
    `generation-${target.signed.intent.generation}-rollback`,
    previous.closure,
    'switch',
    command,
  );
  if (exit.kind === 'agent-stopping') return 'wait';
  if (exit.kind !== 'exited' || exit.code !== 0)
    return fail(describeExit('re-activation', exit, config.activationTimeoutMs), exit.outputTail);
  await ctx.finish(
    target,
    'rolled-back',
    'rolled-back',
    `${reason}; returned to generation ${previous.generation}`,
    outputTail,
    false,
  );
  return 'wait';
}

export async function runPipeline(ctx: PipelineContext, target: Target): Promise<void> {
  for (;;) {
    if (ctx.stopping()) return;
    const state = ctx.state();
    if (state.target?.digest !== target.digest) return;
    let result: StepResult;
    if (state.work.rollback) result = await stepRollback(ctx, target);
    else if (state.phase === 'waiting-for-window') result = await stepWindow(ctx, target);
    else if (state.phase === 'downloading') result = await stepDownload(ctx, target);
    else if (state.phase === 'activating') result = await stepActivate(ctx, target);
    else if (state.phase === 'confirming') result = await stepConfirm(ctx, target);
    else return;
    if (result === 'wait') return;
  }
}
