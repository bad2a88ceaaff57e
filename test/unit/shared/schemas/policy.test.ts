import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { signEnrollRequest, signEnrollToken } from '../../../../admin/enroll-entries.js';
import { readPolicyFile } from '../../../../admin/policy-file.js';
import { generateSigningKey } from '../../../../shared/crypto/keys.js';
import { signPayload } from '../../../../shared/crypto/signatures.js';
import type { Intent } from '../../../../shared/schemas/intent.js';
import { type Policy, signedPolicySchema, unknownPolicyFields } from '../../../../shared/schemas/policy.js';
import { capabilitiesFor } from '../../../../shared/trust/capabilities.js';
import { hostBindings, verifyEnrollment, verifyEnrollRequest } from '../../../../shared/trust/enrollment.js';
import { walkPolicyChain } from '../../../../shared/trust/policy-chain.js';
import { verifyIntentUnderPolicy } from '../../../../shared/trust/policy-intent.js';
import { signIntent } from '../../../../shared/trust/sign-intent.js';
import { basePolicy, makeTestOrg, signPolicy } from '../../../harness/policy-fixtures.js';

const org = makeTestOrg();
const v1 = basePolicy(org);
const pinned = new Set([org.root.publicKey]);
const now = Date.now();
const closure = '/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-nixos-system';

function intent(host: string, overrides: Partial<Intent> = {}): Intent {
  return {
    kind: 'intent',
    host,
    generation: 1,
    closure,
    action: 'switch',
    issuedAt: new Date(now - 1000).toISOString(),
    expiresAt: new Date(now + 3_600_000).toISOString(),
    issuer: 'test',
    policyVersion: 1,
    ...overrides,
  };
}

const verify = (signed: ReturnType<typeof signIntent>, host: string, chain: Policy[] = [v1]) =>
  verifyIntentUnderPolicy(signed, { host, chain, now });

test('a policy anchored on the pinned root is trusted; one signed by another key is not', () => {
  assert.is(walkPolicyChain([], pinned, [signPolicy(v1, org.root)]).chain.length, 1);
  const forged = walkPolicyChain([], pinned, [signPolicy(v1, generateSigningKey('mallory'))]);
  assert.is(forged.chain.length, 0);
  assert.match(forged.refused[0]!.reason, /0 of the pinned org root keys/);
});

