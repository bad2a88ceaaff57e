import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { generateSigningKey, type SigningKey } from '../../shared/crypto/keys.js';
import { appendIntent } from '../../shared/documents/desired.js';
import { appendPolicy, POLICY_DOC } from '../../shared/documents/fleet.js';
import { desiredDocName } from '../../shared/documents/names.js';
import { appendRolloutEntries, rolloutDocName } from '../../shared/rollout/document.js';
import { deriveRolloutIntent, placeHosts, planDigest } from '../../shared/rollout/plan.js';
import type { SignedPlan } from '../../shared/rollout/schemas.js';
import { type BinaryCacheServer, serveBinaryCache } from '../harness/cache-server.js';
import { activations, prepareHost, profileTarget, type SimulatedHost, startAgentProcess } from '../harness/fleet.js';
import { type HostilePeer, startHostilePeer } from '../harness/hostile-peer.js';
import { logEvents, TEST_AGENT_FLAGS } from '../harness/lifecycle-fleet.js';
import { type CacheKeyFiles, makeCacheKey, publishToCache } from '../harness/nix-fixtures.js';
import { basePolicy, makeTestOrg, signPolicy } from '../harness/policy-fixtures.js';
import { type DaemonProcess, removeDirectory, temporaryDirectory, waitFor } from '../harness/processes.js';
import { type FixtureHost, hostResult, makePlan } from '../harness/rollout-fixtures.js';
import { buildSystemClosure } from '../harness/system-closures.js';

// A compromised coordinator writes forged evidence into a rollout's document to open the gate of
// wave 2 early. The attacker's real position (test/harness/hostile-peer.ts): it serves every
// document the agent reads — the genuine policy, the genuine admin-signed plan and whatever
// evidence it likes — over the real sync protocol, to a real agent process in wave 2 with real
// Nix. It holds no admin key and no key of an enrolled host, but it has every genuine result
// those hosts ever sent (it relays them). Wave 1 has two hosts; one genuinely succeeded, so one
// more success opens the gate: each forgery below would be that one.
const org = makeTestOrg();
const dir = temporaryDirectory('attack-rollout');
const policy = basePolicy(org);
const stranger = generateSigningKey('w1b');

let cacheKey: CacheKeyFiles;
let cache: BinaryCacheServer;
let peer: HostilePeer;
let agent: DaemonProcess;
let victim: SimulatedHost;
let release: string;
let plan: SignedPlan;
let otherRelease: SignedPlan;
const fixture = (host: string, key: SigningKey, closure: string): FixtureHost => ({ host, key, closure });
let w1a: FixtureHost;
let w1b: FixtureHost;
let w2x: FixtureHost;

const evidence = () => peer.doc(rolloutDocName('ra'));
const settle = () => new Promise((resolve) => setTimeout(resolve, 5000));

async function assertNotStarted(what: string): Promise<void> {
  // Time enough for an agent without the defence to fetch and switch (~2 s here).
  await settle();
  assert.equal(logEvents(agent, 'rollout-gate-open'), [], `${what}: the gate stayed closed`);
  assert.equal(await activations(victim), [], `${what}: nothing was activated`);
  assert.is(await profileTarget(victim), null);
}

