import { test } from 'uvu';
import * as assert from 'uvu/assert';
import WebSocket from 'ws';
import * as Y from 'yjs';
import { type RunningCoordinator, startCoordinator } from '../../coordinator/server.js';
import { generateSigningKey, type SigningKey } from '../../shared/crypto/keys.js';
import { signPayload } from '../../shared/crypto/signatures.js';
import { readTimestamp, TIMESTAMP_DOC } from '../../shared/documents/fleet.js';
import { connectDocument, type DocumentConnection, waitForSync } from '../../shared/node/connect.js';
import { openFleetTrustOnNode as openFleetTrust } from '../../shared/node/fleet-trust.js';
import { createMemoryLogger } from '../../shared/node/log.js';
import { basePolicy, makeTestOrg, postJson, pushPolicy, signPolicy } from '../harness/policy-fixtures.js';
import { removeDirectory, temporaryDirectory, waitFor } from '../harness/processes.js';

// The coordinator with --org-root: every connection proves a key, the policy decides access per
// document, and a refused write leaves no trace in the stored log.
const org = makeTestOrg();
const hostKey = generateSigningKey('h1');
let dir = '';
let coordinator: RunningCoordinator;
let memory: ReturnType<typeof createMemoryLogger>;
const open: DocumentConnection[] = [];

function connectAs(identity: SigningKey | null, name: string): DocumentConnection {
  const connection = connectDocument(coordinator.url, name, { identity, maxBackoffMs: 300 });
  open.push(connection);
  return connection;
}

function closeCode(connection: DocumentConnection): Promise<number> {
  return new Promise((resolve) =>
    connection.provider.on('connection-close', (event: { code: number } | null) => event && resolve(event.code)),
  );
}

test.before(async () => {
  dir = temporaryDirectory('trust');
  memory = createMemoryLogger('coordinator');
  coordinator = await startCoordinator({
    dataDir: dir,
    listen: '127.0.0.1',
    port: 0,
    maxPayload: 1 << 20,
    idleUnloadMs: 60_000,
    logger: memory.logger,
    orgRootKeys: [org.root.publicKey],
    timestampKey: org.timestamp,
    timestampIntervalMs: 200,
  });
  const pushed = await pushPolicy(coordinator.url, signPolicy(basePolicy(org), org.root));
  assert.is(pushed.status, 200, pushed.body.error);
  // Enroll h1 by approval from alice, who holds `enroll`.
  const enrollment = {
    kind: 'enrollment' as const,
    host: 'h1',
    hostKey: hostKey.publicKey,
    approvedAt: new Date().toISOString(),
    policyVersion: 1,
  };
  const approved = await postJson(coordinator.url, '/api/enroll/approve', {
    enrollment,
    signatures: [signPayload('enrollment', enrollment, org.alice)],
  });
  assert.is(approved.status, 200, approved.body.error);
});

test.after(async () => {
  for (const c of open) c.close();
  await coordinator.close();
  removeDirectory(dir);
});

test('a connection without a key proof is refused (4401); an unknown key is refused (4403)', async () => {
  const anonymous = connectAs(null, 'hosts/h1/desired');
  assert.is(await closeCode(anonymous), 4401);
  const stranger = connectAs(generateSigningKey('mallory'), 'hosts/h1/desired');
  assert.is(await closeCode(stranger), 4403);
  assert.ok(memory.events.some((e) => e.event === 'connection-refused' && /may not open/.test(String(e.reason))));
});

test('a replayed key proof is refused: challenges are single use', async () => {
  const first = connectAs(org.alice, 'hosts/h1/desired');
  await waitForSync(first, 5000);
  const params = new URLSearchParams(first.provider.params as Record<string, string>);
  // The client already holds the next proof; use it twice by hand.
  const once = new WebSocket(`${coordinator.url}/hosts/h1/desired?${params}`);
  const twice = new WebSocket(`${coordinator.url}/hosts/h1/desired?${params}`);
  const codes = await Promise.all(
    [once, twice].map(
      (ws) =>
        new Promise<number>((resolve) => {
          ws.on('close', (code) => resolve(code));
          setTimeout(() => ws.close(1000), 1500);
        }),
    ),
  );
  assert.ok(codes.includes(4401), `one of the two uses must be refused, got ${codes}`);
});

