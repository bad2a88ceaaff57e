import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { signEnrollment } from '../../admin/enroll-entries.js';
import { type HostKeyAuthority, type HostView, readHostKeyAuthority, readHostView } from '../../admin/fleet-view.js';
import type { RolloutReport } from '../../admin/rollout-render.js';
import { installNodeEd25519 } from '../../shared/node/ed25519.js';
import { writeKeyFile } from '../../shared/node/key-file.js';
import { httpBaseFromWs } from '../../shared/sync/reconnect.js';
import { type BinaryCacheServer, serveBinaryCache } from '../harness/cache-server.js';
import { prepareHost, profileTarget, type SimulatedHost, startAgentProcess } from '../harness/fleet.js';
import { logEvents, TEST_AGENT_FLAGS } from '../harness/lifecycle-fleet.js';
import { type CacheKeyFiles, makeCacheKey, publishToCache } from '../harness/nix-fixtures.js';
import { basePolicy, makeTestOrg, postJson, pushPolicy, signPolicy } from '../harness/policy-fixtures.js';
import {
  type CliResult,
  type DaemonProcess,
  removeDirectory,
  runCli,
  startCoordinatorProcess,
  startDaemon,
  temporaryDirectory,
  waitFor,
} from '../harness/processes.js';
import { buildSystemClosure, SWITCH_SCRIPTS } from '../harness/system-closures.js';

// Rollouts end to end (docs/rollouts.md) with real processes: a coordinator under a policy with a
// channel of three waves, six real agents enrolled with their own keys, real Nix closures from a
// signed cache, and the `outpost rollout` commands as an operator runs them.
installNodeEd25519();
const org = makeTestOrg();
const dir = temporaryDirectory('rollout');
const names = ['h1', 'h2', 'h3', 'h4', 'h5', 'h6'];
const keyFiles = {
  alice: join(dir, 'alice.key'),
  carol: join(dir, 'carol.key'),
  timestamp: join(dir, 'timestamp.key'),
};
const policy = basePolicy(org, {
  groups: [
    { name: 'production', hosts: ['prod-1'], threshold: 2 },
    { name: 'canaries', hosts: ['h1'], threshold: 1 },
  ],
  channels: [
    {
      name: 'production',
      hosts: names,
      waves: [
        { name: 'first', groups: ['canaries'] },
        { name: 'middle', hosts: ['h2', 'h3'] },
        { name: 'final', hosts: ['h4', 'h5', 'h6'] },
      ],
    },
  ],
});
let coordinator: DaemonProcess & { url: string; port: number };
let cacheKey: CacheKeyFiles;
let cache: BinaryCacheServer;
let authority: HostKeyAuthority;
const hosts = new Map<string, SimulatedHost>();
const agents = new Map<string, DaemonProcess>();
const closures: Record<string, string> = {};

function startAgent(name: string): DaemonProcess {
  const agent = startAgentProcess(hosts.get(name)!, {
    coordinators: [coordinator.url],
    adminKeys: [],
    substituters: [cache.url],
    trustedCacheKeys: [cacheKey.publicKey],
    extraArgs: [...TEST_AGENT_FLAGS, '--org-root', org.root.publicKey, '--backoff-base', '0.2', '--backoff-max', '1'],
  });
  agents.set(name, agent);
  return agent;
}

async function stopAgent(name: string): Promise<void> {
  await agents.get(name)?.stop();
  agents.delete(name);
}

const admin = (): string[] => [
  '--coordinator',
  coordinator.url,
  '--key',
  keyFiles.alice,
  '--org-root',
  org.root.publicKey,
  // Generous: the tests share a small machine with other work.
  '--timeout',
  '60s',
];

async function rollout(args: string[], timeoutMs = 120_000): Promise<CliResult> {
  return runCli(['rollout', ...args, ...admin()], { timeoutMs });
}

async function rolloutOk(args: string[]): Promise<string> {
  const result = await rollout(args);
  if (result.code !== 0)
    throw new Error(`outpost rollout ${args.join(' ')} exited ${result.code}: ${result.stderr}${result.stdout}`);
  return result.stdout;
}

async function release(name: string, closureOf: (host: string) => string): Promise<string> {
  const file = join(dir, `${name}.json`);
  await fs.writeFile(
    file,
    JSON.stringify({ release: name, hosts: Object.fromEntries(names.map((h) => [h, closureOf(h)])) }),
  );
  return file;
}

async function status(id: string): Promise<RolloutReport> {
  return JSON.parse(await rolloutOk(['status', id, '--json'])) as RolloutReport;
}

function view(name: string): Promise<HostView> {
  return readHostView(coordinator.url, name, { timeoutMs: 15_000, authority, identity: org.alice });
}

