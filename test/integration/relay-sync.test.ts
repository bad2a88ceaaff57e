import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as Y from 'yjs';
import { type RunningCoordinator, startCoordinator } from '../../coordinator/server.js';
import { type RelayConfig, type RunningRelay, startRelay } from '../../relay/relay.js';
import { generateSigningKey, type SigningKey } from '../../shared/crypto/keys.js';
import { signPayload } from '../../shared/crypto/signatures.js';
import { POLICY_DOC } from '../../shared/documents/fleet.js';
import { connectDocument, type DocumentConnection, waitForSync } from '../../shared/node/connect.js';
import { createMemoryLogger } from '../../shared/node/log.js';
import { readRolloutEntries } from '../../shared/rollout/document.js';
import { httpBaseFromWs } from '../../shared/sync/reconnect.js';
import { sleep } from '../../shared/time/sleep.js';
import { draftRolloutAction } from '../../shared/views/rollout-actions.js';
import { type FaultProxy, startFaultProxy } from '../harness/fault-proxy.js';
import { basePolicy, makeTestOrg, postJson, pushPolicy, signPolicy } from '../harness/policy-fixtures.js';
import { removeDirectory, temporaryDirectory, waitFor } from '../harness/processes.js';
import { makePlan } from '../harness/rollout-fixtures.js';

// Relays in process, against a coordinator in process, with the fault proxy on the uplink:
// both directions of sync, outages on either side, a link reset in the middle of a message, a
// relay refilling an empty disk, chains of relays, presence, and the policy deciding what a
// relay may carry. Agents with real Nix behind relays: relay-scenarios.test.ts.
let dir = '';
const memory = createMemoryLogger('relay-test');
const open: DocumentConnection[] = [];
const stoppers: (() => Promise<void>)[] = [];

test.before(() => {
  dir = temporaryDirectory('relay-sync');
});

test.after(async () => {
  for (const c of open) c.close();
  for (const stop of stoppers.reverse()) await stop().catch(() => undefined);
  removeDirectory(dir);
});

async function coordinatorAt(name: string, port = 0, orgRootKeys: string[] = []): Promise<RunningCoordinator> {
  const coordinator = await startCoordinator({
    dataDir: join(dir, name),
    listen: '127.0.0.1',
    port,
    maxPayload: 1 << 20,
    idleUnloadMs: 500,
    logger: memory.logger,
    orgRootKeys,
  });
  stoppers.push(() => coordinator.close());
  return coordinator;
}

async function relayTo(name: string, upstreams: string[], extra: Partial<RelayConfig> = {}): Promise<RunningRelay> {
  const relay = await startRelay({
    upstreams,
    key: null,
    orgRootKeys: [],
    dataDir: join(dir, name),
    listen: '127.0.0.1',
    port: 0,
    maxPayload: 1 << 20,
    idleUnloadMs: 500,
    baseBackoffMs: 50,
    maxBackoffMs: 400,
    upstreamTimeoutMs: 1500,
    syncConcurrency: 8,
    cacheUpstreams: [],
    cacheMaxBytes: 1 << 30,
    logger: memory.logger,
    ...extra,
  });
  stoppers.push(() => relay.close());
  return relay;
}

function client(url: string | string[], name: string, identity: SigningKey | null = null): DocumentConnection {
  const connection = connectDocument(url, name, { identity, maxBackoffMs: 300, baseBackoffMs: 50 });
  open.push(connection);
  return connection;
}

const items = (connection: DocumentConnection, key = 'intents'): unknown[] => connection.doc.getArray(key).toArray();

async function stored(coordinator: RunningCoordinator, name: string, key = 'intents'): Promise<unknown[]> {
  const replay = new Y.Doc();
  for (const entry of await coordinator.log.read(name)) Y.applyUpdate(replay, entry.update);
  return replay.getArray(key).toArray();
}

