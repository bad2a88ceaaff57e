import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { appendSignedResult } from '../../../agent/pipeline/report.js';
import { report } from '../../../agent/status-publish.js';
import type { Intent } from '../../../shared/schemas/intent.js';
import { signIntent } from '../../../shared/trust/sign-intent.js';
import { intentDigest } from '../../../shared/trust/verify-intent.js';
import {
  admin,
  closure,
  harness,
  hostKey,
  NOW,
  removeHarnessDirectories,
  results,
  stranger,
} from './runtime-fixtures.js';

// Signed results: a result number is never used twice, even when the saved counter lags what the
// document already holds (a save that failed after its result was appended).

test.after.each(removeHarnessDirectories);

const result = (seq: number) => ({
  kind: 'result' as const,
  host: 'h1',
  seq,
  at: new Date(NOW).toISOString(),
  outcome: 'applied' as const,
  generation: seq,
  closure: closure(seq),
  action: 'switch' as const,
  intentDigest: 'ab'.repeat(32),
  reason: '',
  outputTail: '',
});

test("a result is numbered after this host's own highest signed result, not after a lagging counter; others' entries do not count", async () => {
  const { agent } = await harness();
  appendSignedResult(agent.statusDoc, result(5), hostKey);
  appendSignedResult(agent.statusDoc, result(900), stranger);
  assert.is(agent.state.resultSeq, 0, 'the counter lags the document');
  const intent: Intent = {
    kind: 'intent',
    host: 'h1',
    generation: 6,
    closure: closure(6),
    action: 'switch',
    issuedAt: new Date(Date.now() - 60_000).toISOString(),
    expiresAt: new Date(Date.now() + 3_600_000).toISOString(),
    issuer: admin.name,
  };
  const signed = signIntent(intent, admin);
  const seq = await report(agent, { signed, digest: intentDigest(signed) }, 'refused', 'test', '');
  assert.is(seq, 6, 'after own #5; the stranger-signed #900 is ignored');
  assert.equal(
    results(agent).map((r) => r.seq),
    [5, 900, 6],
  );
});

test.run();
