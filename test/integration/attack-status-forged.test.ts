import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { signEnrollment } from '../../admin/enroll-entries.js';
import type { HostView } from '../../admin/fleet-view.js';
import { appendSignedResult, publishStatus } from '../../agent/pipeline/report.js';
import { generateSigningKey, type SigningKey } from '../../shared/crypto/keys.js';
import { appendIntent } from '../../shared/documents/desired.js';
import { readCurrentStatus, readResults } from '../../shared/documents/status.js';
import { connectDocument, type DocumentConnection, waitForSync } from '../../shared/node/connect.js';
import { writeKeyFile } from '../../shared/node/key-file.js';
import type { Result, StatusContent } from '../../shared/schemas/report.js';
import { signIntent } from '../../shared/trust/sign-intent.js';
import { intentDigest } from '../../shared/trust/verify-intent.js';
import { basePolicy, makeTestOrg, postJson, pushPolicy, signPolicy } from '../harness/policy-fixtures.js';
import {
  type DaemonProcess,
  removeDirectory,
  runCli,
  startCoordinatorProcess,
  temporaryDirectory,
  waitFor,
} from '../harness/processes.js';

// Issue 11, item 2: `outpost status` took a host's key from its status's own signature. A relay
// (which may write the status documents of the hosts it serves) replaces h1's status and adds a
// result, both signed by a fresh key of its own, claiming generation 99 of a "-patched" closure.
// `outpost status --org-root` checks them against the key enrollment binds to h1 and must show
// them as rejected, never as what h1 runs; `outpost rollback` must not pick the forged closure.
const org = makeTestOrg();
const h1 = generateSigningKey('h1');
const relayKey = generateSigningKey('relay-r1');
const forger = generateSigningKey('forger');
const closure = (c: string, name: string): string => `/nix/store/${c.repeat(32)}-${name}`;
const genuineClosure = closure('a', 'nixos-system-h1');
const patchedClosure = closure('b', 'nixos-system-patched');
let dir = '';
let coordinator: DaemonProcess & { url: string; port: number };
const aliceFile = (): string => join(dir, 'alice.key');
const open: DocumentConnection[] = [];

function connectAs(key: SigningKey, name: string): DocumentConnection {
  const connection = connectDocument(coordinator.url, name, { identity: key, maxBackoffMs: 500 });
  open.push(connection);
  return connection;
}

function content(generation: number, closurePath: string): StatusContent {
  return {
    kind: 'status',
    host: 'h1',
    phase: 'idle',
    applied: { generation, closure: closurePath },
    target: null,
    lastResultSeq: generation === 1 ? 1 : 2,
    agentVersion: '0.1.0',
  };
}

function result(seq: number, generation: number, closurePath: string, digest: string): Result {
  return {
    kind: 'result',
    host: 'h1',
    seq,
    at: new Date().toISOString(),
    outcome: 'applied',
    generation,
    closure: closurePath,
    action: 'switch',
    intentDigest: digest,
    reason: '',
    outputTail: '',
  };
}

async function status(...extra: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return runCli(['status', '--coordinator', coordinator.url, '--key', aliceFile(), '--host', 'h1', ...extra]);
}

