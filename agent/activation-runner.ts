import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import type { ActivationRun } from './state.js';
import { runCommand } from './run-command.js';

// switch-to-configuration runs as a process of its own, never as the agent's child in the
// agent's session: a switch may restart or kill the agent (a new agent version, a new unit), and
// must not die with it. A small shell wrapper records the exit status in a file when the
// command ends, so an agent restarted meanwhile finds the outcome (or the still running process)
// and carries on (Cachix Deploy's agent does the same with a separate process and a lock file).
//   direct       setsid'd process (own session and process group), for tests and non-systemd hosts
//   systemd-run  a transient unit outpost-activation-<id>.service: outside the agent's cgroup, so
//                even `systemctl restart outpost-agent` leaves it running
export type ActivationRunner = 'direct' | 'systemd-run';

export interface ActivationSpec {
  id: string;
  command: string;
  args: string[];
  env: Record<string, string>;
  runner: ActivationRunner;
  dir: string;
  timeoutMs: number;
  now: () => number;
  systemdRun?: string;
  systemctl?: string;
}

export type ActivationExit =
  | { kind: 'exited'; code: number; outputTail: string }
  | { kind: 'timed-out'; outputTail: string }
  // Neither running nor finished: killed with the machine (power loss) or by someone else.
  | { kind: 'lost'; outputTail: string }
  // The agent is stopping; the activation keeps running and is picked up after the restart.
  | { kind: 'agent-stopping' };

const WRAPPER = '"$@" >"$OUTPOST_ACTIVATION_LOG" 2>&1 </dev/null; code=$?; echo "$code" >"$OUTPOST_ACTIVATION_STATUS.tmp"; mv -f "$OUTPOST_ACTIVATION_STATUS.tmp" "$OUTPOST_ACTIVATION_STATUS"';
const TAIL_BYTES = 4096;

function files(dir: string, id: string): { log: string; status: string } {
  return { log: join(dir, `${id}.log`), status: join(dir, `${id}.status`) };
}

export function unitName(id: string): string {
  return `outpost-activation-${id}.service`;
}

export async function readBootId(path = '/proc/sys/kernel/random/boot_id'): Promise<string | null> {
  try {
    return (await fs.readFile(path, 'utf8')).trim() || null;
  } catch {
    return null;
  }
}

// Field 22 of /proc/<pid>/stat: when the process started, in ticks since boot.
async function processStartTime(pid: number): Promise<string | null> {
  try {
    const stat = await fs.readFile(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? null;
  } catch {
    return null;
  }
}

export function systemdRunArgs(spec: Pick<ActivationSpec, 'id' | 'command' | 'args' | 'env'>): string[] {
  return [
    '--unit', unitName(spec.id),
    '--collect',
    '--quiet',
    '--service-type=exec',
    ...Object.entries(spec.env).map(([key, value]) => `--setenv=${key}=${value}`),
    '/bin/sh', '-c', WRAPPER, 'outpost-activation', spec.command, ...spec.args,
  ];
}

export async function startActivation(spec: ActivationSpec): Promise<ActivationRun> {
  await fs.mkdir(spec.dir, { recursive: true, mode: 0o700 });
  const { log, status } = files(spec.dir, spec.id);
  await fs.rm(status, { force: true });
  const env = { ...spec.env, OUTPOST_ACTIVATION_LOG: log, OUTPOST_ACTIVATION_STATUS: status };
  const startedAt = spec.now();
  const base = { id: spec.id, runner: spec.runner, bootId: await readBootId(), startedAt, deadline: startedAt + spec.timeoutMs, command: [spec.command, ...spec.args].join(' ') };
  if (spec.runner === 'systemd-run') {
    const outcome = await runCommand(spec.systemdRun ?? 'systemd-run', systemdRunArgs({ ...spec, env: { PATH: process.env.PATH ?? '/run/current-system/sw/bin', ...env } }), { timeoutMs: 60_000 });
    if (outcome.code !== 0) throw new Error(`systemd-run could not start ${unitName(spec.id)}: ${outcome.outputTail.trim()}`);
    return { ...base, pid: null, startTime: null };
  }
  const child = spawn('/bin/sh', ['-c', WRAPPER, 'outpost-activation', spec.command, ...spec.args], { env: { ...process.env, ...env }, detached: true, stdio: 'ignore' });
  const pid = await new Promise<number>((resolve, reject) => {
    child.once('spawn', () => resolve(child.pid!));
    child.once('error', reject);
  });
  child.unref();
  return { ...base, pid, startTime: await processStartTime(pid) };
}

async function outputTail(dir: string, id: string): Promise<string> {
  try {
    const handle = await fs.open(files(dir, id).log, 'r');
    try {
      const { size } = await handle.stat();
      const length = Math.min(size, TAIL_BYTES);
      const buffer = Buffer.alloc(length);
      await handle.read(buffer, 0, length, size - length);
      return buffer.toString('utf8');
    } finally {
      await handle.close();
    }
  } catch {
    return '';
  }
}

async function exitCode(dir: string, id: string): Promise<number | null> {
  try {
    const text = (await fs.readFile(files(dir, id).status, 'utf8')).trim();
    return /^\d+$/.test(text) ? Number(text) : null;
  } catch {
    return null;
  }
}

async function isRunning(run: ActivationRun, spec: Pick<ActivationSpec, 'systemctl'>): Promise<boolean> {
  if (run.runner === 'systemd-run') {
    const outcome = await runCommand(spec.systemctl ?? 'systemctl', ['is-active', '--quiet', unitName(run.id)], { timeoutMs: 30_000 });
    return outcome.code === 0;
  }
  // A pid from another boot, or one reused by a newer process, is not ours.
  if (run.pid === null || run.bootId !== (await readBootId())) return false;
  return run.startTime !== null && (await processStartTime(run.pid)) === run.startTime;
}

async function kill(run: ActivationRun, spec: Pick<ActivationSpec, 'systemctl'>): Promise<void> {
  if (run.runner === 'systemd-run') {
    await runCommand(spec.systemctl ?? 'systemctl', ['kill', '--signal=SIGKILL', unitName(run.id)], { timeoutMs: 30_000 });
    return;
  }
  if (run.pid !== null && (await isRunning(run, spec))) {
    try {
      process.kill(-run.pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
}

// Waits for the activation started as `run` (now or before an agent restart) to end.
export async function waitForActivation(run: ActivationRun, options: { dir: string; now: () => number; stopping: () => boolean; systemctl?: string; pollMs?: number }): Promise<ActivationExit> {
  const pollMs = options.pollMs ?? 200;
  for (;;) {
    const code = await exitCode(options.dir, run.id);
    if (code !== null) return { kind: 'exited', code, outputTail: await outputTail(options.dir, run.id) };
    if (options.stopping()) return { kind: 'agent-stopping' };
    if (!(await isRunning(run, options))) {
      // It may have finished between the two checks.
      const late = await exitCode(options.dir, run.id);
      if (late !== null) return { kind: 'exited', code: late, outputTail: await outputTail(options.dir, run.id) };
      return { kind: 'lost', outputTail: await outputTail(options.dir, run.id) };
    }
    if (options.now() >= run.deadline) {
      await kill(run, options);
      return { kind: 'timed-out', outputTail: await outputTail(options.dir, run.id) };
    }
    await new Promise((resolve) => setTimeout(resolve, pollMs));
  }
}
