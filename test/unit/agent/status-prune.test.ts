import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as Y from 'yjs';
import { loadActions, processActions } from '../../../agent/actions.js';
import { rebuildFloor } from '../../../agent/pipeline/floor.js';
import { appendSignedResult } from '../../../agent/pipeline/report.js';
import { HISTORY_LENGTH } from '../../../agent/pipeline/state.js';
import { addToDelivered } from '../../../agent/status-delivery.js';
import {
  type DeliveredCheck,
  deliveredBy,
  keptResultSeqs,
  MAX_UNDELIVERED_RESULTS,
  pruneOwnActionResults,
  pruneOwnResults,
} from '../../../agent/status-prune.js';
import { report } from '../../../agent/status-publish.js';
import { useEd25519Verifier } from '../../../shared/crypto/signatures.js';
import { appendAction } from '../../../shared/documents/desired.js';
import {
  actionResultsArray,
  appendActionResult,
  appendResult,
  collectBundlesMap,
  KEPT_ACTION_RESULTS,
  KEPT_RESULTS,
  readOwnActionResults,
  readOwnResults,
  readResults,
  resultsArray,
} from '../../../shared/documents/status.js';
import { nodeEd25519Verify, nodeSignPayload } from '../../../shared/node/ed25519.js';
import type { ActionResult } from '../../../shared/schemas/action.js';
import type { Result, ResultOutcome } from '../../../shared/schemas/report.js';
import { signAction } from '../../../shared/trust/sign-action.js';
import { signIntent } from '../../../shared/trust/sign-intent.js';
import { intentDigest } from '../../../shared/trust/verify-intent.js';
import { admin, closure, harness, hostKey, NOW, removeHarnessDirectories, stranger } from './runtime-fixtures.js';

// The live status document keeps the host's recent results only (agent/status-prune.ts): its size
// stays flat however many deployments there were, and what readers need stays.

test.after.each(removeHarnessDirectories);
// Thousands of signatures: Node's Ed25519 (the same bytes as tweetnacl's, unit/shared/audit checks).
test.before(() => useEd25519Verifier(nodeEd25519Verify));
test.after(() => useEd25519Verifier(null));

// Tests of the keeping rules: an upstream holds everything (status-delivery.ts).
const ALL_DELIVERED: DeliveredCheck = () => true;
// What a runtime's upstream confirmed: all of its status document as it is now.
const deliverAll = (doc: Y.Doc, delivered: Map<number, number>): void =>
  void addToDelivered(delivered, Y.decodeStateVector(Y.encodeStateVector(doc)));

const digestOf = (n: number): string => n.toString(16).padStart(64, '0');

function result(seq: number, outcome: ResultOutcome = 'applied', digest = digestOf(seq), tail = ''): Result {
  return {
    kind: 'result',
    host: 'h1',
    seq,
    at: new Date(NOW).toISOString(),
    outcome,
    generation: seq,
    closure: closure(seq),
    action: 'switch',
    intentDigest: digest,
    reason: '',
    outputTail: tail,
  };
}

const signed = (r: Result) => ({ result: r, signature: nodeSignPayload('result', r, hostKey) });
const ownSeqs = (doc: Y.Doc): number[] => readOwnResults(doc, hostKey.publicKey).map((r) => r.result.seq);

test('kept: the newest 64, the newest 20 applied, every result of the newest attempt, and named intents', () => {
  const keepNone = new Set<string>();
  // 200 results, 1–100 applied, then 100 refusals (a peer writing bad intents).
  const results = Array.from({ length: 200 }, (_, i) => result(i + 1, i < 100 ? 'applied' : 'refused'));
  const kept = keptResultSeqs(results, keepNone);
  const newest = Array.from({ length: KEPT_RESULTS }, (_, i) => 200 - i);
  const applied = Array.from({ length: HISTORY_LENGTH }, (_, i) => 100 - i);
  assert.equal(
    [...kept].sort((a, b) => a - b),
    [...applied, ...newest].sort((a, b) => a - b),
  );
  // The newest attempt failed and was rolled back: both its results stay, with the applied ones.
  const attempt = [
    ...Array.from({ length: 10 }, (_, i) => result(i + 1)),
    result(11, 'failed', digestOf(99)),
    result(12, 'rolled-back', digestOf(99)),
    ...Array.from({ length: 100 }, (_, i) => result(13 + i, 'refused')),
  ];
  const keptAttempt = keptResultSeqs(attempt, keepNone);
  for (const seq of [11, 12, 10, 1]) assert.ok(keptAttempt.has(seq), `#${seq}`);
  assert.ok(!keptAttempt.has(13), 'an old refusal goes');
  // A digest the agent names (its applied or target intent) keeps its results.
  assert.ok(keptResultSeqs(results, new Set([digestOf(150)])).has(150));
  // Nothing to prune below the limit.
  assert.is(keptResultSeqs(results.slice(0, 30), keepNone).size, 30);
});