test('root rotation: readers walk N → N+1 → N+2; a policy signed by the old root after rotation is refused', () => {
  const newRoot = generateSigningKey('root-2');
  const v2 = { ...v1, version: 2, root: { keys: [newRoot.publicKey], threshold: 1 } };
  const v3 = { ...v2, version: 3, admins: v1.admins.filter((a) => a.name !== 'carol') };
  const walk = walkPolicyChain([], pinned, [
    signPolicy(v1, org.root),
    signPolicy(v2, org.root, newRoot),
    signPolicy(v3, newRoot),
  ]);
  assert.equal(
    walk.chain.map((p) => p.version),
    [1, 2, 3],
  );
  const onlyOld = walkPolicyChain([], pinned, [
    signPolicy(v1, org.root),
    signPolicy(v2, org.root, newRoot),
    signPolicy(v3, org.root),
  ]);
  assert.equal(
    onlyOld.chain.map((p) => p.version),
    [1, 2],
  );
  assert.match(onlyOld.refused.find((r) => r.version === 3)!.reason, /not signed by 1 of version 2's root keys/);
  const halfRotation = walkPolicyChain([], pinned, [signPolicy(v1, org.root), signPolicy(v2, org.root)]);
  assert.equal(
    halfRotation.chain.map((p) => p.version),
    [1],
    'the new root must accept the hand-over too',
  );
});

test('a policy written by a newer outpost (fields this reader does not know) still verifies, so its revocations reach readers not yet upgraded; the fields are named; in a file being authored they are refused as typos', async () => {
  // What a newer outpost would sign: v1's content plus a top-level and a per-group field.
  const newer = {
    ...v1,
    version: 2,
    revokedKeys: [org.carol.publicKey],
    futureRule: { maxParallel: 3 },
    groups: v1.groups.map((g) => ({ ...g, quietHours: ['12:00-13:00'] })),
    // A capability this reader does not know yet: granted nothing, named, and not a refusal.
    roles: v1.roles.map((r, i) => (i === 0 ? { ...r, capabilities: [...r.capabilities, 'teleport'] } : r)),
  };
  const signed = { policy: newer, signatures: [signPayload('policy', newer, org.root)] };
  // As a reader gets it: JSON from the document, parsed with the readers' schema.
  const received = signedPolicySchema.parse(JSON.parse(JSON.stringify(signed)));
  const walk = walkPolicyChain([], pinned, [signPolicy(v1, org.root), received]);
  assert.equal(
    walk.chain.map((p) => p.version),
    [1, 2],
    `refused: ${walk.refused.map((r) => r.reason).join('; ')}`,
  );
  assert.ok(walk.chain[1]!.revokedKeys.includes(org.carol.publicKey), 'the revocation is in force');
  assert.equal(unknownPolicyFields(walk.chain[1]!), [
    'futureRule',
    'groups.0.quietHours',
    'roles.0.capabilities.teleport',
  ]);
  const admin = walk.chain[1]!.admins.find((a) => a.roles.includes(v1.roles[0]!.name))!;
  const granted = capabilitiesFor(walk.chain[1]!, admin, 'h1');
  assert.not.ok((granted as Set<string>).has('teleport'), 'an unknown capability grants nothing');
  assert.equal(unknownPolicyFields(v1), []);
  const file = join(await fs.mkdtemp(join(tmpdir(), 'outpost-policy-')), 'typo.json');
  await fs.writeFile(
    file,
    JSON.stringify({
      policy: { ...v1, groups: v1.groups.map((g) => ({ ...g, maintainanceWindows: ['01:00-05:00'] })) },
      signatures: [],
    }),
  );
  try {
    await readPolicyFile(file);
    assert.unreachable('a misspelt field is refused');
  } catch (error) {
    assert.match(
      (error as Error).message,
      /fields this outpost does not know: groups\.0\.maintainanceWindows; fix their spelling/,
    );
  }
});

test('versions never go down: an older or different version at or below the current one is refused as rollback', () => {
  const v2 = { ...v1, version: 2 };
  const walked = walkPolicyChain([v1, v2], pinned, [signPolicy({ ...v1, admins: [] }, org.root)]);
  assert.equal(
    walked.chain.map((p) => p.version),
    [1, 2],
  );
  assert.match(walked.refused[0]!.reason, /rollback/);
});

test('two different policies for one version stop the walk (equivocation)', () => {
  const a = { ...v1, version: 2, groups: [] };
  const b = {
    ...v1,
    version: 2,
    relays: [{ name: 'r', key: generateSigningKey('r').publicKey, hosts: ['*'], groups: [] }],
  };
  const walk = walkPolicyChain([v1], pinned, [signPolicy(a, org.root), signPolicy(b, org.root)]);
  assert.equal(
    walk.chain.map((p) => p.version),
    [1],
  );
  assert.ok(walk.refused.some((r) => /equivocation/.test(r.reason)));
});

test('an admin with deploy for the host may deploy; one without the capability is refused', () => {
  const byAlice = signIntent(intent('h1'), org.alice);
  assert.equal(verify(byAlice, 'h1'), { ok: true, counted: byAlice.signatures });
  const carol = verify(signIntent(intent('h1'), org.carol), 'h1');
  assert.is(carol.ok, false);
  if (!carol.ok) {
    assert.is(carol.code, 'no-capability');
    assert.match(carol.reason, /carol lacks 'deploy' for host h1/);
  }
  const bobOutsideProduction = verify(signIntent(intent('h1'), org.bob), 'h1');
  assert.is(bobOutsideProduction.ok, false);
});

test('production needs two distinct admins: one, or one key signing twice, is below the threshold', () => {
  const one = verify(signIntent(intent('prod-1'), org.alice), 'prod-1');
  assert.is(one.ok, false);
  if (!one.ok) assert.is(one.code, 'below-threshold');
  const single = signIntent(intent('prod-1'), org.alice);
  const duplicated = { ...single, signatures: [single.signatures[0]!, single.signatures[0]!] };
  const twice = verify(duplicated, 'prod-1');
  assert.is(twice.ok, false);
  if (!twice.ok) assert.match(twice.reason, /1 of 2 required admin signatures.*signed twice/);
  const both = { ...single, signatures: [single.signatures[0]!, signPayload('intent', single.intent, org.bob)] };
  assert.equal(verify(both, 'prod-1'), { ok: true, counted: both.signatures });
});

test('a revoked admin key no longer counts, even for an intent naming the policy version it was valid in', () => {
  const v2 = {
    ...v1,
    version: 2,
    revokedKeys: [org.alice.publicKey],
    admins: v1.admins.map((a) => (a.name === 'alice' ? { ...a, keys: [] } : a)),
  };
  const verdict = verify(signIntent(intent('h1', { policyVersion: 1 }), org.alice), 'h1', [v1, v2]);
  assert.is(verdict.ok, false);
  if (!verdict.ok) assert.match(verdict.reason, /revoked/);
});

test('an intent naming a policy version this reader has not walked yet is not accepted', () => {
  const verdict = verify(signIntent(intent('h1', { policyVersion: 7 }), org.alice), 'h1');
  assert.is(verdict.ok, false);
  if (!verdict.ok) assert.is(verdict.code, 'unknown-policy-version');
});

test('enrollment: approval by an enroll-capable admin binds; forged or capability-less approvals do not', () => {
  const hostKey = generateSigningKey('h1');
  const enrollment = {
    kind: 'enrollment' as const,
    host: 'h1',
    hostKey: hostKey.publicKey,
    approvedAt: new Date().toISOString(),
    policyVersion: 1,
  };
  assert.equal(verifyEnrollment({ enrollment, signatures: [signPayload('enrollment', enrollment, org.alice)] }, v1), {
    ok: true,
  });
  const byCarol = verifyEnrollment({ enrollment, signatures: [signPayload('enrollment', enrollment, org.carol)] }, v1);
  assert.is(byCarol.ok, false);
  if (!byCarol.ok) assert.match(byCarol.reason, /carol lacks 'enroll'/);
  const forged = verifyEnrollment(
    { enrollment, signatures: [signPayload('enrollment', enrollment, generateSigningKey('mallory'))] },
    v1,
  );
  assert.is(forged.ok, false);
  const altered = verifyEnrollment(
    {
      enrollment: { ...enrollment, hostKey: generateSigningKey('x').publicKey },
      signatures: [signPayload('enrollment', enrollment, org.alice)],
    },
    v1,
  );
  assert.is(altered.ok, false);
});

test('enrollment tokens bind once, to the named host, when used before they expire', () => {
  const token = signEnrollToken(org.alice, {
    host: 'h2',
    expiresAt: new Date(now + 60_000).toISOString(),
    policyVersion: 1,
  });
  const request = (key: ReturnType<typeof generateSigningKey>, host = 'h2', at = new Date()) =>
    signEnrollRequest(key, host, token, at);
  const first = generateSigningKey('first');
  const second = generateSigningKey('second');
  const bindings = hostBindings(v1, [], [request(first), request(second)]);
  assert.is(bindings.get('h2')?.hostKey, first.publicKey, 'the first request that used the token wins');
  const wrongHost = verifyEnrollRequest(request(first, 'h3'), v1);
  assert.is(wrongHost.ok, false);
  const expired = verifyEnrollRequest(request(first, 'h2', new Date(now + 120_000)), v1);
  assert.is(expired.ok, false);
  if (!expired.ok) assert.match(expired.reason, /expired/);
  const stolen = request(first);
  const forgedRequest = { ...stolen, signature: signPayload('enroll-request', stolen.request, second) };
  assert.is(verifyEnrollRequest(forgedRequest, v1).ok, false, 'a request must be signed by the key it binds');
});

test.run();
