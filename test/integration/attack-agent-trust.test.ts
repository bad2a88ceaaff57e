import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as Y from 'yjs';
import { generateSigningKey } from '../../shared/crypto/keys.js';
import { verifyPayloadSignature } from '../../shared/crypto/signatures.js';
import { appendIntent } from '../../shared/documents/desired.js';
import { appendPolicy, POLICY_DOC, TIMESTAMP_DOC } from '../../shared/documents/fleet.js';
import { desiredDocName, statusDocName } from '../../shared/documents/names.js';
import { readCurrentStatus, readResults } from '../../shared/documents/status.js';
import { connectDocument } from '../../shared/node/connect.js';
import { writeKeyFile } from '../../shared/node/key-file.js';
import type { Intent } from '../../shared/schemas/intent.js';
import { type Policy, policySchema, type SignedPolicy } from '../../shared/schemas/policy.js';
import type { Result, Status } from '../../shared/schemas/report.js';
import { signIntent } from '../../shared/trust/sign-intent.js';
import { type BinaryCacheServer, serveBinaryCache } from '../harness/cache-server.js';
import { activations, prepareHost, profileTarget, type SimulatedHost } from '../harness/fleet.js';
import { type HostilePeer, startHostilePeer } from '../harness/hostile-peer.js';
import { logEvents, startPolicyAgent } from '../harness/lifecycle-fleet.js';
import { type CacheKeyFiles, makeCacheKey, publishToCache } from '../harness/nix-fixtures.js';
import {
  basePolicy,
  makeTestOrg,
  pushPolicy,
  signPolicy,
  stampTimestamps,
  switchIntent,
} from '../harness/policy-fixtures.js';
import {
  type DaemonProcess,
  removeDirectory,
  startCoordinatorProcess,
  temporaryDirectory,
  waitFor,
} from '../harness/processes.js';
import { buildSystemClosure } from '../harness/system-closures.js';

// A real agent process behind a compromised relay or coordinator (test/harness/hostile-peer.ts:
// the real sync protocol, every document written by the attacker). The attacker cannot sign
// policies, intents or timestamps, but it chooses what the agent sees: it can withhold a new
// policy version, withhold timestamps, and keep serving what a revoked key signed.
const org = makeTestOrg();
const dave = generateSigningKey('dave');
const dir = temporaryDirectory('attack-trust');
const v1 = basePolicy(org);
// The root's answer to alice's stolen key: v2 revokes it, adds dave, and raises the epoch so that
// intents under v2 outrank anything alice's key pushed.
const v2: Policy = policySchema.parse({
  ...v1,
  version: 2,
  epoch: 1,
  issuedAt: new Date().toISOString(),
  revokedKeys: [org.alice.publicKey],
  admins: [...v1.admins.filter((a) => a.name !== 'alice'), { name: 'dave', keys: [dave.publicKey], roles: ['ops'] }],
});
const signedV1 = signPolicy(v1, org.root);
const signedV2 = signPolicy(v2, org.root);

let cacheKey: CacheKeyFiles;
let cache: BinaryCacheServer;
const closures: string[] = [];
const agents: DaemonProcess[] = [];
const peers: HostilePeer[] = [];

test.before(async () => {
  cacheKey = await makeCacheKey(join(dir, 'keys'), 'attack-trust-cache-1');
  for (const name of ['a', 'b', 'c', 'd']) {
    const closure = await buildSystemClosure({ name: `nixos-system-attack-${name}` });
    await publishToCache(closure, join(dir, 'cache'), cacheKey.secretKeyFile);
    closures.push(closure);
  }
  cache = await serveBinaryCache(join(dir, 'cache'));
});

test.after(async () => {
  await Promise.all(agents.map((a) => a.stop('SIGKILL')));
  await Promise.all(peers.map((p) => p.close()));
  await cache?.close();
  if (!process.env.OUTPOST_KEEP_TEST_DIR) removeDirectory(dir);
});

async function hostilePeer(policies: SignedPolicy[]): Promise<HostilePeer> {
  const peer = await startHostilePeer();
  peers.push(peer);
  for (const signed of policies) appendPolicy(peer.doc(POLICY_DOC), signed);
  return peer;
}

function startAgent(host: SimulatedHost, peer: HostilePeer, extra: string[] = []): DaemonProcess {
  const agent = startPolicyAgent(host, {
    coordinators: [peer.url],
    orgRoot: org.root.publicKey,
    substituter: cache.url,
    cacheKey: cacheKey.publicKey,
    extraArgs: extra,
  });
  agents.push(agent);
  return agent;
}

