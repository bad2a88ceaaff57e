import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import * as Y from 'yjs';
import { sleep } from '../../shared/time/sleep.js';
import { type NatsCluster, startNatsCluster } from '../harness/nats-cluster.js';
import {
  type DaemonProcess,
  removeDirectory,
  startCoordinatorProcess,
  temporaryDirectory,
} from '../harness/processes.js';
import { LeanDocClient } from './lean-client.js';
import { percentiles, rssKiB, settledRssKiB } from './measure.js';
import type { MemoryProbe } from './memory-probe.js';
import { BENCH_CONNECTION_FLAGS } from './relay-fixtures.js';

// `npm run bench:nats`: dispatch across coordinators on the NATS backend against one coordinator
// on LevelDB, in the same run. N simulated hosts each hold their desired document open; on NATS
// half of them are on coordinator A and half on B, and the admin writes through A, so half the
// deliveries cross coordinators (through the stream). On LevelDB all are on the one coordinator.
// Measured: write → host latency one write at a time (p50/p99, cross-coordinator ones apart),
// intents per second with `--burst` writers writing at once (rounds until every host has it),
// and coordinator RSS per host. A 3-node cluster with stream R=3 on this same machine.
// `--pair-only` skips the third run (one coordinator on NATS holding every host).
// Memory is read two ways, both as the growth from before the hosts connect to after, summed over
// the run's coordinators and divided by the hosts: RSS as the process stands (median of 5
// readings 0.4 s apart: what earlier runs reported), and RSS right after two full garbage
// collections inside each coordinator (median of 3; the probe preloaded with --import,
// memory-probe.ts), which does not depend on how much garbage each process happened to hold at
// the reading. The second also gives the live JS heap per host, and the RSS less V8's young
// generation: its size (1 to 32 MiB per process) follows the process's recent allocation rate,
// grows and shrinks (full GCs in an idle process shrink it), whatever the number of hosts, and
// in two processes it moved the per-host figure by up to 3 KiB at 10,000 hosts either way.
// `--warm-up N` first connects N other hosts (spread over the coordinators as the measured ones),
// syncs and closes them, and only then takes the reading before: a process that has not yet grown
// V8's young generation to its maximum (32 MiB, once, whatever the number of hosts) charges that
// growth to the hosts, and whether it had already grown during start-up differs between processes
// and runs. The same warm-up runs for every configuration of the run. Default 0 (earlier runs).
// `--heap-snapshot DIR` writes a heap snapshot of every coordinator before and after the hosts
// connect (node dist/test/bench/heap-summary.js AFTER HOSTS --base BEFORE); the snapshots
// themselves grow RSS, so memory figures of such a run are not comparable.
// Env OUTPOST_BENCH_SERVER_NODE_ARGS: extra node flags for the coordinators (through NODE_OPTIONS),
// e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof".

const { values } = parseArgs({
  options: {
    hosts: { type: 'string', default: '1000' },
    writes: { type: 'string', default: '300' },
    burst: { type: 'string', default: '500' },
    rounds: { type: 'string', default: '5' },
    'pair-only': { type: 'boolean', default: false },
    'heap-snapshot': { type: 'string' },
    'warm-up': { type: 'string', default: '0' },
  },
});
const WARM_UP = Number(values['warm-up']);
const SNAPSHOT_DIR = values['heap-snapshot'] ? resolve(values['heap-snapshot']) : null;
const MEMORY_PROBE = new URL('./memory-probe.js', import.meta.url).href;
const HOSTS = Number(values.hosts);
const WRITES = Number(values.writes);
const BURST = Math.min(Number(values.burst), HOSTS);
const ROUNDS = Number(values.rounds);
const dir = temporaryDirectory('bench-nats');
const daemons: DaemonProcess[] = [];

interface Coordinator extends DaemonProcess {
  url: string;
  name: string;
  probe(): Promise<MemoryProbe>;
}

