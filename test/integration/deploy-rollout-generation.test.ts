import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { signEnrollment } from '../../admin/enroll-entries.js';
import { type HostKeyAuthority, type HostView, readHostKeyAuthority, readHostView } from '../../admin/fleet-view.js';
import type { RolloutReport } from '../../admin/rollout-render.js';
import { installNodeEd25519 } from '../../shared/node/ed25519.js';
import { writeKeyFile } from '../../shared/node/key-file.js';
import { type BinaryCacheServer, serveBinaryCache } from '../harness/cache-server.js';
import { prepareHost, profileTarget, type SimulatedHost } from '../harness/fleet.js';
import { logEvents, startPolicyAgent } from '../harness/lifecycle-fleet.js';
import { type CacheKeyFiles, makeCacheKey, publishToCache } from '../harness/nix-fixtures.js';
import { basePolicy, makeTestOrg, postJson, pushPolicy, signPolicy } from '../harness/policy-fixtures.js';
import {
  type CliResult,
  type DaemonProcess,
  removeDirectory,
  runCli,
  startCoordinatorProcess,
  temporaryDirectory,
  waitFor,
} from '../harness/processes.js';
import { buildSystemClosure, SWITCH_SCRIPTS } from '../harness/system-closures.js';

// A manual deploy while a rollout waits to reach the host (issue 12 follow-up). A rollout fixes
// each host's generation when it is created, but delivers it only when the host's wave starts;
// `outpost deploy` used to choose the next generation from the desired document alone, so it took
// the very generation the later wave names. The host then applied the deploy, and when the wave
// came it refused the rollout's intent as a rollback (not above the generation it runs), which
// halted the rollout. Real coordinator, real `outpost` processes, real agents installing real Nix
// closures from a signed cache.
installNodeEd25519();
const org = makeTestOrg();
const dir = temporaryDirectory('deploy-rollout-generation');
const names = ['h1', 'h2'];
const aliceKey = join(dir, 'alice.key');
let coordinator: DaemonProcess & { url: string; port: number };
let cacheKey: CacheKeyFiles;
let cache: BinaryCacheServer;
let authority: HostKeyAuthority;
const hosts = new Map<string, SimulatedHost>();
const agents = new Map<string, DaemonProcess>();
const closures: Record<string, string> = {};

const admin = (): string[] => [
  '--coordinator',
  coordinator.url,
  '--key',
  aliceKey,
  '--org-root',
  org.root.publicKey,
  '--timeout',
  '60s',
];

const outpost = (args: string[], timeoutMs = 180_000): Promise<CliResult> =>
  runCli([...args, ...admin()], { timeoutMs });

async function ok(args: string[]): Promise<string> {
  const result = await outpost(args);
  if (result.code !== 0)
    throw new Error(`outpost ${args.join(' ')} exited ${result.code}: ${result.stderr}${result.stdout}`);
  return result.stdout;
}

const view = (name: string): Promise<HostView> =>
  readHostView(coordinator.url, name, { timeoutMs: 15_000, authority, identity: org.alice });

const runsClosure = (name: string, closure: string): Promise<true> =>
  waitFor(`${name} to run ${closure}`, async () => (await profileTarget(hosts.get(name)!)) === closure, 120_000, 250);

// A rollout of `closure` to h1 (wave first) and h2 (wave final, held for an approval).
async function createRollout(id: string, closure: string): Promise<void> {
  const manifest = join(dir, `${id}.json`);
  await fs.writeFile(manifest, JSON.stringify({ release: id, hosts: { h1: closure, h2: closure } }));
  await ok([
    'rollout',
    'create',
    '--release',
    manifest,
    '--wave',
    'first=h1',
    '--wave',
    'final=h2',
    '--gate',
    'first:approval',
    '--id',
    id,
  ]);
  await runsClosure('h1', closure);
}

const rolloutStatus = async (id: string): Promise<RolloutReport> =>
  JSON.parse(await ok(['rollout', 'status', id, '--json'])) as RolloutReport;

test.before(async () => {
  await writeKeyFile(aliceKey, org.alice);
  coordinator = await startCoordinatorProcess(join(dir, 'coordinator'), join(dir, 'coordinator.log'), 0, [
    '--org-root',
    org.root.publicKey,
  ]);
  const pushed = await pushPolicy(coordinator.url, signPolicy(basePolicy(org), org.root));
  assert.is(pushed.status, 200, pushed.body.error);
  cacheKey = await makeCacheKey(join(dir, 'keys'), 'deploy-generation-cache-1');
  for (const name of ['r1', 'r2', 'hotfix']) {
    closures[name] = await buildSystemClosure({
      name: `nixos-system-deploygen-${name}`,
      switchScript: SWITCH_SCRIPTS.succeeds,
    });
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
    agents.set(
      name,
      startPolicyAgent(host, {
        coordinators: [coordinator.url],
        orgRoot: org.root.publicKey,
        substituter: cache.url,
        cacheKey: cacheKey.publicKey,
      }),
    );
  }
  authority = await readHostKeyAuthority(coordinator.url, [org.root.publicKey], org.alice, 15_000);
});

test.after(async () => {
  await Promise.all([...agents.values()].map((a) => a.stop('SIGKILL')));
  await coordinator?.stop();
  await cache?.close();
  if (!process.env.OUTPOST_KEEP_TEST_DIR) removeDirectory(dir);
});

