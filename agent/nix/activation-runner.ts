import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { sleep } from '../../shared/time/sleep.js';
import type { ActivationRun } from '../pipeline/state.js';
import { runCommand } from './run-command.js';

// switch-to-configuration runs as a process of its own, never as the agent's child in the
// agent's session: a switch may restart or kill the agent (a new agent version, a new unit), and
// must not die with it. A small shell wrapper writes its pid when it starts and the exit status
// when the command ends, so an agent restarted meanwhile finds the outcome (or the still running
// process) and carries on, as Cachix Deploy's agent does with a separate process and a lock file.
//   direct       setsid'd process (own session and process group), for tests and non-systemd hosts
//   systemd-run  a transient unit outpost-activation-<id>.service: outside the agent's cgroup, so
//                even `systemctl restart outpost-agent` leaves it running
// The run is planned (and persisted by the caller) before it is launched: an agent killed right
// after the launch then finds the wrapper's pid file instead of launching a second switch.
export type ActivationRunner = 'direct' | 'systemd-run';

export interface ActivationLaunch {
  command: string;
  args: string[];
  env: Record<string, string>;
  dir: string;
  systemdRun?: string;
}

export interface RunnerTools {
  dir: string;
  systemctl?: string;
}

export type ActivationExit =
  | { kind: 'exited'; code: number; outputTail: string }
  | { kind: 'timed-out'; outputTail: string }
  // Started, but neither running nor finished: killed with the machine (power loss) or by someone else.
  | { kind: 'lost'; outputTail: string }
  // The agent is stopping; the activation keeps running and is picked up after the restart.
  | { kind: 'agent-stopping' };

const MARKER = 'outpost-activation';
const WRAPPER = [
  'echo $$ >"$OUTPOST_ACTIVATION_PID"',
  '"$@" >"$OUTPOST_ACTIVATION_LOG" 2>&1 </dev/null',
  'code=$?',
  'echo "$code" >"$OUTPOST_ACTIVATION_STATUS.tmp"',
  'mv -f "$OUTPOST_ACTIVATION_STATUS.tmp" "$OUTPOST_ACTIVATION_STATUS"',
].join('; ');
const TAIL_BYTES = 4096;

