import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { signEnrollToken } from '../../admin/enroll-entries.js';
import type { HostView } from '../../admin/fleet-view.js';
import { generateSigningKey } from '../../shared/crypto/keys.js';
import { signPayload, verifyPayloadSignature } from '../../shared/crypto/signatures.js';
import { appendIntent } from '../../shared/documents/desired.js';
import { appendPolicy, POLICY_DOC, TIMESTAMP_DOC, writeTimestamp } from '../../shared/documents/fleet.js';
import { desiredDocName, statusDocName } from '../../shared/documents/names.js';
import { readCurrentStatus, readResults } from '../../shared/documents/status.js';
import { writeKeyFile } from '../../shared/node/key-file.js';
import type { Intent, SignedIntent } from '../../shared/schemas/intent.js';
import { type Policy, policySchema, type Timestamp } from '../../shared/schemas/policy.js';
import type { Result, Status } from '../../shared/schemas/report.js';
import { signIntent } from '../../shared/trust/sign-intent.js';
import { type BinaryCacheServer, serveBinaryCache } from '../harness/cache-server.js';
import { activations, prepareHost, profileTarget, type SimulatedHost } from '../harness/fleet.js';
import { type HostilePeer, startHostilePeer } from '../harness/hostile-peer.js';
import { logEvents, startPolicyAgent } from '../harness/lifecycle-fleet.js';
import { type CacheKeyFiles, makeCacheKey, publishToCache } from '../harness/nix-fixtures.js';
import { basePolicy, makeTestOrg, pushPolicy, signPolicy, switchIntent } from '../harness/policy-fixtures.js';
import {
  type DaemonProcess,
  removeDirectory,
  runCli,
  startCoordinatorProcess,
  temporaryDirectory,
  waitFor,
} from '../harness/processes.js';
import { buildSystemClosure } from '../harness/system-closures.js';

// Co-signing (issue 12) with real processes and real Nix: the production group needs two admins.
// alice deploys (`outpost deploy`), bob co-signs the same content (`outpost approve`), the real
// agent applies it only then; with alice alone it waits and says so. Then the attacker's
// position: a compromised coordinator or relay (test/harness/hostile-peer.ts) holding alice's
// genuine intent tries to reach the threshold without bob.
const org = makeTestOrg();
const mallory = generateSigningKey('mallory');
const dir = temporaryDirectory('cosign');
const production = ['prod-1', 'prod-2', 'prod-3', 'prod-4', 'prod-5', 'prod-6'];
const policy: Policy = policySchema.parse({
  ...basePolicy(org),
  groups: [{ name: 'production', hosts: production, threshold: 2 }],
});
const signedPolicy = signPolicy(policy, org.root);
const keyFiles = {
  alice: join(dir, 'alice.key'),
  bob: join(dir, 'bob.key'),
  carol: join(dir, 'carol.key'),
  timestamp: join(dir, 'timestamp.key'),
};
let cacheKey: CacheKeyFiles;
let cache: BinaryCacheServer;
const closures: string[] = [];
const agents: DaemonProcess[] = [];
const peers: HostilePeer[] = [];
let coordinator: (DaemonProcess & { url: string; port: number }) | null = null;

test.before(async () => {
  for (const [name, key] of [
    ['alice', org.alice],
    ['bob', org.bob],
    ['carol', org.carol],
    ['timestamp', org.timestamp],
  ] as const)
    await writeKeyFile(keyFiles[name], key);
  cacheKey = await makeCacheKey(join(dir, 'keys'), 'cosign-cache-1');
  for (const name of ['one', 'two']) {
    const closure = await buildSystemClosure({ name: `nixos-system-cosign-${name}` });
    await publishToCache(closure, join(dir, 'cache'), cacheKey.secretKeyFile);
    closures.push(closure);
  }
  cache = await serveBinaryCache(join(dir, 'cache'));
});

test.after(async () => {
  await Promise.all(agents.map((a) => a.stop('SIGKILL')));
  await Promise.all(peers.map((p) => p.close()));
  await coordinator?.stop();
  await cache?.close();
  if (!process.env.OUTPOST_KEEP_TEST_DIR) removeDirectory(dir);
});

function startAgent(host: SimulatedHost, url: string, extra: string[] = []): DaemonProcess {
  const agent = startPolicyAgent(host, {
    coordinators: [url],
    orgRoot: org.root.publicKey,
    substituter: cache.url,
    cacheKey: cacheKey.publicKey,
    extraArgs: extra,
  });
  agents.push(agent);
  return agent;
}