test('1,000 results of ~8 KiB: the live document stays under 1 MiB with gc (the agent’s and a coordinator’s copy); without pruning it is ~8 MiB', () => {
  const tail = 'x'.repeat(8000);
  const agentDoc = new Y.Doc({ gc: true });
  const coordinatorDoc = new Y.Doc({ gc: true });
  const unpruned = new Y.Doc({ gc: true });
  // The coordinator gets the agent's updates one by one, as over the link.
  agentDoc.on('update', (update: Uint8Array) => Y.applyUpdate(coordinatorDoc, update));
  let pruned = 0;
  for (let seq = 1; seq <= 1000; seq += 1) {
    // As report() does: delete first (an update of its own), then append.
    pruned += pruneOwnResults(agentDoc, hostKey.publicKey, new Set(), ALL_DELIVERED);
    const entry = signed(result(seq, seq % 3 === 0 ? 'failed' : 'applied', digestOf(seq), tail));
    agentDoc.transact(() => appendResult(agentDoc, entry));
    appendResult(unpruned, entry);
  }
  const agentBytes = Y.encodeStateAsUpdate(agentDoc).length;
  const coordinatorBytes = Y.encodeStateAsUpdate(coordinatorDoc).length;
  const unprunedBytes = Y.encodeStateAsUpdate(unpruned).length;
  console.log(
    `status document after 1,000 results: ${agentBytes} B pruned (agent), ${coordinatorBytes} B (coordinator copy), ${unprunedBytes} B without pruning`,
  );
  assert.is(pruned, 1000 - KEPT_RESULTS - 1);
  assert.is(resultsArray(agentDoc).length, KEPT_RESULTS + 1);
  assert.equal(ownSeqs(coordinatorDoc), ownSeqs(agentDoc));
  assert.ok(ownSeqs(agentDoc).includes(1000), 'the highest-numbered one stays');
  // 65 results of ~8.2 KiB plus the deleted ones' tombstones (a few bytes per run).
  assert.ok(agentBytes < 1024 * 1024, `${agentBytes}`);
  assert.ok(coordinatorBytes < 1024 * 1024, `${coordinatorBytes}`);
  assert.ok(unprunedBytes > 8_000_000, `${unprunedBytes}`);
  // Gc really dropped the content: the size is within 2% of the kept results' own bytes.
  const keptBytes = Y.encodeStateAsUpdate(
    (() => {
      const fresh = new Y.Doc();
      for (const r of readResults(agentDoc).results) appendResult(fresh, r);
      return fresh;
    })(),
  ).length;
  assert.ok(agentBytes < keptBytes * 1.02, `${agentBytes} vs ${keptBytes} for the kept results alone`);
});

test('only results an upstream holds are pruned: none before one confirmed, then exactly those below its vector', () => {
  const doc = new Y.Doc({ gc: true });
  let held = new Map<number, number>();
  for (let seq = 1; seq <= 150; seq += 1) {
    appendResult(doc, signed(result(seq, 'refused')));
    // What an upstream said it holds after #50 and after #100 (its state vector then).
    if (seq === 50 || seq === 100) held = Y.decodeStateVector(Y.encodeStateVector(doc));
    if (seq === 50) assert.is(pruneOwnResults(doc, hostKey.publicKey, new Set(), deliveredBy(new Map())), 0);
  }
  assert.is(pruneOwnResults(doc, hostKey.publicKey, new Set(), deliveredBy(new Map())), 0, 'nothing confirmed');
  assert.is(ownSeqs(doc).length, 150);
  // Held up to #100: #1–#86 go (the newest 64, #87–#150, stay by the rules).
  assert.is(pruneOwnResults(doc, hostKey.publicKey, new Set(), deliveredBy(held)), 86);
  assert.equal(
    ownSeqs(doc),
    Array.from({ length: 64 }, (_, i) => 87 + i),
  );
  // Another document, held up to #50 only: #51–#86 wait.
  const partial = new Y.Doc({ gc: true });
  for (let seq = 1; seq <= 150; seq += 1) appendResult(partial, signed(result(seq, 'refused')));
  const upTo50 = new Map<number, number>([[partial.clientID, 50]]);
  assert.is(pruneOwnResults(partial, hostKey.publicKey, new Set(), deliveredBy(upTo50)), 50);
  assert.equal(ownSeqs(partial)[0], 51);
  // Values of one Yjs item (a transaction appending several): each judged by its own clock.
  const batched = new Y.Doc({ gc: true });
  batched.transact(() => {
    for (let seq = 1; seq <= 100; seq += 1) appendResult(batched, signed(result(seq, 'refused')));
  });
  assert.is(pruneOwnResults(batched, hostKey.publicKey, new Set(), deliveredBy(new Map([[batched.clientID, 10]]))), 10);
  assert.equal(ownSeqs(batched)[0], 11);
});

