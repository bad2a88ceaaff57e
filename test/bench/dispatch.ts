import { type ChildProcess, fork, spawn } from 'node:child_process';
import {
  createWriteStream,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { cpus, setPriority, tmpdir, totalmem } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import * as Y from 'yjs';
import { generateSigningKey, type SigningKey } from '../../shared/crypto/keys.js';
import { appendIntent } from '../../shared/documents/desired.js';
import { desiredDocName } from '../../shared/documents/names.js';
import { sleep } from '../../shared/time/sleep.js';
import { type PreSigned, preSign } from './bench-intents.js';
import { serverResidency } from './frame-residency.js';
import type { DeliveredReport, VerifiedReport, WorkerCommand, WorkerReport } from './ipc.js';
import { LeanDocClient } from './lean-client.js';
import { type AppendSummary, appendsBetween, readAppendHistogram, summarizeAppends } from './log-append-metrics.js';
import {
  cpuSeconds,
  machineCpuSeconds,
  nsToMs,
  openFileLimit,
  openFiles,
  type Percentiles,
  percentiles,
  processesCpuSeconds,
  rssKiB,
  settledRssKiB,
} from './measure.js';
import type { MemoryProbe } from './memory-probe.js';
import { BENCH_CONNECTION_FLAGS } from './relay-fixtures.js';

// `npm run bench`: one coordinator process, N simulated agents (2 websockets each), an admin
// deploying signed intents to the fleet in waves; dispatch latency and coordinator memory per
// host, then the same load against the stock y-websocket server. See docs/performance.md.

const OUTPOST_CLI = fileURLToPath(new URL('../../cli/outpost.js', import.meta.url));
const STOCK_SERVER = fileURLToPath(new URL('./stock-server.js', import.meta.url));
const AGENT_WORKER = fileURLToPath(new URL('./agent-worker.js', import.meta.url));
const MEMORY_PROBE = fileURLToPath(new URL('./memory-probe.js', import.meta.url));
const FRAME_TRACE = fileURLToPath(new URL('./frame-trace.js', import.meta.url));

const TARGET_P99_MS = 50;
const AGENTS_NICE = 10;
const TARGET_BYTES_PER_HOST = 50_000;
const TARGET_HOSTS = 1000;
// File descriptors a server needs besides its 2 sockets per host: listening socket, stdio,
// epoll, LevelDB files and log, the admin's sockets of one wave.
const FD_RESERVE = 200;

type ServerKind = 'ours' | 'stock';

const USAGE = `Usage: npm run bench -- [options]

  --hosts N              simulated hosts (default 1000, or env OUTPOST_BENCH_HOSTS); 2 websockets each
  --rollout-hosts N      hosts that get an intent in the rollout (default: all, at most 2000, evenly spread)
  --wave N               intents written at once per rollout wave (default 50)
  --wave-pause-ms N      pause after each wave is verified (default 100)
  --isolated N           intents dispatched one at a time afterwards (default 200)
  --inline-verify        in the rollout, verify each intent as it arrives instead of after the wave
                         was delivered (then one agent process verifies for many hosts in a row)
  --connect-batch N      hosts connecting at once, over all workers (default 200)
  --hosts-per-worker N   simulated hosts per agent process (default 2500, at least 2 processes)
  --agents-nice N        nice value of the agent processes (default 10; 0 = the servers' priority): a real
                         fleet's agents run on their own machines, not on the server's cores
  --servers LIST         ours,stock (default both)
  --time-limit S         give up after S seconds (default 1500)
  --wait-quiet S         before each server, wait up to S seconds for other processes on the machine to
                         use < 0.15 cores (default 120; the run goes ahead anyway, with a warning)
  --json-out FILE        also write the JSON result to FILE
  --heap-snapshot DIR    write a heap snapshot of each server into DIR once all hosts are connected
                         (after the memory reading; the snapshot itself takes seconds and memory)
  --cpu-prof DIR         CPU-profile each server process (written into DIR when it stops)
  --trace-frames DIR     time each intent's frame into and out of each server (test/bench/frame-trace.ts,
                         files in DIR) and print the time it spent inside the server

Env OUTPOST_BENCH_SERVER_NODE_ARGS: extra node flags for the server processes (profiling), e.g.
  "--cpu-prof --cpu-prof-dir=/tmp/prof" or "--heapsnapshot-signal=SIGUSR2".`;

interface Options {
  hostsRequested: number;
  hosts: number;
  clampReason: string | null;
  rolloutHosts: number;
  wave: number;
  wavePauseMs: number;
  isolated: number;
  inlineVerify: boolean;
  connectBatch: number;
  hostsPerWorker: number;
  agentsNice: number;
  servers: ServerKind[];
  timeLimitS: number;
  waitQuietS: number;
  jsonOut: string | null;
  serverNodeArgs: string[];
  heapSnapshotDir: string | null;
  traceFramesDir: string | null;
}

function positive(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new Error(`--${name}: expected a non-negative integer, got '${value}'`);
  return n;
}

function parseOptions(argv: string[]): Options | null {
  const { values } = parseArgs({
    args: argv,
    options: {
      hosts: { type: 'string' },
      'rollout-hosts': { type: 'string' },
      wave: { type: 'string' },
      'wave-pause-ms': { type: 'string' },
      isolated: { type: 'string' },
      'inline-verify': { type: 'boolean' },
      'connect-batch': { type: 'string' },
      'hosts-per-worker': { type: 'string' },
      'agents-nice': { type: 'string' },
      servers: { type: 'string' },
      'time-limit': { type: 'string' },
      'wait-quiet': { type: 'string' },
      'json-out': { type: 'string' },
      'heap-snapshot': { type: 'string' },
      'cpu-prof': { type: 'string' },
      'trace-frames': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return null;
  }
  const hostsRequested = positive('hosts', values.hosts ?? process.env.OUTPOST_BENCH_HOSTS, 1000);
  if (hostsRequested < 1) throw new Error('--hosts: at least 1');
  // Every server socket is a file descriptor; the hard limit cannot be raised here (no
  // CAP_SYS_RESOURCE), so the fleet is capped to what one server process can hold.
  const { soft } = openFileLimit();
  const maxHosts = Math.floor((soft - FD_RESERVE) / 2);
  const hosts = Math.min(hostsRequested, maxHosts);
  const clampReason =
    hosts < hostsRequested
      ? `RLIMIT_NOFILE is ${soft} (ulimit -n; the hard limit, not raisable without CAP_SYS_RESOURCE): one server process holds at most ${maxHosts} hosts × 2 sockets + ${FD_RESERVE} other descriptors`
      : null;
  const servers = (values.servers ?? 'ours,stock').split(',').map((s) => s.trim());
  for (const s of servers)
    if (s !== 'ours' && s !== 'stock') throw new Error(`--servers: unknown server '${s}' (ours, stock)`);
  const rolloutHosts = Math.min(hosts, positive('rollout-hosts', values['rollout-hosts'], Math.min(hosts, 2000)));
  return {
    hostsRequested,
    hosts,
    clampReason,
    rolloutHosts,
    wave: Math.max(1, positive('wave', values.wave, 50)),
    wavePauseMs: positive('wave-pause-ms', values['wave-pause-ms'], 100),
    isolated: Math.min(hosts, positive('isolated', values.isolated, 200)),
    inlineVerify: values['inline-verify'] ?? false,
    connectBatch: Math.max(1, positive('connect-batch', values['connect-batch'], 200)),
    hostsPerWorker: Math.max(1, positive('hosts-per-worker', values['hosts-per-worker'], 2500)),
    agentsNice: Math.min(19, positive('agents-nice', values['agents-nice'], AGENTS_NICE)),
    servers: servers as ServerKind[],
    timeLimitS: Math.max(10, positive('time-limit', values['time-limit'], 1500)),
    waitQuietS: positive('wait-quiet', values['wait-quiet'], 120),
    jsonOut: values['json-out'] ?? null,
    serverNodeArgs: [
      ...(process.env.OUTPOST_BENCH_SERVER_NODE_ARGS ?? '').split(/\s+/).filter(Boolean),
      ...(values['heap-snapshot']
        ? ['--heapsnapshot-signal=SIGUSR2', `--diagnostic-dir=${resolve(values['heap-snapshot'])}`]
        : []),
      ...(values['cpu-prof'] ? ['--cpu-prof', `--cpu-prof-dir=${resolve(values['cpu-prof'])}`] : []),
      ...(values['trace-frames'] ? ['--import', pathToFileURL(FRAME_TRACE).href] : []),
    ],
    traceFramesDir: values['trace-frames'] ? resolve(values['trace-frames']) : null,
    heapSnapshotDir: values['heap-snapshot'] ? resolve(values['heap-snapshot']) : null,
  };
}

// ---------------------------------------------------------------------------------------------
// Cleanup: every child process and temporary directory is removed however the run ends.

const children = new Set<ChildProcess>();
const temporaryDirectories = new Set<string>();

function track(child: ChildProcess): ChildProcess {
  children.add(child);
  child.once('exit', () => children.delete(child));
  return child;
}

function cleanUpNow(): void {
  for (const child of children) {
    try {
      child.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
  children.clear();
  for (const dir of temporaryDirectories) rmSync(dir, { recursive: true, force: true });
  temporaryDirectories.clear();
}

process.on('exit', cleanUpNow);
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.once(signal, () => {
    console.error(`bench: ${signal}, cleaning up`);
    process.exit(130);
  });
}

function log(message: string): void {
  process.stderr.write(`bench: ${message}\n`);
}

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: not done within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

// ---------------------------------------------------------------------------------------------
// Server processes.

interface ServerHandle {
  kind: ServerKind;
  pid: number;
  url: string;
  stderrTail(): string;
  // process.memoryUsage() and heap spaces from inside the server (memory-probe.ts).
  probe(): Promise<MemoryProbe>;
  stop(): Promise<void>;
}

async function startServer(
  kind: ServerKind,
  dir: string,
  nodeArgs: string[],
  traceFramesDir: string | null,
): Promise<ServerHandle> {
  const args =
    kind === 'ours'
      ? [
          OUTPOST_CLI,
          'coordinator',
          '--data-dir',
          join(dir, 'data'),
          '--listen',
          '127.0.0.1',
          '--port',
          '0',
          ...BENCH_CONNECTION_FLAGS,
        ]
      : [STOCK_SERVER, '--listen', '127.0.0.1', '--port', '0'];
  const probeFile = join(dir, `${kind}-memory.jsonl`);
  const env: NodeJS.ProcessEnv = { ...process.env, OUTPOST_BENCH_MEMORY_PROBE: probeFile };
  if (traceFramesDir) env.OUTPOST_BENCH_FRAME_TRACE = traceFramesDir;
  delete env.YPERSISTENCE;
  const child = track(
    spawn(process.execPath, ['--import', pathToFileURL(MEMORY_PROBE).href, ...nodeArgs, ...args], {
      cwd: dir,
      env,
      stdio: ['pipe', 'pipe', 'pipe'],
    }),
  );
  if (child.pid === undefined) throw new Error(`cannot start the ${kind} server`);
  const pid = child.pid;
  // A watchdog kills the server if this process dies without cleaning up (SIGKILL, OOM): its
  // stdin is a pipe from us, and it reads until we are gone.
  const watchdog = track(
    spawn('/bin/sh', ['-c', `cat >/dev/null; kill -9 ${pid} 2>/dev/null`], { stdio: ['pipe', 'ignore', 'ignore'] }),
  );
  const logFile = createWriteStream(join(dir, `${kind}-server.log`));
  let stderr = '';
  child.stderr!.on('data', (chunk: Buffer) => {
    logFile.write(chunk);
    stderr = (stderr + chunk.toString()).slice(-4000);
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let stdout = '';
  const url = await withTimeout(
    new Promise<string>((resolve, reject) => {
      child.stdout!.on('data', (chunk: Buffer) => {
        stdout += chunk.toString();
        const line = stdout.split('\n').find((l) => l.startsWith('{"event":"listening"'));
        if (line) resolve((JSON.parse(line) as { url: string }).url);
      });
      child.once('exit', (code, signal) =>
        reject(new Error(`${kind} server exited (${code ?? signal}) before listening: ${stderr}`)),
      );
    }),
    30_000,
    `${kind} server start`,
  );
  return {
    kind,
    pid,
    url,
    stderrTail: () => stderr,
    async probe() {
      const lines = (): string[] =>
        existsSync(probeFile) ? readFileSync(probeFile, 'utf8').split('\n').filter(Boolean) : [];
      const before = lines().length;
      process.kill(pid, 'SIGWINCH');
      const deadline = Date.now() + 10_000;
      while (Date.now() < deadline) {
        await sleep(50);
        const now = lines();
        if (now.length > before) return JSON.parse(now[now.length - 1]!) as MemoryProbe;
      }
      throw new Error(`${kind} server did not answer the memory probe`);
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      const stopped = await Promise.race([exited.then(() => true), sleep(15_000).then(() => false)]);
      if (!stopped) {
        log(`${kind} server did not stop within 15 s of SIGTERM; killing it`);
        child.kill('SIGKILL');
        await exited;
      }
      watchdog.kill('SIGKILL');
      await new Promise<void>((resolve) => logFile.end(() => resolve()));
    },
  };
}

// Signals the server (started with --heapsnapshot-signal) and waits until the new snapshot file
// has stopped growing.
async function heapSnapshot(kind: ServerKind, pid: number, dir: string, what: string): Promise<void> {
  mkdirSync(dir, { recursive: true });
  const before = new Set(readdirSync(dir));
  process.kill(pid, 'SIGUSR2');
  const deadline = Date.now() + 120_000;
  let lastSize = -1;
  while (Date.now() < deadline) {
    await sleep(1000);
    const file = readdirSync(dir).find((f) => !before.has(f) && f.endsWith('.heapsnapshot'));
    if (!file) continue;
    const size = statSync(join(dir, file)).size;
    if (size > 0 && size === lastSize) {
      log(`${kind}: heap snapshot with ${what}: ${join(dir, file)} (${(size / 1e6).toFixed(0)} MB)`);
      return;
    }
    lastSize = size;
  }
  log(`${kind}: WARNING: no complete heap snapshot in ${dir} within 120 s`);
}

// ---------------------------------------------------------------------------------------------
// Simulated agents, in worker processes.

interface AgentFleet {
  // Connects hosts until `share` (0-1) of every worker's hosts are connected; resolves with the
  // totals so far.
  connect(serverUrl: string, share: number, timeoutMs: number): Promise<{ connected: number; retries: number }>;
  command(command: WorkerCommand): void;
  pids(): number[];
  unexpectedCloses(): string[];
  quiesce(): void;
  exit(): Promise<void>;
}

interface FleetHandlers {
  delivered(report: DeliveredReport): void;
  verified(report: VerifiedReport): void;
}

function startFleet(hosts: string[], options: Options, adminKey: SigningKey, handlers: FleetHandlers): AgentFleet {
  const count = Math.max(2, Math.ceil(hosts.length / options.hostsPerWorker));
  const workers: ChildProcess[] = [];
  const assignments: string[][] = Array.from({ length: count }, () => []);
  // Round robin: consecutive hosts (one wave) are spread over all workers.
  hosts.forEach((host, i) => {
    assignments[i % count]!.push(host);
  });
  const sent = new Array<number>(count).fill(0);
  const closes: string[] = [];
  const progress = new Array<number>(count).fill(0);
  const waiting: ({
    resolve: (r: { connected: number; retries: number }) => void;
    reject: (e: Error) => void;
  } | null)[] = new Array(count).fill(null);
  const failWorker = (i: number, error: Error): void => {
    const waiter = waiting[i];
    waiting[i] = null;
    waiter?.reject(error);
  };
  for (let i = 0; i < count; i++) {
    const worker = track(
      fork(AGENT_WORKER, [], { serialization: 'advanced', stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }),
    );
    workers.push(worker);
    // The simulated fleet shares the server's two cores; real agents have their own. At the same
    // priority, every wake-up of the server's threads (ours hands each log batch to LevelDB's
    // thread and back; stock's path stays on its main thread) waited behind the agents' decoding.
    if (options.agentsNice > 0 && worker.pid !== undefined) setPriority(worker.pid, options.agentsNice);
    worker.on('message', (report: WorkerReport) => {
      switch (report.type) {
        case 'progress':
          progress[i] = report.connected;
          return;
        case 'ready': {
          const waiter = waiting[i];
          waiting[i] = null;
          waiter?.resolve({ connected: report.connected, retries: report.retries });
          return;
        }
        case 'failed':
          failWorker(i, new Error(`agent worker ${i}: ${report.error}`));
          return;
        case 'delivered':
          handlers.delivered(report);
          return;
        case 'verified':
          handlers.verified(report);
          return;
        case 'unexpected-close':
          closes.push(`${report.document}: ${report.code} ${report.reason}`);
          return;
      }
    });
    worker.once('exit', (code, signal) => failWorker(i, new Error(`agent worker ${i} exited (${code ?? signal})`)));
  }
  const send = (worker: ChildProcess, command: WorkerCommand): void => {
    if (worker.connected) worker.send(command);
  };
  return {
    async connect(serverUrl, share, timeoutMs) {
      const started = Date.now();
      const target = assignments.reduce((a, hostsOfWorker) => a + Math.round(hostsOfWorker.length * share), 0);
      const ticker = setInterval(
        () =>
          log(
            `  connected ${progress.reduce((a, b) => a + b, 0)}/${target} hosts (${((Date.now() - started) / 1000).toFixed(0)} s)`,
          ),
        5000,
      );
      try {
        const results = await Promise.all(
          workers.map(
            (worker, i) =>
              new Promise<{ connected: number; retries: number }>((resolve, reject) => {
                const end = Math.round(assignments[i]!.length * share);
                const slice = assignments[i]!.slice(sent[i], end);
                sent[i] = end;
                waiting[i] = { resolve, reject };
                send(worker, {
                  type: 'start',
                  serverUrl,
                  hosts: slice,
                  batch: Math.max(1, Math.ceil(options.connectBatch / count)),
                  adminPublicKey: adminKey.publicKey,
                  timeoutMs,
                });
              }),
          ),
        );
        return {
          connected: results.reduce((a, r) => a + r.connected, 0),
          retries: results.reduce((a, r) => a + r.retries, 0),
        };
      } finally {
        clearInterval(ticker);
      }
    },
    command(command) {
      for (const worker of workers) send(worker, command);
    },
    pids: () => workers.flatMap((w) => (w.pid === undefined ? [] : [w.pid])),
    unexpectedCloses: () => closes,
    quiesce() {
      for (const worker of workers) send(worker, { type: 'quiesce' });
    },
    async exit() {
      await Promise.all(
        workers.map(async (worker) => {
          if (worker.exitCode !== null || worker.signalCode !== null) return;
          const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
          send(worker, { type: 'exit' });
          if (!(await Promise.race([exited.then(() => true), sleep(10_000).then(() => false)]))) worker.kill('SIGKILL');
        }),
      );
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Intents and dispatch.

interface Sample {
  host: string;
  // What one host with its own CPU sees: admin's local write → the update reached the host's
  // socket, plus that host's own decoding of it and parsing of the intents array.
  deliveryMs: number;
  // Admin's local write → decoded and parsed, as timed in the agent process: also the decoding of
  // every update that reached other simulated hosts of the process just before it.
  deliveryInProcessMs: number;
  // verifyIntent in the agent process.
  verifyMs: number;
  // What one host with its own CPU sees: delivery + its own verification.
  dispatchMs: number;
  // Written → verified as timed in the bench (only when verifying inline, as intents arrive).
  observedMs: number | null;
}

class Dispatcher {
  private readonly verifiedWaiters = new Map<string, (report: VerifiedReport | null) => void>();
  private readonly deliveredWaiters = new Map<string, (report: DeliveredReport | null) => void>();
  failures: string[] = [];
  stray = 0;

  readonly handlers: FleetHandlers = {
    delivered: (report) => this.settle(this.deliveredWaiters, report),
    verified: (report) => this.settle(this.verifiedWaiters, report),
  };

  private settle<T extends { host: string; generation: number }>(
    waiters: Map<string, (report: T | null) => void>,
    report: T,
  ): void {
    const key = `${report.host}#${report.generation}`;
    const waiter = waiters.get(key);
    if (!waiter) {
      this.stray += 1;
      return;
    }
    waiters.delete(key);
    waiter(report);
  }

  private expect<T>(
    waiters: Map<string, (report: T | null) => void>,
    item: PreSigned,
    timeoutMs: number,
  ): Promise<T | null> {
    const key = `${item.host}#${item.signed.intent.generation}`;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        waiters.delete(key);
        resolve(null);
      }, timeoutMs);
      waiters.set(key, (report) => {
        clearTimeout(timer);
        resolve(report);
      });
    });
  }

  // The admin opens the desired documents of a wave (as `outpost deploy` does; not timed), then
  // writes the pre-signed intents back to back, each timed from just before its local write.
  // deferred: the agents verify once every intent of the wave was delivered (see ipc.ts).
  async deploy(
    serverUrl: string,
    items: PreSigned[],
    timeoutMs: number,
    fleet: AgentFleet,
    deferred: boolean,
  ): Promise<Sample[]> {
    const clients = items.map(
      (item) => new LeanDocClient({ serverUrl, name: desiredDocName(item.host), doc: new Y.Doc({ gc: false }) }),
    );
    try {
      await withTimeout(Promise.all(clients.map((c) => c.whenSynced())), timeoutMs, 'admin connections');
      const verified = items.map((item) => this.expect(this.verifiedWaiters, item, timeoutMs));
      const delivered = deferred ? items.map((item) => this.expect(this.deliveredWaiters, item, timeoutMs)) : [];
      const writtenNs: bigint[] = [];
      items.forEach((item, i) => {
        writtenNs[i] = process.hrtime.bigint();
        appendIntent(clients[i]!.doc, item.signed);
      });
      if (deferred) {
        await Promise.all(delivered);
        fleet.command({ type: 'verify' });
      }
      const reports = await Promise.all(verified);
      const samples: Sample[] = [];
      reports.forEach((report, i) => {
        const item = items[i]!;
        if (!report) {
          this.failures.push(
            `${item.host} generation ${item.signed.intent.generation}: not verified within ${timeoutMs} ms`,
          );
          return;
        }
        if (!report.ok) {
          this.failures.push(`${item.host} generation ${item.signed.intent.generation}: refused: ${report.reason}`);
          return;
        }
        const written = writtenNs[i]!;
        const deliveryMs = nsToMs(report.receivedNs - written + (report.decodedNs - report.handlingNs));
        const verifyMs = nsToMs(report.verifiedNs - report.verifyStartNs);
        samples.push({
          host: item.host,
          deliveryMs,
          deliveryInProcessMs: nsToMs(report.decodedNs - written),
          verifyMs,
          dispatchMs: deliveryMs + verifyMs,
          observedMs: deferred ? null : nsToMs(report.verifiedNs - written),
        });
      });
      return samples;
    } finally {
      for (const client of clients) client.close();
    }
  }
}

// ---------------------------------------------------------------------------------------------
// One server under the load.

interface PhaseResult {
  intents: number;
  seconds: number;
  dispatch: Percentiles;
  observed: Percentiles;
  delivery: Percentiles;
  deliveryInProcess: Percentiles;
  verify: Percentiles;
}

interface ServerResult {
  server: ServerKind;
  description: string;
  hosts: number;
  sockets: number;
  connectSeconds: number;
  connectRetries: number;
  serverOpenFiles: number;
  rssBeforeKiB: number;
  rssConnectedKiB: number;
  rssAfterDispatchKiB: number;
  bytesPerHost: number;
  rssHalfKiB: number;
  // Where the growth per host went, in bytes, from process.memoryUsage() inside the server.
  memoryPerHost: MemoryBreakdown;
  marginalBytesPerHost: number;
  cpuSeconds: { connect: number; rollout: number; isolated: number };
  rollout: PhaseResult;
  // --trace-frames: where the server's frame times are, and which of them each phase covers.
  // (hrtime in ns, as decimal strings: the result is written as JSON).
  frames: { file: string; rolloutNs: [string, string]; isolatedNs: [string, string] } | null;
  // --trace-frames: each intent's time inside the server (read once the server has stopped).
  inServer: { rollout: Percentiles | null; isolated: Percentiles | null } | null;
  // Ours only: its update log's appends to durable in each phase, from its own /metrics.
  logAppends: { rollout: AppendSummary; isolated: AppendSummary } | null;
  isolated: PhaseResult;
  failures: string[];
  unexpectedCloses: number;
  // CPU used by processes that are not part of this run, while it ran: other work on the machine
  // skews every figure, so it is reported.
  otherCpu: { seconds: number; cores: number; wallSeconds: number };
}

interface MemoryBreakdown {
  rss: number;
  heapUsed: number;
  heapReservedUnused: number;
  external: number;
  native: number;
  newSpace: number;
}

function breakdown(before: MemoryProbe, after: MemoryProbe, hosts: number): MemoryBreakdown {
  const space = (probe: MemoryProbe, name: string): number => probe.spaces.find((s) => s.name === name)?.size ?? 0;
  const d = (pick: (p: MemoryProbe) => number): number => (pick(after) - pick(before)) / hosts;
  return {
    rss: d((p) => p.rss),
    heapUsed: d((p) => p.heapUsed),
    heapReservedUnused: d((p) => p.heapTotal - p.heapUsed),
    external: d((p) => p.external),
    native: d((p) => p.rss - p.heapTotal - p.external),
    newSpace: d((p) => space(p, 'new_space')),
  };
}

function phase(samples: Sample[], seconds: number): PhaseResult {
  return {
    intents: samples.length,
    seconds,
    dispatch: percentiles(samples.map((s) => s.dispatchMs)),
    observed: percentiles(samples.flatMap((s) => (s.observedMs === null ? [] : [s.observedMs]))),
    delivery: percentiles(samples.map((s) => s.deliveryMs)),
    deliveryInProcess: percentiles(samples.map((s) => s.deliveryInProcessMs)),
    verify: percentiles(samples.map((s) => s.verifyMs)),
  };
}

const DESCRIPTIONS: Record<ServerKind, string> = {
  ours: "outpost coordinator (open mode, fsync'ed group-commit update log on disk)",
  stock: '@y/websocket-server 0.1.1 setupWSConnection, no persistence (in memory only)',
};

// Other processes' CPU use, in cores, over windows of 3 s, until it is below 0.15 or time is up.
async function waitForQuiet(kind: ServerKind, maxSeconds: number): Promise<number> {
  const deadline = Date.now() + maxSeconds * 1000;
  let load = Number.NaN;
  let announced = false;
  do {
    const machine0 = machineCpuSeconds();
    const own0 = process.cpuUsage();
    await sleep(3000);
    const own = process.cpuUsage(own0);
    load = Math.max(0, machineCpuSeconds() - machine0 - (own.user + own.system) / 1e6) / 3;
    if (load < 0.15) return load;
    if (!announced)
      log(`${kind}: other processes use ${load.toFixed(2)} cores; waiting up to ${maxSeconds} s for a quiet machine`);
    announced = true;
  } while (Date.now() < deadline);
  log(`${kind}: WARNING: machine still busy (${load.toFixed(2)} cores used by other processes); measuring anyway`);
  return load;
}

async function runServer(
  kind: ServerKind,
  options: Options,
  hosts: string[],
  rollout: PreSigned[],
  isolated: PreSigned[],
  adminKey: SigningKey,
): Promise<ServerResult> {
  if (options.waitQuietS > 0) await waitForQuiet(kind, options.waitQuietS);
  const dir = mkdtempSync(join(tmpdir(), `outpost-bench-${kind}-`));
  temporaryDirectories.add(dir);
  log(`${kind}: starting server (${DESCRIPTIONS[kind]})`);
  const server = await startServer(kind, dir, options.serverNodeArgs, options.traceFramesDir);
  const dispatcher = new Dispatcher();
  const fleet = startFleet(hosts, options, adminKey, dispatcher.handlers);
  try {
    await sleep(1500);
    const rssBeforeKiB = await settledRssKiB(server.pid);
    const probeBefore = await server.probe();
    if (options.heapSnapshotDir) {
      log(`${kind}: WARNING: heap snapshots inflate the server's RSS; the memory figures of this run are not valid`);
      await heapSnapshot(kind, server.pid, options.heapSnapshotDir, 'before connections');
    }
    const cpu0 = cpuSeconds(server.pid);
    const ownCpu = (): number =>
      processesCpuSeconds([server.pid, ...fleet.pids()]) +
      process.cpuUsage().user / 1e6 +
      process.cpuUsage().system / 1e6;
    const machine0 = machineCpuSeconds();
    const own0 = ownCpu();
    const wall0 = Date.now();
    log(
      `${kind}: server pid ${server.pid} at ${server.url}, RSS ${rssBeforeKiB} KiB; connecting ${hosts.length} hosts (${hosts.length * 2} sockets)`,
    );
    // In two halves, with a memory reading in between: the second half's growth is the marginal
    // cost of a host, without what the first connections add once (buffers, JIT code, heap growth).
    const connectTimeoutMs = 60_000 + hosts.length * 30;
    let connectStarted = Date.now();
    const half = await withTimeout(
      fleet.connect(server.url, 0.5, connectTimeoutMs),
      connectTimeoutMs + 10_000,
      'connecting the first half of the fleet',
    );
    let connectSeconds = (Date.now() - connectStarted) / 1000;
    let cpuConnect = cpuSeconds(server.pid) - cpu0;
    await sleep(3000);
    const rssHalfKiB = await settledRssKiB(server.pid);
    log(`${kind}: RSS ${rssHalfKiB} KiB with ${half.connected} hosts`);
    connectStarted = Date.now();
    const cpuHalf = cpuSeconds(server.pid);
    const { connected, retries } = await withTimeout(
      fleet.connect(server.url, 1, connectTimeoutMs),
      connectTimeoutMs + 10_000,
      'connecting the fleet',
    );
    connectSeconds += (Date.now() - connectStarted) / 1000;
    cpuConnect += cpuSeconds(server.pid) - cpuHalf;
    if (connected !== hosts.length) throw new Error(`only ${connected} of ${hosts.length} hosts connected`);
    log(
      `${kind}: ${connected} hosts connected and stored in ${connectSeconds.toFixed(1)} s (${retries} retries); letting it settle`,
    );
    await sleep(3000);
    const rssConnectedKiB = await settledRssKiB(server.pid);
    const probeConnected = await server.probe();
    const cpu1 = cpuSeconds(server.pid);
    const appends1 = await readAppendHistogram(server.url);
    const serverOpenFiles = openFiles(server.pid);
    log(`${kind}: RSS ${rssConnectedKiB} KiB with ${connected} hosts, ${serverOpenFiles} open files`);
    if (options.heapSnapshotDir) await heapSnapshot(kind, server.pid, options.heapSnapshotDir, `${connected} hosts`);

    const rolloutSamples: Sample[] = [];
    fleet.command({ type: 'mode', verification: options.inlineVerify ? 'inline' : 'deferred' });
    await sleep(100);
    const rolloutStarted = Date.now();
    const rolloutFromNs = process.hrtime.bigint();
    for (let i = 0; i < rollout.length; i += options.wave) {
      rolloutSamples.push(
        ...(await dispatcher.deploy(
          server.url,
          rollout.slice(i, i + options.wave),
          30_000,
          fleet,
          !options.inlineVerify,
        )),
      );
      if ((i / options.wave) % 10 === 9)
        log(`${kind}: rollout ${Math.min(i + options.wave, rollout.length)}/${rollout.length}`);
      await sleep(options.wavePauseMs);
    }
    const rolloutSeconds = (Date.now() - rolloutStarted) / 1000;
    const rolloutToNs = process.hrtime.bigint();
    const cpu2 = cpuSeconds(server.pid);
    const appends2 = await readAppendHistogram(server.url);

    const isolatedSamples: Sample[] = [];
    fleet.command({ type: 'mode', verification: 'inline' });
    await sleep(100);
    const isolatedStarted = Date.now();
    for (const item of isolated) {
      isolatedSamples.push(...(await dispatcher.deploy(server.url, [item], 30_000, fleet, false)));
      await sleep(20);
    }
    const isolatedSeconds = (Date.now() - isolatedStarted) / 1000;
    const isolatedToNs = process.hrtime.bigint();
    const cpu3 = cpuSeconds(server.pid);
    const appends3 = await readAppendHistogram(server.url);
    const rssAfterDispatchKiB = rssKiB(server.pid);
    const wallSeconds = (Date.now() - wall0) / 1000;
    const otherSeconds = Math.max(0, machineCpuSeconds() - machine0 - (ownCpu() - own0));
    const otherCpu = { seconds: otherSeconds, cores: otherSeconds / wallSeconds, wallSeconds };
    if (otherCpu.cores > 0.1)
      log(
        `${kind}: WARNING: other processes on this machine used ${otherCpu.cores.toFixed(2)} cores on average during the run; figures are skewed`,
      );
    log(
      `${kind}: dispatched ${rolloutSamples.length} + ${isolatedSamples.length} intents; ${dispatcher.failures.length} failures`,
    );
    return {
      server: kind,
      description: DESCRIPTIONS[kind],
      hosts: hosts.length,
      sockets: hosts.length * 2,
      connectSeconds,
      connectRetries: retries,
      serverOpenFiles,
      rssBeforeKiB,
      rssConnectedKiB,
      rssAfterDispatchKiB,
      bytesPerHost: ((rssConnectedKiB - rssBeforeKiB) * 1024) / hosts.length,
      rssHalfKiB,
      memoryPerHost: breakdown(probeBefore, probeConnected, connected),
      marginalBytesPerHost: ((rssConnectedKiB - rssHalfKiB) * 1024) / (connected - half.connected),
      cpuSeconds: { connect: cpuConnect, rollout: cpu2 - cpu1, isolated: cpu3 - cpu2 },
      rollout: phase(rolloutSamples, rolloutSeconds),
      isolated: phase(isolatedSamples, isolatedSeconds),
      frames: options.traceFramesDir
        ? {
            file: join(options.traceFramesDir, `frames-${server.pid}.tsv`),
            rolloutNs: [String(rolloutFromNs), String(rolloutToNs)],
            isolatedNs: [String(rolloutToNs), String(isolatedToNs)],
          }
        : null,
      inServer: null,
      logAppends:
        appends1 && appends2 && appends3
          ? {
              rollout: summarizeAppends(appendsBetween(appends1, appends2)),
              isolated: summarizeAppends(appendsBetween(appends2, appends3)),
            }
          : null,
      failures: dispatcher.failures,
      unexpectedCloses: fleet.unexpectedCloses().length,
      otherCpu,
    };
  } catch (error) {
    log(`${kind}: server stderr (tail):\n${server.stderrTail()}`);
    throw error;
  } finally {
    fleet.quiesce();
    await server.stop();
    await fleet.exit();
    rmSync(dir, { recursive: true, force: true });
    temporaryDirectories.delete(dir);
  }
}

// ---------------------------------------------------------------------------------------------
// Report.

const ms = (v: number): string => (Number.isFinite(v) ? v.toFixed(1) : '–');
// The stock server holds an update for ~0.05 ms: one decimal would print 0.0.
const ms2 = (v: number): string => (Number.isFinite(v) ? v.toFixed(2) : '–');
const ratio = (a: number, b: number): string =>
  Number.isFinite(a) && Number.isFinite(b) && b !== 0 ? `${(a / b).toFixed(2)}×` : '–';

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  return rows
    .map((r) => r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join('   '))
    .join('\n');
}

function verdict(ok: boolean): string {
  return ok ? 'PASS' : 'FAIL';
}

async function main(): Promise<number> {
  const options = parseOptions(process.argv.slice(2));
  if (!options) return 0;
  setTimeout(() => {
    console.error(`bench: time limit of ${options.timeLimitS} s reached; stopping`);
    process.exit(1);
  }, options.timeLimitS * 1000).unref();
  if (options.clampReason)
    log(`WARNING: ${options.hostsRequested} hosts requested, running ${options.hosts}: ${options.clampReason}`);

  const width = String(options.hosts).length;
  const hosts = Array.from({ length: options.hosts }, (_, i) => `bench-${String(i).padStart(width, '0')}`);
  const spread = (count: number): string[] =>
    Array.from({ length: count }, (_, i) => hosts[Math.floor((i * hosts.length) / count)]!);
  const rolloutHosts = spread(options.rolloutHosts);
  const rolloutSet = new Set(rolloutHosts);
  // The isolated sample is spread differently so it does not coincide with wave starts.
  const isolatedHosts = Array.from(
    { length: options.isolated },
    (_, i) => hosts[Math.floor(((i + 0.5) * hosts.length) / options.isolated)]!,
  );

  const adminKey = generateSigningKey('bench-admin');
  const signStarted = Date.now();
  const rollout = rolloutHosts.map((host) => preSign(host, 1, adminKey));
  const isolated = isolatedHosts.map((host) => preSign(host, rolloutSet.has(host) ? 2 : 1, adminKey));
  const signSeconds = (Date.now() - signStarted) / 1000;
  log(
    `pre-signed ${rollout.length + isolated.length} intents with tweetnacl in ${signSeconds.toFixed(1)} s (${((signSeconds * 1000) / (rollout.length + isolated.length)).toFixed(1)} ms each; not part of dispatch)`,
  );

  const results: ServerResult[] = [];
  for (const kind of options.servers) {
    const result = await runServer(kind, options, hosts, rollout, isolated, adminKey);
    // The server has stopped: its frame times are all written.
    const { frames } = result;
    if (frames)
      result.inServer = {
        rollout: serverResidency(frames.file, BigInt(frames.rolloutNs[0]), BigInt(frames.rolloutNs[1])),
        isolated: serverResidency(frames.file, BigInt(frames.isolatedNs[0]), BigInt(frames.isolatedNs[1])),
      };
    results.push(result);
  }

  const machine = {
    nproc: cpus().length,
    cpu: cpus()[0]?.model ?? 'unknown',
    memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    node: process.version,
    platform: `${process.platform} ${process.arch}`,
  };
  const ours = results.find((r) => r.server === 'ours');
  const stock = results.find((r) => r.server === 'stock');

  const lines: string[] = [];
  lines.push('');
  lines.push(
    `Outpost dispatch benchmark: ${options.hosts} hosts (${options.hosts * 2} websockets)${options.clampReason ? ` [requested ${options.hostsRequested}; capped: ${options.clampReason}]` : ''}`,
  );
  lines.push(
    `machine: ${machine.nproc} × ${machine.cpu}, ${machine.memoryGiB} GiB, node ${machine.node}; everything on 127.0.0.1`,
  );
  lines.push(
    `rollout: ${options.rolloutHosts} intents in waves of ${options.wave} (${options.wavePauseMs} ms pause); isolated: ${options.isolated} intents one at a time; agent processes at nice ${options.agentsNice}`,
  );
  lines.push('');
  const header = ['', ...results.map((r) => r.server), ...(ours && stock ? ['ours/stock'] : [])];
  const row = (label: string, pick: (r: ServerResult) => number, format: (v: number) => string): string[] => [
    label,
    ...results.map((r) => format(pick(r))),
    ...(ours && stock ? [ratio(pick(ours), pick(stock))] : []),
  ];
  const kb = (v: number): string => (v / 1000).toFixed(1);
  // --trace-frames: how long the phase's intents were inside each server.
  const inServerRows = (phase: 'rollout' | 'isolated'): string[][] =>
    options.traceFramesDir
      ? [50, 99].map((p) =>
          row(`  in the server p${p} (ms)`, (r) => r.inServer?.[phase]?.[p === 50 ? 'p50' : 'p99'] ?? Number.NaN, ms2),
        )
      : [];
  // Ours' update log: each append's time to durable in the phase, from its /metrics histogram.
  const logAppendRows = (phase: 'rollout' | 'isolated'): string[][] =>
    results.some((r) => r.logAppends)
      ? [
          row('  log append to durable p50 (ms)', (r) => r.logAppends?.[phase].p50Ms ?? Number.NaN, ms2),
          row('  log append to durable mean (ms)', (r) => r.logAppends?.[phase].meanMs ?? Number.NaN, ms2),
        ]
      : [];
  const rows: string[][] = [
    header,
    row('rollout dispatch p50 (ms)', (r) => r.rollout.dispatch.p50, ms),
    row('rollout dispatch p99 (ms)', (r) => r.rollout.dispatch.p99, ms),
    row('  delivery p50 (ms)', (r) => r.rollout.delivery.p50, ms),
    row('  delivery p99 (ms)', (r) => r.rollout.delivery.p99, ms),
    row('  delivery in one process p50 (ms)', (r) => r.rollout.deliveryInProcess.p50, ms),
    row('  delivery in one process p99 (ms)', (r) => r.rollout.deliveryInProcess.p99, ms),
    ...inServerRows('rollout'),
    ...logAppendRows('rollout'),
    row('  verify p50 (ms)', (r) => r.rollout.verify.p50, ms),
    row('  verify p99 (ms)', (r) => r.rollout.verify.p99, ms),
    ...(options.inlineVerify ? [row('  observed in bench p99 (ms)', (r) => r.rollout.observed.p99, ms)] : []),
    row('isolated dispatch p50 (ms)', (r) => r.isolated.dispatch.p50, ms),
    row('isolated dispatch p99 (ms)', (r) => r.isolated.dispatch.p99, ms),
    row('  delivery p50 (ms)', (r) => r.isolated.delivery.p50, ms),
    row('  delivery p99 (ms)', (r) => r.isolated.delivery.p99, ms),
    ...inServerRows('isolated'),
    ...logAppendRows('isolated'),
    row('  verify p99 (ms)', (r) => r.isolated.verify.p99, ms),
    row('  observed in bench p99 (ms)', (r) => r.isolated.observed.p99, ms),
    row('RSS before connections (MB)', (r) => r.rssBeforeKiB * 1.024, kb),
    row('RSS with all hosts (MB)', (r) => r.rssConnectedKiB * 1.024, kb),
    row('memory per host (KB)', (r) => r.bytesPerHost, kb),
    row('  marginal, 2nd half (KB)', (r) => r.marginalBytesPerHost, kb),
    row('  JS heap used (KB)', (r) => r.memoryPerHost.heapUsed, kb),
    row('  JS heap reserved, unused (KB)', (r) => r.memoryPerHost.heapReservedUnused, kb),
    row('    of which new space (KB)', (r) => r.memoryPerHost.newSpace, kb),
    row('  external/Buffers (KB)', (r) => r.memoryPerHost.external, kb),
    row('  native, rest of RSS (KB)', (r) => r.memoryPerHost.native, kb),
    row('RSS after dispatch (MB)', (r) => r.rssAfterDispatchKiB * 1.024, kb),
    row(
      'connect + sync all hosts (s)',
      (r) => r.connectSeconds,
      (v) => v.toFixed(1),
    ),
    row(
      'server CPU: connect (s)',
      (r) => r.cpuSeconds.connect,
      (v) => v.toFixed(1),
    ),
    row(
      'server CPU: rollout (s)',
      (r) => r.cpuSeconds.rollout,
      (v) => v.toFixed(2),
    ),
    row('dispatch failures', (r) => r.failures.length, String),
    row('unexpected disconnects', (r) => r.unexpectedCloses, String),
    row(
      'other load on machine (cores)',
      (r) => r.otherCpu.cores,
      (v) => v.toFixed(2),
    ),
  ];
  lines.push(table(rows));
  lines.push('');
  lines.push(
    "dispatch = delivery (admin's local write → the update reached the host's socket, + that host's own decoding of it and parsing of the",
  );
  lines.push(
    'intents array) + its own verifyIntent. delivery in one process = written → decoded as timed in the agent process, behind the decoding',
  );
  lines.push('of the updates that reached other simulated hosts of the process just before it.');
  lines.push(
    `verifyIntent. ${options.inlineVerify ? 'Rollout verified inline, as intents arrive.' : 'Rollout: agents verify after the whole wave was delivered (one process simulates many hosts; a real host verifies on its own CPU).'}`,
  );
  lines.push(
    'observed = written → verified as timed in one process (no modelling). KB = 1,000 bytes; MB = 10^6 bytes.',
  );
  const targets: { name: string; ok: boolean; detail: string }[] = [];
  if (ours) {
    const note =
      options.hosts === TARGET_HOSTS ? '' : ` (target stated for ${TARGET_HOSTS} hosts; this run has ${options.hosts})`;
    targets.push({
      name: `p99 dispatch latency ≤ ${TARGET_P99_MS} ms, rollout waves`,
      ok: ours.rollout.dispatch.p99 <= TARGET_P99_MS && ours.failures.length === 0,
      detail: `${ms(ours.rollout.dispatch.p99)} ms${note}`,
    });
    targets.push({
      name: `p99 dispatch latency ≤ ${TARGET_P99_MS} ms, one at a time`,
      ok: ours.isolated.dispatch.p99 <= TARGET_P99_MS && ours.failures.length === 0,
      detail: `${ms(ours.isolated.dispatch.p99)} ms${note}`,
    });
    targets.push({
      name: `coordinator memory ≤ ${TARGET_BYTES_PER_HOST / 1000} KB per connected host`,
      ok: ours.bytesPerHost <= TARGET_BYTES_PER_HOST,
      detail: `${kb(ours.bytesPerHost)} KB`,
    });
    lines.push('');
    lines.push('Targets (our coordinator):');
    for (const t of targets) lines.push(`  ${verdict(t.ok)}  ${t.name}: ${t.detail}`);
  }
  for (const r of results) {
    if (r.failures.length > 0)
      lines.push(`${r.server}: ${r.failures.length} failures, first: ${r.failures.slice(0, 3).join('; ')}`);
  }
  console.log(lines.join('\n'));

  const json = {
    bench: 'outpost-dispatch',
    at: new Date().toISOString(),
    hostsRequested: options.hostsRequested,
    hosts: options.hosts,
    capped: options.clampReason,
    machine,
    setup: {
      rolloutIntents: options.rolloutHosts,
      wave: options.wave,
      wavePauseMs: options.wavePauseMs,
      agentsNice: options.agentsNice,
      isolatedIntents: options.isolated,
      connectBatch: options.connectBatch,
      signSeconds,
    },
    targets: Object.fromEntries(targets.map((t) => [t.name, { pass: t.ok, value: t.detail }])),
    results,
    ratios:
      ours && stock
        ? {
            rolloutP50: ours.rollout.dispatch.p50 / stock.rollout.dispatch.p50,
            rolloutP99: ours.rollout.dispatch.p99 / stock.rollout.dispatch.p99,
            isolatedP50: ours.isolated.dispatch.p50 / stock.isolated.dispatch.p50,
            isolatedP99: ours.isolated.dispatch.p99 / stock.isolated.dispatch.p99,
            memoryPerHost: ours.bytesPerHost / stock.bytesPerHost,
          }
        : null,
  };
  console.log(JSON.stringify(json));
  if (options.jsonOut) writeFileSync(options.jsonOut, `${JSON.stringify(json, null, 2)}\n`);
  return 0;
}

main().then(
  (code) => process.exit(code),
  (error: Error) => {
    console.error(`bench: ${error.stack ?? error.message}`);
    process.exit(1);
  },
);
