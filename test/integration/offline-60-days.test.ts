import { existsSync, promises as fs } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { signEnrollToken } from '../../admin/enroll-entries.js';
import type { HostView } from '../../admin/fleet-view.js';
import { signPayload, verifyPayloadSignature } from '../../shared/crypto/signatures.js';
import { appendIntent } from '../../shared/documents/desired.js';
import { appendPolicy, POLICY_DOC, TIMESTAMP_DOC, writeTimestamp } from '../../shared/documents/fleet.js';
import { desiredDocName, statusDocName } from '../../shared/documents/names.js';
import { readResults } from '../../shared/documents/status.js';
import { writeKeyFile } from '../../shared/node/key-file.js';
import type { Intent } from '../../shared/schemas/intent.js';
import type { Timestamp } from '../../shared/schemas/policy.js';
import type { Result } from '../../shared/schemas/report.js';
import { signIntent } from '../../shared/trust/sign-intent.js';
import { type BinaryCacheServer, serveBinaryCache } from '../harness/cache-server.js';
import { activations, prepareHost, profileTarget, type SimulatedHost } from '../harness/fleet.js';
import { type HostilePeer, startHostilePeer } from '../harness/hostile-peer.js';
import { logEvents, startPolicyAgent } from '../harness/lifecycle-fleet.js';
import { type CacheKeyFiles, makeCacheKey, publishToCache } from '../harness/nix-fixtures.js';
import { basePolicy, makeTestOrg, pushPolicy, signPolicy } from '../harness/policy-fixtures.js';
import {
  type DaemonProcess,
  removeDirectory,
  runCli,
  startCoordinatorProcess,
  temporaryDirectory,
  waitFor,
} from '../harness/processes.js';
import { buildSystemClosure } from '../harness/system-closures.js';

// Issue 12, "expiry that fits weeks offline": a site comes back after 60 days. The agent (and,
// in the first test, the coordinator) run under Debian's libfaketime with their clocks really 60
// days ahead; nothing in the agent is shortened for the test (default --freeze-after 1 day,
// --delivery-window 7 days, `outpost deploy`'s default --expires 90 days).
const DAY_MS = 86_400_000;
const SHIFT_MS = 60 * DAY_MS;
const FAKETIME_LIBS = [
  '/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1',
  '/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1',
  '/usr/lib/faketime/libfaketimeMT.so.1',
];

// A process environment whose clock reads 60 days later (libfaketime, preloaded).
function sixtyDaysLater(): NodeJS.ProcessEnv {
  const lib = FAKETIME_LIBS.find((path) => existsSync(path));
  if (!lib) throw new Error(`libfaketime not found (${FAKETIME_LIBS.join(', ')}): apt-get install faketime`);
  return { LD_PRELOAD: lib, FAKETIME: '+60d', FAKETIME_DONT_FAKE_MONOTONIC: '1' };
}

const org = makeTestOrg();
const dir = temporaryDirectory('offline-60-days');
const signedPolicy = signPolicy(basePolicy(org), org.root);
let cacheKey: CacheKeyFiles;
let cache: BinaryCacheServer;
const closures: string[] = [];
const daemons: DaemonProcess[] = [];
const peers: HostilePeer[] = [];

test.before(async () => {
  cacheKey = await makeCacheKey(join(dir, 'keys'), 'offline-cache-1');
  for (const name of ['one', 'two', 'three']) {
    const closure = await buildSystemClosure({ name: `nixos-system-offline-${name}` });
    await publishToCache(closure, join(dir, 'cache'), cacheKey.secretKeyFile);
    closures.push(closure);
  }
  cache = await serveBinaryCache(join(dir, 'cache'));
});

test.after(async () => {
  await Promise.all(daemons.map((d) => d.stop('SIGKILL')));
  await Promise.all(peers.map((p) => p.close()));
  await cache?.close();
  if (!process.env.OUTPOST_KEEP_TEST_DIR) removeDirectory(dir);
});

function startAgent(host: SimulatedHost, url: string, extra: string[], env: NodeJS.ProcessEnv = {}): DaemonProcess {
  const agent = startPolicyAgent(host, {
    coordinators: [url],
    orgRoot: org.root.publicKey,
    substituter: cache.url,
    cacheKey: cacheKey.publicKey,
    extraArgs: extra,
    env,
  });
  daemons.push(agent);
  return agent;
}