test(`past ${MAX_UNDELIVERED_RESULTS} undelivered results, report() deletes the oldest and names them in the new result, signed`, async () => {
  const { agent } = await harness();
  const made = MAX_UNDELIVERED_RESULTS + KEPT_RESULTS + 24;
  for (let seq = 1; seq <= made; seq += 1) appendSignedResult(agent.statusDoc, result(seq, 'refused'), hostKey);
  const intent = signIntent(
    {
      kind: 'intent',
      host: 'h1',
      generation: made + 1,
      closure: closure(made + 1),
      action: 'switch',
      issuedAt: new Date(Date.now() - 60_000).toISOString(),
      expiresAt: new Date(Date.now() + 3_600_000).toISOString(),
      issuer: admin.name,
    },
    admin,
  );
  const target = { signed: intent, digest: intentDigest(intent) };
  const seq = await report(agent, target, 'refused', 'test', '');
  assert.is(seq, made + 1);
  // Kept: the newest 64 (by the rules) and 512 undelivered below them; #1–#24 went.
  const seqs = ownSeqs(agent.statusDoc);
  assert.is(seqs[0], 25);
  assert.is(seqs.length, made + 1 - 24);
  const newest = readOwnResults(agent.statusDoc, hostKey.publicKey).at(-1)!.result;
  assert.is(newest.seq, made + 1);
  assert.equal(newest.droppedUndelivered, [[1, 24]], 'named in the signed result');
  // Once an upstream holds everything, the next report prunes down to the rules' keep set.
  deliverAll(agent.statusDoc, agent.delivered);
  await report(agent, target, 'refused', 'again', '');
  assert.is(ownSeqs(agent.statusDoc).length, KEPT_RESULTS + 1);
  assert.is(readOwnResults(agent.statusDoc, hostKey.publicKey).at(-1)!.result.droppedUndelivered, undefined);
});

test('only own, validly signed results are deleted or counted: a forged "#1000000" under the host key pushes nothing out', () => {
  const doc = new Y.Doc({ gc: true });
  for (let seq = 1; seq <= 100; seq += 1) appendResult(doc, signed(result(seq)));
  const forged = result(1_000_000);
  appendResult(doc, { result: forged, signature: { ...signed(result(5)).signature } });
  appendResult(doc, { result: result(2_000_000), signature: nodeSignPayload('result', result(2_000_000), stranger) });
  resultsArray(doc).push([{ junk: true }]);
  pruneOwnResults(doc, hostKey.publicKey, new Set(), ALL_DELIVERED);
  assert.equal(
    ownSeqs(doc),
    Array.from({ length: KEPT_RESULTS }, (_, i) => 100 - KEPT_RESULTS + 1 + i),
  );
  assert.is(
    resultsArray(doc).length,
    KEPT_RESULTS + 3,
    'the forgery, the stranger’s and the junk are left (purged elsewhere)',
  );
});

