import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { checkStatusDocument } from '../../../agent/documents.js';
import { appendSignedResult } from '../../../agent/pipeline/report.js';
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

test.run();
