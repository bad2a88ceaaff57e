import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import WebSocket from 'ws';
import { generateSigningKey, type SigningKey } from '../../shared/crypto/keys.js';
import { signPayload } from '../../shared/crypto/signatures.js';
import { connectDocument, type DocumentConnection, proofHeaders, waitForSync } from '../../shared/node/connect.js';
import { writeKeyFile } from '../../shared/node/key-file.js';
import { challengeResponseSchema, signAuthProof } from '../../shared/sync/auth-proof.js';
import { encodeFrame, FRAME_PRESENCE, MUX_PATH, type PresenceEntry } from '../../shared/sync/mux-frames.js';
import { httpBaseFromWs } from '../../shared/sync/reconnect.js';
import { startRelayProcess } from '../bench/relay-fixtures.js';
import { hostStatus } from '../harness/admin-cli.js';
import { clusterCoordinators, type NatsCluster, startNatsCluster } from '../harness/nats-cluster.js';
import { basePolicy, makeTestOrg, postJson, pushPolicy, signPolicy } from '../harness/policy-fixtures.js';
import { type DaemonProcess, removeDirectory, temporaryDirectory, waitFor } from '../harness/processes.js';

// Issue 15: presence that relays report crosses coordinators. Two coordinator processes on one
// NATS JetStream server (presence does not need replicas), a policy with two relays, each scoped
// to one host. A relay speaks for its hosts at A; an admin reading B (/api/presence and `outpost
// status`) sees them as A does, online and then offline, and a relay that claims hosts outside
// its scope at A gets none of them shown at B. A relay given both coordinators as upstreams moves
// its uplink to B when A is SIGKILLed.
const test = suite('NATS backend: relays’ presence across coordinators');
const dir = temporaryDirectory('nats-relay-presence');
const org = makeTestOrg();
const siteRelay = generateSigningKey('site-1');
const otherRelay = generateSigningKey('site-2');
const hostKey = generateSigningKey('h1');
const onCluster = clusterCoordinators(dir, [
  '--log-level',
  'warn',
  '--org-root',
  org.root.publicKey,
  '--nats-replicas',
  '1',
]);
let cluster: NatsCluster;
let a: DaemonProcess & { url: string };
let b: DaemonProcess & { url: string };
const daemons: DaemonProcess[] = [];
const clients: DocumentConnection[] = [];

function relayPolicy(version: number) {
  return basePolicy(org, {
    version,
    relays: [
      { name: 'site-1', key: siteRelay.publicKey, hosts: ['h1'], groups: [] },
      { name: 'site-2', key: otherRelay.publicKey, hosts: ['h2'], groups: [] },
    ],
  });
}

async function health(url: string): Promise<{ policyVersion: number | null; relaySessions: number }> {
  return (await (await fetch(`${httpBaseFromWs(url)}/healthz`)).json()) as {
    policyVersion: number | null;
    relaySessions: number;
  };
}

type Presence = Record<string, { online: boolean; lastSeen: string | null }>;
async function presenceAt(url: string): Promise<Presence> {
  const presenceUrl = `${httpBaseFromWs(url)}/api/presence`;
  const response = await fetch(presenceUrl, { headers: await proofHeaders(presenceUrl, org.alice) });
  assert.is(response.status, 200);
  return ((await response.json()) as { hosts: Presence }).hosts;
}

// A relay link as a compromised relay builds it: its own key, the real mux frames.
async function relayLink(url: string, key: SigningKey): Promise<WebSocket> {
  const { challenge } = challengeResponseSchema.parse(
    await (await fetch(`${httpBaseFromWs(url)}/auth/challenge`)).json(),
  );
  const ws = new WebSocket(`${url}/${MUX_PATH}?${new URLSearchParams({ ...signAuthProof(key, challenge, MUX_PATH) })}`);
  ws.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  return ws;
}

test.before(async () => {
  cluster = await startNatsCluster(join(dir, 'nats'), 1);
  a = await onCluster.start(cluster, 'a');
  b = await onCluster.start(cluster, 'b');
  const pushed = await pushPolicy(a.url, signPolicy(relayPolicy(1), org.root));
  assert.is(pushed.status, 200, pushed.body.error);
  await waitFor(
    'B to have the policy written through A',
    async () => (await health(b.url)).policyVersion === 1,
    20_000,
  );
});

test.after(async () => {
  for (const client of clients) client.close();
  await Promise.all(daemons.map((daemon) => daemon.stop('SIGKILL')));
  await onCluster.stopAll();
  await cluster?.close();
  if (!process.env.OUTPOST_KEEP_TEST_DIR) removeDirectory(dir);
});