test('an admin with deploy writes desired documents; an enrolled agent writes only its own status', async () => {
  const admin = connectAs(org.alice, 'hosts/h1/desired');
  const agentDesired = connectAs(hostKey, 'hosts/h1/desired');
  const agentStatus = connectAs(hostKey, 'hosts/h1/status');
  await Promise.all([admin, agentDesired, agentStatus].map((c) => waitForSync(c, 5000)));
  admin.doc.getArray('intents').push(['from-alice']);
  await waitFor(
    'the agent to read what alice wrote',
    () => agentDesired.doc.getArray('intents').toArray().includes('from-alice'),
    5000,
  );
  agentStatus.doc.getArray('results').push(['from-h1']);
  const reader = connectAs(org.carol, 'hosts/h1/status');
  await waitFor(
    'carol (read) to see h1 status',
    () => reader.doc.getArray('results').toArray().includes('from-h1'),
    5000,
  );
});

test('writes where a connection may not write are refused and leave no trace in the log', async () => {
  const cases: [SigningKey, string, string][] = [
    [org.carol, 'hosts/h1/desired', 'carol-has-read-only'],
    [hostKey, 'hosts/h1/desired', 'agent-writes-desired'],
    [org.alice, 'hosts/h1/status', 'admin-writes-status'],
  ];
  for (const [key, name, marker] of cases) {
    const connection = connectAs(key, name);
    await waitForSync(connection, 5000);
    const closed = closeCode(connection);
    connection.doc.getArray('intents').push([marker]);
    assert.is(await closed, 1008, `${marker}: closed as a policy violation`);
    const entries = await coordinator.log.read(name);
    const replay = new Y.Doc();
    for (const e of entries) Y.applyUpdate(replay, e.update);
    assert.not.ok(JSON.stringify(replay.getArray('intents').toJSON()).includes(marker), `${marker} must not be stored`);
    assert.ok(
      memory.events.some((e) => e.event === 'write-refused' && e.document === name),
      `${marker} is logged`,
    );
    connection.close();
  }
});

test("an agent may not open another host's documents", async () => {
  assert.is(await closeCode(connectAs(hostKey, 'hosts/h2/status')), 4403);
});

test('an admin whose roles cover only production may not even open hosts/h1/desired (read scope is per host)', async () => {
  assert.is(await closeCode(connectAs(org.bob, 'hosts/h1/desired')), 4403);
  assert.is(await closeCode(connectAs(org.bob, 'hosts/h1/status')), 4403);
});

test('the log names the authenticated principal of every stored update', async () => {
  const entries = await coordinator.log.read('hosts/h1/desired');
  assert.ok(entries.some((e) => e.principal === 'admin:alice'));
  const status = await coordinator.log.read('hosts/h1/status');
  assert.ok(status.some((e) => e.principal === 'host:h1'));
});

test('signed timestamps flow to readers; a reader persists the walked policy and never moves its clock back', async () => {
  const reader = connectAs(hostKey, TIMESTAMP_DOC);
  await waitFor('a signed timestamp', () => readTimestamp(reader.doc), 5000);
  const stateDir = temporaryDirectory('fleet-trust');
  try {
    const trust = await openFleetTrust({
      endpoints: [coordinator.url],
      identity: hostKey,
      orgRootKeys: [org.root.publicKey],
      stateDir,
      freezeAfterMs: 60_000,
      logger: memory.logger,
    });
    await waitFor(
      'the policy to be walked and a timestamp seen',
      () => trust.chain().length === 1 && trust.freshness().lastTimestampAt !== null,
      5000,
    );
    assert.is(trust.freshness().frozen, false);
    await trust.close();
  } finally {
    removeDirectory(stateDir);
  }
});

test('a policy signed by the wrong key, or not following the current version, is refused by the coordinator', async () => {
  const forged = await pushPolicy(
    coordinator.url,
    signPolicy({ ...basePolicy(org), version: 2 }, generateSigningKey('mallory')),
  );
  assert.is(forged.status, 400);
  assert.match(String(forged.body.error), /not signed by 1 of version 1's root keys/);
  const gap = await pushPolicy(coordinator.url, signPolicy({ ...basePolicy(org), version: 5 }, org.root));
  assert.is(gap.status, 400);
});

test.run();
