import { loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import * as Y from 'yjs';
import { type NatsCluster, startNatsCluster } from '../harness/nats-cluster.js';
import {
  type DaemonProcess,
  removeDirectory,
  startCoordinatorProcess,
  temporaryDirectory,
} from '../harness/processes.js';
import { LeanDocClient } from './lean-client.js';
import { percentiles, rssKiB, settledRssKiB } from './measure.js';
import { BENCH_CONNECTION_FLAGS } from './relay-fixtures.js';

// `npm run bench:nats`: dispatch across coordinators on the NATS backend against one coordinator
// on LevelDB, in the same run. N simulated hosts each hold their desired document open; on NATS
// half of them are on coordinator A and half on B, and the admin writes through A, so half the
// deliveries cross coordinators (through the stream). On LevelDB all are on the one coordinator.
// Measured: write → host latency one write at a time (p50/p99, cross-coordinator ones apart),
// intents per second with `--burst` writers writing at once (rounds until every host has it),
// and coordinator RSS per host. A 3-node cluster with stream R=3 on this same machine.
// `--pair-only` skips the third run (one coordinator on NATS holding every host).

const { values } = parseArgs({
  options: {
    hosts: { type: 'string', default: '1000' },
    writes: { type: 'string', default: '300' },
    burst: { type: 'string', default: '500' },
    rounds: { type: 'string', default: '5' },
    'pair-only': { type: 'boolean', default: false },
  },
});
const HOSTS = Number(values.hosts);
const WRITES = Number(values.writes);
const BURST = Math.min(Number(values.burst), HOSTS);
const ROUNDS = Number(values.rounds);
const dir = temporaryDirectory('bench-nats');
const daemons: DaemonProcess[] = [];

async function startCoordinator(name: string, extra: string[]): Promise<DaemonProcess & { url: string }> {
  const daemon = await startCoordinatorProcess(
    join(dir, name),
    join(dir, `${name}.log`),
    0,
    ['--log-level', 'warn', '--idle-unload', '3600', ...BENCH_CONNECTION_FLAGS, ...extra],
    {},
    60_000,
  );
  daemons.push(daemon);
  return daemon;
}

interface Run {
  label: string;
  all: ReturnType<typeof percentiles>;
  crossing: ReturnType<typeof percentiles> | null;
  kibPerHost: number;
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
  pids: number[],
): Promise<Run> {
  const before = (await Promise.all(pids.map((pid) => settledRssKiB(pid)))).reduce((a, b) => a + b, 0);
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
  const after = (await Promise.all(pids.map((pid) => settledRssKiB(pid)))).reduce((a, b) => a + b, 0);
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
    kibPerHost: (after - before) / HOSTS,
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
  const levelRun = await measure('1 coordinator, LevelDB', 'l', level.url, [level.url], [level.child.pid!]);
  await level.stop();
  cluster = await startNatsCluster(join(dir, 'nats'), 3);
  const a = await startCoordinator('a', ['--backend', cluster.backend]);
  const b = await startCoordinator('b', ['--backend', cluster.backend]);
  const natsRun = await measure('2 coordinators, NATS R=3', 'n', a.url, [a.url, b.url], [a.child.pid!, b.child.pid!]);
  const natsRss = rssKiB(a.child.pid!) + rssKiB(b.child.pid!);
  await Promise.all([a.stop(), b.stop()]);
  const runs = [levelRun, natsRun];
  if (!values['pair-only']) {
    // The same backend in one process: separates what NATS costs from what a second process costs.
    const single = await startCoordinator('single', ['--backend', cluster.backend]);
    runs.push(await measure('1 coordinator, NATS R=3', 's', single.url, [single.url], [single.child.pid!]));
  }
  const fmt = (p: ReturnType<typeof percentiles> | null): string =>
    p ? `p50 ${p.p50.toFixed(1)} ms, p99 ${p.p99.toFixed(1)} ms (${p.count})` : '—';
  console.log(
    `\n${HOSTS} hosts, ${WRITES} writes one at a time (write through A, host notified); ` +
      `${ROUNDS} rounds of ${BURST} writes at once for intents/s; load average at the end: ${load()}`,
  );
  for (const run of runs)
    console.log(
      `${run.label.padEnd(26)} all: ${fmt(run.all)}; crossing coordinators: ${fmt(run.crossing)}; ` +
        `${run.writesPerSecond.toFixed(0)} writes/s one at a time; ${run.intentsPerSecond.toFixed(0)} intents/s at once; ` +
        `${run.kibPerHost.toFixed(1)} KiB RSS per host`,
    );
  const ratio = (run: Run): string =>
    `p99 ${(run.all.p99 / levelRun.all.p99).toFixed(2)}×, memory per host ${(run.kibPerHost / levelRun.kibPerHost).toFixed(2)}×, intents/s ${(run.intentsPerSecond / levelRun.intentsPerSecond).toFixed(2)}×`;
  console.log(
    `ratios to LevelDB: 2 on NATS ${ratio(natsRun)} (their RSS was ${(natsRss / 1024).toFixed(0)} MiB)` +
      (runs[2] ? `; 1 on NATS ${ratio(runs[2])}` : ''),
  );
} finally {
  await Promise.all(daemons.map((d) => d.stop('SIGKILL')));
  await cluster?.close();
  removeDirectory(dir);
}
