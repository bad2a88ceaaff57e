import { type ChildProcess, spawn } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { promises as fs, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as Y from 'yjs';
import { startCoordinator } from '../../coordinator/server.js';
import type { SigningKey } from '../../shared/crypto/keys.js';
import { useEd25519Verifier } from '../../shared/crypto/signatures.js';
import { readIntentEntries } from '../../shared/documents/desired.js';
import { desiredDocName, statusDocName } from '../../shared/documents/names.js';
import { appendResult } from '../../shared/documents/status.js';
import { installNodeEd25519 } from '../../shared/node/ed25519.js';
import { writeKeyFile } from '../../shared/node/key-file.js';
import { createLogger } from '../../shared/node/log.js';
import { forgetParsedEntries, readRolloutEntries, rolloutDocName } from '../../shared/rollout/document.js';
import { decideFromDocument } from '../../shared/rollout/judge.js';
import { forgetVerifiedSignatures } from '../../shared/rollout/verify.js';
import type { Policy } from '../../shared/schemas/policy.js';
import type { Result } from '../../shared/schemas/report.js';
import { challengeResponseSchema } from '../../shared/sync/auth-proof.js';
import { httpBaseFromWs } from '../../shared/sync/reconnect.js';
import { sleep } from '../../shared/time/sleep.js';
import { intentDigest } from '../../shared/trust/verify-intent.js';
import { basePolicy, makeTestOrg, postJson, pushPolicy, signPolicy } from '../harness/policy-fixtures.js';
import { waitFor } from '../harness/processes.js';
import { signFast } from '../harness/rollout-fixtures.js';
import { LeanDocClient } from './lean-client.js';
import { cpuSeconds, machineCpuSeconds } from './measure.js';
import { BENCH_CONNECTION_FLAGS } from './relay-fixtures.js';

// `npm run bench:rollout` (and the rollout section of `npm run bench`): a 3-wave rollout to
// 1,000 simulated hosts that report success, against one real `outpost coordinator` process
// under a policy (--org-root). See docs/performance.md, "Rollouts".
//
// Orchestration = from starting `outpost rollout create` until the last host of the last wave has
// its rollout intent, minus the soak times of the gates before it. Each simulated host holds its
// desired and status documents (two authenticated websockets); when its rollout intent arrives
// it follows the rollout's document, as an agent does, and reports a signed `applied` result.
// Evidence check = one agent of the last wave judging its gate from the document: the plan and
// 300 host-signed results of the wave before, from a fresh copy (parse, digests, signatures).

const OUTPOST_CLI = fileURLToPath(new URL('../../cli/outpost.js', import.meta.url));
const TARGET_PER_WAVE_MS = 1000;
const TARGET_CHECK_MS = 100;
const CPU_SAMPLE_MS = 20;
const CLOSURE = '/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-bench';

const USAGE = `Usage: npm run bench:rollout -- [options]

  --hosts N         simulated hosts (default 1000), in waves of 10 %, 30 % and 60 %
  --soak S          soak seconds of each gate (default 1)
  --checks N        evidence checks timed (default 20)
  --no-follow       hosts report without opening the rollout's document first (orchestration
                    alone, without serving every host the plan)
  --wait-quiet S    first wait up to S seconds for the machine's load average to fall below 1.5
                    (default 0: start at once; the load is printed with the result either way)
  --cpu-prof DIR    CPU-profile the coordinator and the rollout create process into DIR
  --json-out FILE   also write the result as JSON`;

interface BenchHost {
  host: string;
  key: SigningKey;
  wave: number;
  desired: LeanDocClient | null;
  status: LeanDocClient | null;
  deliveredMs: number | null;
  reportedMs: number | null;
}

// `outpost coordinator` with node flags of our choosing (a CPU profile); output kept for the log.
function startNodeDaemon(
  args: string[],
  logFile: string,
): { child: ChildProcess; logs(): string; stop(): Promise<void> } {
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let text = '';
  const keep = (d: Buffer): void => {
    text += d.toString();
    if (text.length > 4_000_000) text = text.slice(-2_000_000);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  const exited = new Promise<void>((resolve) => child.on('close', () => resolve()));
  return {
    child,
    logs: () => text,
    async stop() {
      writeFileSync(logFile, text);
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}

function nodeKey(name: string): SigningKey {
  const { publicKey, privateKey } = generateKeyPairSync('ed25519');
  const seed = privateKey.export({ format: 'der', type: 'pkcs8' }).subarray(-32);
  const pub = publicKey.export({ format: 'der', type: 'spki' }).subarray(-32);
  const secretKey = new Uint8Array(64);
  secretKey.set(seed, 0);
  secretKey.set(pub, 32);
  return { name, publicKey: pub.toString('base64'), secretKey };
}

async function proofParams(serverUrl: string, key: SigningKey, document: string): Promise<Record<string, string>> {
  const response = await fetch(`${httpBaseFromWs(serverUrl)}/auth/challenge`);
  const { challenge } = challengeResponseSchema.parse(await response.json());
  const signature = signFast('auth', { challenge, document, principal: key.publicKey }, key);
  return { principal: key.publicKey, challenge, signature: signature.signature };
}

async function connect(
  serverUrl: string,
  key: SigningKey,
  name: string,
  doc: Y.Doc,
  onRemote?: () => void,
): Promise<LeanDocClient> {
  for (let attempt = 1; ; attempt++) {
    const client = new LeanDocClient({
      serverUrl,
      name,
      doc,
      params: await proofParams(serverUrl, key, name),
      ...(onRemote ? { onRemoteApplied: onRemote } : {}),
    });
    try {
      await client.whenSynced();
      return client;
    } catch (error) {
      client.close();
      if (attempt >= 3) throw error;
      await sleep(200 * attempt);
    }
  }
}

async function inBatches<T>(items: readonly T[], concurrency: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, items.length) }, async () => {
      while (next < items.length) await work(items[next++]!);
    }),
  );
}