function intent(host: string, generation: number, closure: string, policyVersion: number, issuer: string): Intent {
  return switchIntent(host, generation, closure, issuer, policyVersion);
}

// What the agent signed, as the attacker's copy of its status document holds it: only entries
// that verify under the host's own key count (the attacker could write others).
function signedStatus(peer: HostilePeer, host: SimulatedHost): Status | null {
  const current = readCurrentStatus(peer.doc(statusDocName(host.host)));
  if (!current || current.signature.publicKey !== host.publicKey) return null;
  return verifyPayloadSignature('status', current.status, current.signature) ? current.status : null;
}

function signedResults(peer: HostilePeer, host: SimulatedHost): Result[] {
  return readResults(peer.doc(statusDocName(host.host)))
    .results.filter(
      (r) => r.signature.publicKey === host.publicKey && verifyPayloadSignature('result', r.result, r.signature),
    )
    .map((r) => r.result);
}

function resultFor(peer: HostilePeer, host: SimulatedHost, generation: number): Promise<Result> {
  return waitFor(
    `${host.host}'s signed result for generation ${generation}`,
    () => signedResults(peer, host).find((r) => r.generation === generation),
    120_000,
    200,
  );
}

test('issue 11 item 1, withheld revocation: a relay that forwards genuine timestamps naming policy v2 but serves only v1 gets nothing installed by the revoked key; the agent says in its signed status that it waits for v2', async () => {
  // The real coordinator holds v2 and signs timestamps naming it.
  const keyFile = join(dir, 'timestamp.key');
  await writeKeyFile(keyFile, org.timestamp);
  const coordinator = await startCoordinatorProcess(join(dir, 'coordinator'), join(dir, 'coordinator.log'), 0, [
    '--org-root',
    org.root.publicKey,
    '--timestamp-key',
    keyFile,
    '--timestamp-interval',
    '0.3',
  ]);
  const upstream = connectDocument(coordinator.url, TIMESTAMP_DOC, { identity: org.carol });
  try {
    assert.is((await pushPolicy(coordinator.url, signedV1)).status, 200);
    assert.is((await pushPolicy(coordinator.url, signedV2)).status, 200);
    // The hostile relay: policy v1 only, the coordinator's timestamps forwarded as they come, and
    // a runaway generation signed by alice's stolen key under v1.
    const relay = await hostilePeer([signedV1]);
    upstream.doc.on('update', (update: Uint8Array) => Y.applyUpdate(relay.doc(TIMESTAMP_DOC), update));
    Y.applyUpdate(relay.doc(TIMESTAMP_DOC), Y.encodeStateAsUpdate(upstream.doc));
    const host = await prepareHost(dir, 'h1');
    appendIntent(
      relay.doc(desiredDocName('h1')),
      signIntent(intent('h1', 1_000_000, closures[0]!, 1, 'alice'), org.alice),
    );
    const agent = startAgent(host, relay);

    const frozen = await waitFor(
      "the agent's signed status to say it waits for policy v2",
      () => {
        const status = signedStatus(relay, host);
        return status?.trust?.frozen === true && status.trust.waitingForPolicyVersion === 2 ? status : null;
      },
      30_000,
      200,
    );
    assert.is(frozen.trust?.policyVersion, 1);
    assert.match(String(frozen.trust?.reason), /names policy version 2/);
    // Time enough for an agent without the defence to fetch and switch (it takes ~2 s here).
    await new Promise((resolve) => setTimeout(resolve, 6000));
    assert.equal(await activations(host), [], 'nothing signed by the revoked key was activated');
    assert.is(await profileTarget(host), null);
    assert.equal(signedResults(relay, host), [], 'no decision was taken under the stale policy');
    assert.ok(logEvents(agent, 'install-held').length > 0, 'the agent logs that it holds');
    assert.ok(logEvents(agent, 'policy-behind').length > 0, 'the agent logs that it is behind');

    // The relay stops withholding: the agent walks to v2, alice's intent is refused, the freeze ends.
    appendPolicy(relay.doc(POLICY_DOC), signedV2);
    const refused = await resultFor(relay, host, 1_000_000);
    assert.is(refused.outcome, 'refused');
    assert.match(refused.reason, /^unknown-signer: .*revoked/);
    await waitFor(
      'the freeze to end',
      () => {
        const status = signedStatus(relay, host);
        return status?.trust?.frozen === false && status.trust.policyVersion === 2;
      },
      20_000,
      200,
    );
    // And the fleet moves on under v2.
    appendIntent(relay.doc(desiredDocName('h1')), signIntent(intent('h1', 1, closures[1]!, 2, 'dave'), dave));
    const applied = await resultFor(relay, host, 1);
    assert.is(applied.outcome, 'applied', applied.reason);
    assert.equal(await activations(host), [`switch ${closures[1]}`]);
  } finally {
    upstream.close();
    await coordinator.stop();
  }
});

