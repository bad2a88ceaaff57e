import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { pruneOwnResults } from '../../../../agent/status-prune.js';
import { type AnomalyCode, auditHistory, hostTimeline } from '../../../../shared/audit/history.js';
import { checkLogChain, GENESIS_HASH, logEntryHash } from '../../../../shared/audit/log-chain.js';
import { documentAt } from '../../../../shared/audit/show.js';
import { generateSigningKey } from '../../../../shared/crypto/keys.js';
import { signPayload, useEd25519Verifier, verifyPayloadSignature } from '../../../../shared/crypto/signatures.js';
import { statusDocName } from '../../../../shared/documents/names.js';
import { KEPT_RESULTS, resultsArray } from '../../../../shared/documents/status.js';
import { nodeEd25519Verify, nodeSignPayload } from '../../../../shared/node/ed25519.js';
import { closureOf, FleetHistory } from '../../../harness/audit-history.js';
import { basePolicy, makeTestOrg, signPolicy } from '../../../harness/policy-fixtures.js';

// The audit over an in-memory history: a clean one verifies with every event attributed; each
// anomaly written into it is named by its code (and only then).
const org = makeTestOrg();
const h1 = generateSigningKey('h1');
const prodKey = generateSigningKey('prod-1');

function cleanHistory(): { history: FleetHistory; digests: string[] } {
  const history = new FleetHistory(nodeSignPayload);
  const v1 = basePolicy(org, { issuedAt: history.now() });
  history.policy(signPolicy(v1, org.root));
  history.enroll('h1', h1.publicKey, org.alice);
  history.enroll('prod-1', prodKey.publicKey, org.alice);
  const first = history.intent('h1', 1, closureOf(1), [org.alice]);
  history.result('h1', h1, { seq: 1, generation: 1, closure: closureOf(1), intentDigest: first.digest });
  history.status('h1', h1, 1, { generation: 1, closure: closureOf(1) });
  // Co-signed: production needs two admins.
  const prod = history.intent('prod-1', 1, closureOf(2), [org.alice, org.bob]);
  history.result('prod-1', prodKey, { seq: 1, generation: 1, closure: closureOf(2), intentDigest: prod.digest });
  // A refused intent (one signature where two are needed): shown, refused, not an anomaly.
  history.intent('prod-1', 2, closureOf(3), [org.bob]);
  // Policy v2 revokes bob's key.
  const v2 = basePolicy(org, { version: 2, issuedAt: history.now(), revokedKeys: [org.bob.publicKey] });
  history.policy(signPolicy(v2, org.root));
  const second = history.intent('h1', 2, closureOf(4), [org.alice], 2);
  history.result('h1', h1, { seq: 2, generation: 2, closure: closureOf(4), intentDigest: second.digest });
  history.status('h1', h1, 2, { generation: 2, closure: closureOf(4) });
  return { history, digests: [first.digest, second.digest] };
}

const codes = (history: FleetHistory): AnomalyCode[] =>
  auditHistory(history.source(), { orgRootKeys: [org.root.publicKey] }).anomalies.map((a) => a.code);

test("Node's Ed25519 agrees with tweetnacl (signing and verifying, good and bad signatures)", () => {
  const payload = { kind: 'x', n: 1 };
  const bySign = signPayload('status', payload, h1);
  assert.equal(nodeSignPayload('status', payload, h1), bySign, 'Ed25519 is deterministic');
  const flipped = bySign.signature[10] === 'A' ? 'B' : 'A';
  const bad = { ...bySign, signature: `${bySign.signature.slice(0, 10)}${flipped}${bySign.signature.slice(11)}` };
  for (const [signature, expected] of [
    [bySign, true],
    [bad, false],
  ] as const) {
    useEd25519Verifier(null);
    assert.is(verifyPayloadSignature('status', payload, signature), expected);
    useEd25519Verifier(nodeEd25519Verify);
    assert.is(verifyPayloadSignature('status', payload, signature), expected);
  }
});

test('a clean history verifies; the timeline names each signer and the policy version in force', () => {
  const { history } = cleanHistory();
  const report = auditHistory(history.source(), { orgRootKeys: [org.root.publicKey] });
  assert.equal(report.anomalies, []);
  assert.equal(
    report.policyVersions.map((v) => v.version),
    [1, 2],
  );
  const timeline = hostTimeline(report, 'h1');
  const summary = timeline.map((e) => [e.kind, e.policyVersion, e.signers.map((s) => s.name).join('+'), e.verified]);
  assert.equal(summary, [
    ['policy', 1, '', true],
    ['enrollment', 1, 'alice', true],
    ['intent', 1, 'alice', true],
    ['result', 1, 'h1', true],
    ['status', 1, 'h1', true],
    ['policy', 2, '', true],
    ['intent', 2, 'alice', true],
    ['result', 2, 'h1', true],
    ['status', 2, 'h1', true],
  ]);
  assert.ok(timeline[0]!.signers.every((s) => s.role === 'root' && s.signatureValid));
  const prod = hostTimeline(report, 'prod-1').filter((e) => e.kind === 'intent');
  assert.equal(
    prod.map((e) => [e.signers.map((s) => s.name).join('+'), e.verified]),
    [
      ['alice+bob', true],
      ['bob', false],
    ],
  );
  assert.match(prod[1]!.outcome, /below-threshold/);
  assert.is(report.heads.length, history.docs.size);
});

