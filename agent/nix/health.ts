import { existsSync } from 'node:fs';
import { runCommand } from './run-command.js';

// After an activation the host must prove it still works before the agent calls it applied:
//   - a *fresh* sync with a sync peer (coordinator or relay): the network and the path to the
//     fleet survived the switch (deploy-rs' and Cachix Deploy's test);
//   - `systemctl is-system-running` says running (degraded counts as failure), when required;
//   - every --health-check command exits 0.
// Checks are repeated until they all pass in one round or the deadline passes; a deadline is
// always a failure, never "applied" (deploy-rs#214).

export type SystemRunningRule = 'auto' | 'true' | 'false';

export interface HealthConfig {
  checks: readonly string[];
  requireSystemRunning: SystemRunningRule;
  systemctl: string;
  // Resolves null once a fresh connection to a sync peer synced, else why not (within timeoutMs).
  probePeer: (timeoutMs: number) => Promise<string | null>;
  deadline: number;
  now: () => number;
  stopping: () => boolean;
  retryDelayMs?: number;
}

export type HealthOutcome =
  | { ok: true; detail: string }
  | { ok: false; reason: string; outputTail: string }
  | { ok: null };

// "auto": required where systemd runs the machine (sd_booted(): /run/systemd/system exists), as
// on every NixOS host; skipped in containers and test machines without systemd.
export function systemRunningRequired(rule: SystemRunningRule, runDir = '/run/systemd/system'): boolean {
  if (rule === 'auto') return existsSync(runDir);
  return rule === 'true';
}

interface Failure {
  what: string;
  outputTail: string;
}

async function systemState(systemctl: string, timeoutMs: number): Promise<Failure | null> {
  const outcome = await runCommand(systemctl, ['is-system-running'], { timeoutMs });
  const state = outcome.outputTail.trim().split('\n').pop() ?? '';
  if (state === 'running') return null;
  let detail = '';
  if (state === 'degraded') {
    const failed = await runCommand(systemctl, ['list-units', '--failed', '--no-legend', '--plain'], { timeoutMs });
    detail = failed.outputTail;
  }
  return {
    what: `systemctl is-system-running says ${JSON.stringify(state || `nothing (exit ${outcome.code})`)}, not "running"`,
    outputTail: detail || outcome.outputTail,
  };
}

async function runCheck(command: string, timeoutMs: number): Promise<Failure | null> {
  const outcome = await runCommand('/bin/sh', ['-c', command], { timeoutMs });
  if (outcome.code === 0) return null;
  const how = outcome.timedOut
    ? `did not finish within ${Math.round(timeoutMs / 1000)} s`
    : outcome.signal
      ? `was killed by ${outcome.signal}`
      : `exited with ${outcome.code}`;
  return { what: `health check ${JSON.stringify(command)} ${how}`, outputTail: outcome.outputTail };
}

export async function confirmHealth(config: HealthConfig): Promise<HealthOutcome> {
  const requireRunning = systemRunningRequired(config.requireSystemRunning);
  let peerSynced = false;
  let failures: Failure[] = [];
  let rounds = 0;
  for (;;) {
    rounds += 1;
    const remaining = (): number => Math.max(1000, config.deadline - config.now());
    failures = [];
    if (!peerSynced) {
      const problem = await config.probePeer(Math.min(remaining(), 15_000));
      if (problem === null) peerSynced = true;
      else failures.push({ what: `no fresh sync with a sync peer: ${problem}`, outputTail: '' });
    }
    if (config.stopping()) return { ok: null };
    if (requireRunning) {
      const failure = await systemState(config.systemctl, Math.min(remaining(), 60_000));
      if (failure) failures.push(failure);
    }
    for (const check of config.checks) {
      if (config.stopping()) return { ok: null };
      const failure = await runCheck(check, remaining());
      if (failure) failures.push(failure);
    }
    if (failures.length === 0) {
      const parts = [
        'a fresh sync with a sync peer',
        ...(requireRunning ? ['system running'] : []),
        ...(config.checks.length ? [`${config.checks.length} health check(s) passed`] : []),
      ];
      return { ok: true, detail: `${parts.join(', ')}${rounds > 1 ? ` (after ${rounds} rounds)` : ''}` };
    }
    if (config.stopping()) return { ok: null };
    if (config.now() >= config.deadline) break;
    await new Promise((resolve) =>
      setTimeout(resolve, Math.min(config.retryDelayMs ?? 2000, Math.max(0, config.deadline - config.now()))),
    );
  }
  return {
    ok: false,
    reason: `not confirmed within the confirm timeout: ${failures.map((f) => f.what).join('; ')}`,
    outputTail: failures
      .map((f) => f.outputTail)
      .filter(Boolean)
      .join('\n')
      .slice(-8192),
  };
}
