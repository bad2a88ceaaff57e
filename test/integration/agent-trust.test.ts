import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { signEnrollToken } from '../../admin/enroll-entries.js';
import type { HostView } from '../../admin/fleet-view.js';
import { loadAgentState } from '../../agent/pipeline/state.js';
import { generateSigningKey } from '../../shared/crypto/keys.js';
import { appendIntent } from '../../shared/documents/desired.js';
import { desiredDocName } from '../../shared/documents/names.js';
import { connectDocument, waitForSync } from '../../shared/node/connect.js';
import { writeKeyFile } from '../../shared/node/key-file.js';
import { httpBaseFromWs } from '../../shared/sync/reconnect.js';
import { sleep } from '../../shared/time/sleep.js';
import { signIntent } from '../../shared/trust/sign-intent.js';
import { startRelayProcess } from '../bench/relay-fixtures.js';
import { type BinaryCacheServer, serveBinaryCache } from '../harness/cache-server.js';
import { activations, prepareHost, profileTarget, type SimulatedHost } from '../harness/fleet.js';
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

// The agent under the fleet policy, with real processes, real Nix and an authenticating
// coordinator: it enrolls itself with a one-time token, proves its host key on every connection,
// trusts intents by what the policy walked from its pinned org root says, reports a freeze when
// signed timestamps stop, and survives the loss of its state without losing its floor (threat 14).
const org = makeTestOrg();
const dir = temporaryDirectory('agent-trust');
const keyFiles = {
  alice: join(dir, 'alice.key'),
  carol: join(dir, 'carol.key'),
  timestamp: join(dir, 'timestamp.key'),
  token: join(dir, 'h1.token'),
};
let coordinator: DaemonProcess & { url: string; port: number };
let cacheKey: CacheKeyFiles;
let cache: BinaryCacheServer;
let host: SimulatedHost;
let agent: DaemonProcess;
const closures: string[] = [];

async function startCoordinator(extra: string[] = []): Promise<void> {
  coordinator = await startCoordinatorProcess(
    join(dir, 'coordinator'),
    join(dir, `coordinator-${Date.now()}.log`),
    coordinator?.port ?? 0,
    ['--org-root', org.root.publicKey, ...extra],
  );
}

function startAgent(extra: string[] = []): DaemonProcess {
  return startPolicyAgent(host, {
    coordinators: [coordinator.url],
    orgRoot: org.root.publicKey,
    substituter: cache.url,
    cacheKey: cacheKey.publicKey,
    extraArgs: extra,
  });
}

async function view(): Promise<HostView> {
  const result = await runCli([
    'status',
    '--coordinator',
    coordinator.url,
    '--key',
    keyFiles.carol,
    '--json',
    '--host',
    'h1',
  ]);
  if (result.code !== 0) throw new Error(result.stderr);
  return (JSON.parse(result.stdout) as { hosts: HostView[] }).hosts[0]!;
}

async function nextResult(seqAbove: number, timeoutMs = 60_000): Promise<NonNullable<HostView['lastResult']>> {
  return waitFor(
    `a result from h1 after #${seqAbove}`,
    async () => {
      const last = (await view().catch(() => null))?.lastResult;
      return last && last.seq > seqAbove ? last : null;
    },
    timeoutMs,
    300,
  );
}

async function deploy(keyFile: string, closure: string, extra: string[] = []): Promise<void> {
  const result = await runCli([
    'deploy',
    '--coordinator',
    coordinator.url,
    '--key',
    keyFile,
    '--host',
    'h1',
    '--closure',
    closure,
    ...extra,
  ]);
  if (result.code !== 0) throw new Error(`deploy failed: ${result.stderr}`);
}

test.before(async () => {
  await writeKeyFile(keyFiles.alice, org.alice);
  await writeKeyFile(keyFiles.carol, org.carol);
  await writeKeyFile(keyFiles.timestamp, org.timestamp);
  await startCoordinator(['--timestamp-key', keyFiles.timestamp, '--timestamp-interval', '0.5']);
  const pushed = await pushPolicy(coordinator.url, signPolicy(basePolicy(org), org.root));
  assert.is(pushed.status, 200, pushed.body.error);
  cacheKey = await makeCacheKey(join(dir, 'keys'), 'trust-cache-1');
  for (const name of ['one', 'two', 'three', 'four']) {
    const closure = await buildSystemClosure({ name: `nixos-system-trust-${name}` });
    await publishToCache(closure, join(dir, 'cache'), cacheKey.secretKeyFile);
    closures.push(closure);
  }
  cache = await serveBinaryCache(join(dir, 'cache'));
  host = await prepareHost(dir, 'h1');
  const token = signEnrollToken(org.alice, {
    host: 'h1',
    expiresAt: new Date(Date.now() + 3_600_000).toISOString(),
    policyVersion: 1,
  });
  await fs.writeFile(keyFiles.token, JSON.stringify(token), { mode: 0o600 });
});

