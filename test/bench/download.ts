import { execFileSync, spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { parseArgs } from 'node:util';
import { startFaultProxy } from '../harness/fault-proxy.js';
import { startLifecycleFleet } from '../harness/lifecycle-fleet.js';
import { removeDirectory, temporaryDirectory } from '../harness/processes.js';
import { buildSystemClosure } from '../harness/system-closures.js';

// `npm run bench:download`: how long the agent takes from `downloading` to `downloaded` for a
// closure with one big uncompressed NAR, against `nix copy --from <cache> --to <empty store>` of
// the same closure in the same run, served by the same HTTP cache on 127.0.0.1: unthrottled, and
// through the fault proxy limited to --rate bytes per second. Every run uses a fresh store
// (`--store DIR`, one per simulated device). Runs alternate agent and nix copy, so load from
// other processes on the machine hits both alike. See docs/performance.md.

const USAGE = `Usage: npm run bench:download -- [options]

  --size-mb N          payload NAR size in MiB (default 100)
  --runs N             unthrottled runs of each side (default 3)
  --throttled-runs N   runs of each side through the fault proxy (default 1; 0 skips)
  --rate BYTES         the fault proxy's bandwidth in bytes per second (default 10000000, 10 MB/s)
  --json-out FILE      also write the JSON result to FILE
  --keep               keep the temporary directory (stores, logs) and print its path

Env OUTPOST_BENCH_AGENT_NODE_OPTIONS: NODE_OPTIONS for the agent processes (profiling), e.g.
  "--require /path/to/profiler.cjs".`;

const TARGET_UNTHROTTLED = 2;
const TARGET_THROTTLED = 1.1;
const MiB = 1024 * 1024;

interface Options {
  sizeMiB: number;
  runs: number;
  throttledRuns: number;
  rate: number;
  jsonOut: string | null;
  keep: boolean;
}

function count(name: string, value: string | undefined, fallback: number, min = 0): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) throw new Error(`--${name}: expected an integer ≥ ${min}, got '${value}'`);
  return n;
}

