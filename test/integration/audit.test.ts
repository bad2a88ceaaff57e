import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as Y from 'yjs';
import { openUpdateLog } from '../../coordinator/update-log.js';
import { type AuditBundle, auditProofDocument } from '../../shared/audit/bundle.js';
import { GENESIS_HASH, logEntryHash } from '../../shared/audit/log-chain.js';
import { generateSigningKey, type SigningKey } from '../../shared/crypto/keys.js';
import { signPayload } from '../../shared/crypto/signatures.js';
import { appendIntent } from '../../shared/documents/desired.js';
import { desiredDocName, statusDocName } from '../../shared/documents/names.js';
import { appendResult, readResults, writeCurrentStatus } from '../../shared/documents/status.js';
import { connectDocument, waitForSync } from '../../shared/node/connect.js';
import { writeKeyFile } from '../../shared/node/key-file.js';
import type { Intent } from '../../shared/schemas/intent.js';
import type { Result, Status } from '../../shared/schemas/report.js';
import { authHeaders } from '../../shared/sync/auth-proof.js';
import { fetchAuthProof } from '../../shared/sync/reconnect.js';
import { intentDigest } from '../../shared/trust/verify-intent.js';
import { closureOf } from '../harness/audit-history.js';
import { basePolicy, makeTestOrg, postJson, pushPolicy, signPolicy } from '../harness/policy-fixtures.js';
import {
  type DaemonProcess,
  removeDirectory,
  runCli,
  startCoordinatorProcess,
  temporaryDirectory,
  waitFor,
} from '../harness/processes.js';

// A scripted fleet history against a real coordinator (--org-root): admins deploy, roll back and
// are refused with the real CLI; hosts report signed results and statuses over the real protocol
// with their enrolled keys; the policy rotates its root and revokes a key. `outpost audit` then
// lists it, rebuilds a moment, verifies it, exports a bundle that verifies offline, and names
// what a compromised coordinator later writes straight into its own log.
const org = makeTestOrg();
const newRoot = generateSigningKey('root-2');
const h1 = generateSigningKey('h1');
const prod = generateSigningKey('prod-1');
let dir = '';
let coordinator: DaemonProcess & { url: string; port: number };
const files: Record<string, string> = {};

async function cli(...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return runCli(args, { timeoutMs: 120_000 });
}

async function ok(...args: string[]): Promise<string> {
  const result = await cli(...args);
  assert.is(result.code, 0, `outpost ${args.join(' ')} failed: ${result.stderr}${result.stdout}`);
  return result.stdout;
}

async function deploy(key: string, host: string, closure: string): Promise<string> {
  const out = await ok(
    'deploy',
    '--coordinator',
    coordinator.url,
    '--key',
    files[key]!,
    '--host',
    host,
    '--closure',
    closure,
    '--json',
  );
  return (JSON.parse(out) as { digest: string }).digest;
}

// What a host's agent writes: a signed result and status, over its own authenticated connection.
async function report(
  host: string,
  key: SigningKey,
  seq: number,
  generation: number,
  closure: string,
  digest: string,
): Promise<void> {
  const connection = connectDocument(coordinator.url, statusDocName(host), { identity: key });
  try {
    await waitForSync(connection, 10_000);
    const at = new Date().toISOString();
    const result: Result = {
      kind: 'result',
      host,
      seq,
      at,
      outcome: 'applied',
      generation,
      closure,
      action: 'switch',
      intentDigest: digest,
      reason: '',
      outputTail: '',
    };
    const status: Status = {
      kind: 'status',
      host,
      phase: 'applied',
      applied: { generation, closure },
      target: null,
      lastResultSeq: seq,
      agentVersion: 'test',
      seq,
      updatedAt: at,
    };
    connection.doc.transact(() => {
      appendResult(connection.doc, { result, signature: signPayload('result', result, key) });
      writeCurrentStatus(connection.doc, { status, signature: signPayload('status', status, key) });
    });
    const reader = connectDocument(coordinator.url, statusDocName(host), { identity: org.carol });
    try {
      await waitFor(`${host} result #${seq} stored`, async () => {
        await waitForSync(reader, 10_000);
        return readResults(reader.doc).results.some((r) => r.result.seq === seq);
      });
    } finally {
      reader.close();
    }
  } finally {
    connection.close();
  }
}

