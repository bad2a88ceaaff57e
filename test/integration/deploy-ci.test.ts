import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { writeKeyFile } from '../../shared/node/key-file.js';
import { checkpointingCoordinatorArgs, deployArgs, hostStatus, writeEnrollToken } from '../harness/admin-cli.js';
import { type BinaryCacheServer, serveBinaryCache } from '../harness/cache-server.js';
import { activations, prepareHost, type SimulatedHost } from '../harness/fleet.js';
import { logEvents, startPolicyAgent } from '../harness/lifecycle-fleet.js';
import { type CacheKeyFiles, makeCacheKey, publishToCache } from '../harness/nix-fixtures.js';
import { basePolicy, makeTestOrg, pushPolicy, signPolicy } from '../harness/policy-fixtures.js';
import {
  type DaemonProcess,
  removeDirectory,
  runCli,
  startCoordinatorProcess,
  startDaemon,
  temporaryDirectory,
  waitFor,
} from '../harness/processes.js';
import { buildSystemClosure, SWITCH_SCRIPTS } from '../harness/system-closures.js';

// `outpost deploy` as a CI job uses it (issue 12): --wait blocks until the host's signed result
// and sets the exit code; --new-host is needed for a host the enrollment records do not know;
// --substituter checks the cache has the closure, signed by a pinned key, before signing.
const org = makeTestOrg();
const dir = temporaryDirectory('deploy-ci');
const files = {
  alice: join(dir, 'alice.key'),
  carol: join(dir, 'carol.key'),
  timestamp: join(dir, 'ts.key'),
  token: join(dir, 'h1.token'),
};
let coordinator: DaemonProcess & { url: string; port: number };
let cacheKey: CacheKeyFiles;
let otherKey: CacheKeyFiles;
let cache: BinaryCacheServer;
let host: SimulatedHost;
let agent: DaemonProcess;
const closures: Record<'good' | 'second' | 'broken' | 'unpublished' | 'foreign', string> = {
  good: '',
  second: '',
  broken: '',
  unpublished: '',
  foreign: '',
};

test.before(async () => {
  await writeKeyFile(files.alice, org.alice);
  await writeKeyFile(files.carol, org.carol);
  await writeKeyFile(files.timestamp, org.timestamp);
  coordinator = await startCoordinatorProcess(
    join(dir, 'coordinator'),
    join(dir, 'coordinator.log'),
    0,
    checkpointingCoordinatorArgs(org, files.timestamp),
  );
  assert.is((await pushPolicy(coordinator.url, signPolicy(basePolicy(org), org.root))).status, 200);
  cacheKey = await makeCacheKey(join(dir, 'keys'), 'deploy-ci-cache-1');
  otherKey = await makeCacheKey(join(dir, 'other-keys'), 'someone-else-1');
  closures.good = await buildSystemClosure({ name: 'nixos-system-ci-good', extraPaths: 2 });
  closures.second = await buildSystemClosure({ name: 'nixos-system-ci-second' });
  closures.broken = await buildSystemClosure({ name: 'nixos-system-ci-broken', switchScript: SWITCH_SCRIPTS.fails });
  closures.unpublished = await buildSystemClosure({ name: 'nixos-system-ci-unpublished' });
  closures.foreign = await buildSystemClosure({ name: 'nixos-system-ci-foreign' });
  for (const name of ['good', 'second', 'broken'] as const)
    await publishToCache(closures[name], join(dir, 'cache'), cacheKey.secretKeyFile);
  await publishToCache(closures.foreign, join(dir, 'cache'), otherKey.secretKeyFile);
  cache = await serveBinaryCache(join(dir, 'cache'));
  host = await prepareHost(dir, 'h1');
  await writeEnrollToken(files.token, org.alice, 'h1');
  agent = startPolicyAgent(host, {
    coordinators: [coordinator.url],
    orgRoot: org.root.publicKey,
    substituter: cache.url,
    cacheKey: cacheKey.publicKey,
    extraArgs: ['--enroll-token', files.token],
  });
  await waitFor('the token to bind the host key', () => logEvents(agent, 'enrolled').length > 0, 30_000);
});

test.after(async () => {
  await agent?.stop('SIGKILL');
  await coordinator?.stop();
  await cache?.close();
  if (!process.env.OUTPOST_KEEP_TEST_DIR) removeDirectory(dir);
});

const deploy = (hostId: string, closure: string, extra: string[] = []) =>
  runCli([...deployArgs({ coordinator: coordinator.url, key: files.alice }, hostId, closure), ...extra], {
    timeoutMs: 120_000,
  });

// Carol (read only) sees the host; null when the command fails.
const view = (hostId: string) =>
  hostStatus({ coordinator: coordinator.url, key: files.carol }, hostId).catch(() => null);