function parseOptions(argv: string[]): Options | null {
  const { values } = parseArgs({
    args: argv,
    options: {
      'size-mb': { type: 'string' },
      runs: { type: 'string' },
      'throttled-runs': { type: 'string' },
      rate: { type: 'string' },
      'json-out': { type: 'string' },
      keep: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return null;
  }
  return {
    sizeMiB: count('size-mb', values['size-mb'], 100, 1),
    runs: count('runs', values.runs, 3, 1),
    throttledRuns: count('throttled-runs', values['throttled-runs'], 1),
    rate: count('rate', values.rate, 10_000_000, 1024),
    jsonOut: values['json-out'] ?? null,
    keep: values.keep ?? false,
  };
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[middle]! : (sorted[middle - 1]! + sorted[middle]!) / 2;
}

const CLOCK_TICKS = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

// CPU seconds (user + system) of a process, and of the children it has waited for, from
// /proc/<pid>/stat (utime, stime, cutime, cstime).
function cpuSeconds(pid: number): { own: number; children: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat
    .slice(stat.lastIndexOf(')') + 2)
    .split(' ')
    .map(Number);
  return { own: (fields[11]! + fields[12]!) / CLOCK_TICKS, children: (fields[13]! + fields[14]!) / CLOCK_TICKS };
}

interface Timing {
  seconds: number;
  cpuSeconds: number;
}

// Wall-clock and CPU seconds of one command; throws with its output when it fails.
function timeCommand(command: string, args: string[]): Promise<Timing> {
  return new Promise((resolve, reject) => {
    const cpuBefore = cpuSeconds(process.pid).children;
    const started = process.hrtime.bigint();
    const child = spawn(command, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
    child.on('error', reject);
    child.on('close', (code) => {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      if (code === 0) resolve({ seconds, cpuSeconds: cpuSeconds(process.pid).children - cpuBefore });
      else reject(new Error(`${command} ${args.join(' ')} exited with ${code}:\n${stderr}`));
    });
  });
}

type LogEvent = Record<string, unknown> & {
  event?: string;
  time?: number;
  phase?: string;
  bytesDone?: number;
  bytesTotal?: number;
  pathsDone?: number;
  pathsTotal?: number;
};

// Where the agent's time went in one run (seconds): narinfos and plan, NAR transfers, Nix's import.
interface AgentStages {
  verifyAndPlan: number;
  fetch: number;
  nixImport: number;
}

// The agent's pino events of the given names, parsed only when a line names one of them;
// `onEvent` runs as each arrives.
function agentEvents(stream: Readable, names: readonly string[], onEvent: (event: LogEvent) => void) {
  const seen: LogEvent[] = [];
  const waiting = new Map<string, (event: LogEvent) => void>();
  let partial = '';
  stream.on('data', (data: Buffer) => {
    const lines = (partial + data.toString()).split('\n');
    partial = lines.pop()!;
    for (const line of lines) {
      if (!names.some((name) => line.includes(`"event":"${name}"`))) continue;
      const event = JSON.parse(line) as LogEvent;
      onEvent(event);
      seen.push(event);
      waiting.get(event.event ?? '')?.(event);
    }
  });
  return {
    seen,
    next: (name: string): Promise<LogEvent> =>
      new Promise((resolve) => {
        const already = seen.find((e) => e.event === name);
        if (already) resolve(already);
        else waiting.set(name, resolve);
      }),
  };
}

interface SeriesResult {
  label: string;
  agentStages: AgentStages[];
  agentSeconds: number[];
  nixCopySeconds: number[];
  agentCpuSeconds: number[];
  nixCopyCpuSeconds: number[];
  // Median CPU seconds, agent over nix copy: for reading the wall ratio on a busy machine.
  cpuRatio: number;
  agentMedian: number;
  nixCopyMedian: number;
  ratio: number;
  target: number;
  pass: boolean;
}

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2));
  if (!options) return;
  const dir = temporaryDirectory('bench-download');
  const fleet = await startLifecycleFleet(dir);
  let proxy: Awaited<ReturnType<typeof startFaultProxy>> | null = null;
  try {
    console.log(`bench: building a closure with a ${options.sizeMiB} MiB payload and publishing it (uncompressed)`);
    const closure = await buildSystemClosure({
      name: 'nixos-system-download-bench',
      extraPaths: 1,
      payloadBytes: options.sizeMiB * MiB,
    });
    await fleet.publish(closure);
    const cache = await fleet.serveCache();
    proxy = await startFaultProxy(cache.port);
    const throttledUrl = proxy.url('http');
    let runNumber = 0;
    let stages: AgentStages[] = [];

    const agentRun = async (cacheUrl: string): Promise<Timing> => {
      runNumber += 1;
      const host = await fleet.host(`bench-${runNumber}`);
      const agent = fleet.startAgent(host, cacheUrl, ['--fetch-timeout', '3600', '--log-level', 'info'], {
        env: process.env.OUTPOST_BENCH_AGENT_NODE_OPTIONS
          ? { NODE_OPTIONS: process.env.OUTPOST_BENCH_AGENT_NODE_OPTIONS }
          : {},
      });
      try {
        // Watch the agent's log lines as they arrive (in this process), instead of polling
        // `outpost status` or re-reading the whole log: either would take CPU from the agent
        // while it is being measured, which nix copy does not have to share.
        // The agent's CPU (with the nix-store processes it ran) from `downloading` to `downloaded`.
        const pid = agent.child.pid!;
        const cpuTotal = (): number => {
          const { own, children } = cpuSeconds(pid);
          return own + children;
        };
        let cpuStart = 0;
        let cpuEnd = 0;
        const events = agentEvents(
          agent.child.stderr!,
          ['phase', 'download-plan', 'download-progress', 'downloaded', 'result'],
          (event) => {
            if (event.event === 'phase' && event.phase === 'downloading') cpuStart = cpuTotal();
            if (event.event === 'downloaded') cpuEnd = cpuTotal();
          },
        );
        await fleet.deploy(host.host, closure);
        let timer: NodeJS.Timeout | undefined;
        const done = await Promise.race([
          events.next('downloaded'),
          events.next('result'),
          new Promise<never>((_, reject) => {
            timer = setTimeout(() => reject(new Error(`agent run ${runNumber}: no result in 600 s`)), 600_000);
          }),
        ]).finally(() => clearTimeout(timer));
        if (done.event !== 'downloaded') throw new Error(`agent run ${runNumber}: ${JSON.stringify(done)}`);
        const started = events.seen.find((e) => e.event === 'phase' && e.phase === 'downloading')?.time;
        if (typeof started !== 'number' || typeof done.time !== 'number')
          throw new Error(`agent run ${runNumber}: no downloading/downloaded log lines`);
        const planned = events.seen.find((e) => e.event === 'download-plan')?.time ?? started;
        const fetched =
          events.seen.find(
            (e) => e.event === 'download-progress' && e.bytesDone === e.bytesTotal && e.pathsDone === e.pathsTotal,
          )?.time ?? planned;
        stages.push({
          verifyAndPlan: (planned - started) / 1000,
          fetch: (fetched - planned) / 1000,
          nixImport: (done.time - fetched) / 1000,
        });
        return { seconds: (done.time - started) / 1000, cpuSeconds: cpuEnd - cpuStart };
      } finally {
        await agent.stop('SIGKILL');
        if (!options.keep) removeDirectory(host.dir);
      }
    };

    const nixCopyRun = async (cacheUrl: string): Promise<Timing> => {
      runNumber += 1;
      const store = join(dir, `nix-copy-${runNumber}`);
      try {
        return await timeCommand('nix', [
          '--extra-experimental-features',
          'nix-command',
          'copy',
          '--from',
          cacheUrl,
          '--to',
          store,
          closure,
          '--option',
          'substituters',
          '',
          '--option',
          'trusted-public-keys',
          fleet.cacheKey.publicKey,
          '--option',
          'narinfo-cache-negative-ttl',
          '0',
          '--option',
          'narinfo-cache-positive-ttl',
          '0',
        ]);
      } finally {
        if (!options.keep) removeDirectory(store);
      }
    };

    const series = async (label: string, runs: number, url: string, target: number): Promise<SeriesResult> => {
      const agent: Timing[] = [];
      const nixCopy: Timing[] = [];
      stages = [];
      for (let i = 0; i < runs; i++) {
        // Alternate which side goes first, so a burst of load elsewhere does not favour one.
        const order = i % 2 === 0 ? (['agent', 'nix'] as const) : (['nix', 'agent'] as const);
        for (const side of order) {
          if (side === 'agent') agent.push(await agentRun(url));
          else nixCopy.push(await nixCopyRun(url));
        }
        const stage = stages.at(-1)!;
        const a = agent.at(-1)!;
        const n = nixCopy.at(-1)!;
        console.log(
          `  ${label} run ${i + 1}: agent ${a.seconds.toFixed(2)} s, ${a.cpuSeconds.toFixed(2)} s CPU (narinfos+plan ${stage.verifyAndPlan.toFixed(2)}, NARs ${stage.fetch.toFixed(2)}, nix import ${stage.nixImport.toFixed(2)}); nix copy ${n.seconds.toFixed(2)} s, ${n.cpuSeconds.toFixed(2)} s CPU (load ${loadavg()[0]!.toFixed(1)})`,
        );
      }
      const agentMedian = median(agent.map((t) => t.seconds));
      const nixCopyMedian = median(nixCopy.map((t) => t.seconds));
      const ratio = agentMedian / nixCopyMedian;
      return {
        label,
        agentStages: stages,
        agentSeconds: agent.map((t) => t.seconds),
        nixCopySeconds: nixCopy.map((t) => t.seconds),
        agentCpuSeconds: agent.map((t) => t.cpuSeconds),
        nixCopyCpuSeconds: nixCopy.map((t) => t.cpuSeconds),
        agentMedian,
        nixCopyMedian,
        cpuRatio: median(agent.map((t) => t.cpuSeconds)) / median(nixCopy.map((t) => t.cpuSeconds)),
        ratio,
        target,
        pass: ratio <= target,
      };
    };

    const results: SeriesResult[] = [];
    console.log(`bench: unthrottled, ${options.runs} runs each`);
    results.push(await series('unthrottled', options.runs, cache.url, TARGET_UNTHROTTLED));
    if (options.throttledRuns > 0) {
      proxy.bandwidth(options.rate);
      console.log(`bench: through the fault proxy at ${options.rate} B/s, ${options.throttledRuns} runs each`);
      results.push(await series('throttled', options.throttledRuns, throttledUrl, TARGET_THROTTLED));
    }

    console.log('');
    console.log(`closure ${closure}: ${options.sizeMiB} MiB payload NAR, uncompressed, 127.0.0.1`);
    console.log('series        agent median   nix copy median   ratio   target   verdict   (CPU ratio)');
    for (const r of results) {
      console.log(
        `${r.label.padEnd(13)} ${`${r.agentMedian.toFixed(2)} s`.padStart(12)}   ${`${r.nixCopyMedian.toFixed(2)} s`.padStart(15)}   ${r.ratio.toFixed(2).padStart(5)}   ≤ ${r.target.toFixed(1)}    ${r.pass ? 'PASS' : 'FAIL'}      (${r.cpuRatio.toFixed(2)})`,
      );
    }
    if (options.jsonOut) {
      writeFileSync(
        options.jsonOut,
        `${JSON.stringify({ sizeMiB: options.sizeMiB, rate: options.rate, closure, results }, null, 2)}\n`,
      );
    }
    if (options.keep) console.log(`kept ${dir}`);
  } finally {
    await proxy?.close();
    await fleet.close();
    if (!options.keep) removeDirectory(dir);
  }
}

main().catch((error: unknown) => {
  console.error(`bench: ${(error as Error).stack ?? error}`);
  process.exitCode = 1;
});
