import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { generateSigningKey } from '../../shared/crypto/keys.js';
import { installNodeEd25519 } from '../../shared/node/ed25519.js';
import { buildTestClosure, makeCacheKey, publishToCache } from '../harness/nix-fixtures.js';
import { basePolicy, makeTestOrg, signPolicy } from '../harness/policy-fixtures.js';
import { removeDirectory, temporaryDirectory } from '../harness/processes.js';
import { startAgentTarget } from './agent-target.js';
import {
  type AnyInputClass,
  type CampaignResult,
  type HealthCheck,
  type ProgressSnapshot,
  runCampaign,
} from './campaign.js';
import { type GrowthVerdict, judgeGrowth } from './growth.js';
import { readCacheSecretKey, serveHostileCache } from './hostile-cache.js';
import { startHostileUpstreamTarget } from './hostile-upstream.js';
import type { KnownCrash } from './known.js';
import type { LiveProcess } from './live-process.js';
import { serverClasses, startServerTargets } from './server-targets.js';

// One fuzz run against live processes: start them, run the campaign, judge memory, stop them.
// Used by `npm run fuzz` (test/fuzz/main.ts) and by the seeded run in npm test.

export interface FuzzOptions {
  seed: number;
  count: number;
  maxDurationMs?: number;
  minDelivered?: number;
  signal?: AbortSignal;
  // Inputs of crashes reported and not yet fixed on main, left out (known.ts).
  skipKnown: KnownCrash[];
  // Only classes whose name contains one of these (all when empty).
  only: string[];
  reduce: boolean;
  sampleIntervalMs: number;
  healthIntervalMs?: number;
  // Workers per server class, as a multiple of the class's own concurrency (default 3): an input
  // mostly waits (for the server's answer or close, or a linger), so more connections in flight
  // deliver more inputs a second on the same CPU time.
  parallel?: number;
  // How often the well-behaved admin deploys to the agent and waits for it to be applied.
  agentCheckIntervalMs?: number;
  keepDir?: boolean;
  log: (line: string) => void;
  onProgress?: (snapshot: ProgressSnapshot) => void;
}

export interface FuzzReport extends CampaignResult {
  inputsPerSecond: number;
  growth: Record<string, GrowthVerdict>;
  // RSS over the run, at most 60 points per process: [seconds since the first sample, inputs, MiB,
  // fds, stored MiB (null: no data directory)].
  rss: Record<string, [number, number, number, number, number | null][]>;
  dir: string;
}

export const DEFAULT_PARALLEL = 3;

// Which classes run: all, or those whose name contains one of `only`.
function selected(only: string[], name: string): boolean {
  return only.length === 0 || only.some((o) => name.includes(o));
}