async function startCoordinator(name: string, extra: string[]): Promise<Coordinator> {
  const probeFile = join(dir, `${name}-memory.jsonl`);
  const nodeOptions = [
    process.env.NODE_OPTIONS ?? '',
    `--import ${MEMORY_PROBE}`,
    process.env.OUTPOST_BENCH_SERVER_NODE_ARGS ?? '',
    SNAPSHOT_DIR ? `--heapsnapshot-signal=SIGUSR2 --diagnostic-dir=${SNAPSHOT_DIR}` : '',
  ]
    .filter(Boolean)
    .join(' ');
  const daemon = await startCoordinatorProcess(
    join(dir, name),
    join(dir, `${name}.log`),
    0,
    ['--log-level', 'warn', '--idle-unload', '3600', ...BENCH_CONNECTION_FLAGS, ...extra],
    { NODE_OPTIONS: nodeOptions, OUTPOST_BENCH_MEMORY_PROBE: probeFile, OUTPOST_BENCH_MEMORY_PROBE_GC: '1' },
    60_000,
  );
  const pid = daemon.child.pid!;
  const lines = (): string[] =>
    existsSync(probeFile) ? readFileSync(probeFile, 'utf8').split('\n').filter(Boolean) : [];
  const coordinator = Object.assign(daemon, {
    name,
    async probe(): Promise<MemoryProbe> {
      const before = lines().length;
      process.kill(pid, 'SIGWINCH');
      const deadline = Date.now() + 60_000;
      while (Date.now() < deadline) {
        await sleep(50);
        const now = lines();
        if (now.length > before) return JSON.parse(now[now.length - 1]!) as MemoryProbe;
      }
      throw new Error(`coordinator ${name} did not answer the memory probe`);
    },
  });
  daemons.push(coordinator);
  return coordinator;
}

interface MemoryReading {
  // RSS as it stands, median of 5 readings (KiB, summed over the coordinators).
  rssKiB: number;
  // RSS right after full GCs, median of 3 probes per coordinator (KiB, summed).
  gcRssKiB: number;
  // The same less V8's young generation (its committed size): see the comment at the top.
  gcRssOutsideYoungKiB: number;
  // JS heap used after those GCs (KiB, summed).
  heapUsedKiB: number;
  externalKiB: number;
  // Per coordinator, after GC: RSS, V8 heap reserved, of which the young generation, heap used (MiB).
  detail: string[];
}

const median = (values: number[]): number => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;

async function readMemory(coordinators: Coordinator[]): Promise<MemoryReading> {
  const rss = await Promise.all(coordinators.map((c) => settledRssKiB(c.child.pid!)));
  const reading: MemoryReading = {
    rssKiB: 0,
    gcRssKiB: 0,
    gcRssOutsideYoungKiB: 0,
    heapUsedKiB: 0,
    externalKiB: 0,
    detail: [],
  };
  for (const [i, coordinator] of coordinators.entries()) {
    reading.rssKiB += rss[i]!;
    const probes: MemoryProbe[] = [];
    for (let n = 0; n < 3; n += 1) {
      if (n > 0) await sleep(300);
      probes.push(await coordinator.probe());
    }
    reading.gcRssKiB += median(probes.map((p) => p.rss)) / 1024;
    const youngOf = (p: MemoryProbe): number => p.spaces.find((space) => space.name === 'new_space')?.size ?? 0;
    reading.gcRssOutsideYoungKiB += median(probes.map((p) => p.rss - youngOf(p))) / 1024;
    reading.heapUsedKiB += median(probes.map((p) => p.heapUsed)) / 1024;
    reading.externalKiB += median(probes.map((p) => p.external)) / 1024;
    const last = probes.at(-1)!;
    const mib = (bytes: number): string => (bytes / 2 ** 20).toFixed(1);
    const young = youngOf(last);
    reading.detail.push(
      `${coordinator.name}: RSS ${mib(last.rss)}, heap total ${mib(last.heapTotal)} (young ${mib(young)}), used ${mib(last.heapUsed)}, external ${mib(last.external)} MiB`,
    );
  }
  return reading;
}

// One heap snapshot per coordinator (SIGUSR2 with --heapsnapshot-signal), named after it.
async function heapSnapshots(coordinators: Coordinator[], label: string): Promise<void> {
  if (!SNAPSHOT_DIR) return;
  for (const coordinator of coordinators) {
    const pid = coordinator.child.pid!;
    const mine = (): string[] =>
      readdirSync(SNAPSHOT_DIR).filter((f) => f.includes(`.${pid}.`) && f.endsWith('.heapsnapshot'));
    const before = mine().length;
    process.kill(pid, 'SIGUSR2');
    const deadline = Date.now() + 300_000;
    while (mine().length === before && Date.now() < deadline) await sleep(500);
    // Written once its size stops changing.
    await sleep(5000);
    console.log(`heap snapshot of ${coordinator.name} (${label}): ${mine().sort().at(-1)}`);
  }
}