test('a relay at A claiming hosts outside its scope: B shows only the one in its scope', async () => {
  const link = await relayLink(a.url, otherRelay);
  const now = Date.now();
  // Out of scope first: had A passed them on, B would have them before h2 (one NATS connection, in order).
  const claims: PresenceEntry[] = [
    { host: 'h1', online: true, lastSeen: now },
    { host: 'h3', online: true, lastSeen: now },
    { host: 'prod-1', online: true, lastSeen: now },
    { host: 'h2', online: true, lastSeen: now },
  ];
  link.send(encodeFrame({ type: FRAME_PRESENCE, hosts: claims }));
  const seen = await waitFor(
    'h2 online at B',
    async () => {
      const hosts = await presenceAt(b.url);
      return hosts.h2?.online ? hosts : null;
    },
    15_000,
  );
  assert.equal(Object.keys(seen), ['h2'], 'B shows no host outside site-2 scope');
  assert.equal(Object.keys(await presenceAt(a.url)), ['h2']);
  link.close();
  const gone = await waitFor(
    'h2 offline at B once the relay link ended',
    async () => {
      const hosts = await presenceAt(b.url);
      return hosts.h2?.online === false ? hosts.h2 : null;
    },
    15_000,
  );
  assert.ok(gone.lastSeen && Date.now() - Date.parse(gone.lastSeen) < 15_000, 'last seen just now');
});

test('a host behind a real relay at A shows online at B (/api/presence and outpost status), offline when it leaves and when the relay dies', async () => {
  const keyFile = join(dir, 'site-1.key');
  await writeKeyFile(keyFile, siteRelay);
  const aliceFile = join(dir, 'alice.key');
  await writeKeyFile(aliceFile, org.alice);
  const relay = await startRelayProcess(join(dir, 'relay'), join(dir, 'relay.log'), [a.url], {
    extra: ['--key', keyFile, '--org-root', org.root.publicKey, '--log-level', 'warn'],
  });
  daemons.push(relay);
  await waitFor('the relay to have the policy', async () => (await health(relay.url)).policyVersion === 1, 15_000);
  const enrollment = {
    kind: 'enrollment' as const,
    host: 'h1',
    hostKey: hostKey.publicKey,
    approvedAt: new Date().toISOString(),
    policyVersion: 1,
  };
  const approved = await postJson(relay.url, '/api/enroll/approve', {
    enrollment,
    signatures: [signPayload('enrollment', enrollment, org.alice)],
  });
  assert.is(approved.status, 200, approved.body.error);
  const connectHost = async (): Promise<DocumentConnection> => {
    const host = connectDocument(relay.url, 'hosts/h1/status', { identity: hostKey, maxBackoffMs: 300 });
    clients.push(host);
    await waitForSync(host, 15_000);
    host.provider.awareness.setLocalState({ role: 'agent', host: 'h1', phase: 'idle', generation: null });
    return host;
  };
  const onlineAtB = async (online: boolean): Promise<void> => {
    await waitFor(
      `h1 ${online ? 'online' : 'offline'} at B`,
      async () => (await presenceAt(b.url)).h1?.online === online,
      20_000,
    );
  };
  let host = await connectHost();
  await onlineAtB(true);
  const view = await hostStatus({ coordinator: b.url, key: aliceFile, orgRoot: org.root.publicKey }, 'h1');
  if (view) assert.ok(view.online, 'outpost status on B says online');
  host.close();
  await onlineAtB(false);
  host = await connectHost();
  await onlineAtB(true);
  // The relay dies: A ends its session, and B hears it from A.
  await relay.stop('SIGKILL');
  await onlineAtB(false);
  assert.is((await presenceAt(b.url)).h1?.online, false);
  host.close();
});

// Last: it kills A. The relay lists A first and B second, as a site would list its coordinators.
test('a relay given A and B: A SIGKILLed, its uplink moves to B and a policy pushed through B reaches it', async () => {
  const keyFile = join(dir, 'site-1-ab.key');
  await writeKeyFile(keyFile, siteRelay);
  const relay = await startRelayProcess(join(dir, 'relay-ab'), join(dir, 'relay-ab.log'), [a.url, b.url], {
    extra: ['--key', keyFile, '--org-root', org.root.publicKey, '--log-level', 'warn'],
  });
  daemons.push(relay);
  await waitFor('the relay to have the policy', async () => (await health(relay.url)).policyVersion === 1, 15_000);
  await waitFor('the relay to be linked to A', async () => (await health(a.url)).relaySessions === 1, 15_000);
  assert.is((await health(b.url)).relaySessions, 0, 'linked to A only');
  a.child.kill('SIGKILL');
  await a.exited;
  await waitFor('the relay to link to B', async () => (await health(b.url)).relaySessions === 1, 30_000);
  const pushed = await pushPolicy(b.url, signPolicy(relayPolicy(2), org.root));
  assert.is(pushed.status, 200, pushed.body.error);
  await waitFor(
    'the relay to have policy version 2 from B',
    async () => (await health(relay.url)).policyVersion === 2,
    20_000,
  );
});

test.run();
