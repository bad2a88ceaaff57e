import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { generateSigningKey } from '../../../../shared/crypto/keys.js';
import { signPayload } from '../../../../shared/crypto/signatures.js';
import { type ActionRequest, MAX_ACTION_VALIDITY_MS, type SignedAction } from '../../../../shared/schemas/action.js';
import type { Policy } from '../../../../shared/schemas/policy.js';
import { signAction } from '../../../../shared/trust/sign-action.js';
import { type ActionCheckContext, verifyAction } from '../../../../shared/trust/verify-action.js';
import { basePolicy, makeTestOrg } from '../../../harness/policy-fixtures.js';

// Remote-action requests under the policy: alice's role grants every action on every host, bob's
// grants reboot on h1 only (group clinics), carol only reads. Version 2 revokes bob's key.
const org = makeTestOrg();
const base = basePolicy(org);
const v1: Policy = {
  ...base,
  roles: [
    ...base.roles,
    { name: 'actions', capabilities: ['reboot', 'lock', 'collect', 'check'], hosts: ['*'], groups: [] },
    { name: 'clinic-reboot', capabilities: ['reboot'], hosts: [], groups: ['clinics'] },
  ],
  admins: [
    { name: 'alice', keys: [org.alice.publicKey], roles: ['ops', 'actions'] },
    { name: 'bob', keys: [org.bob.publicKey], roles: ['clinic-reboot'] },
    { name: 'carol', keys: [org.carol.publicKey], roles: ['viewer'] },
  ],
  groups: [...base.groups, { name: 'clinics', hosts: ['h1'], threshold: 3 }],
};
const v2: Policy = { ...v1, version: 2, revokedKeys: [org.bob.publicKey] };
const now = Date.parse('2026-12-02T12:00:00.000Z');
const mallory = generateSigningKey('mallory');

function request(overrides: Partial<ActionRequest> = {}): ActionRequest {
  return {
    kind: 'action',
    action: 'reboot',
    host: 'h1',
    id: 'a'.repeat(32),
    issuedAt: new Date(now - 1000).toISOString(),
    expiresAt: new Date(now + 600_000).toISOString(),
    issuer: 'alice',
    policyVersion: 1,
    ...overrides,
  };
}

const context = (chain: Policy[] = [v1], host = 'h1'): ActionCheckContext => ({ host, now, chain, mode: 'policy' });

test('an admin whose role grants the capability on this host may; one admin suffices whatever the group threshold', () => {
  assert.equal(verifyAction(signAction(request(), org.alice), context()), { ok: true, admin: 'alice' });
  assert.equal(verifyAction(signAction(request({ issuer: 'bob' }), org.bob), context()), { ok: true, admin: 'bob' });
  for (const action of ['lock', 'unlock', 'collect', 'check'] as const)
    assert.ok(verifyAction(signAction(request({ action }), org.alice), context()).ok, action);
});

test('no capability: the wrong action, the wrong host, a reader; answered (an admin signed it)', () => {
  const lock = verifyAction(signAction(request({ action: 'lock' }), org.bob), context());
  assert.equal(lock.ok ? null : [lock.code, lock.fromAdmin], ['no-capability', true]);
  assert.match(
    lock.ok ? '' : lock.reason,
    /lock needs one admin with 'lock' on h1: admin bob lacks 'lock' for host h1/,
  );
  const elsewhere = verifyAction(signAction(request({ host: 'h2' }), org.bob), context([v1], 'h2'));
  assert.equal(elsewhere.ok ? null : elsewhere.code, 'no-capability');
  const carol = verifyAction(signAction(request(), org.carol), context());
  assert.equal(carol.ok ? null : carol.code, 'no-capability');
});