test('a wiped agent rebuilds the same floor and history from the pruned document as from the whole one', () => {
  const intents = Array.from({ length: 150 }, (_, i) =>
    signIntent(
      {
        kind: 'intent',
        host: 'h1',
        generation: i + 1,
        closure: closure(i + 1),
        action: 'switch',
        issuedAt: new Date(0).toISOString(),
        expiresAt: new Date(1e13).toISOString(),
        issuer: admin.name,
      },
      admin,
    ),
  );
  const whole = new Y.Doc({ gc: true });
  const pruned = new Y.Doc({ gc: true });
  // 30 applied generations, then 120 refusals of junk: the newest attempt is #30.
  for (let seq = 1; seq <= 150; seq += 1) {
    const r = result(seq, seq <= 30 ? 'applied' : 'refused', intentDigest(intents[seq - 1]!));
    appendResult(whole, signed(r));
    pruneOwnResults(pruned, hostKey.publicKey, new Set(), ALL_DELIVERED);
    appendResult(pruned, signed(r));
  }
  assert.ok(resultsArray(pruned).length < 100);
  const rebuild = (doc: Y.Doc) =>
    rebuildFloor({
      hostKey: hostKey.publicKey,
      results: readOwnResults(doc, hostKey.publicKey),
      intents,
      epochOf: () => 0,
      running: closure(30),
    });
  const fromWhole = rebuild(whole);
  const fromPruned = rebuild(pruned);
  assert.is(fromPruned.floorGeneration, fromWhole.floorGeneration);
  assert.is(fromPruned.resultSeq, 150);
  assert.equal(fromPruned.applied, fromWhole.applied);
  assert.equal(fromPruned.previous, fromWhole.previous);
  assert.equal(fromPruned.history, fromWhole.history);
});

test("report() prunes as it appends, numbers after its own highest, and keeps its applied and target intents' results", async () => {
  const { agent } = await harness();
  for (let seq = 1; seq <= 150; seq += 1) appendSignedResult(agent.statusDoc, result(seq, 'refused'), hostKey);
  deliverAll(agent.statusDoc, agent.delivered);
  const appliedDigest = digestOf(3);
  agent.state = { ...agent.state, applied: { generation: 3, closure: closure(3), digest: appliedDigest } };
  const intent = signIntent(
    {
      kind: 'intent',
      host: 'h1',
      generation: 151,
      closure: closure(151),
      action: 'switch',
      issuedAt: new Date(Date.now() - 60_000).toISOString(),
      expiresAt: new Date(Date.now() + 3_600_000).toISOString(),
      issuer: admin.name,
    },
    admin,
  );
  const seq = await report(agent, { signed: intent, digest: intentDigest(intent) }, 'refused', 'test', '');
  assert.is(seq, 151, 'the saved counter lags (0): numbered after the own #150');
  const seqs = ownSeqs(agent.statusDoc);
  assert.ok(seqs.includes(3), 'the applied intent’s result stays');
  assert.is(seqs.length, KEPT_RESULTS + 2);
  assert.is(Math.max(...seqs), 151);
});

test('action results: the newest 64 and those naming a kept bundle stay; the next answer is numbered after the highest', async () => {
  const { agent } = await harness();
  const answer = (seq: number, bundle = false): ActionResult => ({
    kind: 'action-result',
    host: 'h1',
    seq,
    at: new Date(NOW).toISOString(),
    action: bundle ? 'collect' : 'lock',
    id: seq.toString(16).padStart(32, '0'),
    requestDigest: digestOf(seq),
    outcome: 'done',
    reason: '',
    ...(bundle ? { bundleDigest: digestOf(7) } : {}),
  });
  for (let seq = 1; seq <= 120; seq += 1) {
    const a = answer(seq, seq === 2);
    appendActionResult(agent.statusDoc, { result: a, signature: nodeSignPayload('action-result', a, hostKey) });
  }
  collectBundlesMap(agent.statusDoc).set(answer(2).id, { stand: 'in' });
  deliverAll(agent.statusDoc, agent.delivered);
  await loadActions(agent);
  appendAction(
    agent.desiredDoc,
    signAction(
      {
        kind: 'action',
        action: 'lock',
        host: 'h1',
        id: 'f'.repeat(32),
        issuedAt: new Date(Date.now() - 1000).toISOString(),
        expiresAt: new Date(Date.now() + 600_000).toISOString(),
        issuer: admin.name,
      },
      admin,
    ),
  );
  await processActions(agent);
  const seqs = readOwnActionResults(agent.statusDoc, hostKey.publicKey).map((r) => r.result.seq);
  assert.ok(seqs.includes(121), 'the answer is #121');
  assert.ok(seqs.includes(2), 'the answer naming a kept bundle stays');
  assert.is(seqs.length, KEPT_ACTION_RESULTS + 2);
  // The next answer's pruning leaves the newest 64 (and #2) before it appends.
  assert.is(pruneOwnActionResults(agent.statusDoc, hostKey.publicKey, ALL_DELIVERED), 1);
  assert.is(actionResultsArray(agent.statusDoc).length, KEPT_ACTION_RESULTS + 1);
});

test.run();
