import { spawn } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { cpus } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

// Runs every compiled *.test.js in its own process (integration tests start servers and Nix
// builds; isolation keeps one file's leftovers out of the next), two at a time on CI's two
// cores, then sums uvu's totals into the closing "N passed, N failed" line.
const root = fileURLToPath(new URL('.', import.meta.url));
const filter = process.argv[2];

function findTests(dir: string): string[] {
  return readdirSync(dir)
    .flatMap((name) => {
      const path = join(dir, name);
      if (statSync(path).isDirectory()) return findTests(path);
      return name.endsWith('.test.js') ? [path] : [];
    })
    .sort();
}

interface FileOutcome {
  file: string;
  passed: number;
  failed: number;
  skipped: number;
  seconds: number;
  output: string;
  code: number | null;
}

// biome-ignore lint/suspicious/noControlCharactersInRegex: matches terminal colour codes
const ANSI = /\u001b\[[0-9;]*m/g;

const FILE_TIMEOUT_MS = 10 * 60_000;
// Each file runs in its own process group, which a Ctrl-C at the terminal no longer reaches:
// the runner passes it on.
const runningGroups = new Set<number>();
for (const signal of ['SIGINT', 'SIGTERM'] as const)
  process.on(signal, () => {
    for (const pid of runningGroups) {
      try {
        process.kill(-pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    process.exit(130);
  });

function runFile(file: string): Promise<FileOutcome> {
  const started = Date.now();
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--enable-source-maps', file], {
      env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: '0' },
      stdio: ['ignore', 'pipe', 'pipe'],
      // Its own process group: the daemons a test file starts (coordinators, relays, agents, Nix)
      // are killed with it, on a timeout or when the file ends and left some running.
      detached: true,
    });
    if (child.pid !== undefined) runningGroups.add(child.pid);
    const killGroup = (): void => {
      try {
        if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
      } catch {
        // ESRCH: nothing left in the group.
      }
    };
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup();
    }, FILE_TIMEOUT_MS);
    child.on('close', (code) => {
      clearTimeout(timer);
      killGroup();
      if (child.pid !== undefined) runningGroups.delete(child.pid);
      if (timedOut)
        output += `\nrun-tests: killed after ${FILE_TIMEOUT_MS / 60_000} minutes, with every process it started\n`;
      const text = output.replace(ANSI, '');
      const number = (label: string): number =>
        [...text.matchAll(new RegExp(`${label}:\\s+(\\d+)`, 'g'))].reduce((sum, m) => sum + Number(m[1]), 0);
      const total = number('Total');
      const passed = number('Passed');
      const skipped = number('Skipped');
      // uvu's Total counts the tests that ran; skipped ones are reported apart.
      let failed = total - passed;
      // A file that crashed or printed no totals counts as one failure, never as silence.
      if ((code !== 0 || total === 0) && failed === 0) failed = 1;
      resolve({ file, passed, failed, skipped, seconds: (Date.now() - started) / 1000, output: text, code });
    });
  });
}

async function main(): Promise<void> {
  // The filter matches the path below dist/test, so a checkout whose own path contains it is not all matched.
  const files = findTests(root).filter((f) => !filter || relative(root, f).includes(filter));
  const outcomes: FileOutcome[] = [];
  let next = 0;
  const workers = Math.max(1, Math.min(Number(process.env.OUTPOST_TEST_JOBS ?? 2), cpus().length, files.length));
  await Promise.all(
    Array.from({ length: workers }, async () => {
      while (next < files.length) {
        const file = files[next++]!;
        const outcome = await runFile(file);
        outcomes.push(outcome);
        const name = relative(root, file);
        console.log(
          `${outcome.failed === 0 ? 'ok  ' : 'FAIL'} ${name}  (${outcome.passed} passed, ${outcome.failed} failed, ${outcome.seconds.toFixed(1)} s)`,
        );
        if (outcome.failed > 0 || process.env.OUTPOST_TEST_VERBOSE)
          console.log(
            outcome.output
              .split('\n')
              .map((l) => `     ${l}`)
              .join('\n'),
          );
      }
    }),
  );
  const passed = outcomes.reduce((s, o) => s + o.passed, 0);
  const failed = outcomes.reduce((s, o) => s + o.failed, 0);
  const skipped = outcomes.reduce((s, o) => s + o.skipped, 0);
  console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
  process.exitCode = failed === 0 && files.length > 0 ? 0 : 1;
}

void main();
