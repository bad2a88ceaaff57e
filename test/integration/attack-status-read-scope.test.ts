import { createServer } from 'node:net';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { SigningKey } from '../../shared/crypto/keys.js';
import { appendIntent, readIntentEntries } from '../../shared/documents/desired.js';
import { connectDocument, type DocumentConnection, waitForSync } from '../../shared/node/connect.js';
import { writeKeyFile } from '../../shared/node/key-file.js';
import { signIntent } from '../../shared/trust/sign-intent.js';
import { basePolicy, makeTestOrg, pushPolicy, signPolicy } from '../harness/policy-fixtures.js';
import {
  type DaemonProcess,
  removeDirectory,
  runCli,
  startCoordinatorProcess,
  temporaryDirectory,
  waitFor,
} from '../harness/processes.js';

// Issue 11, item 9: carol, whose only role is `read` on h1, could open hosts/h2/desired (read was
// checked "anywhere", not for the host). Carol here is a real client with her own key proof
// against a real coordinator. Also what `outpost status` says when it cannot read or reach.
const org = makeTestOrg();
const closureOf = (c: string): string => `/nix/store/${c.repeat(32)}-nixos-system`;
let dir = '';
let coordinator: DaemonProcess & { url: string; port: number };
const files: Record<string, string> = {};
const open: DocumentConnection[] = [];

function connectAs(key: SigningKey, name: string): DocumentConnection {
  const connection = connectDocument(coordinator.url, name, { identity: key, maxBackoffMs: 500 });
  open.push(connection);
  return connection;
}

// 'synced', or the code the coordinator closed the connection with.
function outcome(connection: DocumentConnection): Promise<'synced' | number> {
  return new Promise((resolve) => {
    connection.provider.on('sync', (synced: boolean) => synced && resolve('synced'));
    connection.provider.on('connection-close', (event: { code: number } | null) => event && resolve(event.code));
  });
}

const status = (key: string, ...extra: string[]) =>
  runCli(['status', '--coordinator', coordinator.url, '--key', files[key]!, ...extra]);

test.before(async () => {
  dir = temporaryDirectory('attack-status-read-scope');
  for (const name of ['alice', 'carol'] as const) {
    files[name] = join(dir, `${name}.key`);
    await writeKeyFile(files[name], org[name]);
  }
  coordinator = await startCoordinatorProcess(join(dir, 'coordinator'), join(dir, 'coordinator.log'), 0, [
    '--org-root',
    org.root.publicKey,
  ]);
  const policy = basePolicy(org);
  const roles = policy.roles.map((r) => (r.name === 'viewer' ? { ...r, hosts: ['h1'] } : r));
  const pushed = await pushPolicy(coordinator.url, signPolicy({ ...policy, roles }, org.root));
  assert.is(pushed.status, 200, pushed.body.error);
  // Alice deploys to h1 and h2.
  for (const [host, c] of [
    ['h1', 'a'],
    ['h2', 'b'],
  ] as const) {
    const desired = connectAs(org.alice, `hosts/${host}/desired`);
    await waitForSync(desired, 10_000);
    appendIntent(
      desired.doc,
      signIntent(
        {
          kind: 'intent',
          host,
          generation: 1,
          closure: closureOf(c),
          action: 'switch',
          issuedAt: new Date().toISOString(),
          expiresAt: new Date(Date.now() + 3_600_000).toISOString(),
          issuer: 'alice',
          policyVersion: 1,
        },
        org.alice,
      ),
    );
    const check = connectAs(org.alice, `hosts/${host}/desired`);
    await waitFor(`${host}'s intent to be stored`, () => readIntentEntries(check.doc).entries.length === 1, 10_000);
  }
});

test.after(async () => {
  for (const c of open) c.close();
  await coordinator?.stop();
  removeDirectory(dir);
});

test("carol, with read on h1 only, reads h1 but is refused h2's documents (4403)", async () => {
  const h1 = connectAs(org.carol, 'hosts/h1/desired');
  assert.is(await outcome(h1), 'synced');
  assert.is(readIntentEntries(h1.doc).entries[0]?.signed.intent.closure, closureOf('a'));
  for (const name of ['hosts/h2/desired', 'hosts/h2/status']) {
    const refused = connectAs(org.carol, name);
    assert.is(await outcome(refused), 4403, name);
    assert.is(readIntentEntries(refused.doc).entries.length, 0, `nothing of ${name} reached carol`);
  }
  assert.match(coordinator.logs(), /"event":"connection-refused".*admin:carol may not open hosts\/h2\/desired/);
});

test('outpost status as carol: h2 is not readable (exit 1 when asked for by name); the fleet listing shows h1 only', async () => {
  const named = await status('carol', '--host', 'h2');
  assert.is(named.code, 1);
  assert.match(named.stderr, /h2: .* refused hosts\/h2\/(desired|status) \(4403 admin:carol may not open/);
  assert.not.match(named.stdout, /bbbbbbbb/);
  const fleet = await status('carol');
  assert.is(fleet.code, 0, fleet.stderr);
  assert.match(fleet.stdout, /^h1 +1 aaaaaaaa…-nixos-system/m);
  assert.not.match(fleet.stdout, /^h2 /m, 'h2 is not even listed to carol');
  assert.not.match(fleet.stdout, /bbbbbbbb/);
});

test('status --host nosuch says there is no such host and exits 1, instead of a row of dashes', async () => {
  const result = await status('alice', '--host', 'nosuch');
  assert.is(result.code, 1);
  assert.match(
    result.stderr,
    /no such host: nosuch; .* holds no intent, status, result for it \(hosts it knows: h1, h2\)/,
  );
  assert.not.match(result.stdout, /nosuch/);
});

test('status against an unreachable URL, or wss:// on a plain port, names the URL and the fix', async () => {
  const closedPort = await new Promise<number>((resolve) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
  const unreachable = await runCli(['status', '--coordinator', `ws://127.0.0.1:${closedPort}`]);
  assert.is(unreachable.code, 1);
  assert.match(
    unreachable.stderr,
    new RegExp(
      `cannot reach http://127\\.0\\.0\\.1:${closedPort}/api/documents: nothing listens at 127\\.0\\.0\\.1:${closedPort} \\(connection refused\\)`,
    ),
  );
  const wrongScheme = await runCli(['status', '--coordinator', coordinator.url.replace(/^ws:/, 'wss:')]);
  assert.is(wrongScheme.code, 1);
  assert.match(wrongScheme.stderr, /does not speak TLS: use ws:\/\/ instead of wss:\/\//);
  assert.not.match(wrongScheme.stderr, /^outpost: fetch failed$/m);
});

test.run();