function files(dir: string, id: string): { log: string; status: string; pid: string } {
  return { log: join(dir, `${id}.log`), status: join(dir, `${id}.status`), pid: join(dir, `${id}.pid`) };
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

// Keeps the wrapper files (pid, output, status) of the runs named by `keep` only; the output
// of older activations lives on in the signed results.
export async function pruneActivationFiles(dir: string, keep: (id: string) => boolean): Promise<void> {
  let names: string[];
  try {
    names = await fs.readdir(dir);
  } catch {
    return;
  }
  await Promise.all(
    names
      .filter((name) => !keep(name.replace(/\.(log|status|status\.tmp|pid)$/, '')))
      .map((name) => fs.rm(join(dir, name), { force: true })),
  );
}

export async function planActivation(
  id: string,
  runner: ActivationRunner,
  command: string,
  timeoutMs: number,
  now: () => number,
): Promise<ActivationRun> {
  const startedAt = now();
  return { id, runner, bootId: await readBootId(), startedAt, deadline: startedAt + timeoutMs, command };
}

export function systemdRunArgs(id: string, launch: Pick<ActivationLaunch, 'command' | 'args' | 'env'>): string[] {
  return [
    '--unit',
    unitName(id),
    '--collect',
    '--quiet',
    '--service-type=exec',
    ...Object.entries(launch.env).map(([key, value]) => `--setenv=${key}=${value}`),
    '/bin/sh',
    '-c',
    WRAPPER,
    MARKER,
    launch.command,
    ...launch.args,
  ];
}

export async function launchActivation(run: ActivationRun, launch: ActivationLaunch): Promise<void> {
  await fs.mkdir(launch.dir, { recursive: true, mode: 0o700 });
  const paths = files(launch.dir, run.id);
  await Promise.all([fs.rm(paths.status, { force: true }), fs.rm(paths.pid, { force: true })]);
  const env = {
    ...launch.env,
    OUTPOST_ACTIVATION_LOG: paths.log,
    OUTPOST_ACTIVATION_STATUS: paths.status,
    OUTPOST_ACTIVATION_PID: paths.pid,
  };
  if (run.runner === 'systemd-run') {
    const outcome = await runCommand(
      launch.systemdRun ?? 'systemd-run',
      systemdRunArgs(run.id, { ...launch, env: { PATH: process.env.PATH ?? '/run/current-system/sw/bin', ...env } }),
      { timeoutMs: 60_000 },
    );
    if (outcome.code !== 0)
      throw new Error(`systemd-run could not start ${unitName(run.id)}: ${outcome.outputTail.trim()}`);
    return;
  }
  const child = spawn('/bin/sh', ['-c', WRAPPER, MARKER, launch.command, ...launch.args], {
    env: { ...process.env, ...env },
    detached: true,
    stdio: 'ignore',
  });
  await new Promise<void>((resolve, reject) => {
    child.once('spawn', () => resolve());
    child.once('error', reject);
  });
  child.unref();
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

async function readNumber(path: string): Promise<number | null> {
  try {
    const text = (await fs.readFile(path, 'utf8')).trim();
    return /^\d+$/.test(text) ? Number(text) : null;
  } catch {
    return null;
  }
}

// The wrapper's pid, if that process is still the wrapper of this run (same boot, same command
// line: a reused pid is someone else).
async function wrapperPid(run: ActivationRun, dir: string): Promise<number | null> {
  const pid = await readNumber(files(dir, run.id).pid);
  if (pid === null || run.bootId !== (await readBootId())) return null;
  try {
    const cmdline = (await fs.readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0');
    return cmdline.includes(MARKER) ? pid : null;
  } catch {
    return null;
  }
}

export type RunState =
  | { state: 'finished'; code: number }
  | { state: 'running' }
  | { state: 'not-started' }
  | { state: 'lost' };

export async function activationState(run: ActivationRun, tools: RunnerTools): Promise<RunState> {
  const code = await readNumber(files(tools.dir, run.id).status);
  if (code !== null) return { state: 'finished', code };
  if (run.runner === 'systemd-run') {
    const active = await runCommand(tools.systemctl ?? 'systemctl', ['is-active', '--quiet', unitName(run.id)], {
      timeoutMs: 30_000,
    });
    if (active.code === 0) return { state: 'running' };
  } else if ((await wrapperPid(run, tools.dir)) !== null) {
    return { state: 'running' };
  }
  // It may have finished between the checks.
  const late = await readNumber(files(tools.dir, run.id).status);
  if (late !== null) return { state: 'finished', code: late };
  const started = await readNumber(files(tools.dir, run.id).pid);
  return started === null ? { state: 'not-started' } : { state: 'lost' };
}

// Launches the run unless an earlier agent already did (its wrapper wrote a pid or a status).
// Returns whether it was already under way.
export async function ensureLaunched(run: ActivationRun, launch: ActivationLaunch & RunnerTools): Promise<boolean> {
  if ((await activationState(run, launch)).state !== 'not-started') return true;
  await launchActivation(run, launch);
  const paths = files(launch.dir, run.id);
  for (let waited = 0; waited < 10_000; waited += 50) {
    if ((await readNumber(paths.pid)) !== null || (await readNumber(paths.status)) !== null) return false;
    await sleep(50);
  }
  throw new Error(`${run.command} did not start within 10 s`);
}

// Kills the run and waits (up to 10 s) until it is gone: the rollback's activation must not
// overlap with a dying switch.
async function kill(run: ActivationRun, tools: RunnerTools): Promise<void> {
  if (run.runner === 'systemd-run') {
    await runCommand(tools.systemctl ?? 'systemctl', ['kill', '--signal=SIGKILL', unitName(run.id)], {
      timeoutMs: 30_000,
    });
  } else {
    const pid = await wrapperPid(run, tools.dir);
    if (pid === null) return;
    try {
      // The wrapper leads its own process group (detached: setsid), so this takes the switch too.
      process.kill(-pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  }
  for (let waited = 0; waited < 10_000 && (await activationState(run, tools)).state === 'running'; waited += 50) {
    await sleep(50);
  }
}

// Waits for a launched run (now or before an agent restart) to end, killing it at its deadline.
export async function waitForActivation(
  run: ActivationRun,
  options: RunnerTools & { now: () => number; stopping: () => boolean; pollMs?: number },
): Promise<ActivationExit> {
  const pollMs = options.pollMs ?? 200;
  for (;;) {
    const current = await activationState(run, options);
    if (current.state === 'finished')
      return { kind: 'exited', code: current.code, outputTail: await outputTail(options.dir, run.id) };
    if (current.state !== 'running') return { kind: 'lost', outputTail: await outputTail(options.dir, run.id) };
    if (options.stopping()) return { kind: 'agent-stopping' };
    if (options.now() >= run.deadline) {
      await kill(run, options);
      return { kind: 'timed-out', outputTail: await outputTail(options.dir, run.id) };
    }
    await sleep(pollMs);
  }
}