interface Run {
  label: string;
  all: ReturnType<typeof percentiles>;
  crossing: ReturnType<typeof percentiles> | null;
  kibPerHost: number;
  gcKibPerHost: number;
  outsideYoungKibPerHost: number;
  heapKibPerHost: number;
  externalKibPerHost: number;
  writesPerSecond: number;
  intentsPerSecond: number;
}

function delivery(
  pending: Map<string, { started: bigint; resolve: (ns: bigint) => void }>,
  name: string,
): Promise<bigint> {
  return new Promise<bigint>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${name}: not delivered in 60 s`)), 60_000);
    pending.set(name, {
      started: process.hrtime.bigint(),
      resolve: (ns) => {
        clearTimeout(timer);
        resolve(ns);
      },
    });
  });
}

async function measure(
  label: string,
  prefix: string,
  writerUrl: string,
  hostUrls: string[],
  coordinators: Coordinator[],
): Promise<Run> {
  if (WARM_UP > 0) {
    const warmUp: LeanDocClient[] = [];
    for (let i = 0; i < WARM_UP; i += 1) {
      const name = `hosts/${prefix}w${i}/desired`;
      warmUp.push(new LeanDocClient({ serverUrl: hostUrls[i % hostUrls.length]!, name, doc: new Y.Doc() }));
      if (i % 100 === 99) await Promise.all(warmUp.slice(-100).map((h) => h.whenSynced()));
    }
    await Promise.all(warmUp.map((h) => h.whenSynced()));
    for (const client of warmUp) client.close();
    await sleep(2000);
  }
  const before = await readMemory(coordinators);
  await heapSnapshots(coordinators, 'before the hosts');
  const pending = new Map<string, { started: bigint; resolve: (ns: bigint) => void }>();
  const hosts: LeanDocClient[] = [];
  for (let i = 0; i < HOSTS; i += 1) {
    const name = `hosts/${prefix}${i}/desired`;
    const doc = new Y.Doc();
    hosts.push(
      new LeanDocClient({
        serverUrl: hostUrls[i % hostUrls.length]!,
        name,
        doc,
        onRemoteApplied: (receivedNs) => {
          const waiting = pending.get(name);
          if (waiting) {
            pending.delete(name);
            waiting.resolve(receivedNs - waiting.started);
          }
        },
      }),
    );
    if (i % 100 === 99) await Promise.all(hosts.slice(-100).map((h) => h.whenSynced()));
  }
  await Promise.all(hosts.map((h) => h.whenSynced()));
  const after = await readMemory(coordinators);
  console.log(`${label}: memory after full GC, before the hosts: ${before.detail.join('; ')}`);
  console.log(`${label}: memory after full GC, hosts connected: ${after.detail.join('; ')}`);
  await heapSnapshots(coordinators, 'with every host connected');
  // The admin's connections are opened before the clock starts: only dispatch is timed.
  const writers = new Map<string, LeanDocClient>();
  for (let n = 0; n < Math.min(Math.max(WRITES, BURST), HOSTS); n += 1) {
    const name = `hosts/${prefix}${n}/desired`;
    const writer = new LeanDocClient({ serverUrl: writerUrl, name, doc: new Y.Doc() });
    writers.set(name, writer);
    await writer.whenSynced();
  }
  const all: number[] = [];
  const crossing: number[] = [];
  const started = performance.now();
  for (let n = 0; n < WRITES; n += 1) {
    const index = n % HOSTS;
    const name = `hosts/${prefix}${index}/desired`;
    const writer = writers.get(name)!;
    const delivered = delivery(pending, name);
    writer.doc.getArray('intents').push([`intent ${n}`]);
    const ms = Number(await delivered) / 1e6;
    all.push(ms);
    if (hostUrls[index % hostUrls.length] !== writerUrl) crossing.push(ms);
  }
  const seconds = (performance.now() - started) / 1000;
  // Throughput: BURST writers (hosts spread over the coordinators as above) each write one intent
  // at once; a round ends when every host has its intent.
  const burstWriters = [...writers].slice(0, BURST);
  const burstStarted = performance.now();
  for (let round = 0; round < ROUNDS; round += 1) {
    const deliveries = burstWriters.map(([name]) => delivery(pending, name));
    for (const [, writer] of burstWriters) writer.doc.getArray('intents').push([`burst ${round}`]);
    await Promise.all(deliveries);
  }
  const intentsPerSecond = (BURST * ROUNDS) / ((performance.now() - burstStarted) / 1000);
  for (const client of [...hosts, ...writers.values()]) client.close();
  return {
    label,
    all: percentiles(all),
    crossing: crossing.length > 0 ? percentiles(crossing) : null,
    kibPerHost: (after.rssKiB - before.rssKiB) / HOSTS,
    gcKibPerHost: (after.gcRssKiB - before.gcRssKiB) / HOSTS,
    outsideYoungKibPerHost: (after.gcRssOutsideYoungKiB - before.gcRssOutsideYoungKiB) / HOSTS,
    heapKibPerHost: (after.heapUsedKiB - before.heapUsedKiB) / HOSTS,
    externalKibPerHost: (after.externalKiB - before.externalKiB) / HOSTS,
    writesPerSecond: WRITES / seconds,
    intentsPerSecond,
  };
}

let cluster: NatsCluster | null = null;
const load = (): string =>
  loadavg()
    .map((l) => l.toFixed(1))
    .join(' ');
try {
  console.log(`load average at start: ${load()}`);
  const level = await startCoordinator('level', []);
  const levelRun = await measure('1 coordinator, LevelDB', 'l', level.url, [level.url], [level]);
  await level.stop();
  cluster = await startNatsCluster(join(dir, 'nats'), 3);
  const a = await startCoordinator('a', ['--backend', cluster.backend]);
  const b = await startCoordinator('b', ['--backend', cluster.backend]);
  const natsRun = await measure('2 coordinators, NATS R=3', 'n', a.url, [a.url, b.url], [a, b]);
  const natsRss = rssKiB(a.child.pid!) + rssKiB(b.child.pid!);
  await Promise.all([a.stop(), b.stop()]);
  const runs = [levelRun, natsRun];
  if (!values['pair-only']) {
    // The same backend in one process: separates what NATS costs from what a second process costs.
    const single = await startCoordinator('single', ['--backend', cluster.backend]);
    runs.push(await measure('1 coordinator, NATS R=3', 's', single.url, [single.url], [single]));
  }
  const fmt = (p: ReturnType<typeof percentiles> | null): string =>
    p ? `p50 ${p.p50.toFixed(1)} ms, p99 ${p.p99.toFixed(1)} ms (${p.count})` : '—';
  console.log(
    `\n${HOSTS} hosts (warm-up ${WARM_UP}), ${WRITES} writes one at a time (write through A, host notified); ` +
      `${ROUNDS} rounds of ${BURST} writes at once for intents/s; load average at the end: ${load()}`,
  );
  for (const run of runs)
    console.log(
      `${run.label.padEnd(26)} all: ${fmt(run.all)}; crossing coordinators: ${fmt(run.crossing)}; ` +
        `${run.writesPerSecond.toFixed(0)} writes/s one at a time; ${run.intentsPerSecond.toFixed(0)} intents/s at once; ` +
        `${run.kibPerHost.toFixed(1)} KiB RSS per host; after full GC: ${run.gcKibPerHost.toFixed(1)} KiB RSS ` +
        `(${run.outsideYoungKibPerHost.toFixed(1)} outside the young generation), ` +
        `${run.heapKibPerHost.toFixed(1)} KiB JS heap, ${run.externalKibPerHost.toFixed(1)} KiB external per host`,
    );
  const ratio = (run: Run): string =>
    `p99 ${(run.all.p99 / levelRun.all.p99).toFixed(2)}×, memory per host ${(run.kibPerHost / levelRun.kibPerHost).toFixed(2)}× ` +
    `(after full GC: RSS ${(run.gcKibPerHost / levelRun.gcKibPerHost).toFixed(2)}×, ` +
    `outside the young generation ${(run.outsideYoungKibPerHost / levelRun.outsideYoungKibPerHost).toFixed(2)}×, JS heap ${(run.heapKibPerHost / levelRun.heapKibPerHost).toFixed(2)}×), ` +
    `intents/s ${(run.intentsPerSecond / levelRun.intentsPerSecond).toFixed(2)}×`;
  console.log(
    `ratios to LevelDB: 2 on NATS ${ratio(natsRun)} (their RSS was ${(natsRss / 1024).toFixed(0)} MiB)` +
      (runs[2] ? `; 1 on NATS ${ratio(runs[2])}` : ''),
  );
} finally {
  await Promise.all(daemons.map((d) => d.stop('SIGKILL')));
  await cluster?.close();
  removeDirectory(dir);
}
