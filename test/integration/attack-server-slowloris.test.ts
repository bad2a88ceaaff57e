import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import WebSocket from 'ws';
import { generateSigningKey, type SigningKey } from '../../shared/crypto/keys.js';
import { signPayload } from '../../shared/crypto/signatures.js';
import { connectDocument, proofHeaders, waitForSync } from '../../shared/node/connect.js';
import { writeKeyFile } from '../../shared/node/key-file.js';
import { authHeaders, challengeResponseSchema, signAuthProof } from '../../shared/sync/auth-proof.js';
import { httpBaseFromWs } from '../../shared/sync/reconnect.js';
import { basePolicy, makeTestOrg, postJson, pushPolicy, signPolicy } from '../harness/policy-fixtures.js';
import {
  type DaemonProcess,
  removeDirectory,
  runCli,
  startCoordinatorProcess,
  temporaryDirectory,
  waitFor,
} from '../harness/processes.js';
import { openSocket, statusOf, whenClosed } from '../harness/raw-sockets.js';

// Issue 11, item 13, against a real coordinator process under a policy:
// - /api/documents and /api/presence answer only an admin or a relay of the policy, proven by a
//   signed single-use challenge in headers; strangers, hosts, replays and proofs for another path
//   are refused, and `outpost status --key` (the real admin command) still works;
// - 500 never-finished upgrade requests from one address no longer stay open for minutes: all but
//   --max-pending-upgrades are refused at once, the rest dropped after --upgrade-timeout;
// - one address cannot hold more than --max-connections-per-address connections.
// Attackers connect from other loopback addresses (127.0.0.2, 127.0.0.3) so the test's own
// clients on 127.0.0.1 are a different address, as they would be in the field.

const org = makeTestOrg();
const hostKey = generateSigningKey('h1');
const relayKey = generateSigningKey('r1');
const UPGRADE_TIMEOUT_S = 3;
const MAX_CONNECTIONS = 300;
type Server = DaemonProcess & { url: string; port: number };
let dir = '';
let coordinator: Server;
let base = '';

async function signedFor(key: SigningKey, path: string): Promise<Record<string, string>> {
  const { challenge } = challengeResponseSchema.parse(await (await fetch(`${base}/auth/challenge`)).json());
  return authHeaders(signAuthProof(key, challenge, path));
}

async function get(path: string, headers: Record<string, string> = {}): Promise<{ status: number; body: unknown }> {
  const response = await fetch(`${base}${path}`, { headers });
  return { status: response.status, body: await response.json() };
}

async function health(): Promise<{ refusals: Record<string, number>; connections: Record<string, number> }> {
  return (await get('/healthz')).body as { refusals: Record<string, number>; connections: Record<string, number> };
}

test.before(async () => {
  dir = temporaryDirectory('attack-slowloris');
  coordinator = await startCoordinatorProcess(join(dir, 'data'), join(dir, 'coordinator.log'), 0, [
    '--org-root',
    org.root.publicKey,
    '--upgrade-timeout',
    String(UPGRADE_TIMEOUT_S),
    '--max-connections-per-address',
    String(MAX_CONNECTIONS),
  ]);
  base = httpBaseFromWs(coordinator.url);
  const policy = basePolicy(org, { relays: [{ name: 'r1', key: relayKey.publicKey, hosts: ['h1'], groups: [] }] });
  const pushed = await pushPolicy(coordinator.url, signPolicy(policy, org.root));
  assert.is(pushed.status, 200, pushed.body.error);
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
  // Documents of two hosts in the log: h1 (in r1's scope) and h2 (not).
  for (const name of ['hosts/h1/desired', 'hosts/h2/desired']) {
    const writer = connectDocument(coordinator.url, name, { identity: org.alice, maxBackoffMs: 300 });
    await waitForSync(writer, 10_000);
    writer.doc.getArray('intents').push(['seed']);
    await waitFor(`${name} in the log`, async () => {
      const response = await fetch(`${base}/api/documents`, {
        headers: await proofHeaders(`${base}/api/documents`, org.alice),
      });
      return ((await response.json()) as { documents: string[] }).documents.includes(name);
    });
    writer.close();
  }
});

test.after(async () => {
  await coordinator?.stop();
  removeDirectory(dir);
});

test('/api/documents and /api/presence refuse callers without a proof, strangers and hosts', async () => {
  for (const path of ['/api/documents', '/api/presence']) {
    const anonymous = await get(path);
    assert.is(anonymous.status, 401, `${path} without a proof`);
    assert.match(String((anonymous.body as { error: string }).error), /x-outpost-principal/);
    assert.is((await get(path, await signedFor(generateSigningKey('mallory'), path))).status, 403, 'a stranger');
    assert.is((await get(path, await signedFor(hostKey, path))).status, 403, 'an enrolled host');
  }
  // A proof is good once, and only for the path it was signed for.
  const proof = await signedFor(org.alice, '/api/documents');
  assert.is((await get('/api/documents', proof)).status, 200);
  assert.is((await get('/api/documents', proof)).status, 401, 'replayed');
  assert.is((await get('/api/documents', await signedFor(org.alice, '/api/presence'))).status, 401, 'other path');
  assert.ok((await health()).refusals.apiUnauthenticated >= 8);
});