test('show --at: the document as it was between two events', () => {
  const { history } = cleanHistory();
  const status = history.docs.get(statusDocName('h1'))!.entries;
  const between = documentAt(statusDocName('h1'), status, status[1]!.receivedAt);
  const content = between.content as { status: { status: { seq: number } }; results: unknown[] };
  assert.is(content.status.status.seq, 1);
  assert.is(content.results.length, 1);
  assert.is(between.entriesApplied, 2);
});

test('equivocation: two different valid intents for one generation', () => {
  const { history } = cleanHistory();
  history.intent('h1', 3, closureOf(5), [org.alice], 2);
  history.intent('h1', 3, closureOf(6), [org.alice], 2);
  assert.equal(codes(history), ['equivocation']);
});

test('a key never authorised, and a key already revoked, signing intents', () => {
  const { history } = cleanHistory();
  history.intent('h1', 3, closureOf(5), [generateSigningKey('mallory')], 2);
  assert.equal(codes(history), ['unauthorised-signer']);
  const again = cleanHistory().history;
  again.intent('h1', 3, closureOf(5), [org.bob], 2);
  assert.equal(codes(again), ['revoked-signer']);
});

test('a result for an intent that does not exist', () => {
  const { history } = cleanHistory();
  history.result('h1', h1, { seq: 3, generation: 3, closure: closureOf(7), intentDigest: 'ab'.repeat(32) });
  assert.equal(codes(history), ['result-for-unknown-intent']);
});

test('gaps and reuse in result sequence numbers', () => {
  const gap = cleanHistory();
  gap.history.result('h1', h1, {
    seq: 5,
    generation: 2,
    closure: closureOf(4),
    intentDigest: gap.digests[1]!,
    outcome: 'failed',
  });
  assert.equal(codes(gap.history), ['result-seq-gap']);
  const reuse = cleanHistory();
  reuse.history.result('h1', h1, {
    seq: 2,
    generation: 2,
    closure: closureOf(4),
    intentDigest: reuse.digests[1]!,
    outcome: 'failed',
  });
  assert.equal(codes(reuse.history), ['result-seq-reuse']);
});

test('results the agent pruned from the live document: no gap (judged over history), each removal shown; a newer one removed is named', () => {
  const history = new FleetHistory(nodeSignPayload);
  history.policy(signPolicy(basePolicy(org, { issuedAt: history.now() }), org.root));
  history.enroll('h1', h1.publicKey, org.alice);
  const status = statusDocName('h1');
  // 100 deployments, the agent pruning before each result as report() does.
  for (let generation = 1; generation <= 100; generation += 1) {
    const { digest } = history.intent('h1', generation, closureOf(generation), [org.alice]);
    history.write(status, 'host:h1', (doc) => pruneOwnResults(doc, h1.publicKey, new Set(), () => true));
    history.result('h1', h1, {
      seq: generation,
      generation,
      closure: closureOf(generation),
      intentDigest: digest,
      outcome: generation % 2 ? 'applied' : 'failed',
    });
  }
  const report = auditHistory(history.source(), { orgRootKeys: [org.root.publicKey] });
  assert.equal(report.anomalies, [], 'results #1–#35 are gone from the live document, not from history');
  const removals = hostTimeline(report, 'h1').filter((e) => e.kind === 'removal');
  assert.is(removals.length, 100 - KEPT_RESULTS - 1);
  assert.ok(removals.every((e) => e.verified && e.outcome === 'valid'));
  assert.match(
    removals[0]!.summary,
    'removed from the live document: results #1 of h1 (pruned; this history keeps them)',
  );
  assert.is(hostTimeline(report, 'h1').filter((e) => e.kind === 'result' && e.verified).length, 100);
  // `audit show` at the end: the live document as readers see it, the newest 65.
  const live = documentAt(status, history.docs.get(status)!.entries, history.clock).content as {
    results: { result: { seq: number } }[];
  };
  assert.equal(
    live.results.map((r) => r.result.seq),
    Array.from({ length: KEPT_RESULTS + 1 }, (_, i) => 100 - KEPT_RESULTS + i),
  );
  // A writer (a relay, say) deletes the newest result: that is no pruning.
  history.write(status, 'relay:r1', (doc) => resultsArray(doc).delete(resultsArray(doc).length - 1, 1));
  const hidden = auditHistory(history.source(), { orgRootKeys: [org.root.publicKey] });
  assert.equal(
    hidden.anomalies.map((a) => a.code),
    ['result-removed'],
  );
  assert.match(hidden.anomalies[0]!.detail, 'results #100 (0 newer) of h1 removed from the live document');
  // A result that never reached the log is still a gap.
  history.result('h1', h1, {
    seq: 102,
    generation: 100,
    closure: closureOf(100),
    intentDigest: 'ab'.repeat(32),
    outcome: 'refused',
  });
  assert.equal(
    auditHistory(history.source(), { orgRootKeys: [org.root.publicKey] }).anomalies.map((a) => a.code),
    ['result-removed', 'result-seq-gap'],
  );
});