test('nobody answers for forgeries: an unknown key, a junk signature under an admin key, a revoked key', () => {
  const stranger = verifyAction(signAction(request(), mallory), context());
  assert.equal(stranger.ok ? null : [stranger.code, stranger.fromAdmin], ['unknown-signer', false]);
  const junk: SignedAction = {
    request: request(),
    signatures: [{ publicKey: org.alice.publicKey, signature: `${'A'.repeat(86)}==` }],
  };
  const forged = verifyAction(junk, context());
  assert.equal(forged.ok ? null : [forged.code, forged.fromAdmin], ['bad-signature', false]);
  // A junk signature under bob's key (who lacks lock): no-capability would be a claim nobody signed.
  const junkBob: SignedAction = {
    request: request({ action: 'lock' }),
    signatures: [{ publicKey: org.bob.publicKey, signature: `${'A'.repeat(86)}==` }],
  };
  const claimed = verifyAction(junkBob, context());
  assert.equal(claimed.ok ? null : [claimed.code, claimed.fromAdmin], ['bad-signature', false]);
  // Signed under v1, where bob may reboot h1; v2 revokes his key: nothing he signed counts.
  const revoked = verifyAction(signAction(request({ issuer: 'bob' }), org.bob), context([v1, v2]));
  assert.equal(revoked.ok ? null : [revoked.code, revoked.fromAdmin], ['unknown-signer', false]);
});

test('a request altered after signing does not verify', () => {
  const signed = signAction(request({ action: 'collect' }), org.alice);
  const altered: SignedAction = { ...signed, request: { ...signed.request, action: 'reboot', force: true } };
  const verdict = verifyAction(altered, context());
  assert.equal(verdict.ok ? null : [verdict.code, verdict.fromAdmin], ['bad-signature', false]);
});

test('binding and time: another host, expired, issued in the future, valid too long, unknown fields', () => {
  const code = (signed: SignedAction): string | null => {
    const verdict = verifyAction(signed, context());
    return verdict.ok ? null : verdict.code;
  };
  assert.is(code(signAction(request({ host: 'h2' }), org.alice)), 'wrong-host');
  assert.is(code(signAction(request({ expiresAt: new Date(now).toISOString() }), org.alice)), 'expired');
  assert.is(
    code(
      signAction(
        request({
          issuedAt: new Date(now + 6 * 60_000).toISOString(),
          expiresAt: new Date(now + 3_600_000).toISOString(),
        }),
        org.alice,
      ),
    ),
    'not-yet-valid',
  );
  assert.is(
    code(
      signAction(
        request({
          issuedAt: new Date(now - 1000).toISOString(),
          expiresAt: new Date(now - 1000 + MAX_ACTION_VALIDITY_MS + 1).toISOString(),
        }),
        org.alice,
      ),
    ),
    'too-long',
  );
  const newer = { ...request(), command: 'rm -rf /' } as ActionRequest;
  assert.is(code({ request: newer, signatures: [signPayload('action', newer, org.alice)] }), 'unknown-field');
});

test('policy versions: none named, an older one still walked, a newer one (wait), none trusted yet (wait)', () => {
  const unnamed = request();
  delete unnamed.policyVersion;
  const none = verifyAction(signAction(unnamed, org.alice), context());
  assert.equal(none.ok ? null : [none.code, none.waitForPolicy], ['unknown-policy-version', undefined]);
  assert.ok(verifyAction(signAction(request(), org.alice), context([v1, v2])).ok, 'v1 named, v2 in force');
  const ahead = verifyAction(signAction(request({ policyVersion: 3 }), org.alice), context([v1, v2]));
  assert.equal(ahead.ok ? null : [ahead.code, ahead.waitForPolicy], ['unknown-policy-version', true]);
  const empty = verifyAction(signAction(request(), org.alice), context([]));
  assert.equal(empty.ok ? null : [empty.code, empty.waitForPolicy], ['unknown-policy-version', true]);
});

test('the signature is domain-separated: an intent signature over the same bytes does not count', () => {
  const req = request();
  const verdict = verifyAction({ request: req, signatures: [signPayload('intent', req, org.alice)] }, context());
  assert.equal(verdict.ok ? null : verdict.code, 'bad-signature');
});

test('static admin keys (development): any trusted key may; others are nobody', () => {
  const keys = {
    host: 'h1',
    now,
    chain: [],
    mode: 'admin-keys' as const,
    trustedAdminKeys: new Set([org.alice.publicKey]),
  };
  const unnamed = request();
  delete unnamed.policyVersion;
  assert.ok(verifyAction(signAction(unnamed, org.alice), keys).ok);
  const other = verifyAction(signAction(request(), org.bob), keys);
  assert.equal(other.ok ? null : [other.code, other.fromAdmin], ['unknown-signer', false]);
  const expired = verifyAction(signAction(request({ expiresAt: new Date(now - 1).toISOString() }), org.alice), keys);
  assert.equal(expired.ok ? null : [expired.code, expired.fromAdmin], ['expired', true]);
});

test.run();