export async function runFuzz(options: FuzzOptions): Promise<FuzzReport> {
  // The fuzzer signs an auth proof per authenticated input and signed entries per agent input:
  // with tweetnacl's JS that was a fifth of the driver's CPU time; Node's Ed25519 signs the same
  // bytes to the same signature.
  installNodeEd25519();
  const parallel = options.parallel ?? DEFAULT_PARALLEL;
  // OUTPOST_FUZZ_DIR puts a long run's data (logs, update logs, agent store) somewhere of its own.
  const dir = process.env.OUTPOST_FUZZ_DIR
    ? await fs.mkdtemp(join(process.env.OUTPOST_FUZZ_DIR, 'outpost-fuzz-'))
    : temporaryDirectory('fuzz');
  const org = makeTestOrg();
  // The admin the fuzzer writes as (server-targets.ts), next to the test org's.
  const fuzzAdmin = generateSigningKey('fuzz-admin');
  const base = basePolicy(org);
  const signedPolicy = signPolicy(
    { ...base, admins: [...base.admins, { name: 'fuzz-admin', keys: [fuzzAdmin.publicKey], roles: ['ops'] }] },
    org.root,
  );
  const stops: (() => Promise<void>)[] = [];
  const processes: LiveProcess[] = [];
  const withAgent = selected(options.only, '@agent');
  const started = Date.now();
  try {
    const cacheDir = join(dir, 'cache');
    await fs.mkdir(cacheDir, { recursive: true });
    const cacheKey = await makeCacheKey(join(dir, 'keys'), 'fuzz-cache-1');
    const closures: string[] = [];
    if (withAgent) {
      for (const name of ['fuzz-system-a', 'fuzz-system-b']) {
        const closure = await buildTestClosure({ name });
        await publishToCache(closure, cacheDir, cacheKey.secretKeyFile);
        closures.push(closure);
      }
    }
    const cache = await serveHostileCache(cacheDir);
    stops.push(() => cache.close());
    const servers = await startServerTargets(dir, org, signedPolicy, cache.url);
    processes.push(servers.coordinator, servers.policyCoordinator, servers.relay);
    const server = serverClasses({ targets: servers, org, signedPolicy, fuzzAdmin });
    const classes: AnyInputClass[] = [...server.classes];
    const checks: HealthCheck[] = [...server.checks];
    if (selected(options.only, 'hostile-upstream')) {
      const hostile = await startHostileUpstreamTarget(dir);
      stops.push(() => hostile.close());
      processes.push(hostile.relay);
      classes.push(...hostile.classes);
      checks.push(...hostile.checks);
    }
    if (withAgent) {
      const agent = await startAgentTarget({
        dir,
        org,
        signedPolicy,
        coordinator: servers.coordinator,
        cache,
        cacheDir,
        cacheKey: { publicKey: cacheKey.publicKey, signer: await readCacheSecretKey(cacheKey.secretKeyFile) },
        closures,
        legitIntervalMs: options.agentCheckIntervalMs ?? 60_000,
      });
      stops.push(() => agent.close());
      processes.push(agent.process);
      classes.push(...agent.classes);
      checks.push(...agent.checks);
    }
    // Paced classes (the agent's) stay at their own pace; the others get `parallel` times their workers.
    const chosen = classes
      .filter((c) => selected(options.only, c.name))
      .map((c) => (c.paced ? c : { ...c, concurrency: c.concurrency * parallel }));
    const targets = new Set(chosen.map((c) => c.target));
    const active = checks
      .filter((c) => targets.has(c.target))
      .map((c) => (c.target === 'agent' ? c : { ...c, intervalMs: options.healthIntervalMs ?? c.intervalMs }));
    options.log(
      `fuzz: seed ${options.seed}, ${options.count} inputs, ${chosen.length} classes, dir ${dir}; set up in ${((Date.now() - started) / 1000).toFixed(1)} s`,
    );
    const result = await runCampaign({
      seed: options.seed,
      count: options.count,
      processes,
      classes: chosen,
      checks: active,
      sampleIntervalMs: options.sampleIntervalMs,
      maxDurationMs: options.maxDurationMs,
      minDelivered: options.minDelivered,
      signal: options.signal,
      reduce: options.reduce,
      skipKnown: options.skipKnown,
      log: options.log,
      onProgress: options.onProgress,
    });
    const growth: Record<string, GrowthVerdict> = {};
    const rss: FuzzReport['rss'] = {};
    for (const p of processes) {
      if (!targets.has(p.name)) continue;
      growth[p.name] = judgeGrowth(p.samples);
      const step = Math.max(1, Math.ceil(p.samples.length / 60));
      const first = p.samples[0]?.at ?? 0;
      rss[p.name] = p.samples
        .filter((_, i) => i % step === 0 || i === p.samples.length - 1)
        .map((s) => [
          Math.round((s.at - first) / 1000),
          s.inputs,
          Math.round(s.rssBytes / 1024 / 1024),
          s.fds,
          s.storedBytes === null ? null : Math.round((s.storedBytes / 1024 / 1024) * 10) / 10,
        ]);
    }
    return { ...result, inputsPerSecond: result.delivered / (result.durationMs / 1000), growth, rss, dir };
  } finally {
    const stopping = Date.now();
    for (const stop of stops.reverse()) await stop().catch(() => undefined);
    for (const p of processes) await p.stop();
    if (!options.keepDir) removeDirectory(dir);
    options.log(`stopped and cleaned up in ${((Date.now() - stopping) / 1000).toFixed(1)} s`);
  }
}