test('--new-host: a host id the enrollment records do not know is refused (nothing signed) unless --new-host says it is meant', async () => {
  const typo = await deploy('hl', closures.good);
  assert.is(typo.code, 1);
  assert.match(typo.stderr, /hl is not in the enrollment records under policy version 1 \(enrolled: h1\).*--new-host/);
  assert.is(await view('hl'), null, 'nothing was stored for the typo');
  const meant = await deploy('h9', closures.good, ['--new-host']);
  assert.is(meant.code, 0, meant.stderr);
  assert.match(meant.stdout, /stored: h9 → generation 1/);
});

test('--substituter: a closure missing from the cache, or not signed by the pinned key, is refused before signing; a complete signed one passes', async () => {
  const missing = await deploy('h1', closures.unpublished, ['--substituter', cache.url]);
  assert.is(missing.code, 1);
  assert.match(
    missing.stderr,
    /cache check: substituter .* does not have .*nixos-system-ci-unpublished.*nothing was signed/,
  );
  const foreign = await deploy('h1', closures.foreign, [
    '--substituter',
    cache.url,
    '--trusted-cache-key',
    cacheKey.publicKey,
  ]);
  assert.is(foreign.code, 1);
  assert.match(foreign.stderr, /not signed by a pinned --trusted-cache-key/);
  assert.is((await view('h1'))?.desired, null, "neither was signed into h1's desired document");
  // Without a pinned key only presence is checked: the foreign-signed closure is there.
  const present = await deploy('h1', closures.foreign, ['--substituter', cache.url, '--generation', '1']);
  assert.is(present.code, 0, present.stderr);
  assert.match(present.stdout, /has all \d+ paths of the closure .*signatures not checked/);
  // The agent refuses that one itself (its own pinned key): wait for it before going on.
  await waitFor(
    'the agent to refuse the foreign-signed closure',
    async () => (await view('h1'))?.lastResult,
    60_000,
    300,
  );
});

test('--wait: exit 0 once the host applied it, with the signed result checked against enrollment; status --watch follows it', async () => {
  // A person watching the fleet meanwhile: in a pipe, each change is printed once.
  const watch = startDaemon(
    [
      'status',
      '--coordinator',
      coordinator.url,
      '--key',
      files.carol,
      '--org-root',
      org.root.publicKey,
      '--host',
      'h1',
      '--watch',
      '--interval',
      '0.3s',
    ],
    join(dir, 'watch.log'),
  );
  await waitFor('the first frame of status --watch', () => /1 host: /.test(watch.logs()), 30_000, 100);
  const framesBefore = watch.logs().split('\n---').length;
  const started = Date.now();
  const applied = await deploy('h1', closures.good, [
    '--substituter',
    cache.url,
    '--trusted-cache-key',
    cacheKey.publicKey,
    '--wait',
    '--org-root',
    org.root.publicKey,
  ]);
  assert.is(applied.code, 0, applied.stderr);
  assert.match(applied.stdout, /has all \d+ paths of the closure .*signed by deploy-ci-cache-1/);
  assert.match(applied.stdout, /applied: h1 runs generation 2 \(result #\d+\)$/m);
  assert.not.match(applied.stdout, /unverified/);
  assert.ok((await activations(host)).includes(`switch ${closures.good}`));
  console.log(`deploy --wait to applied: ${Date.now() - started} ms`);
  await waitFor(
    'status --watch to show h1 at generation 2',
    () => /^h1 +2 \S+ +2 \S+/m.test(watch.logs().split('\n---').at(-2) ?? ''),
    30_000,
    100,
  );
  const frames = watch.logs().split('\n---');
  assert.ok(frames.length > framesBefore, 'a new frame was printed when the host moved');
  assert.match(frames.at(-2)!, /1 host: .*; 1 at their desired generation; 1 online/);
  watch.child.kill('SIGINT');
  assert.is(await watch.exited, 0, 'Ctrl-C ends the watch cleanly');
});

test('--wait: non-zero with the reason when the host fails or rolls back, refuses, or gives no answer in time', async () => {
  const broken = await deploy('h1', closures.broken, ['--wait', '--org-root', org.root.publicKey]);
  assert.is(broken.code, 1, broken.stdout);
  assert.match(broken.stderr, /h1 generation 3 (failed|rolled-back): ./);
  const refused = await deploy('h1', closures.second, ['--wait', '--generation', '1', '--force']);
  assert.is(refused.code, 1, refused.stdout);
  assert.match(
    refused.stderr,
    /h1 generation 1 refused: rollback: .*\(host key unverified: give --org-root/,
    refused.stderr,
  );
  const silent = await deploy('h9', closures.second, ['--wait', '--wait-timeout', '3s', '--new-host']);
  assert.is(silent.code, 3, silent.stdout);
  assert.match(silent.stderr, /h9 generation 2 timeout: no result from h9 for generation 2 within 3 s/);
});

test.run();
