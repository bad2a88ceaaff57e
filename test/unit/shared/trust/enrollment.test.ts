import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  signEnrollClear,
  signEnrollment,
  signEnrollRequest,
  signEnrollToken,
} from '../../../../admin/enroll-entries.js';
import { generateSigningKey } from '../../../../shared/crypto/keys.js';
import { signPayload } from '../../../../shared/crypto/signatures.js';
import type { SignedEnrollRequest } from '../../../../shared/schemas/policy.js';
import { mayReadHost } from '../../../../shared/trust/capabilities.js';
import {
  enrollmentState,
  hostBindings,
  verifyEnrollClear,
  verifyEnrollRequest,
} from '../../../../shared/trust/enrollment.js';
import { basePolicy, makeTestOrg } from '../../../harness/policy-fixtures.js';

const org = makeTestOrg();
const v1 = basePolicy(org);
const now = Date.now();
const token = (host = 'h4', expiresInMs = 60_000) =>
  signEnrollToken(org.alice, { host, expiresAt: new Date(now + expiresInMs).toISOString(), policyVersion: 1 });

test('a token lifted out of a request binds nothing for another key, with or without the copied proof', () => {
  const file = token();
  const host = generateSigningKey('h4');
  const genuine = signEnrollRequest(host, 'h4', file, new Date(now));
  const relay = generateSigningKey('relay');
  const request = { ...genuine.request, hostKey: relay.publicKey };
  const bare: SignedEnrollRequest = { request, signature: signPayload('enroll-request', request, relay) };
  const copied: SignedEnrollRequest = { ...bare, tokenProof: genuine.tokenProof! };
  for (const forged of [bare, copied]) {
    const verdict = verifyEnrollRequest(forged, v1);
    assert.is(verdict.ok, false);
    if (!verdict.ok) assert.match(verdict.reason, /does not prove it holds the token file/);
  }
  assert.is(verifyEnrollRequest(genuine, v1).ok, true);
  // Even stored first, the forged requests bind nothing; the genuine one binds.
  assert.is(hostBindings(v1, [], [bare, copied, genuine]).get('h4')?.hostKey, host.publicKey);
});

test('a token without a proof key (made by an older outpost) is refused by name', () => {
  const file = token();
  const { proofKey: _dropped, ...legacy } = file.token;
  const key = generateSigningKey('h4');
  const request = {
    kind: 'enroll-request' as const,
    host: 'h4',
    hostKey: key.publicKey,
    requestedAt: new Date(now).toISOString(),
    token: { token: legacy, signatures: [signPayload('enroll-token', legacy, org.alice)] },
  };
  const verdict = verifyEnrollRequest({ request, signature: signPayload('enroll-request', request, key) }, v1);
  assert.is(verdict.ok, false);
  if (!verdict.ok) assert.match(verdict.reason, /no proof key .*outpost enroll token/);
});

test('expiry limits when a token is used: a request made in time binds for good; one made late does not', () => {
  const file = token('h3', 1_000);
  const inTime = signEnrollRequest(generateSigningKey('h3'), 'h3', file, new Date(now));
  const late = signEnrollRequest(generateSigningKey('late'), 'h3', file, new Date(now + 5_000));
  // No clock is consulted: the same verdict today and in a year.
  assert.is(hostBindings(v1, [], [inTime]).get('h3')?.hostKey, inTime.request.hostKey);
  const verdict = verifyEnrollRequest(late, v1);
  assert.is(verdict.ok, false);
  if (!verdict.ok) assert.match(verdict.reason, /expired at/);
});

test('a second key proving the same token is a conflict until an approval settles it; same-key repeats are not', () => {
  const file = token('h5');
  const first = generateSigningKey('first');
  const second = generateSigningKey('second');
  const requests = [
    signEnrollRequest(first, 'h5', file, new Date(now)),
    signEnrollRequest(first, 'h5', file, new Date(now + 10)),
    signEnrollRequest(second, 'h5', file, new Date(now + 20)),
  ];
  const state = enrollmentState(v1, [], requests);
  assert.is(state.bindings.get('h5')?.hostKey, first.publicKey);
  assert.equal(
    state.conflicts.map((c) => [c.host, c.boundKey, c.otherKey]),
    [['h5', first.publicKey, second.publicKey]],
  );
  assert.equal([...state.tokenBindings], [0]);
  assert.equal([...state.tokenRepeats].sort(), [1, 2]);
  const approval = signEnrollment(
    org.alice,
    { host: 'h5', hostKey: second.publicKey, policyVersion: 1 },
    new Date(now),
  );
  const settled = enrollmentState(v1, [approval], requests);
  assert.equal(settled.conflicts, []);
  assert.equal(settled.bindings.get('h5'), { host: 'h5', hostKey: second.publicKey, via: 'approval' });
});

test('enroll clear orders: signed by an admin, fresh, and clearing only hosts the admin may enroll', () => {
  const byAlice = verifyEnrollClear(signEnrollClear(org.alice, {}, new Date(now)), v1, now, 600_000);
  assert.ok(byAlice.ok && byAlice.mayClear('h1'));
  const byCarol = verifyEnrollClear(signEnrollClear(org.carol, {}, new Date(now)), v1, now, 600_000);
  assert.ok(byCarol.ok && !byCarol.mayClear('h1'), 'carol may send one, and it clears nothing');
  const forHost = verifyEnrollClear(signEnrollClear(org.carol, { host: 'h1' }, new Date(now)), v1, now, 600_000);
  assert.is(forHost.ok, false);
  if (!forHost.ok) assert.match(forHost.reason, /carol lacks 'enroll' for host h1/);
  const stale = verifyEnrollClear(signEnrollClear(org.alice, {}, new Date(now - 3_600_000)), v1, now, 600_000);
  assert.is(stale.ok, false);
  if (!stale.ok) assert.match(stale.reason, /check this machine's clock/);
  const stranger = verifyEnrollClear(signEnrollClear(generateSigningKey('m'), {}, new Date(now)), v1, now, 600_000);
  assert.is(stranger.ok, false);
});

test('read scope is per host: read on h1 opens h1, not h2; deploy on a host implies reading it', () => {
  const scoped = { ...v1, roles: v1.roles.map((r) => (r.name === 'viewer' ? { ...r, hosts: ['h1'] } : r)) };
  const carol = scoped.admins.find((a) => a.name === 'carol')!;
  const bob = scoped.admins.find((a) => a.name === 'bob')!;
  assert.is(mayReadHost(scoped, carol, 'h1'), true);
  assert.is(mayReadHost(scoped, carol, 'h2'), false);
  assert.is(mayReadHost(scoped, bob, 'prod-1'), true);
  assert.is(mayReadHost(scoped, bob, 'h1'), false);
});

test.run();