async function view(url: string, host: string): Promise<HostView> {
  const result = await runCli([
    'status',
    '--coordinator',
    url,
    '--key',
    keyFiles.carol,
    '--org-root',
    org.root.publicKey,
    '--json',
    '--host',
    host,
  ]);
  if (result.code !== 0) throw new Error(result.stderr);
  return (JSON.parse(result.stdout) as { hosts: HostView[] }).hosts[0]!;
}

function approve(url: string, keyFile: string, host: string, extra: string[] = []) {
  return runCli([
    'approve',
    '--coordinator',
    url,
    '--key',
    keyFile,
    '--org-root',
    org.root.publicKey,
    '--host',
    host,
    ...extra,
  ]);
}

test('threshold 2, real coordinator: alice alone deploys and the host waits, saying for whom; bob approves the same content and the host applies it', async () => {
  coordinator = await startCoordinatorProcess(join(dir, 'coordinator'), join(dir, 'coordinator.log'), 0, [
    '--org-root',
    org.root.publicKey,
    '--timestamp-key',
    keyFiles.timestamp,
    '--timestamp-interval',
    '0.5',
  ]);
  const url = coordinator.url;
  assert.is((await pushPolicy(url, signedPolicy)).status, 200);
  const host = await prepareHost(dir, 'prod-1');
  const tokenFile = join(dir, 'prod-1.token');
  const token = signEnrollToken(org.alice, {
    host: 'prod-1',
    expiresAt: new Date(Date.now() + 3_600_000).toISOString(),
    policyVersion: 1,
  });
  await fs.writeFile(tokenFile, JSON.stringify(token), { mode: 0o600 });
  const agent = startAgent(host, url, ['--enroll-token', tokenFile]);
  await waitFor('the token to bind the host key', () => logEvents(agent, 'enrolled').length > 0, 30_000);

  const deployed = await runCli([
    'deploy',
    '--coordinator',
    url,
    '--key',
    keyFiles.alice,
    '--host',
    'prod-1',
    '--closure',
    closures[0]!,
  ]);
  assert.is(deployed.code, 0, deployed.stderr);
  // The host holds it back and says why in its signed status; the admin view says who is needed.
  const waiting = await waitFor(
    'prod-1 to report that generation 1 waits for signatures',
    async () => {
      const v = await view(url, 'prod-1').catch(() => null);
      return v?.awaitingSignatures?.generation === 1 ? v : null;
    },
    30_000,
    300,
  );
  assert.match(waiting.awaitingSignatures!.reason, /^1 of 2 required admin signatures \(alice\)/);
  assert.equal(waiting.desired?.coSigning, { threshold: 2, signed: ['alice'], missing: 1, couldSign: ['bob'] });
  assert.is(waiting.lastResult, null, 'no refusal was reported: the intent is pending, not refused');
  assert.ok(logEvents(agent, 'waiting-for-signatures').length > 0);
  const table = await runCli([
    'status',
    '--coordinator',
    url,
    '--key',
    keyFiles.carol,
    '--org-root',
    org.root.publicKey,
  ]);
  assert.match(table.stdout, /WAITS FOR SIGNATURES/);
  assert.match(
    table.stdout,
    /AWAITING CO-SIGNATURES[^\n]*\n {2}prod-1 generation 1: 1 of 2 admin signatures \(alice\); needs 1 more of: bob/,
  );

  // Who may not approve, or what does not match what was reviewed, signs nothing.
  const byCarol = await approve(url, keyFiles.carol, 'prod-1');
  assert.is(byCarol.code, 1);
  assert.match(byCarol.stderr, /carol lacks 'deploy' for host prod-1/);
  const again = await approve(url, keyFiles.alice, 'prod-1');
  assert.is(again.code, 0, again.stderr);
  assert.match(again.stdout, /already signed/);
  const wrongClosure = await approve(url, keyFiles.bob, 'prod-1', ['--closure', closures[1]!]);
  assert.is(wrongClosure.code, 1);
  assert.match(wrongClosure.stderr, /not approving/);
  const dry = await approve(url, keyFiles.bob, 'prod-1', ['--dry-run']);
  assert.is(dry.code, 0, dry.stderr);
  assert.match(
    dry.stdout,
    /prod-1 generation 1 \(switch\) .*cosign-one[\s\S]*deployed by alice[\s\S]*needs 1 more of: bob/,
  );
  await new Promise((resolve) => setTimeout(resolve, 3000));
  assert.equal(await activations(host), [], 'one admin, however asked, does not move the host');

  const approved = await approve(url, keyFiles.bob, 'prod-1', ['--closure', closures[0]!, '--generation', '1']);
  assert.is(approved.code, 0, approved.stderr);
  assert.match(approved.stdout, /signed by bob: 2 of 2 admin signatures \(bob, alice\)/);
  const applied = await waitFor(
    "prod-1's result for generation 1",
    async () => (await view(url, 'prod-1').catch(() => null))?.lastResult,
    60_000,
    300,
  );
  assert.is(applied.outcome, 'applied', applied.reason);
  assert.is(applied.generation, 1);
  assert.equal(await activations(host), [`switch ${closures[0]}`]);
  const after = await view(url, 'prod-1');
  assert.is(after.awaitingSignatures ?? null, null);
  assert.is(after.desired?.coSigning?.missing, 0);
});