function runsClosure(name: string, closure: string, timeoutMs = 120_000): Promise<true> {
  return waitFor(
    `${name} to run ${closure}`,
    async () => (await profileTarget(hosts.get(name)!)) === closure,
    timeoutMs,
    250,
  );
}

// The time (signed by the host) of its result for this closure, once it is there.
async function appliedAt(name: string, closure: string): Promise<number> {
  const found = await waitFor(
    `${name}'s applied result for ${closure}`,
    async () =>
      (await view(name)).results.find(
        (r) => r.signatureValid && r.result.outcome === 'applied' && r.result.closure === closure,
      ),
    60_000,
    250,
  );
  return Date.parse(found.result.at);
}

// The coordinator's /metrics once it matches `pattern` (or as it is after 30 s, for the assertion
// to show).
async function coordinatorMetricsMatching(pattern: RegExp): Promise<string> {
  const scrape = async () => (await fetch(`${httpBaseFromWs(coordinator.url)}/metrics`)).text();
  return waitFor(
    'the coordinator metrics to match',
    async () => {
      const text = await scrape();
      return pattern.test(text) ? text : null;
    },
    30_000,
    250,
  ).catch(scrape);
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

test.before(async () => {
  await writeKeyFile(keyFiles.alice, org.alice);
  await writeKeyFile(keyFiles.carol, org.carol);
  await writeKeyFile(keyFiles.timestamp, org.timestamp);
  coordinator = await startCoordinatorProcess(join(dir, 'coordinator'), join(dir, 'coordinator.log'), 0, [
    '--org-root',
    org.root.publicKey,
    '--timestamp-key',
    keyFiles.timestamp,
    '--timestamp-interval',
    '0.5',
  ]);
  const pushed = await pushPolicy(coordinator.url, signPolicy(policy, org.root));
  assert.is(pushed.status, 200, pushed.body.error);
  cacheKey = await makeCacheKey(join(dir, 'keys'), 'rollout-cache-1');
  for (const [name, script] of [
    ['r1', SWITCH_SCRIPTS.succeeds],
    ['r2', SWITCH_SCRIPTS.succeeds],
    ['broken', SWITCH_SCRIPTS.fails],
    ['r3', SWITCH_SCRIPTS.succeeds],
    ['r4', SWITCH_SCRIPTS.succeeds],
  ] as const) {
    closures[name] = await buildSystemClosure({ name: `nixos-system-rollout-${name}`, switchScript: script });
    await publishToCache(closures[name]!, join(dir, 'cache'), cacheKey.secretKeyFile);
  }
  cache = await serveBinaryCache(join(dir, 'cache'));
  for (const name of names) {
    const host = await prepareHost(dir, name);
    hosts.set(name, host);
    const approved = await postJson(
      coordinator.url,
      '/api/enroll/approve',
      signEnrollment(org.alice, { host: name, hostKey: host.publicKey, policyVersion: 1 }, new Date()),
    );
    assert.is(approved.status, 200, approved.body.error);
  }
  authority = await readHostKeyAuthority(coordinator.url, [org.root.publicKey], org.alice, 15_000);
  // h6 stays offline until the third wave: it catches up when it comes back.
  for (const name of names.slice(0, 5)) startAgent(name);
});

test.after(async () => {
  await Promise.all([...agents.values()].map((a) => a.stop('SIGKILL')));
  await coordinator?.stop();
  await cache?.close();
  if (!process.env.OUTPOST_KEEP_TEST_DIR) removeDirectory(dir);
});

test('a release to 6 hosts in 3 waves: soak between waves, an approval before the last, and a host offline during waves 1-2 catches up into wave 3', async () => {
  const manifest = await release('release-1', () => closures.r1!);
  const created = JSON.parse(
    await rolloutOk([
      'create',
      '--release',
      manifest,
      '--channel',
      'production',
      '--gate',
      'first:soak=3s',
      '--gate',
      'middle:approval',
      '--id',
      'r1',
      '--json',
    ]),
  ) as { id: string; waves: { name: string; hosts: string[] }[]; signaturesNeeded: unknown[] };
  assert.equal(
    created.waves.map((w) => [w.name, w.hosts]),
    [
      ['first', ['h1']],
      ['middle', ['h2', 'h3']],
      ['final', ['h4', 'h5', 'h6']],
    ],
  );
  assert.equal(created.signaturesNeeded, []);
  // CI blocks on it; it must not return before the last wave is done.
  let waitDone = false;
  const waiting = rollout(['wait', 'r1', '--timeout-total', '240s'], 300_000).then((r) => {
    waitDone = true;
    return r;
  });

  await runsClosure('h1', closures.r1!);
  await runsClosure('h2', closures.r1!);
  await runsClosure('h3', closures.r1!);
  const h1At = await appliedAt('h1', closures.r1!);
  for (const name of ['h2', 'h3'])
    assert.ok(
      (await appliedAt(name, closures.r1!)) >= h1At + 3000,
      `${name} started only after the 3 s soak of wave 1`,
    );
  // The final wave waits for an admin's approval; its hosts got nothing.
  const before = await status('r1');
  assert.is(before.state, 'running');
  assert.is(before.waves[2]!.open, false);
  assert.match(before.waves[2]!.reason, /approval/);
  await sleep(3000);
  assert.is(await profileTarget(hosts.get('h4')!), null);
  assert.not.ok(waitDone);

  await rolloutOk(['approve', 'r1', '--wave', '3']);
  await runsClosure('h4', closures.r1!);
  await runsClosure('h5', closures.r1!);
  // h6 was offline: the rollout is not complete without it (the final gate needs every host).
  // The profile moves at the switch; the signed result that makes a host 'succeeded' comes after
  // the confirming sync, so h4 and h5 are waited for, not read once.
  const partial = await waitFor(
    'h4 and h5 to have succeeded in r1',
    async () => {
      const report = await status('r1');
      const states = report.waves[2]!.hosts.filter((h) => h.host !== 'h6').map((h) => h.state);
      return states.every((s) => s === 'succeeded') ? report : null;
    },
    60_000,
    500,
  ).catch(() => status('r1'));
  assert.is(partial.state, 'running');
  assert.equal(
    partial.waves[2]!.hosts.map((h) => [h.host, h.state]),
    [
      ['h4', 'succeeded'],
      ['h5', 'succeeded'],
      ['h6', 'not-started'],
    ],
  );
  assert.not.ok(waitDone);
  const h6 = startAgent('h6');
  await runsClosure('h6', closures.r1!);
  assert.ok(logEvents(h6, 'rollout-gate-open').length > 0, 'h6 checked the gate itself');
  const waited = await waiting;
  assert.is(waited.code, 0, waited.stdout + waited.stderr);
  assert.match(waited.stdout, /complete/);
  const done = await status('r1');
  assert.is(done.state, 'complete');
  assert.is(done.summary.succeeded, 6);
  // The same, for Prometheus: hosts by rollout wave and the rollout's state. The gauges show the
  // coordinator's last judgement, which runs after it has copied the evidence the CLI judged
  // (flushed, then judged one at a time): waited for, then read.
  const metrics = await coordinatorMetricsMatching(
    /^outpost_rollout_state\{[^}]*rollout="r1",state="complete"[^}]*\} 1$/m,
  );
  assert.match(metrics, /^outpost_rollout_state\{[^}]*rollout="r1",state="complete"[^}]*\} 1$/m);
  const succeeded = [
    ...metrics.matchAll(
      /^outpost_rollout_wave_hosts\{[^}]*rollout="r1",wave="[^"]+",hosts="succeeded"[^}]*\} (\d+)$/gm,
    ),
  ];
  assert.is(succeeded.length, 3, 'one line per wave');
  assert.is(
    succeeded.reduce((sum, m) => sum + Number(m[1]), 0),
    6,
  );
});

