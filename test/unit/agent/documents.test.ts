import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as Y from 'yjs';
import { checkStatusDocument, precheckIntentSignatures } from '../../../agent/documents.js';
import { appendSignedResult } from '../../../agent/pipeline/report.js';
import { generateSigningKey } from '../../../shared/crypto/keys.js';
import { forgetVerifiedSignatures } from '../../../shared/crypto/verified-once.js';
import { appendIntent, intentsArray } from '../../../shared/documents/desired.js';
import { signIntent } from '../../../shared/trust/sign-intent.js';
import { closure, harness, logged, NOW, removeHarnessDirectories, stranger } from './runtime-fixtures.js';

// The agent's documents on an explicit runtime record: entries in the status document that this
// host did not sign are reported and never counted.

test.after.each(removeHarnessDirectories);

test('entries in the status document this host did not sign are reported once and never counted', async () => {
  const { agent, events } = await harness();
  appendSignedResult(
    agent.statusDoc,
    {
      kind: 'result',
      host: 'h1',
      seq: 9,
      at: new Date(NOW).toISOString(),
      outcome: 'applied',
      generation: 50,
      closure: closure(50),
      action: 'switch',
      intentDigest: 'ab'.repeat(32),
      reason: '',
      outputTail: '',
    },
    stranger,
  );
  agent.statusDoc.getArray('results').push([{ not: 'a result' }]);
  checkStatusDocument(agent);
  checkStatusDocument(agent);
  const anomalies = logged(events, 'status-document-anomaly');
  assert.is(anomalies.length, 2, 'one each, once');
  assert.equal(anomalies.map((a) => a.problem).sort(), ['foreign-key', 'malformed'].sort());
  assert.is(agent.dirty, true, 'no own current status: asks to write it again');
  assert.is(agent.state.resultSeq, 0);
});

// A tentative update's intents for this host have their signatures checked ahead (into the
// verdict cache); intents for other hosts, junk and more than the first few are not.
test('a tentative update has the signatures of its first intents for this host checked ahead', async () => {
  forgetVerifiedSignatures();
  const admin = generateSigningKey('alice');
  const intentFor = (host: string, generation: number) =>
    signIntent(
      {
        kind: 'intent',
        host,
        generation,
        closure: closure(generation),
        action: 'switch',
        issuedAt: new Date(NOW).toISOString(),
        expiresAt: new Date(NOW + 3_600_000).toISOString(),
        issuer: 'test',
        policyVersion: 1,
      },
      admin,
    );
  const doc = new Y.Doc();
  intentsArray(doc).push([{ junk: true }]);
  appendIntent(doc, intentFor('h2', 1));
  appendIntent(doc, intentFor('h1', 2));
  const update = Y.encodeStateAsUpdate(doc);
  assert.is(await precheckIntentSignatures('h1', update), 1, "h1's one intent");
  assert.is(await precheckIntentSignatures('h1', update), 0, 'already known');
  assert.is(await precheckIntentSignatures('h3', update), 0, 'none for h3');
  assert.is(await precheckIntentSignatures('h1', Uint8Array.of(200, 1)), 0, 'an undecodable update checks nothing');
  const many = new Y.Doc();
  for (let generation = 10; generation < 20; generation += 1) appendIntent(many, intentFor('h1', generation));
  assert.is(await precheckIntentSignatures('h1', Y.encodeStateAsUpdate(many)), 4, 'the first four only');
});

test.run();