test('an admin sees what it may read; a relay sees its scope', async () => {
  const asAlice = (await get('/api/documents', await signedFor(org.alice, '/api/documents'))).body as {
    documents: string[];
  };
  assert.ok(asAlice.documents.includes('hosts/h1/desired') && asAlice.documents.includes('hosts/h2/desired'));
  const asRelay = (await get('/api/documents', await signedFor(relayKey, '/api/documents'))).body as {
    documents: string[];
  };
  assert.ok(asRelay.documents.includes('hosts/h1/desired'));
  assert.not.ok(asRelay.documents.includes('hosts/h2/desired'), 'h2 is not in r1 scope');
  assert.is((await get('/api/presence', await signedFor(relayKey, '/api/presence'))).status, 200);
});

test('outpost status --key (the admin command) proves its key to the API', async () => {
  const keyFile = join(dir, 'carol.key');
  await writeKeyFile(keyFile, org.carol);
  const result = await runCli(['status', '--coordinator', coordinator.url, '--key', keyFile, '--json']);
  assert.is(result.code, 0, result.stderr);
  const hosts = (JSON.parse(result.stdout) as { hosts: { host: string }[] }).hosts.map((h) => h.host);
  assert.ok(hosts.includes('h1'), `status lists h1: ${hosts}`);
});

test('500 never-finished upgrades from one address: refused beyond the pending limit, the rest dropped after the timeout; others are served meanwhile', async () => {
  const sockets = await Promise.all(
    Array.from({ length: 500 }, async () => {
      const socket = await openSocket(coordinator.port, '127.0.0.2');
      let answer = '';
      socket.on('data', (d: Buffer) => (answer += d.toString('latin1')));
      socket.on('error', () => undefined);
      // Headers that never end.
      socket.write('GET /hosts/h1/status HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n');
      return { socket, closedIn: whenClosed(socket), answer: () => answer };
    }),
  );
  const started = Date.now();
  // A client at another address is served while the attack holds its pending connections.
  const bystander = connectDocument(coordinator.url, 'hosts/h1/desired', { identity: org.alice, maxBackoffMs: 300 });
  await waitForSync(bystander, 10_000);
  bystander.close();
  // What the server holds while the bystander is served: sockets it has not answered with 429 and
  // that are still open (a refused socket's FIN can still be on its way to the client, so "not yet
  // closed" alone counted refusals as held when the bystander synced fast), and the server's own count.
  const stillOpenEarly = sockets.filter((s) => !s.socket.destroyed && statusOf(s.answer()) !== 429).length;
  const pendingEarly = (await health()).connections.pending;
  const times = await Promise.all(sockets.map((s) => s.closedIn));
  const allClosedAfterMs = Date.now() - started;
  const refused = sockets.filter((s) => statusOf(s.answer()) === 429);
  assert.ok(refused.length >= 500 - 128, `${refused.length} refused at once with 429`);
  assert.match(refused[0]!.answer(), /--max-pending-upgrades/);
  assert.ok(stillOpenEarly <= 128, `${stillOpenEarly} still open while the bystander synced`);
  assert.ok(pendingEarly <= 128, `the server held ${pendingEarly} pending connections while the bystander synced`);
  // Each socket's life from its connection to its close (the bystander's sync is not counted).
  const longestMs = Math.max(...times);
  assert.ok(
    longestMs < (UPGRADE_TIMEOUT_S + 4) * 1000,
    `the longest-lived of the 500 was closed after ${longestMs} ms, not minutes`,
  );
  console.log(
    JSON.stringify({
      slowloris: { sockets: 500, refusedAtOnce: refused.length, stillOpenEarly, longestMs, allClosedAfterMs },
    }),
  );
  const after = await health();
  assert.ok(after.refusals.pendingUpgrades >= 500 - 128);
  assert.ok(after.refusals.upgradeTimeouts >= 1, 'the pending ones timed out');
  assert.ok(after.connections.pending <= 1, `nothing left pending (${after.connections.pending})`);
});

test('one address cannot hold more than --max-connections-per-address connections', async () => {
  const held: WebSocket[] = [];
  let refused = 0;
  const attempts = MAX_CONNECTIONS + 60;
  // In batches, so the pending limit is not what stops them.
  for (let i = 0; i < attempts; i += 50) {
    const batch = await Promise.all(
      Array.from({ length: Math.min(50, attempts - i) }, async () => {
        const { challenge } = challengeResponseSchema.parse(await (await fetch(`${base}/auth/challenge`)).json());
        const query = new URLSearchParams({ ...signAuthProof(org.carol, challenge, 'hosts/h1/status') });
        const ws = new WebSocket(`${coordinator.url}/hosts/h1/status?${query}`, { localAddress: '127.0.0.3' });
        return new Promise<WebSocket | null>((resolve) => {
          ws.once('open', () => resolve(ws));
          ws.once('unexpected-response', (_req, res) => {
            if (res.statusCode === 429) refused += 1;
            resolve(null);
          });
          ws.once('error', () => resolve(null));
        });
      }),
    );
    for (const ws of batch) if (ws) held.push(ws);
  }
  try {
    assert.is(held.length, MAX_CONNECTIONS, `${held.length} held open`);
    assert.is(refused, attempts - MAX_CONNECTIONS, `${refused} refused with 429`);
    assert.ok((await health()).refusals.connectionsPerAddress >= attempts - MAX_CONNECTIONS);
    // 127.0.0.1 is another address: still served.
    const bystander = connectDocument(coordinator.url, 'hosts/h1/desired', { identity: org.alice, maxBackoffMs: 300 });
    await waitForSync(bystander, 10_000);
    bystander.close();
  } finally {
    for (const ws of held) ws.terminate();
  }
  // Closed connections free their slots.
  await waitFor('the slots to be freed', async () => (await health()).connections.connections < 10, 10_000);
});

test.run();
