import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { auditProofDocument } from '../../shared/audit/bundle.js';
import type { SigningKey } from '../../shared/crypto/keys.js';
import { appendIntent, readIntentEntries } from '../../shared/documents/desired.js';
import { connectDocument, type DocumentConnection, waitForSync } from '../../shared/node/connect.js';
import { writeKeyFile } from '../../shared/node/key-file.js';
import { authHeaders } from '../../shared/sync/auth-proof.js';
import { fetchAuthHeaders, fetchAuthProof, httpBaseFromWs } from '../../shared/sync/reconnect.js';
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

// Who may read the logged history (issue 13, the `audit` capability), from the positions that
// matter against a real coordinator run with --org-root:
// - bob, an admin whose roles give him deploy and read on production (prod-1) only, asks for h1's
//   history with his own valid key proof: refused (403), and h1 is not even in the heads he gets;
// - carol, an auditor whose only capability is `audit` on every host, gets every host's history
//   and a verify that passes, but opens no live document of a host (4403) and sees none listed.
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

// Straight at the audit endpoint with the caller's own valid single-use proof.
async function auditGet(key: SigningKey, document: string | null): Promise<{ status: number; body: string }> {
  const proof = await fetchAuthProof(coordinator.url, auditProofDocument(document), key, 5000);
  const path = document === null ? '/api/audit/heads' : `/api/audit/log?doc=${encodeURIComponent(document)}`;
  const response = await fetch(`${httpBaseFromWs(coordinator.url)}${path}`, {
    headers: authHeaders({ principal: proof.principal!, challenge: proof.challenge!, signature: proof.signature! }),
  });
  return { status: response.status, body: await response.text() };
}

const headDocuments = (body: string): string[] =>
  (JSON.parse(body) as { heads: { document: string }[] }).heads.map((h) => h.document).sort();

test.before(async () => {
  dir = temporaryDirectory('attack-audit-access');
  for (const name of ['alice', 'bob', 'carol'] as const) {
    files[name] = join(dir, `${name}.key`);
    await writeKeyFile(files[name], org[name]);
  }
  coordinator = await startCoordinatorProcess(join(dir, 'coordinator'), join(dir, 'coordinator.log'), 0, [
    '--org-root',
    org.root.publicKey,
  ]);
  const policy = basePolicy(org);
  const roles = policy.roles.map((r) =>
    r.name === 'viewer' ? { ...r, name: 'auditor', capabilities: ['audit' as const] } : r,
  );
  const admins = policy.admins.map((a) => (a.name === 'carol' ? { ...a, roles: ['auditor'] } : a));
  const pushed = await pushPolicy(coordinator.url, signPolicy({ ...policy, roles, admins }, org.root));
  assert.is(pushed.status, 200, pushed.body.error);
  for (const [host, c] of [
    ['h1', 'a'],
    ['prod-1', 'b'],
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

test("bob (deploy and read on prod-1 only) is refused h1's history, and h1 is not in his heads", async () => {
  const refused = await auditGet(org.bob, 'hosts/h1/desired');
  assert.is(refused.status, 403, refused.body);
  assert.match(refused.body, /admin:bob may not read the audit log of hosts\/h1\/desired: it needs 'audit' or 'read'/);
  assert.not.match(refused.body, /aaaaaaaa/);
  const own = await auditGet(org.bob, 'hosts/prod-1/desired');
  assert.is(own.status, 200, own.body);
  const heads = await auditGet(org.bob, null);
  assert.is(heads.status, 200, heads.body);
  assert.equal(headDocuments(heads.body), ['fleet/policy', 'hosts/prod-1/desired']);
  // The real command, as bob: it names the refusal and exits 1.
  const cli = await runCli([
    'audit',
    'verify',
    '--coordinator',
    coordinator.url,
    '--key',
    files.bob!,
    '--org-root',
    org.root.publicKey,
    '--host',
    'h1',
  ]);
  assert.is(cli.code, 1, cli.stdout + cli.stderr);
  assert.match(cli.stderr, /403: admin:bob may not read the audit log of hosts\/h1\/desired/);
  assert.match(coordinator.logs(), /"event":"audit-refused".*admin:bob/);
});

test('carol (audit only) reads and verifies every host history, but opens no live host document', async () => {
  const history = await auditGet(org.carol, 'hosts/h1/desired');
  assert.is(history.status, 200, history.body);
  assert.is(history.body.trim().split('\n').length, 1, 'the one logged update of hosts/h1/desired');
  const heads = await auditGet(org.carol, null);
  assert.equal(headDocuments(heads.body), ['fleet/policy', 'hosts/h1/desired', 'hosts/prod-1/desired']);
  const verified = await runCli([
    'audit',
    'verify',
    '--coordinator',
    coordinator.url,
    '--key',
    files.carol!,
    '--org-root',
    org.root.publicKey,
    '--all',
  ]);
  assert.is(verified.code, 0, verified.stdout + verified.stderr);
  assert.match(verified.stdout, /verified: 3 documents/);
  // A host with no history is an error, not a pass over nothing.
  const nosuch = await runCli([
    'audit',
    'verify',
    '--coordinator',
    coordinator.url,
    '--key',
    files.carol!,
    '--org-root',
    org.root.publicKey,
    '--host',
    'nosuch',
  ]);
  assert.is(nosuch.code, 1, nosuch.stdout);
  assert.match(nosuch.stderr, /no logged history for nosuch in ws:.*check the host name/);
  // Live: refused, and not listed.
  for (const name of ['hosts/h1/desired', 'hosts/prod-1/status']) {
    const live = connectAs(org.carol, name);
    assert.is(await outcome(live), 4403, name);
    assert.is(readIntentEntries(live.doc).entries.length, 0, `nothing of ${name} reached carol live`);
  }
  const url = `${httpBaseFromWs(coordinator.url)}/api/documents`;
  const listed = await fetch(url, { headers: await fetchAuthHeaders(url, org.carol, 5000) });
  assert.is(listed.status, 200);
  assert.equal(((await listed.json()) as { documents: string[] }).documents, ['fleet/policy']);
});

test.run();