test.after(async () => {
  await agent?.stop('SIGKILL');
  await coordinator?.stop();
  await cache?.close();
  if (!process.env.OUTPOST_KEEP_TEST_DIR) removeDirectory(dir);
});

test('policy mode: the agent enrolls itself with a one-time token, applies an intent by an admin with deploy, and refuses one by an admin without it', async () => {
  agent = startAgent(['--enroll-token', keyFiles.token]);
  await waitFor('the token to bind the host key', () => logEvents(agent, 'enrolled').length > 0, 30_000);
  await deploy(keyFiles.alice, closures[0]!);
  const applied = await nextResult(0);
  assert.is(applied.outcome, 'applied', applied.reason);
  assert.is(applied.generation, 1);
  assert.ok(applied.signatureValid);
  assert.is(await profileTarget(host), closures[0]);
  const status = await view();
  assert.equal(status.trust, { mode: 'policy', policyVersion: 1, frozen: false, lastTimestampAt: null });
  // carol may read, not deploy. The coordinator would refuse her own write, so the intent she
  // signed is placed the way a compromised coordinator or a careless admin could: through a
  // connection that may write h1's desired document (alice's). The agent must refuse it.
  const writer = connectDocument(coordinator.url, desiredDocName('h1'), { identity: org.alice });
  try {
    await waitForSync(writer, 15_000);
    const now = Date.now();
    appendIntent(
      writer.doc,
      signIntent(
        {
          kind: 'intent',
          host: 'h1',
          generation: 2,
          closure: closures[1]!,
          action: 'switch',
          issuedAt: new Date(now - 1000).toISOString(),
          expiresAt: new Date(now + 3_600_000).toISOString(),
          issuer: 'carol',
          policyVersion: 1,
        },
        org.carol,
      ),
    );
    const refused = await nextResult(applied.seq);
    assert.is(refused.outcome, 'refused');
    assert.match(refused.reason, /^no-capability: .*carol/);
    assert.ok(refused.signatureValid);
  } finally {
    writer.close();
  }
  assert.is(await profileTarget(host), closures[0], 'the host keeps its system');
});

test('an unenrolled host key is refused by the coordinator until it is approved; the agent asks for enrollment by itself', async () => {
  const stranger = await prepareHost(dir, 'h2');
  const strangerAgent = startPolicyAgent(stranger, {
    coordinators: [coordinator.url],
    orgRoot: org.root.publicKey,
    substituter: cache.url,
    cacheKey: cacheKey.publicKey,
  });
  try {
    await waitFor(
      'the enrollment request to be recorded as pending',
      () => logEvents(strangerAgent, 'enrollment-pending').length > 0,
      30_000,
    );
    const pending = await runCli([
      'enroll',
      'list',
      '--coordinator',
      coordinator.url,
      '--key',
      keyFiles.alice,
      '--org-root',
      org.root.publicKey,
      '--json',
    ]);
    assert.is(pending.code, 0, pending.stderr);
    assert.match(pending.stdout, new RegExp(stranger.publicKey.replace(/[+/=]/g, (c) => `\\${c}`)));
    const approve = await runCli([
      'enroll',
      'approve',
      '--coordinator',
      coordinator.url,
      '--key',
      keyFiles.alice,
      '--host',
      'h2',
      '--host-key',
      stranger.publicKey,
    ]);
    assert.is(approve.code, 0, approve.stderr);
    await waitFor(
      'the approved agent to publish its status',
      async () => {
        const result = await runCli([
          'status',
          '--coordinator',
          coordinator.url,
          '--key',
          keyFiles.carol,
          '--json',
          '--host',
          'h2',
        ]);
        return (
          result.code === 0 && (JSON.parse(result.stdout) as { hosts: HostView[] }).hosts[0]?.trust?.mode === 'policy'
        );
      },
      30_000,
      300,
    );
  } finally {
    await strangerAgent.stop('SIGKILL');
  }
});

test('freeze: without fresh signed timestamps the agent reports a freeze in its signed status; fresh ones end it', async () => {
  await agent.stop('SIGTERM');
  agent = startAgent(['--freeze-after', '3']);
  // The coordinator restarts without its timestamp key: nothing fresh arrives any more.
  await coordinator.stop();
  await startCoordinator();
  const frozen = await waitFor(
    'the agent to report a freeze',
    async () => {
      const v = await view().catch(() => null);
      return v?.trust?.frozen ? v : null;
    },
    30_000,
    500,
  );
  assert.ok(frozen.trust!.lastTimestampAt, 'the freeze names the last fresh timestamp');
  assert.ok(frozen.statusSignatureValid, 'the freeze is in the signed status');
  assert.ok(logEvents(agent, 'trust-frozen').length > 0);
  await coordinator.stop();
  await startCoordinator(['--timestamp-key', keyFiles.timestamp, '--timestamp-interval', '0.5']);
  await waitFor(
    'the freeze to end',
    async () => (await view().catch(() => null))?.trust?.frozen === false,
    30_000,
    500,
  );
});