async function waitItems(
  what: string,
  read: () => unknown[] | Promise<unknown[]>,
  expected: unknown[],
  timeoutMs = 8000,
): Promise<void> {
  await waitFor(
    what,
    async () => {
      const have = await read();
      return expected.every((e) => have.includes(e));
    },
    timeoutMs,
    50,
  );
}

test("writes through a relay reach the coordinator and the coordinator's reach the relay's agents, over one upstream socket", async () => {
  const coordinator = await coordinatorAt('c1');
  const relay = await relayTo('r1', [coordinator.url]);
  const site = client(relay.url, 'hosts/a1/status');
  await waitForSync(site, 5000);
  site.doc.getArray('results').push(['from-site']);
  await waitItems('the coordinator to store the site write', () => stored(coordinator, 'hosts/a1/status', 'results'), [
    'from-site',
  ]);
  const admin = client(coordinator.url, 'hosts/a1/desired');
  const agent = client(relay.url, 'hosts/a1/desired');
  await Promise.all([waitForSync(admin, 5000), waitForSync(agent, 5000)]);
  admin.doc.getArray('intents').push(['from-admin']);
  await waitItems('the agent behind the relay to see the intent', () => items(agent), ['from-admin']);
  const health = (await (await fetch(`${httpBaseFromWs(coordinator.url)}/healthz`)).json()) as {
    relaySessions: number;
  };
  assert.is(health.relaySessions, 1, 'one socket carries every document');
  assert.ok((await coordinator.log.read('hosts/a1/status')).every((e) => e.principal.startsWith('anonymous@')));
  const relayLog = await relay.log.read('hosts/a1/desired');
  assert.ok(
    relayLog.some((e) => e.principal === `upstream:${coordinator.url}`),
    'the relay logs what came from upstream as such',
  );
});

test('a document changed upstream while nobody at the site holds it reaches the relay (change notice), so it is there when the uplink is down', async () => {
  const coordinator = await coordinatorAt('c2');
  const relay = await relayTo('r2', [coordinator.url]);
  await waitFor('the relay link', () => relay.upstream.connectedUrl(), 5000);
  const admin = client(coordinator.url, 'hosts/b1/desired');
  await waitForSync(admin, 5000);
  admin.doc.getArray('intents').push(['for-offline-agent']);
  await waitItems('the relay to hold it', async () => {
    const replay = new Y.Doc();
    for (const e of await relay.log.read('hosts/b1/desired')) Y.applyUpdate(replay, e.update);
    return replay.getArray('intents').toArray();
  }, ['for-offline-agent']);
  admin.close();
  await coordinator.close();
  const agent = client(relay.url, 'hosts/b1/desired');
  await waitItems('the agent to get it from the relay with the coordinator gone', () => items(agent), [
    'for-offline-agent',
  ]);
});

test('coordinator down: the relay keeps serving and stores local writes; when it returns everything merges both ways and nothing acknowledged is lost', async () => {
  let coordinator = await coordinatorAt('c3');
  const port = coordinator.port;
  const relay = await relayTo('r3', [coordinator.url]);
  const agent = client(relay.url, 'hosts/c1/status');
  const desired = client(relay.url, 'hosts/c1/desired');
  await Promise.all([waitForSync(agent, 5000), waitForSync(desired, 5000)]);
  agent.doc.getArray('results').push(['before-outage']);
  await waitItems('stored upstream', () => stored(coordinator, 'hosts/c1/status', 'results'), ['before-outage']);
  await coordinator.close();
  await waitFor('the relay to notice', () => !relay.upstream.connectedUrl(), 5000);
  // Writes during the outage, acknowledged by the relay (a fresh reader sees them).
  for (let i = 0; i < 5; i++) agent.doc.getArray('results').push([`offline-${i}`]);
  desired.doc.getArray('intents').push(['admin-at-site']);
  const check = client(relay.url, 'hosts/c1/status');
  await waitItems('the relay to hold the offline writes', () => items(check, 'results'), ['offline-4']);
  // Meanwhile the coordinator's copy moves on too: a second coordinator process on the same disk.
  coordinator = await coordinatorAt('c3', port);
  const admin = client(coordinator.url, 'hosts/c1/desired');
  await waitForSync(admin, 5000);
  admin.doc.getArray('intents').push(['admin-at-coordinator']);
  await waitItems(
    'the coordinator to have every offline write',
    () => stored(coordinator, 'hosts/c1/status', 'results'),
    ['before-outage', 'offline-0', 'offline-4'],
  );
  await waitItems("the coordinator to have the site admin's intent", () => stored(coordinator, 'hosts/c1/desired'), [
    'admin-at-site',
    'admin-at-coordinator',
  ]);
  await waitItems("the site to have the coordinator admin's intent", () => items(desired), [
    'admin-at-site',
    'admin-at-coordinator',
  ]);
  await waitFor('the relay to have nothing unconfirmed', () => relay.bridge.stats().dirty === 0, 5000);
});