test.before(async () => {
  dir = temporaryDirectory('attack-status-forged');
  await writeKeyFile(aliceFile(), org.alice);
  coordinator = await startCoordinatorProcess(join(dir, 'coordinator'), join(dir, 'coordinator.log'), 0, [
    '--org-root',
    org.root.publicKey,
  ]);
  const policy = basePolicy(org, { relays: [{ name: 'r1', key: relayKey.publicKey, hosts: ['h1'], groups: [] }] });
  const pushed = await pushPolicy(coordinator.url, signPolicy(policy, org.root));
  assert.is(pushed.status, 200, pushed.body.error);
  const approved = await postJson(
    coordinator.url,
    '/api/enroll/approve',
    signEnrollment(org.alice, { host: 'h1', hostKey: h1.publicKey, policyVersion: 1 }, new Date()),
  );
  assert.is(approved.status, 200, approved.body.error);

  // Alice deploys generation 1; h1 applies it and reports, signed with its enrolled key.
  const intent = signIntent(
    {
      kind: 'intent',
      host: 'h1',
      generation: 1,
      closure: genuineClosure,
      action: 'switch',
      issuedAt: new Date().toISOString(),
      expiresAt: new Date(Date.now() + 3_600_000).toISOString(),
      issuer: 'alice',
      policyVersion: 1,
    },
    org.alice,
  );
  const desired = connectAs(org.alice, 'hosts/h1/desired');
  await waitForSync(desired, 10_000);
  appendIntent(desired.doc, intent);
  const agent = connectAs(h1, 'hosts/h1/status');
  await waitForSync(agent, 10_000);
  appendSignedResult(agent.doc, result(1, 1, genuineClosure, intentDigest(intent)), h1);
  publishStatus(agent.doc, content(1, genuineClosure), 1, h1);

  // The relay, over the real protocol with its own key proof, replaces the status and adds a result.
  const relay = connectAs(relayKey, 'hosts/h1/status');
  await waitForSync(relay, 10_000);
  await waitFor('the relay to see the genuine status', () => readCurrentStatus(relay.doc)?.status.applied, 10_000);
  appendSignedResult(relay.doc, result(2, 99, patchedClosure, intentDigest(intent)), forger);
  publishStatus(relay.doc, content(99, patchedClosure), 2, forger);
  const watcher = connectAs(org.alice, 'hosts/h1/status');
  await waitFor(
    'the coordinator to store the forged status and result',
    () =>
      readCurrentStatus(watcher.doc)?.signature.publicKey === forger.publicKey &&
      readResults(watcher.doc).results.length === 2,
    10_000,
  );
  for (const c of open.splice(0)) c.close();
});

test.after(async () => {
  for (const c of open) c.close();
  await coordinator?.stop();
  removeDirectory(dir);
});

test('status --org-root rejects a status and result signed by a key that is not h1 enrolled key', async () => {
  const json = await status('--org-root', org.root.publicKey, '--json');
  assert.is(json.code, 0, json.stderr);
  const parsed = JSON.parse(json.stdout) as { hostKeys: string; hosts: HostView[] };
  assert.is(parsed.hostKeys, 'enrollment');
  const view = parsed.hosts[0]!;
  assert.is(view.enrolledKey, h1.publicKey);
  assert.is(view.applied, null, 'nothing the forged status claims is shown as applied');
  assert.is(view.statusSignatureValid, false);
  assert.is(view.rejectedStatus?.signer, forger.publicKey);
  assert.match(String(view.rejectedStatus?.reason), /not h1's enrolled key .*forged/);
  assert.equal(view.lastResult && [view.lastResult.seq, view.lastResult.generation, view.lastResult.closure], [
    1,
    1,
    genuineClosure,
  ]);
  assert.is(view.rejectedResults.count, 1);
  assert.ok(view.results.some((r) => r.result.generation === 99 && !r.signatureValid));

  const table = await status('--org-root', org.root.publicKey);
  assert.is(table.code, 0, table.stderr);
  assert.match(table.stdout, /REJECTED STATUS \(signed by key .*, not h1's enrolled key/);
  assert.match(table.stdout, /#1 gen 1 applied \(1 REJECTED: /);
  assert.not.match(table.stdout, /-patched/, 'the forged closure is nowhere in the table');
  assert.not.match(table.stdout, /UNVERIFIED/);
});

test('without --org-root, status says plainly that host keys are unverified', async () => {
  const table = await status();
  assert.is(table.code, 0, table.stderr);
  assert.match(table.stdout, /host keys UNVERIFIED: without --org-root/);
  const json = JSON.parse((await status('--json')).stdout) as { hostKeys: string; hosts: HostView[] };
  assert.is(json.hostKeys, 'unverified');
  assert.is(json.hosts[0]!.hostKeys, 'unverified');
});

test('rollback never picks the forged closure: with --org-root only h1 results count; without it, it refuses', async () => {
  const base = ['rollback', '--coordinator', coordinator.url, '--key', aliceFile(), '--host', 'h1'];
  const verified = await runCli([...base, '--org-root', org.root.publicKey, '--to-generation', '99']);
  assert.is(verified.code, 1);
  assert.match(verified.stderr, /h1 never reported generation 99 as applied/);
  const unverified = await runCli(base);
  assert.is(unverified.code, 1);
  assert.match(unverified.stderr, /holds fleet policy version 1: give --org-root/);
  const desired = connectAs(org.alice, 'hosts/h1/desired');
  await waitForSync(desired, 10_000);
  assert.not.ok(JSON.stringify(desired.doc.getArray('intents').toJSON()).includes('patched'), 'nothing was signed');
});

test.run();