test('a deploy to a host a rollout has not reached yet is refused, naming the rollout; after an abort it goes through', async () => {
  await createRollout('r1', closures.r1!);
  // r1 gives h2 generation 1 when its final wave starts; h2's desired document holds nothing yet.
  const refused = await outpost(['deploy', '--host', 'h2', '--closure', closures.hotfix!]);
  assert.is(refused.code, 1, refused.stdout + refused.stderr);
  assert.match(refused.stderr, /h2 is in wave 2 \(final\) of rollout r1/);
  assert.match(refused.stderr, /outpost rollout abort r1/);
  assert.match(refused.stderr, /outpost rollout wait r1/);
  assert.match(refused.stderr, /--generation 2/);
  // An explicit generation the rollout names is refused too.
  const taken = await outpost(['deploy', '--host', 'h2', '--closure', closures.hotfix!, '--generation', '1']);
  assert.is(taken.code, 1, taken.stdout + taken.stderr);
  assert.match(taken.stderr, /generation 1 is not above 1.*rollout r1/);
  assert.is((await view('h2')).desired, null, 'nothing was signed for h2');

  // The way out it names: abort the rollout; the deploy then takes generation 1 and h2 runs it.
  await ok(['rollout', 'abort', 'r1', '--reason', 'hotfix first']);
  const deployed = await ok([
    'deploy',
    '--host',
    'h2',
    '--closure',
    closures.hotfix!,
    '--wait',
    '--wait-timeout',
    '2m',
  ]);
  assert.match(deployed, /stored: h2 → generation 1/);
  assert.match(deployed, /applied: h2 runs generation 1/);
  assert.is(await profileTarget(hosts.get('h2')!), closures.hotfix);
});

test('--generation above the rollout deploys over it and says what that costs; the host refuses the rollout once, signed, and the rollout halts naming it and its floor', async () => {
  await createRollout('r2', closures.r2!);
  assert.is((await rolloutStatus('r2')).state, 'running');
  // r2 gives h2 generation 2 (one above the deploy of the first test).
  const over = await outpost([
    'deploy',
    '--host',
    'h2',
    '--closure',
    closures.hotfix!,
    '--generation',
    '3',
    '--wait',
    '--wait-timeout',
    '2m',
  ]);
  assert.is(over.code, 0, over.stdout + over.stderr);
  assert.match(over.stderr, /deploying over rollout r2: h2 will not install the generation 2 .*abort it/);
  assert.match(over.stdout, /applied: h2 runs generation 3/);
  // The wave starts: h2 keeps the hotfix. Its floor (generation 3) is above the placement, so it
  // answers it with a signed refusal (it used to ignore it, and the rollout stayed running for ever).
  await ok(['rollout', 'approve', 'r2', '--wave', '2']);
  const floorReason =
    "rollback: rollout r2: generation 2 (epoch 0) is at or below this host's floor, generation 3 (epoch 0), already applied or attempted here";
  const refusalsOfR2 = async () =>
    (await view('h2')).results.filter((r) => r.result.closure === closures.r2 && r.result.outcome === 'refused');
  const [refusal] = await waitFor(
    "h2's refusal of r2",
    async () => ((await refusalsOfR2()).length ? refusalsOfR2() : null),
    60_000,
    250,
  );
  assert.ok(refusal!.signatureValid, "signed by h2's key");
  assert.is(refusal!.result.reason, floorReason);
  assert.is(refusal!.result.generation, 2);
  // The gate of the final wave counts h2 as failed (at most 0 may): halted, naming h2 and its floor.
  const halted = await waitFor(
    'r2 to halt',
    async () => {
      const report = await rolloutStatus('r2');
      return report.state === 'halted' ? report : null;
    },
    30_000,
    500,
  );
  assert.equal(halted.halted?.wave, 'final');
  assert.ok(halted.halted?.reason.includes(`h2 refused: ${floorReason}`), halted.halted?.reason);
  assert.equal(
    halted.failures.map((f) => [f.host, f.outcome, f.reason]),
    [['h2', 'refused', floorReason]],
  );
  const text = await ok(['rollout', 'status', 'r2']);
  assert.ok(text.includes(`HALTED — wave final: 1 hosts failed, at most 0 may (h2 refused: ${floorReason})`), text);
  const waited = await outpost(['rollout', 'wait', 'r2', '--timeout-total', '30s']);
  assert.is(waited.code, 1, waited.stdout + waited.stderr);
  assert.match(waited.stdout, /halted: wave final: .*h2 refused: rollback: .*floor, generation 3/);
  assert.is(await profileTarget(hosts.get('h2')!), closures.hotfix);
  assert.not.ok(
    (await view('h2')).results.some((r) => r.result.closure === closures.r2 && r.result.outcome === 'applied'),
  );
  // Once: not again at later evaluations, nor after the agent restarts (state.json keeps the answer).
  await agents.get('h2')!.stop();
  const host = hosts.get('h2')!;
  const restarted = startPolicyAgent(host, {
    coordinators: [coordinator.url],
    orgRoot: org.root.publicKey,
    substituter: cache.url,
    cacheKey: cacheKey.publicKey,
  });
  agents.set('h2', restarted);
  await waitFor(
    'h2 to reach the coordinator again',
    () => logEvents(restarted, 'status-delivered').length > 0,
    30_000,
    250,
  );
  await new Promise((resolve) => setTimeout(resolve, 5000));
  assert.is((await refusalsOfR2()).length, 1, 'one refusal');
});

test.run();
