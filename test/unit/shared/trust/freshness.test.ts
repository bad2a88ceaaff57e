import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { generateSigningKey } from '../../../../shared/crypto/keys.js';
import { signPayload } from '../../../../shared/crypto/signatures.js';
import type { SignedTimestamp, Timestamp } from '../../../../shared/schemas/policy.js';
import { evaluateFreshness, judgeTimestamp, policyStillNamed } from '../../../../shared/trust/freshness.js';
import { basePolicy, makeTestOrg } from '../../../harness/policy-fixtures.js';

const org = makeTestOrg();
const v1 = basePolicy(org);
const now = Date.parse('2026-11-22T12:00:00.000Z');

function stamp(seq: number, policyVersion: number, key = org.timestamp, at = now): SignedTimestamp {
  const timestamp: Timestamp = { kind: 'timestamp', at: new Date(at).toISOString(), seq, policyVersion };
  return { timestamp, signature: signPayload('timestamp', timestamp, key) };
}

test('a genuine timestamp naming a newer policy version is accepted for its time and reported as naming that version', () => {
  assert.equal(judgeTimestamp(stamp(1, 1), v1, null), { accepted: true, namesNewerPolicy: null });
  assert.equal(judgeTimestamp(stamp(2, 2), v1, stamp(1, 1)), {
    accepted: true,
    namesNewerPolicy: { version: 2, key: org.timestamp.publicKey },
  });
  assert.is(judgeTimestamp(stamp(1, 2, generateSigningKey('mallory')), v1, null).accepted, false);
  assert.is(judgeTimestamp(stamp(1, 1), v1, stamp(1, 1)).accepted, false, 'not newer');
  assert.is(judgeTimestamp(stamp(1, 1), undefined, null).accepted, false, 'no policy to check the key against');
});

test('a reader behind the policy a timestamp names is frozen, and says which version it waits for, until it has it', () => {
  const input = { policy: v1, lastTimestamp: stamp(5, 2), openedAt: now, now: now + 1000, freezeAfterMs: 60_000 };
  const behind = evaluateFreshness({ ...input, policyNamed: { version: 2, key: org.timestamp.publicKey } });
  assert.is(behind.frozen, true, 'fresh timestamps do not help a reader that misses the policy they name');
  assert.is(behind.waitingForPolicyVersion, 2);
  assert.match(behind.reason, /names policy version 2, this reader has version 1/);
  const caughtUp = evaluateFreshness({
    ...input,
    policy: { ...v1, version: 2 },
    policyNamed: { version: 2, key: org.timestamp.publicKey },
  });
  assert.equal([caughtUp.frozen, caughtUp.waitingForPolicyVersion, caughtUp.reason], [false, null, 'fresh']);
  const stale = evaluateFreshness({ ...input, policyNamed: null, now: now + 120_000 });
  assert.equal([stale.frozen, stale.waitingForPolicyVersion], [true, null]);
  assert.match(stale.reason, /no fresh signed timestamp/);
});

test('a claim by a timestamp key the policy no longer trusts ends: a stolen timestamp key freezes readers only until it is replaced', () => {
  const claim = { version: 999, key: org.timestamp.publicKey };
  assert.equal(policyStillNamed(claim, v1), claim);
  const replaced = { ...v1, version: 2, timestampKeys: [generateSigningKey('ts-2').publicKey] };
  assert.is(policyStillNamed(claim, replaced), null);
});

test.run();