test('link reset in the middle of a sync message: the relay reconnects and the update arrives whole, exactly once', async () => {
  const coordinator = await coordinatorAt('c4');
  const proxy: FaultProxy = await startFaultProxy(coordinator.port);
  stoppers.push(() => proxy.close());
  const relay = await relayTo('r4', [proxy.url()]);
  const agent = client(relay.url, 'hosts/d1/status');
  await waitForSync(agent, 5000);
  await waitFor('the relay link', () => relay.upstream.connectedUrl(), 5000);
  const big = 'x'.repeat(20_000);
  const tripped = proxy.resetAfter(5_000, 'up');
  agent.doc.getArray('results').push([big]);
  await tripped;
  // The proxy resolves right after it resets the socket; the relay sees the reset on a later turn
  // of the event loop (and the log holds earlier tests' disconnects too: only this link's count).
  const sawReset = () => memory.events.some((e) => e.event === 'upstream-disconnected' && e.url === proxy.url());
  await waitFor('the relay to see the reset', sawReset, 10_000, 20).catch(() => undefined);
  assert.ok(sawReset(), 'the relay saw the reset');
  await waitItems('the update to arrive after the reconnect', () => stored(coordinator, 'hosts/d1/status', 'results'), [
    big,
  ]);
  assert.is((await stored(coordinator, 'hosts/d1/status', 'results')).filter((r) => r === big).length, 1);
  // Same the other way: the coordinator's answer cut half way.
  const admin = client(coordinator.url, 'hosts/d1/desired');
  const site = client(relay.url, 'hosts/d1/desired');
  await Promise.all([waitForSync(admin, 5000), waitForSync(site, 5000)]);
  const down = proxy.resetAfter(5_000, 'down');
  admin.doc.getArray('intents').push([big]);
  await down;
  await waitItems('the site to get the intent after the reconnect', () => items(site), [big]);
  assert.is(items(site).filter((r) => r === big).length, 1);
});

test('blackholed uplink: the relay notices the silence, drops the link, and recovers when the path returns', async () => {
  const coordinator = await coordinatorAt('c5');
  const proxy = await startFaultProxy(coordinator.port);
  stoppers.push(() => proxy.close());
  const relay = await relayTo('r5', [proxy.url()]);
  const agent = client(relay.url, 'hosts/e1/status');
  await waitForSync(agent, 5000);
  await waitFor('the relay link', () => relay.upstream.connectedUrl(), 5000);
  proxy.blackhole();
  agent.doc.getArray('results').push(['during-blackhole']);
  await waitFor('the relay to time out', () => memory.events.some((e) => e.event === 'upstream-timeout'), 6000);
  proxy.restore();
  await waitItems(
    'the write to arrive',
    () => stored(coordinator, 'hosts/e1/status', 'results'),
    ['during-blackhole'],
    10_000,
  );
});