test("threat 14: agent state wiped: the floor is rebuilt from the host's own signed results; an older intent still valid is not installed again", async () => {
  // The next generation expires soon; generation 1 (applied earlier) stays valid for days. An
  // agent that forgot its floor would take generation 1 as the newest valid intent: a rollback.
  const before = (await view()).lastResult!.seq;
  await deploy(keyFiles.alice, closures[1]!, ['--expires', '12s']);
  const second = await nextResult(before);
  assert.is(second.outcome, 'applied', second.reason);
  await agent.stop('SIGTERM');
  await waitFor('the newer generation to expire', () => Date.parse(second.at) + 13_000 < Date.now(), 20_000, 500);
  await fs.rm(host.stateDir, { recursive: true, force: true });
  const activationsBefore = (await activations(host)).length;
  agent = startAgent();
  // Time for an agent that forgot its floor to take generation 1 (its store still has it, so that
  // takes well under a second); then a new intent shows the agent is at work.
  await waitFor('the agent to start', () => logEvents(agent, 'agent-started').length > 0, 20_000);
  await sleep(4000);
  await deploy(keyFiles.alice, closures[2]!);
  const generation = second.generation + 1;
  await waitFor(
    `generation ${generation} to be activated`,
    async () => (await activations(host)).includes(`switch ${closures[2]}`),
    60_000,
    300,
  );
  assert.equal(
    (await activations(host)).slice(activationsBefore),
    [`switch ${closures[2]}`],
    'generation 1 was never activated again',
  );
  const third = await waitFor(
    `the result for generation ${generation}`,
    async () => (await view().catch(() => null))?.results.find((r) => r.result.generation === generation)?.result,
    60_000,
    300,
  );
  assert.is(third.outcome, 'applied', third.reason);
  assert.is(third.seq, second.seq + 1, 'result numbers continue; none is reused');
  const rebuilt = logEvents(agent, 'floor-rebuilt')[0];
  assert.is(rebuilt?.floorGeneration, second.generation);
  assert.is(rebuilt?.applied, second.generation, 'the running system is recognised as the last applied generation');
  const state = await loadAgentState(host.stateDir);
  assert.is(state.floorGeneration, third.generation);
  assert.is(state.floorUnverified, false);
});

test("behind a relay under the policy: a new host enrolls through the relay with its token, fetches through the relay's cache mirror, and its signed result reaches the coordinator", async () => {
  const relayKey = generateSigningKey('site-1');
  const relayKeyFile = join(dir, 'relay.key');
  await writeKeyFile(relayKeyFile, relayKey);
  const v2 = {
    ...basePolicy(org),
    version: 2,
    relays: [{ name: 'site-1', key: relayKey.publicKey, hosts: ['h3'], groups: [] }],
  };
  const pushed = await pushPolicy(coordinator.url, signPolicy(v2, org.root));
  assert.is(pushed.status, 200, pushed.body.error);
  const relay = await startRelayProcess(join(dir, 'relay'), join(dir, 'relay.log'), [coordinator.url], {
    extra: ['--key', relayKeyFile, '--org-root', org.root.publicKey, '--cache-upstream', cache.url],
  });
  const site = await prepareHost(dir, 'h3');
  const tokenFile = join(dir, 'h3.token');
  await fs.writeFile(
    tokenFile,
    JSON.stringify(
      signEnrollToken(org.alice, {
        host: 'h3',
        expiresAt: new Date(Date.now() + 3_600_000).toISOString(),
        policyVersion: 2,
      }),
    ),
    { mode: 0o600 },
  );
  const siteAgent = startPolicyAgent(site, {
    coordinators: [relay.url],
    orgRoot: org.root.publicKey,
    substituter: `${httpBaseFromWs(relay.url)}/nix-cache`,
    cacheKey: cacheKey.publicKey,
    extraArgs: ['--enroll-token', tokenFile],
  });
  try {
    await waitFor('h3 to be enrolled through the relay', () => logEvents(siteAgent, 'enrolled').length > 0, 30_000);
    const deployed = await runCli([
      'deploy',
      '--coordinator',
      coordinator.url,
      '--key',
      keyFiles.alice,
      '--host',
      'h3',
      '--closure',
      closures[3]!,
    ]);
    assert.is(deployed.code, 0, deployed.stderr);
    const result = await waitFor(
      "h3's result at the coordinator",
      async () => {
        const out = await runCli([
          'status',
          '--coordinator',
          coordinator.url,
          '--key',
          keyFiles.carol,
          '--json',
          '--host',
          'h3',
        ]);
        const last = out.code === 0 ? (JSON.parse(out.stdout) as { hosts: HostView[] }).hosts[0]?.lastResult : null;
        return last ?? null;
      },
      90_000,
      500,
    );
    assert.is(result.outcome, 'applied', result.reason);
    assert.ok(result.signatureValid);
    assert.is(await profileTarget(site), closures[3]);
    assert.is((await view()).trust?.policyVersion, 2, 'h1, directly connected, walked to version 2 as well');
  } finally {
    await siteAgent.stop('SIGKILL');
    await relay.stop();
  }
});

test.run();