const auditArgs = (): string[] => [
  '--coordinator',
  coordinator.url,
  '--key',
  files.carol!,
  '--org-root',
  org.root.publicKey,
];

interface TimelineEvent {
  kind: string;
  document: string;
  receivedAt: number;
  policyVersion: number | null;
  verified: boolean;
  outcome: string;
  signers: { name: string | null; role: string }[];
  summary: string;
}

test.before(async () => {
  dir = temporaryDirectory('audit');
  for (const [name, key] of Object.entries({ alice: org.alice, bob: org.bob, carol: org.carol })) {
    files[name] = join(dir, `${name}.key`);
    await writeKeyFile(files[name]!, key);
  }
  coordinator = await startCoordinatorProcess(join(dir, 'coordinator'), join(dir, 'coordinator.log'), 0, [
    '--org-root',
    org.root.publicKey,
  ]);
});

test.after(async () => {
  await coordinator?.stop();
  removeDirectory(dir);
});

test('a scripted history: the timeline names each signer and policy version, show --at rebuilds a moment, verify passes, a bundle verifies offline and tampering is caught', async () => {
  const pushed = await pushPolicy(coordinator.url, signPolicy(basePolicy(org), org.root));
  assert.is(pushed.status, 200, pushed.body.error);
  for (const [host, key] of [
    ['h1', h1],
    ['prod-1', prod],
  ] as const) {
    const enrollment = {
      kind: 'enrollment' as const,
      host,
      hostKey: key.publicKey,
      approvedAt: new Date().toISOString(),
      policyVersion: 1,
    };
    const approved = await postJson(coordinator.url, '/api/enroll/approve', {
      enrollment,
      signatures: [signPayload('enrollment', enrollment, org.alice)],
    });
    assert.is(approved.status, 200, approved.body.error);
  }
  // Deploys, a result for each, then a rollback (a new generation running generation 1's closure).
  const d1 = await deploy('alice', 'h1', closureOf(1));
  await report('h1', h1, 1, 1, closureOf(1), d1);
  const d2 = await deploy('alice', 'h1', closureOf(2));
  await report('h1', h1, 2, 2, closureOf(2), d2);
  const rollback = JSON.parse(
    await ok(
      'rollback',
      '--coordinator',
      coordinator.url,
      '--key',
      files.alice!,
      '--org-root',
      org.root.publicKey,
      '--host',
      'h1',
      '--json',
    ),
  ) as { digest: string; intent: { generation: number; closure: string } };
  assert.is(rollback.intent.closure, closureOf(1));
  await report('h1', h1, 3, 3, closureOf(1), rollback.digest);
  // A co-signed intent for production (threshold 2), written by alice with both signatures.
  const intent: Intent = {
    kind: 'intent',
    host: 'prod-1',
    generation: 1,
    closure: closureOf(3),
    action: 'switch',
    issuedAt: new Date().toISOString(),
    expiresAt: new Date(Date.now() + 86_400_000).toISOString(),
    issuer: 'alice',
    policyVersion: 1,
  };
  const cosigned = {
    intent,
    signatures: [signPayload('intent', intent, org.alice), signPayload('intent', intent, org.bob)],
  };
  const writer = connectDocument(coordinator.url, desiredDocName('prod-1'), { identity: org.alice });
  await waitForSync(writer, 10_000);
  appendIntent(writer.doc, cosigned);
  await report('prod-1', prod, 1, 1, closureOf(3), intentDigest(cosigned));
  writer.close();
  // Bob alone on production: stored, and refused by every reader (1 of 2 signatures).
  await deploy('bob', 'prod-1', closureOf(4));
  // Policy v2: the root rotates to a new key and bob's key is revoked.
  const v2 = basePolicy(org, {
    version: 2,
    root: { keys: [newRoot.publicKey], threshold: 1 },
    revokedKeys: [org.bob.publicKey],
  });
  const pushed2 = await pushPolicy(coordinator.url, signPolicy(v2, org.root, newRoot));
  assert.is(pushed2.status, 200, pushed2.body.error);
  const d4 = await deploy('alice', 'h1', closureOf(5));
  await report('h1', h1, 4, 4, closureOf(5), d4);

  const { events } = JSON.parse(await ok('audit', 'timeline', ...auditArgs(), '--host', 'h1', '--json')) as {
    events: TimelineEvent[];
  };
  const rows = events.map((e) => [
    e.kind,
    e.policyVersion,
    e.signers.map((s) => (s.role === 'root' ? 'root' : s.name)).join('+'),
    e.verified,
  ]);
  assert.equal(rows, [
    ['policy', 1, 'root', true],
    ['enrollment', 1, 'alice', true],
    ['intent', 1, 'alice', true],
    ['result', 1, 'h1', true],
    ['status', 1, 'h1', true],
    ['intent', 1, 'alice', true],
    ['result', 1, 'h1', true],
    ['status', 1, 'h1', true],
    ['intent', 1, 'alice', true],
    ['result', 1, 'h1', true],
    ['status', 1, 'h1', true],
    // The rotation is signed by the old root and the new one.
    ['policy', 2, 'root+root', true],
    ['intent', 2, 'alice', true],
    ['result', 2, 'h1', true],
    ['status', 2, 'h1', true],
  ]);
  const prodEvents = (
    JSON.parse(await ok('audit', 'timeline', ...auditArgs(), '--host', 'prod-1', '--json')) as {
      events: TimelineEvent[];
    }
  ).events.filter((e) => e.kind === 'intent');
  assert.equal(
    prodEvents.map((e) => [e.signers.map((s) => s.name).join('+'), e.verified]),
    [
      ['alice+bob', true],
      ['bob', false],
    ],
  );
  assert.match(prodEvents[1]!.outcome, /below-threshold/);
  const text = await ok('audit', 'timeline', ...auditArgs(), '--host', 'h1');
  assert.match(text, /hosts\/h1\/desired#1 {2}intent {2}policy v1 {2}by alice {2}ok/);

  // The status between result #1 and result #2.
  const statusEvents = events.filter((e) => e.kind === 'status');
  const between = new Date(statusEvents[0]!.receivedAt).toISOString();
  const shown = JSON.parse(
    await ok(
      'audit',
      'show',
      '--coordinator',
      coordinator.url,
      '--key',
      files.carol!,
      '--doc',
      'hosts/h1/status',
      '--at',
      between,
    ),
  ) as { content: { status: { status: { seq: number } }; results: unknown[] } };
  assert.is(shown.content.status.status.seq, 1);
  assert.is(shown.content.results.length, 1);

  const verified = await cli('audit', 'verify', ...auditArgs(), '--all');
  assert.is(verified.code, 0, verified.stdout + verified.stderr);
  assert.match(verified.stdout, /verified: 6 documents/);

  // A head kept now; a bundle exported now verifies offline (no coordinator named) against it.
  const heads = (await ok('audit', 'heads', '--coordinator', coordinator.url, '--key', files.carol!))
    .trim()
    .split('\n');
  const kept = heads.find((h) => h.startsWith('hosts/h1/status@'))!;
  const bundleFile = join(dir, 'bundle.json');
  await ok('audit', 'export', '--coordinator', coordinator.url, '--key', files.carol!, '--out', bundleFile);
  const offline = await cli(
    'audit',
    'verify',
    '--bundle',
    bundleFile,
    '--org-root',
    org.root.publicKey,
    '--head',
    kept,
  );
  assert.is(offline.code, 0, offline.stdout + offline.stderr);

  const bundle = JSON.parse(await fs.readFile(bundleFile, 'utf8')) as AuditBundle;
  const tampered = async (name: string, change: (b: AuditBundle) => void): Promise<string> => {
    const copy = structuredClone(bundle);
    change(copy);
    const path = join(dir, name);
    await fs.writeFile(path, JSON.stringify(copy));
    const result = await cli(
      'audit',
      'verify',
      '--bundle',
      path,
      '--org-root',
      org.root.publicKey,
      '--head',
      kept,
      '--json',
    );
    assert.is(result.code, 1, `${name}: ${result.stdout}${result.stderr}`);
    return (JSON.parse(result.stdout) as { anomalies: { code: string }[] }).anomalies.map((a) => a.code).join(',');
  };
  const status = (b: AuditBundle) => b.documents.find((d) => d.name === 'hosts/h1/status')!;
  assert.match(await tampered('truncated.json', (b) => void status(b).entries.pop()), /head-mismatch/);
  assert.match(
    await tampered('rewritten.json', (b) => {
      status(b).entries[1]!.principal = 'host:elsewhere';
    }),
    /hash-chain-broken/,
  );
  // A careful forger drops the last entry and recomputes every hash: consistent, but not the kept head.
  const forged = await tampered('rechained.json', (b) => {
    const doc = status(b);
    doc.entries.pop();
    let prev = GENESIS_HASH;
    for (const e of doc.entries) {
      const update = Uint8Array.from(atob(e.update), (c) => c.charCodeAt(0));
      e.prevHash = prev;
      e.hash = logEntryHash(prev, {
        document: doc.name,
        seq: e.seq,
        receivedAt: e.receivedAt,
        principal: e.principal,
        update,
      });
      prev = e.hash;
    }
  });
  assert.is(forged, 'head-mismatch');
});

test('what a compromised coordinator writes straight into its log is named by verify', async () => {
  await coordinator.stop();
  const dataDir = join(dir, 'coordinator');
  const log = await openUpdateLog(dataDir);
  const inject = async (name: string, principal: string, change: (doc: Y.Doc) => void): Promise<void> => {
    const doc = new Y.Doc({ gc: false });
    for (const entry of await log.read(name)) Y.applyUpdate(doc, entry.update);
    const before = Y.encodeStateVector(doc);
    change(doc);
    await log.append(name, principal, Y.encodeStateAsUpdate(doc, before));
  };
  const now = new Date().toISOString();
  const later = new Date(Date.now() + 86_400_000).toISOString();
  const intent = (
    generation: number,
    closure: string,
    key: SigningKey,
  ): { intent: Intent; signatures: ReturnType<typeof signPayload>[] } => {
    const i: Intent = {
      kind: 'intent',
      host: 'h1',
      generation,
      closure,
      action: 'switch',
      issuedAt: now,
      expiresAt: later,
      issuer: key.name,
      policyVersion: 2,
    };
    return { intent: i, signatures: [signPayload('intent', i, key)] };
  };
  // Two different valid intents for generation 10; one by bob's revoked key; one by a stranger.
  await inject(desiredDocName('h1'), 'admin:alice', (doc) => appendIntent(doc, intent(10, closureOf(10), org.alice)));
  await inject(desiredDocName('h1'), 'admin:alice', (doc) => appendIntent(doc, intent(10, closureOf(11), org.alice)));
  await inject(desiredDocName('h1'), 'admin:bob', (doc) => appendIntent(doc, intent(11, closureOf(12), org.bob)));
  await inject(desiredDocName('h1'), 'admin:mallory', (doc) =>
    appendIntent(doc, intent(12, closureOf(13), generateSigningKey('mallory'))),
  );
  // A status by a key that is not h1's; prod-1 results: one for an intent that never existed
  // (leaving a gap at #2), one reusing #1, one going back to an older generation.
  const impostor = generateSigningKey('impostor');
  const status: Status = {
    kind: 'status',
    host: 'h1',
    phase: 'applied',
    applied: { generation: 99, closure: closureOf(99) },
    target: null,
    lastResultSeq: 9,
    agentVersion: 'x',
    seq: 99,
    updatedAt: now,
  };
  await inject(statusDocName('h1'), 'host:h1', (doc) =>
    writeCurrentStatus(doc, { status, signature: signPayload('status', status, impostor) }),
  );
  const result = (seq: number, generation: number, digest: string): Result => ({
    kind: 'result',
    host: 'prod-1',
    seq,
    at: now,
    outcome: 'applied',
    generation,
    closure: closureOf(generation),
    action: 'switch',
    intentDigest: digest,
    reason: '',
    outputTail: '',
  });
  await inject(statusDocName('prod-1'), 'host:prod-1', (doc) => {
    for (const r of [result(3, 7, 'cd'.repeat(32)), result(1, 1, 'ef'.repeat(32))])
      appendResult(doc, { result: r, signature: signPayload('result', r, prod) });
  });
  await log.close();
  coordinator = await startCoordinatorProcess(dataDir, join(dir, 'coordinator-2.log'), 0, [
    '--org-root',
    org.root.publicKey,
  ]);
  const verified = await cli('audit', 'verify', ...auditArgs(), '--all', '--json');
  assert.is(verified.code, 1, verified.stdout + verified.stderr);
  const anomalies = (JSON.parse(verified.stdout) as { anomalies: { code: string; document: string }[] }).anomalies;
  const named = (code: string, document: string): boolean =>
    anomalies.some((a) => a.code === code && a.document === document);
  for (const [code, document] of [
    ['equivocation', 'hosts/h1/desired'],
    ['revoked-signer', 'hosts/h1/desired'],
    ['unauthorised-signer', 'hosts/h1/desired'],
    ['forged-status', 'hosts/h1/status'],
    ['result-for-unknown-intent', 'hosts/prod-1/status'],
    ['result-seq-gap', 'hosts/prod-1/status'],
    ['result-seq-reuse', 'hosts/prod-1/status'],
  ] as const)
    assert.ok(named(code, document), `verify names ${code} in ${document}: ${JSON.stringify(anomalies)}`);
  const text = await cli('audit', 'verify', ...auditArgs(), '--all');
  assert.match(text.stdout, /ANOMALY equivocation: two different valid intents claim h1 generation 10/);
  assert.match(text.stdout, /ANOMALIES FOUND/);
});

test('the audit endpoint refuses strangers and callers without a key proof', async () => {
  const stranger = join(dir, 'stranger.key');
  await writeKeyFile(stranger, generateSigningKey('stranger'));
  const refused = await cli(
    'audit',
    'verify',
    '--coordinator',
    coordinator.url,
    '--key',
    stranger,
    '--org-root',
    org.root.publicKey,
    '--all',
  );
  assert.is(refused.code, 1);
  assert.match(refused.stderr, /403: key:.* may not read/);
  // Straight at the audit endpoint, with a valid proof of a key the policy does not know.
  const proof = await fetchAuthProof(
    coordinator.url,
    auditProofDocument('hosts/h1/desired'),
    generateSigningKey('x'),
    5000,
  );
  const direct = await fetch(`${coordinator.url.replace(/^ws/, 'http')}/api/audit/log?doc=hosts/h1/desired`, {
    headers: authHeaders({ principal: proof.principal!, challenge: proof.challenge!, signature: proof.signature! }),
  });
  assert.is(direct.status, 403);
  const anonymous = await fetch(`${coordinator.url.replace(/^ws/, 'http')}/api/audit/log?doc=hosts/h1/desired`);
  assert.is(anonymous.status, 401);
});

test.run();