test('a relay restarted with an empty disk refills every document from upstream', async () => {
  const coordinator = await coordinatorAt('c6');
  for (const host of ['f1', 'f2', 'f3']) {
    const admin = client(coordinator.url, `hosts/${host}/desired`);
    await waitForSync(admin, 5000);
    admin.doc.getArray('intents').push([`intent-${host}`]);
  }
  await waitItems('stored', () => stored(coordinator, 'hosts/f3/desired'), ['intent-f3']);
  let relay = await relayTo('r6', [coordinator.url]);
  await waitFor('the first relay to fill', async () => (await relay.log.documents()).length >= 3, 8000);
  await relay.close();
  rmSync(join(dir, 'r6'), { recursive: true, force: true });
  relay = await relayTo('r6', [coordinator.url]);
  await waitFor(
    'the new relay to refill',
    async () => (await relay.log.documents()).filter((d) => d.startsWith('hosts/')).length === 3,
    8000,
  );
  await relay.upstream.stop();
  for (const host of ['f1', 'f2', 'f3']) {
    const agent = client(relay.url, `hosts/${host}/desired`);
    await waitItems(`${host} served from the refilled relay alone`, () => items(agent), [`intent-${host}`]);
  }
});

test('relays chain: a site relay behind a regional relay syncs with the coordinator both ways', async () => {
  const coordinator = await coordinatorAt('c7');
  const regional = await relayTo('r7-regional', [coordinator.url]);
  const site = await relayTo('r7-site', [regional.url]);
  const agent = client(site.url, 'hosts/g1/status');
  const desired = client(site.url, 'hosts/g1/desired');
  await Promise.all([waitForSync(agent, 5000), waitForSync(desired, 5000)]);
  agent.doc.getArray('results').push(['through-two-relays']);
  await waitItems('the coordinator to store it', () => stored(coordinator, 'hosts/g1/status', 'results'), [
    'through-two-relays',
  ]);
  const admin = client(coordinator.url, 'hosts/g1/desired');
  await waitForSync(admin, 5000);
  admin.doc.getArray('intents').push(['down-two-relays']);
  await waitItems('the site agent to see it', () => items(desired), ['down-two-relays']);
});

test('presence: an agent behind two relays shows online at the coordinator, then offline with a last-seen time', async () => {
  const coordinator = await coordinatorAt('c8');
  const regional = await relayTo('r8-regional', [coordinator.url]);
  const site = await relayTo('r8-site', [regional.url]);
  await waitFor('links', () => regional.upstream.connectedUrl() && site.upstream.connectedUrl(), 5000);
  const agent = client(site.url, 'hosts/p1/status');
  await waitForSync(agent, 5000);
  agent.provider.awareness.setLocalState({ role: 'agent', host: 'p1', phase: 'idle', generation: null });
  const presence = async (): Promise<{ online: boolean; lastSeen: string | null } | undefined> =>
    (
      (await (await fetch(`${httpBaseFromWs(coordinator.url)}/api/presence`)).json()) as {
        hosts: Record<string, { online: boolean; lastSeen: string | null }>;
      }
    ).hosts.p1;
  await waitFor('p1 online at the coordinator', async () => (await presence())?.online, 5000);
  const before = regional.upstream.stats().bytesOut;
  // Awareness renewals stay at the site: nothing goes upstream while nothing changes.
  agent.provider.awareness.setLocalState({ role: 'agent', host: 'p1', phase: 'idle', generation: null });
  await sleep(300);
  assert.is(regional.upstream.stats().bytesOut - before, 0);
  agent.close();
  const seen = await waitFor(
    'p1 offline at the coordinator',
    async () => {
      const p = await presence();
      return p && !p.online ? p : null;
    },
    10_000,
  );
  assert.ok(seen.lastSeen && Date.now() - Date.parse(seen.lastSeen) < 10_000, 'last seen just now');
});

