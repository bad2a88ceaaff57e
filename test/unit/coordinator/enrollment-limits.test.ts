import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { signEnrollment, signEnrollRequest, signEnrollToken } from '../../../admin/enroll-entries.js';
import { planRequests, SourceLimiter, sourceOf } from '../../../coordinator/enrollment-limits.js';
import { generateSigningKey } from '../../../shared/crypto/keys.js';
import { basePolicy, makeTestOrg } from '../../harness/policy-fixtures.js';

const org = makeTestOrg();
const v1 = basePolicy(org);
const now = Date.parse('2030-01-01T00:00:00.000Z');
const HOUR = 3_600_000;
const TTL = 7 * 24 * HOUR;
const at = (ms: number): Date => new Date(now + ms);

test('sources: IPv4 addresses one by one, IPv4-mapped as IPv4, IPv6 by /64', () => {
  assert.is(sourceOf('192.0.2.7'), '192.0.2.7');
  assert.is(sourceOf('::ffff:192.0.2.7'), '192.0.2.7');
  assert.is(sourceOf('2001:db8:1:2::1'), '2001:db8:1:2::/64');
  assert.is(sourceOf('2001:db8:1:2:ffff:ffff:ffff:ffff'), '2001:db8:1:2::/64');
  assert.is(sourceOf('2001:db8::1'), '2001:db8:0:0::/64');
  assert.is(sourceOf('::1'), '0:0:0:0::/64');
  assert.is(sourceOf(undefined), 'unknown');
});

test('per-source buckets: a burst, then one per refill; other sources unaffected; the table stays bounded', () => {
  const limiter = new SourceLimiter(3, 1_000, 100);
  const results = Array.from({ length: 5 }, () => limiter.take('a', now).ok);
  assert.equal(results, [true, true, true, false, false]);
  const refused = limiter.take('a', now);
  assert.ok(!refused.ok && refused.retryAfterMs === 1_000);
  assert.is(limiter.take('b', now).ok, true);
  assert.is(limiter.take('a', now + 1_000).ok, true, 'one refilled after a second');
  assert.is(limiter.take('a', now + 1_000).ok, false);
  for (let i = 0; i < 1_000; i++) limiter.take(`s${i}`, now);
  assert.is(limiter.sources(), 100);
  assert.is(limiter.refused, 4);
});

const pending = (host: string, ms = 0) => signEnrollRequest(generateSigningKey(host), host, undefined, at(ms));

test('plan: pending requests expire after the TTL; a repeat keeps its newest copy; malformed entries go', () => {
  const old = pending('h1', -TTL - 1);
  const fresh = pending('h2', -HOUR);
  const key = generateSigningKey('h3');
  const firstAsk = signEnrollRequest(key, 'h3', undefined, at(-2 * HOUR));
  const secondAsk = signEnrollRequest(key, 'h3', undefined, at(-HOUR));
  const plan = planRequests(v1, [], [old, fresh, { junk: true }, firstAsk, secondAsk], now, TTL);
  assert.equal(plan.drop, [3, 2, 0], 'highest first: the older repeat, the junk, the expired one');
  assert.is(plan.pending, 2);
  assert.equal(plan.clearable.map((c) => c.host).sort(), ['h2', 'h3']);
});

test('plan: a request whose key was approved since is dropped; a token binding is never dropped, even long after', () => {
  const asked = pending('h1', -HOUR);
  const approval = signEnrollment(
    org.alice,
    { host: 'h1', hostKey: asked.request.hostKey, policyVersion: 1 },
    at(-HOUR / 2),
  );
  const file = signEnrollToken(org.alice, { host: 'h4', expiresAt: at(-TTL).toISOString(), policyVersion: 1 });
  const bound = signEnrollRequest(generateSigningKey('h4'), 'h4', file, at(-TTL - HOUR));
  const conflict = signEnrollRequest(generateSigningKey('copy'), 'h4', file, at(-TTL - HOUR + 1));
  const plan = planRequests(v1, [approval], [asked, bound, conflict], now, TTL);
  assert.equal(plan.drop, [2, 0], 'the expired conflict and the settled request; the binding stays');
  assert.is(plan.pending, 0);
  assert.equal(plan.clearable, [], 'an admin cannot clear a binding');
  assert.is(plan.state.bindings.get('h4')?.hostKey, bound.request.hostKey);
});

test('plan: recent conflicting token uses are kept (for admins to see) and counted per token', () => {
  const file = signEnrollToken(org.alice, { host: 'h5', expiresAt: at(HOUR).toISOString(), policyVersion: 1 });
  const requests = [
    signEnrollRequest(generateSigningKey('h5'), 'h5', file, at(-3)),
    signEnrollRequest(generateSigningKey('x'), 'h5', file, at(-2)),
    signEnrollRequest(generateSigningKey('y'), 'h5', file, at(-1)),
  ];
  const plan = planRequests(v1, [], requests, now, TTL);
  assert.equal(plan.drop, []);
  assert.is(plan.repeatsByNonce.get(file.token.nonce), 2);
  assert.is(plan.state.conflicts.length, 2);
});

test.run();