test('threat 3, withholding: a relay that withholds timestamps freezes the agent, which says so in its signed status and installs nothing — even a valid intent — until fresh timestamps return', async () => {
  const relay = await hostilePeer([signedV1]);
  const host = await prepareHost(dir, 'h2');
  // One genuine timestamp, then nothing: the relay withholds the rest.
  stampTimestamps(relay, org, () => 1)();
  const agent = startAgent(host, relay, ['--freeze-after', '3']);
  const frozen = await waitFor(
    'the agent to report a freeze in its signed status',
    () => {
      const status = signedStatus(relay, host);
      return status?.trust?.frozen ? status : null;
    },
    30_000,
    200,
  );
  assert.ok(frozen.trust?.lastTimestampAt, 'the freeze names the last fresh timestamp');
  assert.match(String(frozen.trust?.reason), /no fresh signed timestamp/);
  // What arrives during the freeze — valid as far as this agent knows — waits.
  appendIntent(relay.doc(desiredDocName('h2')), signIntent(intent('h2', 1, closures[0]!, 1, 'alice'), org.alice));
  // Time enough for an agent without the defence to fetch and switch (it takes ~2 s here).
  await new Promise((resolve) => setTimeout(resolve, 6000));
  assert.equal(await activations(host), [], 'nothing installed while frozen');
  assert.equal(signedResults(relay, host), []);
  assert.ok(logEvents(agent, 'install-held').length > 0, 'the agent logs that it holds');
  // Fresh timestamps again: the freeze ends and the intent is installed.
  const stop = stampTimestamps(relay, org, () => 1);
  try {
    const applied = await resultFor(relay, host, 1);
    assert.is(applied.outcome, 'applied', applied.reason);
    assert.equal(await activations(host), [`switch ${closures[0]}`]);
    assert.is(signedStatus(relay, host)?.trust?.frozen, false);
    assert.ok(logEvents(agent, 'trust-fresh').length > 0);
  } finally {
    stop();
  }
});

test('threat 4, huge generation: after a stolen key pushed generation 2^53-1, v2 (key revoked, epoch raised) lets the next admin move the host on; the revoked key and its runaway generation never count again', async () => {
  const peer = await hostilePeer([signedV1]);
  let version = 1;
  const stop = stampTimestamps(peer, org, () => version);
  const host = await prepareHost(dir, 'h3');
  const desired = peer.doc(desiredDocName('h3'));
  const runaway = signIntent(intent('h3', Number.MAX_SAFE_INTEGER, closures[0]!, 1, 'alice'), org.alice);
  appendIntent(desired, runaway);
  startAgent(host, peer);
  try {
    const first = await resultFor(peer, host, Number.MAX_SAFE_INTEGER);
    assert.is(first.outcome, 'applied', first.reason);
    // The org root answers: v2. Dave's first intent is generation 1, under epoch 1.
    appendPolicy(peer.doc(POLICY_DOC), signedV2);
    version = 2;
    appendIntent(desired, signIntent(intent('h3', 1, closures[1]!, 2, 'dave'), dave));
    const recovered = await resultFor(peer, host, 1);
    assert.is(recovered.outcome, 'applied', recovered.reason);
    assert.is(await profileTarget(host), closures[1]);
    // The attacker keeps pushing with the stolen key, above and below, and re-serves the runaway.
    appendIntent(desired, signIntent(intent('h3', 2, closures[2]!, 1, 'alice'), org.alice));
    appendIntent(desired, signIntent(intent('h3', 3, closures[3]!, 2, 'alice'), org.alice));
    appendIntent(desired, runaway);
    for (const generation of [2, 3]) {
      const refused = await resultFor(peer, host, generation);
      assert.is(refused.outcome, 'refused');
      assert.match(refused.reason, /^unknown-signer: .*revoked/);
    }
    assert.is(await profileTarget(host), closures[1], 'the host stays on what the current admins chose');
    assert.equal(await activations(host), [`switch ${closures[0]}`, `switch ${closures[1]}`]);
  } finally {
    stop();
  }
});

test.run();