async function retried<T>(request: () => Promise<T>, attempts = 3): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await request();
    } catch (error) {
      if (attempt >= attempts) throw error;
      await sleep(200 * attempt);
    }
  }
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      hosts: { type: 'string', default: '1000' },
      soak: { type: 'string', default: '1' },
      checks: { type: 'string', default: '20' },
      'wait-quiet': { type: 'string', default: '0' },
      'no-follow': { type: 'boolean', default: false },
      'cpu-prof': { type: 'string' },
      'json-out': { type: 'string' },
      help: { type: 'boolean' },
    },
  });
  if (values.help) {
    console.log(USAGE);
    return;
  }
  const hostCount = Number(values.hosts);
  const soakSeconds = Number(values.soak);
  const checks = Number(values.checks);
  installNodeEd25519();
  const quietUntil = Date.now() + Number(values['wait-quiet']) * 1000;
  while (Date.now() < quietUntil && loadavg()[0] >= 1.5) await sleep(5000);
  const nodeArgs = values['cpu-prof'] ? ['--cpu-prof', `--cpu-prof-dir=${values['cpu-prof']}`] : [];
  const dir = mkdtempSync(join(tmpdir(), 'outpost-bench-rollout-'));
  const org = makeTestOrg();
  const hosts: BenchHost[] = Array.from({ length: hostCount }, (_, i) => {
    const host = `h${String(i + 1).padStart(4, '0')}`;
    const wave = i < Math.round(hostCount * 0.1) ? 0 : i < Math.round(hostCount * 0.4) ? 1 : 2;
    return { host, key: nodeKey(host), wave, desired: null, status: null, deliveredMs: null, reportedMs: null };
  });
  const waveHosts = (w: number): BenchHost[] => hosts.filter((h) => h.wave === w);
  const policy: Policy = basePolicy(org, {
    groups: [{ name: 'production', hosts: [], threshold: 1 }],
    timestampKeys: [],
    channels: [
      {
        name: 'bench',
        waves: ['first', 'middle', 'final'].map((name, w) => ({ name, hosts: waveHosts(w).map((h) => h.host) })),
      },
    ],
  });
  const dataDir = join(dir, 'coordinator');
  const children: { stop(): Promise<void> }[] = [];
  try {
    // The fleet before the rollout: the policy and 1,000 enrolled host keys, written by an
    // in-process coordinator whose enrollment rate limit is lifted (the real one allows one
    // request per 2 s per address after 30), then stopped.
    const setup = await startCoordinator({
      dataDir,
      listen: '127.0.0.1',
      port: 0,
      maxPayload: 1024 * 1024,
      idleUnloadMs: 30_000,
      logger: createLogger('bench-setup', 'warn'),
      orgRootKeys: [org.root.publicKey],
      enrollmentLimits: { perSourceBurst: hostCount * 2, perSourceRefillMs: 1 },
    });
    const pushed = await pushPolicy(setup.url, signPolicy(policy, org.root));
    if (pushed.status !== 200) throw new Error(`policy refused: ${pushed.body.error}`);
    await inBatches(hosts, 8, async (h) => {
      const enrollment = {
        kind: 'enrollment' as const,
        host: h.host,
        hostKey: h.key.publicKey,
        approvedAt: new Date().toISOString(),
        policyVersion: 1,
      };
      const signed = { enrollment, signatures: [signFast('enrollment', enrollment, org.alice)] };
      // A busy machine sometimes resets a kept-alive connection under the client: try again.
      const approved = await retried(() => postJson(setup.url, '/api/enroll/approve', signed));
      if (approved.status !== 200) throw new Error(`enrolling ${h.host}: ${approved.body.error}`);
    });
    await setup.close();

    const logFile = join(dir, 'coordinator.log');
    const coordinator = startNodeDaemon(
      [
        ...nodeArgs,
        OUTPOST_CLI,
        'coordinator',
        '--data-dir',
        dataDir,
        '--port',
        '0',
        '--org-root',
        org.root.publicKey,
        '--log-level',
        'info',
        ...BENCH_CONNECTION_FLAGS,
      ],
      logFile,
    );
    children.push(coordinator);
    const line = await waitFor(
      'the coordinator to listen',
      () =>
        coordinator
          .logs()
          .split('\n')
          .find((l) => l.startsWith('{"event":"listening"')),
      120_000,
    );
    const { url } = JSON.parse(line) as { url: string };

    // Simulated hosts: desired (read) and status (written) documents, authenticated.
    const connectStarted = performance.now();
    await inBatches(hosts, 50, async (h) => {
      const desired = new Y.Doc();
      const status = new Y.Doc({ gc: true });
      h.status = await connect(url, h.key, statusDocName(h.host), status);
      h.desired = await connect(url, h.key, desiredDocName(h.host), desired, () => void onDesired(h));
    });
    const connectSeconds = (performance.now() - connectStarted) / 1000;

    // What an agent does when its rollout intent arrives: note the time, follow the rollout's
    // document, and (the closure "installed") report a signed success.
    async function onDesired(h: BenchHost): Promise<void> {
      if (h.deliveredMs !== null || !h.desired) return;
      const pointer = readIntentEntries(h.desired.doc).entries.find((e) => e.signed.intent.rollout);
      if (!pointer) return;
      h.deliveredMs = performance.now();
      const follower = values['no-follow']
        ? null
        : await connect(url, h.key, rolloutDocName(pointer.signed.intent.rollout!.id), new Y.Doc({ gc: false }));
      const { intent } = pointer.signed;
      const result: Result = {
        kind: 'result',
        host: h.host,
        seq: 1,
        at: new Date().toISOString(),
        outcome: 'applied',
        generation: intent.generation,
        closure: intent.closure,
        action: intent.action,
        intentDigest: intentDigest(pointer.signed),
        reason: 'switch; confirmed: system running',
        outputTail: '',
      };
      appendResult(h.status!.doc, { result, signature: signFast('result', result, h.key) });
      h.reportedMs = performance.now();
      follower?.close();
    }

    const manifest = join(dir, 'release.json');
    writeFileSync(
      manifest,
      JSON.stringify({ release: 'bench', hosts: Object.fromEntries(hosts.map((h) => [h.host, CLOSURE])) }),
    );
    const aliceKeyFile = join(dir, 'alice.key');
    await writeKeyFile(aliceKeyFile, org.alice);
    const cpuBefore = machineCpuSeconds();
    const created = performance.now();
    const coordinatorCpuBefore = cpuSeconds(coordinator.child.pid!);
    // The coordinator's CPU seconds over time, to charge each wave's window with what it used then
    // (a wall time on a shared machine also counts waiting for a core; CPU time is what the code costs).
    const cpuSamples: { at: number; cpu: number }[] = [{ at: created, cpu: coordinatorCpuBefore }];
    const sampler = setInterval(
      () => cpuSamples.push({ at: performance.now(), cpu: cpuSeconds(coordinator.child.pid!) }),
      CPU_SAMPLE_MS,
    );
    // /usr/bin/time reports the create process's own CPU seconds on its last stderr line.
    const create = await new Promise<{ code: number | null; stderr: string; ms: number; cpuSeconds: number }>(
      (resolve) => {
        const child = spawn(
          '/usr/bin/time',
          [
            '-f',
            'cpu %U %S',
            process.execPath,
            ...nodeArgs,
            OUTPOST_CLI,
            'rollout',
            'create',
            '--coordinator',
            url,
            '--key',
            aliceKeyFile,
            '--org-root',
            org.root.publicKey,
            '--release',
            manifest,
            '--channel',
            'bench',
            '--gate',
            `soak=${soakSeconds}s`,
            '--generation',
            '1',
            '--id',
            'bench',
            '--json',
          ],
          { stdio: ['ignore', 'ignore', 'pipe'] },
        );
        let stderr = '';
        child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
        child.on('close', (code) => {
          const times = /cpu ([\d.]+) ([\d.]+)\s*$/.exec(stderr);
          resolve({
            code,
            stderr,
            ms: performance.now() - created,
            cpuSeconds: times ? Number(times[1]) + Number(times[2]) : Number.NaN,
          });
        });
      },
    );
    if (create.code !== 0) throw new Error(`rollout create failed: ${create.stderr}`);
    await waitFor(
      'every host to receive its rollout intent',
      () => hosts.every((h) => h.reportedMs !== null),
      600_000,
      20,
    );
    clearInterval(sampler);
    cpuSamples.push({ at: performance.now(), cpu: cpuSeconds(coordinator.child.pid!) });
    const machineSeconds = machineCpuSeconds() - cpuBefore;
    const coordinatorSeconds = cpuSeconds(coordinator.child.pid!) - coordinatorCpuBefore;
    // CPU seconds the coordinator used between two moments (the samples just outside them).
    const coordinatorCpuBetween = (from: number, to: number): number => {
      const before = cpuSamples.findLast((s) => s.at <= from) ?? cpuSamples[0]!;
      const after = cpuSamples.find((s) => s.at >= to) ?? cpuSamples.at(-1)!;
      return after.cpu - before.cpu;
    };
    const waves = [0, 1, 2].map((w) => {
      const group = waveHosts(w);
      const delivered = group.map((h) => h.deliveredMs!);
      const reported = group.map((h) => h.reportedMs!);
      return {
        hosts: group.length,
        firstDeliveredMs: Math.min(...delivered) - created,
        lastDeliveredMs: Math.max(...delivered) - created,
        lastReportedMs: Math.max(...reported) - created,
      };
    });
    const totalMs = waves[2]!.lastDeliveredMs;
    // Per wave: from when the wave before it had reported (create, for the first) to its last host
    // having its intent, minus that gate's soak. What hosts take between getting their intent and
    // reporting (here: fetching the rollout's document) is the fleet's time, not orchestration.
    const perWave = waves.map((w, i) =>
      i === 0 ? w.lastDeliveredMs : w.lastDeliveredMs - waves[i - 1]!.lastReportedMs - soakSeconds * 1000,
    );
    const overheadMs = perWave.reduce((a, b) => a + b, 0);
    // The coordinator's CPU in each wave's window (the soak included: it idles then). It also
    // counts storing the reports of the wave's own first hosts, which arrive while the last ones
    // still get their intents (fleet work, not orchestration: an upper bound).
    const perWaveCoordinatorCpu = waves.map((w, i) =>
      coordinatorCpuBetween(i === 0 ? created : waves[i - 1]!.lastReportedMs + created, w.lastDeliveredMs + created),
    );

    // The evidence check of one agent in the last wave, from fresh copies of the document.
    const snapshot = new Y.Doc();
    const reader = await connect(url, org.alice, rolloutDocName('bench'), snapshot);
    const update = Y.encodeStateAsUpdate(reader.doc);
    reader.close();
    const fresh = (): Y.Doc => {
      const doc = new Y.Doc();
      Y.applyUpdate(doc, update);
      return doc;
    };
    const planDigest = readIntentEntries(hosts[0]!.desired!.doc).entries.find((e) => e.signed.intent.rollout)!.signed
      .intent.rollout!.plan;
    const evidenceCount = readRolloutEntries(fresh()).evidence.length;
    // Wall time and this process's CPU time of one check (CPU time is what it costs an agent; on a
    // loaded machine the wall time also counts waiting for a core).
    const judgeOnce = (): { wallMs: number; cpuMs: number } => {
      // What an agent does the first time it sees the document: nothing parsed or verified yet.
      forgetParsedEntries();
      forgetVerifiedSignatures();
      const doc = fresh();
      const cpu = process.cpuUsage();
      const started = performance.now();
      const decision = decideFromDocument(doc, planDigest, {
        host: waveHosts(2)[0]!.host,
        chain: [policy],
        now: Date.now() + 60_000,
      });
      const wallMs = performance.now() - started;
      const used = process.cpuUsage(cpu);
      if (decision.decision !== 'go')
        throw new Error(`the check did not pass: ${JSON.stringify(decision).slice(0, 300)}`);
      return { wallMs, cpuMs: (used.user + used.system) / 1000 };
    };
    const nodeRuns = Array.from({ length: checks }, judgeOnce);
    useEd25519Verifier(null);
    const naclRuns = Array.from({ length: 2 }, judgeOnce);
    installNodeEd25519();

    const result = {
      hosts: hostCount,
      hostsFollowRollout: !values['no-follow'],
      waves: waves.map((w) => w.hosts),
      soakSeconds,
      connectSeconds: Math.round(connectSeconds * 10) / 10,
      createMs: Math.round(create.ms),
      totalMs: Math.round(totalMs),
      orchestrationMs: Math.round(overheadMs),
      orchestrationPerWaveMs: Math.round(overheadMs / 3),
      perWaveMs: perWave.map((ms) => Math.round(ms)),
      perWaveCoordinatorCpuSeconds: perWaveCoordinatorCpu.map((s) => Math.round(s * 100) / 100),
      createCpuSeconds: Math.round(create.cpuSeconds * 100) / 100,
      coordinatorCpuSeconds: Math.round(coordinatorSeconds * 100) / 100,
      machineCpuSeconds: Math.round(machineSeconds * 10) / 10,
      evidence: evidenceCount,
      checkedWaveHosts: waveHosts(1).length,
      evidenceCheckMs: {
        node: {
          firstWall: round(nodeRuns[0]!.wallMs),
          firstCpu: round(nodeRuns[0]!.cpuMs),
          medianWall: round(median(nodeRuns.map((r) => r.wallMs))),
          medianCpu: round(median(nodeRuns.map((r) => r.cpuMs))),
        },
        tweetnacl: { medianCpu: round(median(naclRuns.map((r) => r.cpuMs))) },
      },
      loadAverage: loadavg()[0],
    };
    const pass = (ok: boolean): string => (ok ? 'PASS' : 'FAIL');
    console.log(JSON.stringify(result, null, 2));
    console.log(
      [
        `rollout of ${hostCount} hosts in waves of ${result.waves.join('/')}, soak ${soakSeconds} s per gate:`,
        `  create → last wave delivered: ${result.totalMs} ms, of which orchestration (minus soaks and the hosts' own time): ${result.orchestrationMs} ms = ${result.orchestrationPerWaveMs} ms per wave (target ≤ ${TARGET_PER_WAVE_MS}) ${pass(result.orchestrationPerWaveMs <= TARGET_PER_WAVE_MS)}`,
        `  per wave (wave before reported → last host has its intent, minus soak): ${result.perWaveMs.join(' / ')} ms wall; coordinator CPU in those windows: ${result.perWaveCoordinatorCpuSeconds.join(' / ')} s; rollout create process: ${result.createMs} ms (${result.createCpuSeconds} CPU-s); coordinator: ${result.coordinatorCpuSeconds} CPU-s for the whole rollout`,
        `  evidence check of a last-wave agent (${result.checkedWaveHosts} results of the wave before, fresh copy): first ${result.evidenceCheckMs.node.firstCpu} ms CPU (${result.evidenceCheckMs.node.firstWall} ms wall), median ${result.evidenceCheckMs.node.medianCpu} ms CPU (${result.evidenceCheckMs.node.medianWall} ms wall) (target ≤ ${TARGET_CHECK_MS}) ${pass(result.evidenceCheckMs.node.firstCpu <= TARGET_CHECK_MS)}; with tweetnacl: ${result.evidenceCheckMs.tweetnacl.medianCpu} ms CPU (${Math.round(result.evidenceCheckMs.tweetnacl.medianCpu / result.evidenceCheckMs.node.medianCpu)}×)`,
        `  load average during the run: ${result.loadAverage.toFixed(1)} (${cpus().length} cores)`,
      ].join('\n'),
    );
    if (values['json-out']) await fs.writeFile(values['json-out'], JSON.stringify(result, null, 2));
    for (const h of hosts) {
      h.desired?.close();
      h.status?.close();
    }
  } finally {
    for (const child of children) await child.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

const round = (ms: number): number => Math.round(ms * 10) / 10;

main().then(
  () => process.exit(0),
  (error: Error) => {
    console.error(error);
    process.exit(1);
  },
);