export function summarize(report: FuzzReport): string {
  const lines: string[] = [];
  lines.push(
    `${report.delivered} inputs in ${(report.durationMs / 1000).toFixed(1)} s (${report.inputsPerSecond.toFixed(0)}/s), seed ${report.seed}`,
  );
  lines.push(`crashes: ${report.crashes.reduce((n, c) => n + c.count, 0)} (${report.crashes.length} distinct)`);
  for (const crash of report.crashes) {
    lines.push(
      `  ${crash.target}: ${crash.signature} ×${crash.count}${crash.reproduced ? '' : ' (not reproduced alone)'}`,
    );
    if (crash.class)
      lines.push(`    class ${crash.class}, seed ${crash.seed}, path ${crash.path}, ${crash.shrinkSteps} shrink steps`);
    if (crash.minimal) lines.push(`    minimal input: ${JSON.stringify(crash.minimal).slice(0, 1500)}`);
    lines.push(
      crash.stack
        .split('\n')
        .slice(0, 14)
        .map((l) => `    | ${l}`)
        .join('\n'),
    );
  }
  if (report.externalKills.length > 0)
    lines.push(
      `killed from outside the fuzzer (not crashes): ${report.externalKills.map((k) => `${k.target} ${k.signal}`).join(', ')}`,
    );
  lines.push(`health checks: ${report.healthChecksPassed} passed, ${report.healthFailures.length} failed`);
  for (const failure of report.healthFailures.slice(0, 10))
    lines.push(`  ${failure.target} ${failure.check} (load ${failure.load1}): ${failure.error}`);
  for (const [check, times] of Object.entries(report.checkTimes))
    lines.push(
      `  ${check}: ${times.passed} passed, median ${(times.medianMs / 1000).toFixed(1)} s, worst ${(times.worstMs / 1000).toFixed(1)} s`,
    );
  lines.push(
    'growth (RSS MiB: baseline → midpoint → final, peak; open file descriptors: baseline → final, peak; stored MiB: baseline → final, KiB per 1000 inputs):',
  );
  for (const [name, verdict] of Object.entries(report.growth)) {
    const stored =
      verdict.baselineStoredMiB === null
        ? ''
        : `; stored ${verdict.baselineStoredMiB} → ${verdict.finalStoredMiB}, ${verdict.storedKiBPer1000Inputs} KiB/1000`;
    lines.push(
      `  ${name}: ${verdict.baselineMiB} → ${verdict.midpointMiB} → ${verdict.finalMiB}, peak ${verdict.peakMiB}; fds ${verdict.baselineFds} → ${verdict.finalFds}, peak ${verdict.peakFds}${stored} (${verdict.samples} samples): ${verdict.reason}`,
    );
  }
  lines.push('classes:');
  for (const [name, stat] of Object.entries(report.classes)) {
    const outcomes = Object.entries(stat.outcomes)
      .sort((a, b) => b[1] - a[1])
      .slice(0, 6)
      .map(([o, n]) => `${o}:${n}`)
      .join(' ');
    const skipped = Object.entries(stat.skippedKnown)
      .map(([o, n]) => `${o}:${n}`)
      .join(' ');
    const meanMs = stat.delivered > 0 ? Math.round(stat.busyMs / stat.delivered) : 0;
    lines.push(
      `  ${name}: ${stat.delivered}, ${meanMs} ms each [${outcomes}]${skipped ? ` skipped-known [${skipped}]` : ''}`,
    );
  }
  return lines.join('\n');
}