test('a host offline for 60 days applies, when it is back, the intent `outpost deploy` signed the day it went offline (real coordinator and agent, clocks 60 days on)', async () => {
  const keyFiles = { alice: join(dir, 'alice.key'), carol: join(dir, 'carol.key'), timestamp: join(dir, 'ts.key') };
  await writeKeyFile(keyFiles.alice, org.alice);
  await writeKeyFile(keyFiles.carol, org.carol);
  await writeKeyFile(keyFiles.timestamp, org.timestamp);
  const coordinatorArgs = ['--org-root', org.root.publicKey, '--timestamp-key', keyFiles.timestamp];
  const dataDir = join(dir, 'coordinator');
  let coordinator = await startCoordinatorProcess(dataDir, join(dir, 'coordinator-now.log'), 0, [
    ...coordinatorArgs,
    '--timestamp-interval',
    '0.5',
  ]);
  daemons.push(coordinator);
  assert.is((await pushPolicy(coordinator.url, signedPolicy)).status, 200);
  const host = await prepareHost(dir, 'h1');
  const tokenFile = join(dir, 'h1.token');
  const token = signEnrollToken(org.alice, {
    host: 'h1',
    expiresAt: new Date(Date.now() + 3_600_000).toISOString(),
    policyVersion: 1,
  });
  await fs.writeFile(tokenFile, JSON.stringify(token), { mode: 0o600 });
  const view = async (): Promise<HostView | null> => {
    const result = await runCli([
      'status',
      '--coordinator',
      coordinator.url,
      '--key',
      keyFiles.carol,
      '--org-root',
      org.root.publicKey,
      '--json',
      '--host',
      'h1',
    ]);
    return result.code === 0 ? (JSON.parse(result.stdout) as { hosts: HostView[] }).hosts[0]! : null;
  };
  const deploy = async (closure: string): Promise<void> => {
    const result = await runCli([
      'deploy',
      '--coordinator',
      coordinator.url,
      '--key',
      keyFiles.alice,
      '--host',
      'h1',
      '--closure',
      closure,
    ]);
    assert.is(result.code, 0, result.stderr);
  };

  // Today: the host is in contact and applies generation 1.
  let agent = startAgent(host, coordinator.url, ['--enroll-token', tokenFile]);
  await waitFor('the token to bind the host key', () => logEvents(agent, 'enrolled').length > 0, 30_000);
  await deploy(closures[0]!);
  const first = await waitFor('generation 1 applied', async () => (await view())?.lastResult, 60_000, 300);
  assert.is(first.outcome, 'applied', first.reason);
  // The site goes offline; the admin deploys generation 2 the same day, with deploy's defaults.
  await agent.stop('SIGTERM');
  await deploy(closures[1]!);
  await coordinator.stop();

  // 60 days later the site is back: the coordinator and the host both live 60 days on.
  coordinator = await startCoordinatorProcess(
    dataDir,
    join(dir, 'coordinator-later.log'),
    0,
    [...coordinatorArgs, '--timestamp-interval', '0.5'],
    sixtyDaysLater(),
  );
  daemons.push(coordinator);
  agent = startAgent(host, coordinator.url, [], sixtyDaysLater());
  const second = await waitFor(
    'generation 2 to be decided',
    async () => {
      const last = (await view())?.lastResult;
      return last && last.generation === 2 ? last : null;
    },
    90_000,
    500,
  );
  assert.is(second.outcome, 'applied', second.reason);
  assert.ok(
    Date.parse(second.at) - Date.parse(first.at) > SHIFT_MS - DAY_MS,
    `the agent's clock is 60 days on (${second.at})`,
  );
  assert.equal(await activations(host), [`switch ${closures[0]}`, `switch ${closures[1]}`]);
  const resumed = logEvents(agent, 'contact-resumed')[0];
  assert.ok(resumed, 'the agent logged that contact resumed after the gap');
});

// --- A relay that withheld an intent while the host was in contact -------------------------------

function intent(generation: number, closure: string, issuedAt: number, validForMs: number): Intent {
  return {
    kind: 'intent',
    host: 'h2',
    generation,
    closure,
    action: 'switch',
    issuedAt: new Date(issuedAt).toISOString(),
    expiresAt: new Date(issuedAt + validForMs).toISOString(),
    issuer: 'alice',
    policyVersion: 1,
  };
}

function signedResults(peer: HostilePeer, host: SimulatedHost): Result[] {
  return readResults(peer.doc(statusDocName(host.host)))
    .results.filter(
      (r) => r.signature.publicKey === host.publicKey && verifyPayloadSignature('result', r.result, r.signature),
    )
    .map((r) => r.result);
}

