import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { sleep } from '../../shared/time/sleep.js';

// Real processes of the real CLI, as an operator would run them.
export const OUTPOST_CLI = fileURLToPath(new URL('../../cli/outpost.js', import.meta.url));

export function temporaryDirectory(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `outpost-${prefix}-`));
}

// An agent killed with SIGKILL leaves its nix-store children running: they run in process groups
// of their own (in production systemd's cgroup ends them with the agent), and one still registering
// a GC root inside the directory made a test's clean-up fail with ENOTEMPTY. End every process whose
// command line names the directory, then remove it, retrying while the killed ones let go.
export function removeDirectory(path: string): void {
  killProcessesNaming(path);
  rmSync(path, { recursive: true, force: true, maxRetries: 10, retryDelay: 100 });
}

function killProcessesNaming(path: string): void {
  for (const entry of readdirSync('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid) || pid === process.pid) continue;
    let commandLine: string;
    try {
      commandLine = readFileSync(`/proc/${entry}/cmdline`, 'utf8');
    } catch {
      continue; // gone already, or not ours to read
    }
    if (!commandLine.split('\0').some((arg) => arg === path || arg.startsWith(`${path}/`))) continue;
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // exited meanwhile
    }
  }
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export function runCli(
  args: string[],
  options: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [OUTPOST_CLI, ...args], {
      env: { ...process.env, ...options.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 60_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

// Runs fn over items at most `limit` at a time, answers in the items' order. Tests that start
// many CLI processes use it: all at once on a loaded 2-core machine, each outlasts its timeout.
export async function mapLimited<T, R>(items: readonly T[], fn: (item: T) => Promise<R>, limit = 2): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}

export interface DaemonProcess {
  child: ChildProcess;
  logFile: string;
  logs(): string;
  stop(signal?: NodeJS.Signals): Promise<void>;
  exited: Promise<number | null>;
}

// Starts a long-running outpost command; its stderr (pino JSON lines) goes to logFile and is kept
// in memory for assertions.
const STOP_TIMEOUT_MS = 45_000;

export function startDaemon(args: string[], logFile: string, env: NodeJS.ProcessEnv = {}): DaemonProcess {
  const child = spawn(process.execPath, [OUTPOST_CLI, ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const file = createWriteStream(logFile, { flags: 'a' });
  let text = '';
  child.stdout!.on('data', (d: Buffer) => {
    text += d.toString();
    file.write(d);
  });
  child.stderr!.on('data', (d: Buffer) => {
    text += d.toString();
    file.write(d);
  });
  const exited = new Promise<number | null>((resolve) =>
    child.on('close', (code) => {
      file.end();
      resolve(code);
    }),
  );
  return {
    child,
    logFile,
    logs: () => text,
    exited,
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (child.exitCode !== null || child.signalCode !== null) return void (await exited);
      child.kill(signal);
      // A daemon bounds its own closing (runDaemon); one still running well after that is a bug
      // to name, not a test to hang until run-tests kills everything at 10 minutes.
      let timer: NodeJS.Timeout | undefined;
      const stuck = await Promise.race([
        exited.then(() => false),
        new Promise<boolean>((resolve) => {
          timer = setTimeout(() => resolve(true), STOP_TIMEOUT_MS);
        }),
      ]);
      clearTimeout(timer);
      if (!stuck) return;
      child.kill('SIGKILL');
      await exited;
      throw new Error(
        `outpost ${args[0]} did not exit within ${STOP_TIMEOUT_MS / 1000} s of ${signal}; killed it (log: ${logFile})`,
      );
    },
  };
}

export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | null | undefined | false> | T | null | undefined | false,
  timeoutMs = 30_000,
  intervalMs = 100,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown = null;
  while (Date.now() < deadline) {
    try {
      const value = await probe();
      if (value) return value;
    } catch (error) {
      lastError = error;
    }
    await sleep(intervalMs);
  }
  throw new Error(
    `timed out after ${timeoutMs} ms waiting for ${what}${lastError ? ` (last error: ${(lastError as Error).message})` : ''}`,
  );
}

// Starts a daemon and waits for its "listening" line (url and port); one that does not listen in
// time is killed, so a failed start leaves nothing running.
export async function startListeningDaemon(
  what: string,
  args: string[],
  logFile: string,
  env: NodeJS.ProcessEnv = {},
  listenTimeoutMs = 20_000,
): Promise<DaemonProcess & { url: string; port: number }> {
  const daemon = startDaemon(args, logFile, env);
  let line: string;
  try {
    line = await waitFor(
      `${what} to listen`,
      () =>
        daemon
          .logs()
          .split('\n')
          .find((l) => l.startsWith('{"event":"listening"')),
      listenTimeoutMs,
    );
  } catch (error) {
    await daemon.stop('SIGKILL');
    throw error;
  }
  const { url, port } = JSON.parse(line) as { url: string; port: number };
  return Object.assign(daemon, { url, port });
}

// A coordinator on a free port. (Coordinators on NATS read the fleet documents from the stream
// first: give them a longer listenTimeoutMs.)
export function startCoordinatorProcess(
  dataDir: string,
  logFile: string,
  port = 0,
  extra: string[] = [],
  env: NodeJS.ProcessEnv = {},
  listenTimeoutMs = 20_000,
): Promise<DaemonProcess & { url: string; port: number }> {
  return startListeningDaemon(
    'coordinator',
    ['coordinator', '--data-dir', dataDir, '--port', String(port), ...extra],
    logFile,
    env,
    listenTimeoutMs,
  );
}