test.before(async () => {
  cacheKey = await makeCacheKey(join(dir, 'keys'), 'attack-rollout-cache-1');
  release = await buildSystemClosure({ name: 'nixos-system-attack-rollout' });
  await publishToCache(release, join(dir, 'cache'), cacheKey.secretKeyFile);
  cache = await serveBinaryCache(join(dir, 'cache'));
  victim = await prepareHost(dir, 'h2');
  const { readKeyFile } = await import('../../shared/node/key-file.js');
  const victimKey = await readKeyFile(victim.keyFile);
  w1a = fixture('w1a', generateSigningKey('w1a'), release);
  w1b = fixture('w1b', generateSigningKey('w1b'), release);
  w2x = fixture('w2x', generateSigningKey('w2x'), release);
  const now = Date.now() - 60_000;
  plan = makePlan(org.alice, {
    id: 'ra',
    release: 'release-a',
    createdAt: now,
    waves: [
      { name: 'first', hosts: [w1a, w1b] },
      { name: 'second', hosts: [fixture('h2', victimKey, release), w2x] },
    ],
  });
  // Another rollout, of another release, with w1b in it: its genuine results are the attacker's to replay.
  otherRelease = makePlan(org.alice, {
    id: 'rb',
    release: 'release-b',
    createdAt: now - 86_400_000,
    waves: [{ name: 'first', hosts: [w1b] }],
  });
  peer = await startHostilePeer();
  appendPolicy(peer.doc(POLICY_DOC), signPolicy(policy, org.root));
  // The coordinator delivers h2's rollout intent at once (early: the agent must wait anyway).
  const digest = planDigest(plan.plan);
  appendIntent(peer.doc(desiredDocName('h2')), deriveRolloutIntent(plan, digest, placeHosts(plan.plan).get('h2')!));
  appendRolloutEntries(evidence(), {
    plans: [plan],
    evidence: [hostResult(plan, w1a, 'applied', now + 1000)],
  });
  agent = startAgentProcess(victim, {
    coordinators: [peer.url],
    adminKeys: [],
    substituters: [cache.url],
    trustedCacheKeys: [cacheKey.publicKey],
    extraArgs: [...TEST_AGENT_FLAGS, '--org-root', org.root.publicKey, '--backoff-base', '0.2', '--backoff-max', '1'],
  });
  await waitFor(
    'the agent to judge the gate: one of two successes',
    () => logEvents(agent, 'rollout-waiting').some((e) => /1 of 2 needed successes/.test(String(e.reason))),
    60_000,
    200,
  );
});

test.after(async () => {
  await agent?.stop('SIGKILL');
  await peer?.close();
  await cache?.close();
  if (!process.env.OUTPOST_KEEP_TEST_DIR) removeDirectory(dir);
});

test('a result for w1b signed by a key that is not w1b’s enrolled key (the plan names it) does not count', async () => {
  appendRolloutEntries(evidence(), { evidence: [hostResult(plan, w1b, 'applied', Date.now(), {}, stranger)] });
  await assertNotStarted('unenrolled key');
});

test("w1b's genuine result for another release's rollout, replayed here, does not count", async () => {
  appendRolloutEntries(evidence(), { evidence: [hostResult(otherRelease, w1b, 'applied', Date.now() - 3_600_000)] });
  await assertNotStarted('another release');
});

test("wrong host: a result claiming w1b signed by w1a's genuine key, and a wave-2 host's genuine success, do not count for w1b or wave 1", async () => {
  appendRolloutEntries(evidence(), {
    evidence: [hostResult(plan, w1b, 'applied', Date.now(), {}, w1a.key), hostResult(plan, w2x, 'applied', Date.now())],
  });
  await assertNotStarted('wrong host');
});

test("replayed: w1a's genuine success, appended again and again, counts once", async () => {
  const genuine = hostResult(plan, w1a, 'applied', Date.now() - 50_000);
  appendRolloutEntries(evidence(), {
    evidence: [genuine, genuine, genuine, hostResult(plan, w1a, 'applied', Date.now())],
  });
  await assertNotStarted('replayed');
});

test("altered: w1b's genuine failure with its outcome rewritten to applied (w1b's signature kept) does not count", async () => {
  // The attacker relays w1b's genuine result of this very intent: the key, host and intent digest
  // all match; only the signature over the exact content can tell the edit.
  const genuine = hostResult(plan, w1b, 'failed', Date.now() - 2000);
  const altered = {
    result: { ...genuine.result, outcome: 'applied' as const, reason: 'switch; confirmed: system running' },
    signature: genuine.signature,
  };
  appendRolloutEntries(evidence(), { evidence: [altered] });
  await assertNotStarted('altered');
});

test("control: w1b's genuine success opens the gate, and the agent installs the release", async () => {
  appendRolloutEntries(evidence(), { evidence: [hostResult(plan, w1b, 'applied', Date.now() - 1000)] });
  await waitFor('the release to be installed', async () => (await profileTarget(victim)) === release, 120_000, 250);
  assert.ok(logEvents(agent, 'rollout-gate-open').length > 0);
});

test.run();