test('results a host dropped undelivered (named in its signed droppedUndelivered): result-dropped-undelivered, not a gap; a note covers nothing else', () => {
  // A host cut off past its bound: results #1–#5 never reached the log, #6 names them.
  const noted = (dropped: [number, number][], seq = 6, key = h1) => {
    const history = new FleetHistory(nodeSignPayload);
    history.policy(signPolicy(basePolicy(org, { issuedAt: history.now() }), org.root));
    history.enroll('h1', h1.publicKey, org.alice);
    const { digest } = history.intent('h1', 1, closureOf(1), [org.alice]);
    history.result('h1', key, {
      seq,
      generation: 1,
      closure: closureOf(1),
      intentDigest: digest,
      outcome: 'failed',
      droppedUndelivered: dropped,
    });
    history.result('h1', h1, { seq: seq + 1, generation: 1, closure: closureOf(1), intentDigest: digest });
    return auditHistory(history.source(), { orgRootKeys: [org.root.publicKey] }).anomalies;
  };
  const named = noted([[1, 5]]);
  assert.equal(
    named.map((a) => a.code),
    ['result-dropped-undelivered'],
  );
  assert.match(named[0]!.detail, 'results #1–#5 of h1');
  assert.match(named[0]!.detail, 'signed result #6 says');
  // Partly covered: the rest is still a gap.
  assert.equal(
    noted([[1, 3]]).map((a) => a.code),
    ['result-seq-gap', 'result-dropped-undelivered'],
  );
  // A note cannot excuse numbers at or above its own result's (#8 is missing: still a gap).
  const ahead = new FleetHistory(nodeSignPayload);
  ahead.policy(signPolicy(basePolicy(org, { issuedAt: ahead.now() }), org.root));
  ahead.enroll('h1', h1.publicKey, org.alice);
  const { digest } = ahead.intent('h1', 1, closureOf(1), [org.alice]);
  for (const seq of [1, 2, 3])
    ahead.result('h1', h1, { seq, generation: 1, closure: closureOf(1), intentDigest: digest });
  ahead.result('h1', h1, {
    seq: 4,
    generation: 1,
    closure: closureOf(1),
    intentDigest: digest,
    droppedUndelivered: [[4, 9]],
  });
  ahead.result('h1', h1, { seq: 10, generation: 1, closure: closureOf(1), intentDigest: digest });
  assert.equal(codes(ahead), ['result-seq-gap']);
  // Another key's note excuses nothing of h1's.
  const stranger = generateSigningKey('h1');
  const foreign = noted([[1, 5]], 6, stranger);
  assert.ok(foreign.some((a) => a.code === 'forged-status'));
  assert.ok(foreign.some((a) => a.code === 'result-seq-gap'));
  assert.not.ok(foreign.some((a) => a.code === 'result-dropped-undelivered'));
});

test('generation rollbacks: an intent below one already issued, a host applying an older generation', () => {
  const intent = cleanHistory();
  intent.history.intent('h1', 4, closureOf(8), [org.alice], 2);
  intent.history.intent('h1', 3, closureOf(9), [org.alice], 2);
  assert.equal(codes(intent.history), ['generation-rollback']);
  const applied = cleanHistory();
  applied.history.result('h1', h1, { seq: 3, generation: 1, closure: closureOf(1), intentDigest: applied.digests[0]! });
  assert.equal(codes(applied.history), ['generation-rollback']);
});

test('forged statuses: signed by a key that is not the enrolled one; an old status replayed', () => {
  const { history } = cleanHistory();
  history.status('h1', generateSigningKey('h1-impostor'), 3, { generation: 9, closure: closureOf(9) });
  assert.equal(codes(history), ['forged-status']);
  const stale = cleanHistory().history;
  stale.status('h1', h1, 1, { generation: 1, closure: closureOf(1) });
  assert.equal(codes(stale), ['stale-status']);
});