test('a failure in wave 1 halts wave 2, and `rollout wait` exits non-zero naming the host and why', async () => {
  const manifest = await release('release-2', (h) => (h === 'h1' ? closures.broken! : closures.r2!));
  await rolloutOk(['create', '--release', manifest, '--channel', 'production', '--id', 'r2']);
  const waited = await rollout(['wait', 'r2', '--timeout-total', '120s']);
  assert.is(waited.code, 1, waited.stdout + waited.stderr);
  assert.match(waited.stdout, /halted: wave first: .*h1 (rolled-back|failed)/);
  const report = await status('r2');
  assert.is(report.state, 'halted');
  assert.is(report.waves[1]!.open, false);
  const metrics = await coordinatorMetricsMatching(
    /^outpost_rollout_state\{[^}]*rollout="r2",state="halted"[^}]*\} 1$/m,
  );
  assert.match(metrics, /^outpost_rollout_state\{[^}]*rollout="r2",state="halted"[^}]*\} 1$/m);
  assert.match(metrics, /^outpost_rollout_wave_open\{[^}]*rollout="r2",wave="middle"[^}]*\} 0$/m);
  assert.equal(
    report.failures.map((f) => f.host),
    ['h1'],
  );
  await sleep(2000);
  for (const name of ['h2', 'h3', 'h4', 'h5'])
    assert.is(await profileTarget(hosts.get(name)!), closures.r1, `${name} kept release 1`);
});