// Genuine timestamps, as the coordinator would sign them `shiftMs` from now.
function stampEvery(peer: HostilePeer, shiftMs: number, seqFrom: number): () => void {
  let seq = seqFrom;
  const stamp = (): void => {
    seq += 1;
    const timestamp: Timestamp = {
      kind: 'timestamp',
      at: new Date(Date.now() + shiftMs).toISOString(),
      seq,
      policyVersion: 1,
    };
    writeTimestamp(peer.doc(TIMESTAMP_DOC), {
      timestamp,
      signature: signPayload('timestamp', timestamp, org.timestamp),
    });
  };
  stamp();
  const timer = setInterval(stamp, 300);
  return () => clearInterval(timer);
}

test('60 days on, the host refuses what a relay withheld while it was in contact (stale) and what expired, and applies what was signed while it was away', async () => {
  const relay = await startHostilePeer();
  peers.push(relay);
  appendPolicy(relay.doc(POLICY_DOC), signedPolicy);
  const host = await prepareHost(dir, 'h2');
  const lastTimestampAt = async (): Promise<number> => {
    const trust = JSON.parse(await fs.readFile(join(host.stateDir, 'trust.json'), 'utf8').catch(() => '{}')) as {
      lastTimestamp?: { timestamp: { at: string } } | null;
    };
    return trust.lastTimestamp ? Date.parse(trust.lastTimestamp.timestamp.at) : 0;
  };
  let stop = stampEvery(relay, 0, 0);
  let agent = startAgent(host, relay.url, []);
  await waitFor('the host to accept a fresh timestamp', async () => (await lastTimestampAt()) > 0, 30_000, 200);
  // Signed now, while the host is in contact, and withheld by the relay.
  const issued = Date.now();
  const withheld = signIntent(intent(2, closures[0]!, issued, 90 * DAY_MS), org.alice);
  const expiring = signIntent(intent(1, closures[0]!, issued, 30 * DAY_MS), org.alice);
  // The host stays in contact for another 10 minutes of the coordinator's signed time (a stamp
  // that says so, rather than a test that waits): longer than the 5 minutes of clock skew allowed.
  stop();
  stop = stampEvery(relay, 10 * 60_000, 500);
  await waitFor(
    'the host to accept the timestamp 10 minutes on',
    async () => (await lastTimestampAt()) > issued + 9 * 60_000,
    30_000,
    200,
  );
  await agent.stop('SIGTERM');
  stop();
  // The host goes offline (its last contact: 10 minutes on). Signed the same day, after it went:
  // generation 3.
  const away = signIntent(intent(3, closures[2]!, issued + 11 * 60_000, 90 * DAY_MS), org.alice);

  // 60 days later: the relay forwards genuine fresh timestamps and releases what it withheld.
  stop = stampEvery(relay, SHIFT_MS, 1000);
  try {
    agent = startAgent(host, relay.url, [], sixtyDaysLater());
    await waitFor('contact to resume', () => logEvents(agent, 'contact-resumed').length > 0, 30_000, 200);
    appendIntent(relay.doc(desiredDocName('h2')), expiring);
    appendIntent(relay.doc(desiredDocName('h2')), withheld);
    const refusals = await waitFor(
      'both to be refused',
      () => {
        const results = signedResults(relay, host);
        return results.length >= 2 ? results : null;
      },
      30_000,
      200,
    );
    const byGeneration = new Map(refusals.map((r) => [r.generation, r]));
    assert.is(byGeneration.get(1)?.outcome, 'refused', JSON.stringify(refusals));
    assert.match(byGeneration.get(1)!.reason, /^expired: /);
    assert.is(byGeneration.get(2)?.outcome, 'refused', JSON.stringify(refusals));
    assert.match(byGeneration.get(2)!.reason, /^stale: .*60 days after it could first have .*in contact/);
    assert.equal(await activations(host), [], 'nothing stale was activated');

    appendIntent(relay.doc(desiredDocName('h2')), away);
    const applied = await waitFor(
      'generation 3 to be applied',
      () => signedResults(relay, host).find((r) => r.generation === 3),
      60_000,
      200,
    );
    assert.is(applied.outcome, 'applied', applied.reason);
    assert.is(await profileTarget(host), closures[2]);
  } finally {
    stop();
  }
});

test.run();