test('with a policy: the relay authenticates with its key, carries only its hosts, authenticates its agents against the synced policy, and POSTs reach the coordinator through it', async () => {
  const org = makeTestOrg();
  const relayKey = generateSigningKey('site-1');
  const hostKey = generateSigningKey('s1');
  const coordinator = await coordinatorAt('c9', 0, [org.root.publicKey]);
  const policy = basePolicy(org, { relays: [{ name: 'site-1', key: relayKey.publicKey, hosts: ['s1'], groups: [] }] });
  assert.is((await pushPolicy(coordinator.url, signPolicy(policy, org.root))).status, 200);
  const relay = await relayTo('r9', [coordinator.url], { key: relayKey, orgRootKeys: [org.root.publicKey] });
  // The relay's agents enroll through it: the relay passes the signed approval on.
  const enrollment = {
    kind: 'enrollment' as const,
    host: 's1',
    hostKey: hostKey.publicKey,
    approvedAt: new Date().toISOString(),
    policyVersion: 1,
  };
  await waitFor(
    'the relay to have the policy',
    async () =>
      ((await (await fetch(`${httpBaseFromWs(relay.url)}/healthz`)).json()) as { policyVersion: number | null })
        .policyVersion === 1,
    8000,
  );
  const approved = await postJson(relay.url, '/api/enroll/approve', {
    enrollment,
    signatures: [signPayload('enrollment', enrollment, org.alice)],
  });
  assert.is(approved.status, 200, approved.body.error);
  // A rollout plan and an admin's pause, as the web editor the relay serves sends them, pass on too;
  // the coordinator checks and stores them.
  const signedPlan = makePlan(org.alice, {
    id: 'via-relay',
    createdAt: Date.now(),
    waves: [{ name: 'first', hosts: [{ host: 's1', key: hostKey, closure: `/nix/store/${'c'.repeat(32)}-s1` }] }],
  });
  const created = await postJson(relay.url, '/api/rollouts', { plan: signedPlan });
  assert.is(created.status, 200, created.body.error);
  const pause = draftRolloutAction(signedPlan.plan, { actions: [] }, 'pause', 'alice', Date.now());
  const paused = await postJson(relay.url, '/api/rollouts', {
    action: { action: pause, signature: signPayload('rollout-action', pause, org.alice) },
  });
  assert.is(paused.status, 200, paused.body.error);
  const rolloutDoc = await coordinator.host.pin('fleet/rollout-via-relay');
  assert.equal(
    readRolloutEntries(rolloutDoc.doc).actions.map((a) => a.action.verb),
    ['pause'],
  );
  coordinator.host.unpin('fleet/rollout-via-relay');
  const agent = client(relay.url, 'hosts/s1/status', hostKey);
  await waitForSync(agent, 8000);
  agent.doc.getArray('results').push(['signed-elsewhere']);
  await waitItems('stored upstream', () => stored(coordinator, 'hosts/s1/status', 'results'), ['signed-elsewhere']);
  assert.ok(
    (await coordinator.log.read('hosts/s1/status')).every((e) => e.principal === 'relay:site-1'),
    'the coordinator logs the relay as the principal',
  );
  // Not this relay's host: refused at the relay, so the agent's next endpoint is tried.
  const other = client(relay.url, 'hosts/s2/status', org.alice);
  const code = await new Promise<number>((resolve) =>
    other.provider.on('connection-close', (event: { code: number } | null) => event && resolve(event.code)),
  );
  assert.is(code, 4403);
  // No key proof: refused at the relay as at the coordinator.
  const anonymous = client(relay.url, 'hosts/s1/desired', null);
  assert.is(
    await new Promise<number>((resolve) =>
      anonymous.provider.on('connection-close', (event: { code: number } | null) => event && resolve(event.code)),
    ),
    4401,
  );
  // The relay never writes fleet documents upstream: the policy there is unchanged.
  assert.is((await coordinator.log.read(POLICY_DOC)).length, 1);
  const unreachable = await relayTo('r9-lonely', ['ws://127.0.0.1:1'], {
    key: relayKey,
    orgRootKeys: [org.root.publicKey],
  });
  const refused = await postJson(unreachable.url, '/api/enroll', {});
  assert.is(refused.status, 503);
  assert.match(String(refused.body.error), /none is reachable/);
  // Unreachable for a rollout action too: 503, which the web editor's outbox sends again later.
  const queued = await postJson(unreachable.url, '/api/rollouts', {});
  assert.is(queued.status, 503);
});

test.run();