test('a rewritten, dropped or reordered log entry breaks the chain; a kept head catches truncation', () => {
  const { history } = cleanHistory();
  const name = statusDocName('h1');
  const entries = history.docs.get(name)!.entries;
  const head = checkLogChain(name, entries).head!;
  const rewritten = [...entries];
  rewritten[1] = { ...entries[1]!, principal: 'someone-else' };
  assert.equal(
    checkLogChain(name, rewritten).problems.map((p) => p.code),
    ['hash-chain-broken'],
  );
  const dropped = entries.filter((_, i) => i !== 1);
  assert.ok(checkLogChain(name, dropped).problems.some((p) => p.code === 'log-seq-gap'));
  // A careful forger recomputes every hash of a shorter log: consistent in itself, but the head
  // someone kept no longer matches.
  const truncated = new FleetHistory(nodeSignPayload);
  for (const e of entries.slice(0, -1)) truncated.raw(name, e.principal, e.update);
  const source = { documents: [name], entries: () => truncated.docs.get(name)!.entries };
  const report = auditHistory(source, { orgRootKeys: [org.root.publicKey], hosts: ['h1'], keptHeads: [head] });
  assert.ok(report.anomalies.some((a) => a.code === 'head-mismatch' && /truncated/.test(a.detail)));
  const report2 = auditHistory(source, { orgRootKeys: [org.root.publicKey], hosts: ['h1'] });
  assert.not.ok(report2.anomalies.some((a) => a.code === 'head-mismatch'));
});

test('the log entry hash is fixed: these vectors were computed by the first version of the chain', () => {
  // Hashes are stored in coordinators' logs and kept by auditors: any change to how they are
  // computed would break every kept head, so faster code must give these same bytes.
  const update = new Uint8Array(700).map((_, i) => (i * 37 + 11) & 255);
  assert.is(
    logEntryHash(GENESIS_HASH, {
      document: 'hosts/h1/status',
      seq: 1,
      receivedAt: 1735689600123,
      principal: 'host:h1',
      update,
    }),
    '7ef9f388ac54c006a7f5c6d72f10647adc447dc69475ba38a5bd3d06a3e428df',
  );
  assert.is(
    logEntryHash('ab'.repeat(32), {
      document: 'fleet/policy',
      seq: 300,
      receivedAt: 1.5,
      principal: 'admin:ålice',
      update: new Uint8Array(0),
    }),
    '187b4aca86c59d6662cdfed52459702cf2bd753e8ee50f26ac97a85a4869b5b6',
  );
});

test('remote actions: requests and the host’s answers are in the timeline with their signers; a forged answer and an answer to no request are named', () => {
  const history = new FleetHistory(nodeSignPayload);
  const roles = basePolicy(org).roles.map((r) =>
    r.name === 'ops' ? { ...r, capabilities: [...r.capabilities, 'reboot', 'lock'] } : r,
  );
  history.policy(signPolicy(basePolicy(org, { issuedAt: history.now(), roles }), org.root));
  history.enroll('h1', h1.publicKey, org.alice);
  const reboot = history.action('h1', 'reboot', org.alice, 'a'.repeat(32));
  history.actionResult('h1', h1, { seq: 1, action: 'reboot', id: 'a'.repeat(32), requestDigest: reboot });
  // carol may read, not lock: shown as refused (what the agent says too), not an anomaly.
  const lock = history.action('h1', 'lock', org.carol, 'b'.repeat(32));
  history.actionResult('h1', h1, {
    seq: 2,
    action: 'lock',
    id: 'b'.repeat(32),
    requestDigest: lock,
    outcome: 'refused',
    code: 'no-capability',
    reason: 'carol may not lock h1',
  });
  const report = auditHistory(history.source(), { orgRootKeys: [org.root.publicKey] });
  assert.equal(report.anomalies, []);
  const actions = hostTimeline(report, 'h1')
    .filter((e) => e.kind === 'action' || e.kind === 'action-result')
    .map((e) => [
      e.kind,
      e.signers.map((s) => s.name).join('+'),
      e.verified,
      e.summary.replace(/, expires \S+/, '').split(': ')[0],
    ]);
  assert.equal(actions, [
    ['action', 'alice', true, 'reboot on h1 by alice'],
    ['action-result', 'h1', true, '#1 reboot done'],
    ['action', 'carol', false, 'lock on h1 by carol'],
    ['action-result', 'h1', true, '#2 lock refused (no-capability)'],
  ]);
  // A relay writes an answer signed by its own key, and one to a request that was never made.
  history.actionResult('h1', prodKey, { seq: 3, action: 'reboot', id: 'a'.repeat(32), requestDigest: reboot });
  history.actionResult('h1', h1, { seq: 4, action: 'check', id: 'c'.repeat(32), requestDigest: 'cd'.repeat(32) });
  assert.equal(codes(history), ['forged-status', 'action-result-for-unknown-request']);
});
test.run();