test('pause holds a host whose rollout intent was already delivered; resume lets it go', async () => {
  await stopAgent('h3');
  const manifest = await release('release-3', () => closures.r3!);
  await rolloutOk(['create', '--release', manifest, '--channel', 'production', '--id', 'r3']);
  await runsClosure('h1', closures.r3!);
  await runsClosure('h2', closures.r3!);
  // Wave 2 is open and delivered: h3's intent waits in its desired document while its agent is down.
  await waitFor(
    'h3 to have its rollout intent',
    async () => (await view('h3')).desired?.closure === closures.r3,
    30_000,
    250,
  );
  await rolloutOk(['pause', 'r3', '--reason', 'checking dashboards']);
  const h3 = startAgent('h3');
  await waitFor(
    'h3 to hold the paused rollout',
    () => logEvents(h3, 'rollout-waiting').some((e) => /paused \(by alice/.test(String(e.reason))),
    60_000,
    250,
  );
  await sleep(4000);
  assert.is(await profileTarget(hosts.get('h3')!), closures.r1, 'nothing installed while paused');
  assert.is((await status('r3')).state, 'paused');
  await rolloutOk(['resume', 'r3']);
  await runsClosure('h3', closures.r3!);
  for (const name of ['h4', 'h5', 'h6']) await runsClosure(name, closures.r3!);
  const waited = await rollout(['wait', 'r3', '--timeout-total', '60s']);
  assert.is(waited.code, 0, waited.stdout + waited.stderr);
});

test('abort with --rollback: hosts that applied the release return to their previous closure, a host that had not started drops it', async () => {
  await stopAgent('h4');
  const manifest = await release('release-4', () => closures.r4!);
  await rolloutOk(['create', '--release', manifest, '--channel', 'production', '--id', 'r4']);
  for (const name of ['h1', 'h2', 'h3', 'h5', 'h6']) await runsClosure(name, closures.r4!);
  await waitFor(
    'h4 to have its rollout intent',
    async () => (await view('h4')).desired?.closure === closures.r4,
    30_000,
    250,
  );
  const aborted = JSON.parse(await rolloutOk(['abort', 'r4', '--rollback', '--reason', 'latency up', '--json'])) as {
    rolledBack: { host: string; closure: string }[];
    notRolledBack: unknown[];
  };
  assert.equal(aborted.notRolledBack, []);
  assert.equal(
    aborted.rolledBack.map((r) => [r.host, r.closure]).sort(),
    ['h1', 'h2', 'h3', 'h5', 'h6'].map((h) => [h, closures.r3]),
  );
  for (const name of ['h1', 'h2', 'h3', 'h5', 'h6']) await runsClosure(name, closures.r3!);
  startAgent('h4');
  const refused = await waitFor(
    "h4's refusal of the aborted rollout",
    async () => {
      const last = (await view('h4')).lastResult;
      return last?.closure === closures.r4 && last.outcome === 'refused' ? last : null;
    },
    60_000,
    250,
  );
  assert.match(refused.reason, /^rollout-aborted: rollout r4 was aborted by alice .*latency up/);
  assert.is(await profileTarget(hosts.get('h4')!), closures.r3);
  const waited = await rollout(['wait', 'r4', '--timeout-total', '30s']);
  assert.is(waited.code, 1);
  assert.match(waited.stdout, /aborted by alice: latency up/);
});

test('rollout list shows every rollout with its state; a pause by an admin without deploy is refused; status --watch prints the rollout and stops on Ctrl-C', async () => {
  const listed = JSON.parse(await rolloutOk(['list', '--json'])) as { rollouts: { id: string; state: string }[] };
  assert.equal(
    listed.rollouts.map((r) => [r.id, r.state]),
    [
      ['r1', 'complete'],
      ['r2', 'halted'],
      ['r3', 'complete'],
      ['r4', 'aborted'],
    ],
  );
  // carol may read, not deploy: the coordinator refuses her pause, naming why.
  const byCarol = await runCli([
    'rollout',
    'pause',
    'r3',
    ...admin().slice(0, 2),
    '--key',
    keyFiles.carol,
    ...admin().slice(4),
  ]);
  assert.is(byCarol.code, 1);
  assert.match(byCarol.stderr, /pause of rollout r3 refused: admin carol lacks 'deploy' for host h1/);
  const watch = startDaemon(['rollout', 'status', 'r4', '--watch', ...admin()], join(dir, 'watch.log'));
  await waitFor(
    'the watched report',
    () => /ABORTED by alice/.test(watch.logs()) && /— aborted/.test(watch.logs()),
    30_000,
    200,
  );
  watch.child.kill('SIGINT');
  assert.is(await watch.exited, 0);
});

test.run();
