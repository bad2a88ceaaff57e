import { type ChildProcessByStdio, spawn } from 'node:child_process';
import type { Readable } from 'node:stream';

export interface CommandOutcome {
  code: number | null;
  signal: NodeJS.Signals | null;
  timedOut: boolean;
  outputTail: string;
  // With options.stdoutLimit: stdout from its start, and whether it went past the limit (the
  // command is then killed: its answer is too large to be used).
  stdout?: string;
  stdoutOverflow?: boolean;
}

const TAIL_BYTES = 4096;

// Runs a command in its own process group so a timeout kills everything it started, and keeps
// only the tail of its output: that is what goes into a signed result.
export function runCommand(
  command: string,
  args: string[],
  // signal: stops the command (SIGTERM to its process group, SIGKILL 5 s later).
  // stdoutLimit: also keep stdout itself, up to this many bytes, for commands whose answer is parsed.
  options: {
    timeoutMs: number;
    env?: NodeJS.ProcessEnv;
    cwd?: string;
    keepBytes?: number;
    signal?: AbortSignal;
    stdoutLimit?: number;
  },
): Promise<CommandOutcome> {
  return new Promise((resolve) => {
    const keepBytes = options.keepBytes ?? TAIL_BYTES;
    let tail = Buffer.alloc(0);
    const keep = (chunk: Buffer): void => {
      tail = Buffer.concat([tail, chunk]);
      if (tail.length > keepBytes) tail = tail.subarray(tail.length - keepBytes);
    };
    let child: ChildProcessByStdio<null, Readable, Readable>;
    try {
      child = spawn(command, args, {
        env: options.env ?? process.env,
        cwd: options.cwd,
        detached: true,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
    } catch (error) {
      resolve({
        code: null,
        signal: null,
        timedOut: false,
        outputTail: `cannot start ${command}: ${(error as Error).message}`,
      });
      return;
    }
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        child.kill('SIGKILL');
      }
    }, options.timeoutMs);
    let killTimer: NodeJS.Timeout | undefined;
    const stop = (): void => {
      const kill = (signal: NodeJS.Signals): void => {
        try {
          process.kill(-child.pid!, signal);
        } catch {
          child.kill(signal);
        }
      };
      kill('SIGTERM');
      killTimer = setTimeout(() => kill('SIGKILL'), 5000);
    };
    if (options.signal?.aborted) stop();
    else options.signal?.addEventListener('abort', stop, { once: true });
    child.stdout.on('data', keep);
    const stdoutLimit = options.stdoutLimit;
    const stdout: Buffer[] = [];
    let stdoutBytes = 0;
    let stdoutOverflow = false;
    if (stdoutLimit !== undefined)
      child.stdout.on('data', (chunk: Buffer) => {
        if (stdoutOverflow) return;
        stdoutBytes += chunk.length;
        if (stdoutBytes > stdoutLimit) {
          stdoutOverflow = true;
          stop();
        } else stdout.push(chunk);
      });
    child.stderr.on('data', keep);
    child.on('error', (error) => keep(Buffer.from(`\n${command}: ${error.message}\n`)));
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      clearTimeout(killTimer);
      options.signal?.removeEventListener('abort', stop);
      resolve({
        code,
        signal,
        timedOut,
        outputTail: tail.toString('utf8'),
        ...(stdoutLimit === undefined ? {} : { stdout: Buffer.concat(stdout).toString('utf8'), stdoutOverflow }),
      });
    });
  });
}

export function describeFailure(what: string, outcome: CommandOutcome, timeoutMs: number): string {
  if (outcome.timedOut) return `${what} did not finish within ${Math.round(timeoutMs / 1000)} s and was killed`;
  if (outcome.signal) return `${what} was killed by ${outcome.signal}`;
  return `${what} exited with code ${outcome.code}`;
}