// --- The attacker's position: a compromised coordinator or relay ---------------------------------

function intent(host: string, generation: number, closure: string): Intent {
  return switchIntent(host, generation, closure, 'alice', 1);
}

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

const junk = (key: string) => ({ publicKey: key, signature: `${'A'.repeat(86)}==` });

// The attacker writes, next to alice's genuine envelope, whatever `forge` makes of it; the real
// agent must keep waiting for a second admin. Then bob's genuine signature arrives in an envelope
// of its own (written by the same attacker, who merely forwards it) and the host applies: the
// setup could apply all along, so the wait was the defence's doing.
async function attack(hostName: string, forge: (genuine: SignedIntent) => SignedIntent[]): Promise<void> {
  const peer = await startHostilePeer();
  peers.push(peer);
  appendPolicy(peer.doc(POLICY_DOC), signedPolicy);
  const timestamp: Timestamp = { kind: 'timestamp', at: new Date().toISOString(), seq: 1, policyVersion: 1 };
  writeTimestamp(peer.doc(TIMESTAMP_DOC), { timestamp, signature: signPayload('timestamp', timestamp, org.timestamp) });
  const host = await prepareHost(dir, hostName);
  const genuine = signIntent(intent(hostName, 1, closures[1]!), org.alice);
  const desired = peer.doc(desiredDocName(hostName));
  appendIntent(desired, genuine);
  for (const forged of forge(genuine)) appendIntent(desired, forged);
  const agent = startAgent(host, peer.url);
  const status = await waitFor(
    `${hostName} to report that generation 1 waits for signatures`,
    () => {
      const s = signedStatus(peer, host);
      return s?.awaitingSignatures?.generation === 1 ? s : null;
    },
    30_000,
    200,
  );
  assert.match(String(status.awaitingSignatures?.reason), /^1 of 2 required admin signatures \(alice\)/);
  // Time enough for an agent without the defence to fetch and switch (it takes ~2 s here).
  await new Promise((resolve) => setTimeout(resolve, 5000));
  assert.equal(await activations(host), [], 'nothing activated with one admin');
  assert.equal(signedResults(peer, host), [], 'no result: the intent is pending, not decided');
  assert.ok(logEvents(agent, 'waiting-for-signatures').length > 0);
  appendIntent(desired, { intent: genuine.intent, signatures: [signPayload('intent', genuine.intent, org.bob)] });
  const applied = await waitFor(
    `${hostName}'s result once bob co-signed`,
    () => signedResults(peer, host).find((r) => r.generation === 1),
    60_000,
    200,
  );
  assert.is(applied.outcome, 'applied', applied.reason);
  assert.is(await profileTarget(host), closures[1]);
}

test("attack, duplicated signature: copies of alice's envelope and one carrying her signature twice do not make two admins", async () => {
  await attack('prod-2', (genuine) => [
    { intent: genuine.intent, signatures: [genuine.signatures[0]!, genuine.signatures[0]!] },
    { intent: genuine.intent, signatures: [...genuine.signatures, ...genuine.signatures, ...genuine.signatures] },
  ]);
});

test("attack, junk signatures: signatures under bob's key that do not verify count for nothing", async () => {
  await attack('prod-3', (genuine) => [
    { intent: genuine.intent, signatures: [junk(org.bob.publicKey)] },
    { intent: genuine.intent, signatures: [...genuine.signatures, junk(org.bob.publicKey)] },
  ]);
});

test('attack, re-signed with keys that are not admins with deploy: a self-made key and read-only carol count for nothing', async () => {
  await attack('prod-4', (genuine) => [
    { intent: genuine.intent, signatures: [...genuine.signatures, signPayload('intent', genuine.intent, mallory)] },
    { intent: genuine.intent, signatures: [signPayload('intent', genuine.intent, org.carol)] },
  ]);
});

test.run();
