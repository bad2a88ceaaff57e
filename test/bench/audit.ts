import { availableParallelism, loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { Worker } from 'node:worker_threads';
import nacl from 'tweetnacl';
import { auditHistory } from '../../shared/audit/history.js';
import { replayDocument } from '../../shared/audit/replay.js';
import { generateSigningKey } from '../../shared/crypto/keys.js';
import { type DetachedVerify, useEd25519Verifier } from '../../shared/crypto/signatures.js';
import { auditInParallel } from '../../shared/node/audit-workers.js';
import { nodeEd25519Verify, nodeSignPayload } from '../../shared/node/ed25519.js';
import { closureOf, FleetHistory } from '../harness/audit-history.js';
import { basePolicy, makeTestOrg, signPolicy } from '../harness/policy-fixtures.js';

// Replay and verify a synthetic fleet history (issue 13: 10^6 updates in ≤ 10 s on 2 cores).
// Every update carries one signed entry: per host, cycles of one intent, one result and eight
// status changes. Measured in one run, against each other:
// - replay alone (no signature, no parsing);
// - the full audit in one thread with Node's Ed25519 (the peer for the parallel figure);
// - the full audit over worker threads (what `outpost audit verify` runs), with Node's Ed25519;
// - the full audit with tweetnacl, the core's default, on a slice of the hosts (two orders slower);
// - raw verify rates of Node and tweetnacl on identical messages, and Node's across the threads.
// Usage: npm run bench:audit -- [--updates N] [--hosts N] [--nacl-hosts N] [--workers N] [--skip-single]
const { values } = parseArgs({
  options: {
    updates: { type: 'string', default: '50000' },
    hosts: { type: 'string', default: '100' },
    'nacl-hosts': { type: 'string', default: '1' },
    workers: { type: 'string', default: String(availableParallelism()) },
    'skip-single': { type: 'boolean', default: false },
  },
});
const targetUpdates = Number(values.updates);
const hostCount = Number(values.hosts);
const naclHosts = Number(values['nacl-hosts']);
const workers = Number(values.workers);
const STATUSES_PER_CYCLE = 8;
const loadAtStart = loadavg().map((l) => Number(l.toFixed(2)));

const org = makeTestOrg();
const history = new FleetHistory(nodeSignPayload);
const started = performance.now();
history.policy(signPolicy(basePolicy(org, { issuedAt: history.now() }), org.root));
const hostKeys = Array.from({ length: hostCount }, (_, i) => generateSigningKey(`h${i}`));
for (const [i, key] of hostKeys.entries()) history.enroll(`h${i}`, key.publicKey, org.alice);
const perHost = Math.ceil(targetUpdates / hostCount);
for (let i = 0; i < hostCount; i += 1) {
  const host = `h${i}`;
  const key = hostKeys[i]!;
  let written = 0;
  let statusSeq = 0;
  for (let generation = 1; written < perHost; generation += 1) {
    const { digest } = history.intent(host, generation, closureOf(generation), [org.alice]);
    history.result(host, key, { seq: generation, generation, closure: closureOf(generation), intentDigest: digest });
    written += 2;
    for (let s = 0; s < STATUSES_PER_CYCLE && written < perHost; s += 1, written += 1) {
      statusSeq += 1;
      history.status(
        host,
        key,
        statusSeq,
        { generation, closure: closureOf(generation) },
        { lastResultSeq: generation },
      );
    }
  }
  // The generator's own documents are not needed once their entries are logged.
  for (const name of [`hosts/${host}/desired`, `hosts/${host}/status`]) history.docs.get(name)?.doc.destroy();
}
const source = history.source();
const totalEntries = [...history.docs.values()].reduce((n, d) => n + d.entries.length, 0);
const generatedSeconds = (performance.now() - started) / 1000;

let verifications = 0;
const counting =
  (verify: DetachedVerify): DetachedVerify =>
  (m, s, p) => {
    verifications += 1;
    return verify(m, s, p);
  };

// Wall time, and CPU time of the whole process (every thread): on a machine shared with other
// jobs the wall time stretches with the load, the CPU time much less.
async function time<T>(run: () => T | Promise<T>): Promise<{ value: T; seconds: number; cpuSeconds: number }> {
  const t = performance.now();
  const cpu = process.cpuUsage();
  const value = await run();
  const used = process.cpuUsage(cpu);
  return { value, seconds: (performance.now() - t) / 1000, cpuSeconds: (used.user + used.system) / 1e6 };
}

// 1. Replay alone: every document's updates applied one by one, gc off.
const replay = await time(() => {
  let n = 0;
  for (const name of source.documents)
    replayDocument(
      source.entries(name),
      { arrays: ['intents', 'results', 'policies', 'enrollments'], maps: ['status'] },
      () => {
        n += 1;
      },
    ).destroy();
  return n;
});

// 2. The full audit (hash chain, replay, every signature) in this thread, Node's Ed25519.
useEd25519Verifier(counting(nodeEd25519Verify));
const single = values['skip-single']
  ? null
  : await time(() => auditHistory(source, { orgRootKeys: [org.root.publicKey], keepEvent: () => false }));
const nodeVerifications = verifications;
if (single?.value.anomalies.length)
  throw new Error(`synthetic history has anomalies: ${JSON.stringify(single.value.anomalies.slice(0, 3))}`);

// 3. The same audit over worker threads.
const parallel = await time(() =>
  auditInParallel(source, { orgRootKeys: [org.root.publicKey], keepEvents: false, workers }),
);
if (parallel.value.anomalies.length)
  throw new Error(`synthetic history has anomalies: ${JSON.stringify(parallel.value.anomalies.slice(0, 3))}`);
// Verifications in the workers are not counted there: one pass verifies one signature per signed
// entry and a second one per intent signature (its signer view), as counted in step 2.
const signaturesPerEntry = single ? nodeVerifications / single.value.entries : null;

// 4. The same audit with tweetnacl, on a slice of the hosts.
verifications = 0;
useEd25519Verifier(counting(nacl.sign.detached.verify));
const slice = Array.from({ length: naclHosts }, (_, i) => `h${i}`);
const naclRun = await time(() =>
  auditHistory(source, { orgRootKeys: [org.root.publicKey], hosts: slice, keepEvent: () => false }),
);
const naclVerifications = verifications;
useEd25519Verifier(null);

// 5. Raw verify rates on identical messages: each library in this thread, Node's in N threads.
const message = new Uint8Array(400).fill(7);
const pair = nacl.sign.keyPair();
const signature = nacl.sign.detached(message, pair.secretKey);
const rate = (verify: DetachedVerify, n: number): number => {
  const t = performance.now();
  for (let i = 0; i < n; i += 1) if (!verify(message, signature, pair.publicKey)) throw new Error('verify failed');
  return n / ((performance.now() - t) / 1000);
};
const rawCpu = process.cpuUsage();
const nodeRaw = rate(nodeEd25519Verify, 10_000);
const rawUsed = process.cpuUsage(rawCpu);
const nodeRawCpuMicros = (rawUsed.user + rawUsed.system) / 10_000;
const naclRaw = rate(nacl.sign.detached.verify, 300);
const RAW_PER_WORKER = 20_000;
const rawParallel = await time(() =>
  Promise.all(
    Array.from(
      { length: workers },
      () =>
        new Promise<void>((resolve, reject) => {
          const worker = new Worker(new URL('./audit-verify-worker.js', import.meta.url), {
            workerData: { message, signature, publicKey: pair.publicKey, count: RAW_PER_WORKER },
          });
          worker.once('message', () => void worker.terminate().then(() => resolve()));
          worker.once('error', reject);
        }),
    ),
  ),
);

const perSecond = (n: number, s: number): number => Math.round(n / s);
const cpuMicrosPerUpdate = (run: { cpuSeconds: number }, entries: number): number =>
  Math.round((run.cpuSeconds * 1e6) / entries);
const extrapolate = (seconds: number, entries: number): number => Number(((seconds * 1e6) / entries).toFixed(1));
const figures = {
  command: `npm run bench:audit -- ${process.argv.slice(2).join(' ')}`.trim(),
  cpus: availableParallelism(),
  workers,
  loadAverageAtStart: loadAtStart,
  loadAverageAtEnd: loadavg().map((l) => Number(l.toFixed(2))),
  entries: totalEntries,
  hosts: hostCount,
  generationSeconds: Number(generatedSeconds.toFixed(1)),
  replayOnly: {
    seconds: Number(replay.seconds.toFixed(2)),
    updatesPerSecond: perSecond(replay.value, replay.seconds),
    cpuMicrosecondsPerUpdate: cpuMicrosPerUpdate(replay, replay.value),
  },
  auditOneThread: single && {
    seconds: Number(single.seconds.toFixed(2)),
    updatesPerSecond: perSecond(single.value.entries, single.seconds),
    signaturesVerified: nodeVerifications,
    signaturesPerSecond: perSecond(nodeVerifications, single.seconds),
    extrapolatedSecondsFor1e6Updates: extrapolate(single.seconds, single.value.entries),
    cpuMicrosecondsPerUpdate: cpuMicrosPerUpdate(single, single.value.entries),
  },
  auditWorkers: {
    seconds: Number(parallel.seconds.toFixed(2)),
    updatesPerSecond: perSecond(parallel.value.entries, parallel.seconds),
    signaturesPerSecond:
      signaturesPerEntry === null ? null : perSecond(parallel.value.entries * signaturesPerEntry, parallel.seconds),
    extrapolatedSecondsFor1e6Updates: extrapolate(parallel.seconds, parallel.value.entries),
    speedupOverOneThread: single ? Number((single.seconds / parallel.seconds).toFixed(2)) : null,
    cpuMicrosecondsPerUpdate: cpuMicrosPerUpdate(parallel, parallel.value.entries),
    // What the CPU time would take on idle cores, with the hosts evenly split.
    idleEstimateSecondsFor1e6Updates: Number(
      ((parallel.cpuSeconds * 1e6) / parallel.value.entries / Math.min(workers, availableParallelism())).toFixed(1),
    ),
  },
  auditTweetnacl: {
    hosts: naclHosts,
    entries: naclRun.value.entries,
    seconds: Number(naclRun.seconds.toFixed(2)),
    updatesPerSecond: perSecond(naclRun.value.entries, naclRun.seconds),
    signaturesPerSecond: perSecond(naclVerifications, naclRun.seconds),
    extrapolatedSecondsFor1e6Updates: extrapolate(naclRun.seconds, naclRun.value.entries),
    cpuMicrosecondsPerUpdate: cpuMicrosPerUpdate(naclRun, naclRun.value.entries),
  },
  rawVerifyPerSecond: {
    node: Math.round(nodeRaw),
    tweetnacl: Math.round(naclRaw),
    nodeOverTweetnacl: Number((nodeRaw / naclRaw).toFixed(1)),
    nodeInWorkers: perSecond(workers * RAW_PER_WORKER, rawParallel.seconds),
    nodeCpuMicrosecondsPerVerify: Math.round(nodeRawCpuMicros),
  },
};
console.log(JSON.stringify(figures, null, 2));
