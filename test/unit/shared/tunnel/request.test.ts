import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { generateSigningKey } from '../../../../shared/crypto/keys.js';
import type { Policy } from '../../../../shared/schemas/policy.js';
import {
  type SignedTunnelRequest,
  signTunnelRequest,
  TUNNEL_CLOCK_SKEW_MS,
  TUNNEL_MAX_LIFETIME_MS,
  type TunnelRequest,
  verifyTunnelRequest,
} from '../../../../shared/tunnel/request.js';
import { basePolicy, makeTestOrg } from '../../../harness/policy-fixtures.js';

// The agent's decision on an `outpost ssh` request, apart from the nonce (agent/tunnel-store.ts):
// alice has ssh on h1 (role ssh-h1), carol only read, mallory is no admin.
const org = makeTestOrg();
const base = basePolicy(org);
const policy: Policy = {
  ...base,
  admins: base.admins.map((a) => (a.name === 'alice' ? { ...a, roles: [...a.roles, 'ssh-h1'] } : a)),
  roles: [...base.roles, { name: 'ssh-h1', capabilities: ['ssh'], hosts: ['h1'], groups: [] }],
};
const now = Date.parse('2026-12-02T12:00:00.000Z');

function request(overrides: Partial<TunnelRequest> = {}): TunnelRequest {
  return {
    kind: 'ssh-tunnel',
    host: 'h1',
    nonce: '0123456789abcdef0123456789abcdef',
    issuedAt: new Date(now).toISOString(),
    expiresAt: new Date(now + 60_000).toISOString(),
    ...overrides,
  };
}

const check = (signed: SignedTunnelRequest, context: Partial<Parameters<typeof verifyTunnelRequest>[1]> = {}) =>
  verifyTunnelRequest(signed, { policy, host: 'h1', now, ...context });

function refusal(
  signed: SignedTunnelRequest,
  context: Partial<Parameters<typeof verifyTunnelRequest>[1]> = {},
): string {
  const verdict = check(signed, context);
  if (verdict.ok) throw new Error('expected a refusal');
  return verdict.reason;
}

test('alice, with ssh on h1, is let in: her admin name and key, and when the request expires', () => {
  const verdict = check(signTunnelRequest(request(), org.alice));
  assert.equal(verdict, { ok: true, admin: 'alice', key: org.alice.publicKey, expiresAtMs: now + 60_000 });
});

test('no ssh capability on this host, no admin, a revoked key, no policy: each refused with its reason', () => {
  assert.match(refusal(signTunnelRequest(request(), org.carol)), /admin carol has no role granting ssh on h1/);
  assert.match(
    refusal(signTunnelRequest(request({ host: 'h2' }), org.alice), { host: 'h2' }),
    /alice has no role granting ssh on h2/,
  );
  assert.match(refusal(signTunnelRequest(request(), generateSigningKey('mallory'))), /belongs to no admin/);
  const revoked = { ...policy, revokedKeys: [org.alice.publicKey] };
  assert.match(refusal(signTunnelRequest(request(), org.alice), { policy: revoked }), /is revoked/);
  assert.match(refusal(signTunnelRequest(request(), org.alice), { policy: null }), /holds no signed policy/);
});

test('a request for another host, or with a changed field after signing, is refused', () => {
  assert.match(refusal(signTunnelRequest(request({ host: 'h2' }), org.alice)), /names host h2, but this is h1/);
  const signed = signTunnelRequest(request(), org.alice);
  const stretched = { ...signed, request: { ...signed.request, expiresAt: new Date(now + 120_000).toISOString() } };
  assert.match(refusal(stretched), /signature does not verify/);
  // The signature is domain-separated: an auth proof or intent signature over the same JSON is not one.
  assert.match(
    refusal({ ...signed, signature: { ...signed.signature, signature: `${'A'.repeat(86)}==` } }),
    /does not verify/,
  );
});

test('time: expired past the skew, issued too far ahead, or living longer than the maximum is refused; the skew is allowed', () => {
  const at = (issued: number, lifetime: number) =>
    signTunnelRequest(
      request({ issuedAt: new Date(issued).toISOString(), expiresAt: new Date(issued + lifetime).toISOString() }),
      org.alice,
    );
  // Expired a little (within the skew): still good; past the skew: refused.
  assert.ok(check(at(now - 60_000 - TUNNEL_CLOCK_SKEW_MS + 1000, 60_000)).ok);
  assert.match(refusal(at(now - 60_000 - TUNNEL_CLOCK_SKEW_MS - 1000, 60_000)), /expired at/);
  assert.ok(check(at(now + TUNNEL_CLOCK_SKEW_MS - 1000, 60_000)).ok);
  assert.match(refusal(at(now + TUNNEL_CLOCK_SKEW_MS + 1000, 60_000)), /issued in the future/);
  assert.ok(check(at(now, TUNNEL_MAX_LIFETIME_MS)).ok);
  assert.match(refusal(at(now, TUNNEL_MAX_LIFETIME_MS + 1)), /live at most 300 s/);
  assert.match(refusal(at(now, 0)), /must expire after it is issued/);
});

test.run();
