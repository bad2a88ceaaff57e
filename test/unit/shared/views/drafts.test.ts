import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { generateSigningKey } from '../../../../shared/crypto/keys.js';
import { signPayload } from '../../../../shared/crypto/signatures.js';
import type { Policy } from '../../../../shared/schemas/policy.js';
import { draftProgress, maySignPolicyDraft, policyDiff } from '../../../../shared/views/policy-draft.js';
import {
  addGroup,
  nextVersion,
  parseRootForm,
  revokeKey,
  rotateRoot,
  setGroupWindows,
} from '../../../../shared/views/policy-edit.js';
import {
  buildRolloutPlan,
  mayCreateRollout,
  parseReleaseManifest,
  planRollout,
  planSignatureNeeds,
} from '../../../../shared/views/rollout-draft.js';
import { basePolicy, makeTestOrg } from '../../../harness/policy-fixtures.js';

// The drafts the CLI and the web editor share: a rollout plan from a manifest (refusals before
// signing, who still has to sign) and the next policy version (whose signature counts, the diff).
const org = makeTestOrg();
const v1: Policy = { ...basePolicy(org), channels: [{ name: 'stable', hosts: ['h1', 'prod-1'] }] };
const CLOSURE = `/nix/store/${'c'.repeat(32)}-nixos-system-w50`;
const manifest = { release: 'w50', hosts: { h1: CLOSURE, 'prod-1': CLOSURE, h9: CLOSURE } };
const enrolled = (host: string): string | undefined => (host === 'h9' ? undefined : org.alice.publicKey);

test('parseReleaseManifest: bad input is a reason naming the expected shape, never a throw', () => {
  assert.equal(parseReleaseManifest(JSON.stringify(manifest), 'm').ok, true);
  const notJson = parseReleaseManifest('{', 'the pasted manifest');
  assert.ok(!notJson.ok && /^the pasted manifest: not JSON .*expected \{"release"/.test(notJson.reason));
  const badPath = parseReleaseManifest(JSON.stringify({ release: 'x', hosts: { h1: '/tmp/x' } }), 'm');
  assert.ok(!badPath.ok && /hosts\.h1/.test(badPath.reason));
  const huge = parseReleaseManifest(' '.repeat(16 * 1024 * 1024 + 1), 'm');
  assert.ok(!huge.ok && /more than 16 MiB/.test(huge.reason));
});

test('planRollout + mayCreateRollout: channel hosts, wave specs, and the refusals before signing', () => {
  const planned = planRollout(v1, { manifest, channel: 'stable', waves: ['first=h1', 'second=prod-1'], gates: [] });
  assert.ok(planned.ok);
  if (!planned.ok) return;
  assert.equal(
    planned.value.waves.map((w) => [w.name, w.hosts]),
    [
      ['first', ['h1']],
      ['second', ['prod-1']],
    ],
  );
  assert.equal(planned.value.skipped, [{ host: 'h9', reason: 'in release w50, not in channel stable' }]);
  const bad = planRollout(v1, { manifest, waves: ['first=h1'], gates: ['third:soak=1h'] });
  assert.ok(!bad.ok && /there is no wave third/.test(bad.reason));
  assert.equal(mayCreateRollout(v1, org.alice.publicKey, ['h1', 'prod-1'], enrolled), {
    ok: true,
    value: { admin: 'alice' },
  });
  const carol = mayCreateRollout(v1, org.carol.publicKey, ['h1'], enrolled);
  assert.ok(!carol.ok && /admin carol lacks 'deploy' for h1/.test(carol.reason));
  const bob = mayCreateRollout(v1, org.bob.publicKey, ['h1', 'prod-1'], enrolled);
  assert.ok(!bob.ok && /bob lacks 'deploy' for h1;/.test(bob.reason));
  const unbound = mayCreateRollout(v1, org.alice.publicKey, ['h9'], enrolled);
  assert.ok(!unbound.ok && /not enrolled: h9/.test(unbound.reason));
  const stranger = mayCreateRollout(v1, org.timestamp.publicKey, ['h1'], enrolled);
  assert.ok(!stranger.ok && /is not an admin key under policy version 1/.test(stranger.reason));
});

test('buildRolloutPlan: one generation above the highest issued; production needs a second admin', () => {
  const planned = planRollout(v1, { manifest, channel: 'stable', waves: [], gates: [] });
  assert.ok(planned.ok);
  if (!planned.ok) return;
  const plan = buildRolloutPlan({
    id: 'w50-abc',
    manifest,
    channel: 'stable',
    action: 'switch',
    issuer: 'alice',
    issuerKey: org.alice.publicKey,
    policyVersion: 1,
    now: Date.parse('2026-12-02T12:00:00Z'),
    expiresInSeconds: 3600,
    planned: planned.value,
    enrolled,
    highest: (host) => (host === 'h1' ? 4 : 0),
  });
  assert.equal(
    plan.waves.flatMap((w) => w.hosts.map((h) => [h.host, h.generation])),
    [
      ['h1', 5],
      ['prod-1', 1],
    ],
  );
  assert.is(plan.expiresAt, '2026-12-02T13:00:00.000Z');
  const needs = planSignatureNeeds(plan, [org.alice.publicKey], [v1]);
  assert.equal(
    needs.map((n) => n.host),
    ['prod-1'],
  );
  assert.equal(planSignatureNeeds(plan, [org.alice.publicKey, org.bob.publicKey], [v1]), []);
});

test('maySignPolicyDraft: root keys of either side only, once each, on the next version', () => {
  const draft = { policy: nextVersion(v1, new Date('2026-12-02T12:00:00Z'), false), signatures: [] };
  assert.equal(maySignPolicyDraft(v1, draft, org.root.publicKey), { ok: true });
  const alice = maySignPolicyDraft(v1, draft, org.alice.publicKey);
  assert.ok(!alice.ok && /not one of the org root keys .*admin keys never sign a policy/.test(alice.reason));
  const signed = { ...draft, signatures: [signPayload('policy', draft.policy, org.root)] };
  const twice = maySignPolicyDraft(v1, signed, org.root.publicKey);
  assert.ok(!twice.ok && /signed the draft already/.test(twice.reason));
  assert.equal(draftProgress(v1, signed).verdict, { ok: true });
  // A new root named by the draft may sign it (a hand-over needs both sides).
  const rotated = {
    policy: rotateRoot(draft.policy, { keys: [org.bob.publicKey], threshold: 1 }).policy,
    signatures: [],
  };
  assert.equal(maySignPolicyDraft(v1, rotated, org.bob.publicKey), { ok: true });
  const onlyNew = { ...rotated, signatures: [signPayload('policy', rotated.policy, org.bob)] };
  const progress = draftProgress(v1, onlyNew);
  assert.equal(progress.previousRoot, { signed: 0, threshold: 1 });
  assert.equal(progress.ownRoot, { signed: 1, threshold: 1 });
  assert.is(progress.verdict.ok, false);
  const stale = maySignPolicyDraft(draft.policy, draft, org.root.publicKey);
  assert.ok(!stale.ok && /only version 3 can follow/.test(stale.reason));
});

// The web editor's revocation and root forms: the CLI's edits, signed by root keys as any draft.
test('a revocation draft: the key leaves its admin and counts never again; root keys are refused; readers accept it signed by the root', () => {
  const draft = nextVersion(v1, new Date('2026-12-02T12:00:00Z'), false);
  const edited = revokeKey(draft, org.carol.publicKey);
  assert.ok(edited.policy.revokedKeys.includes(org.carol.publicKey));
  assert.equal(edited.policy.admins.find((a) => a.name === 'carol')?.keys, []);
  assert.match(edited.notes.join('\n'), /removed the key from admin carol, who now has no key/);
  assert.equal(
    policyDiff(v1, edited.policy).map((c) => `${c.change} ${c.section} ${c.name}`),
    ['changed admins carol', `added revokedKeys ${org.carol.publicKey}`],
  );
  assert.throws(() => revokeKey(draft, org.root.publicKey), /is a root key of this policy; replace it first/);
  assert.throws(() => revokeKey(edited.policy, org.carol.publicKey), /already revoked/);
  // The revoked key cannot sign the draft that revokes it, nor come back as an admin key.
  const signed = { policy: edited.policy, signatures: [signPayload('policy', edited.policy, org.root)] };
  assert.equal(draftProgress(v1, signed).verdict, { ok: true });
  const carol = maySignPolicyDraft(v1, { policy: edited.policy, signatures: [] }, org.carol.publicKey);
  assert.ok(!carol.ok && /revoked/.test(carol.reason));
});

test('a root rotation from the form: both roots must sign; bad keys and thresholds are refused before any draft', () => {
  const newRoot = [generateSigningKey('root-2'), generateSigningKey('root-3')];
  const draft = nextVersion(v1, new Date('2026-12-02T12:00:00Z'), false);
  const root = parseRootForm(
    `${newRoot[0]!.publicKey}, ${newRoot[1]!.publicKey} ${newRoot[0]!.publicKey}`,
    '2',
    draft.root,
  );
  assert.equal(root, { keys: newRoot.map((k) => k.publicKey), threshold: 2 });
  assert.equal(parseRootForm(newRoot[0]!.publicKey, '', draft.root).threshold, 1, 'empty: the current threshold');
  assert.throws(() => parseRootForm('  ', '1', draft.root), /name the new root keys/);
  assert.throws(() => parseRootForm(newRoot[0]!.publicKey, '2', draft.root), /from 1 to 1 .*got "2"/);
  assert.throws(() => parseRootForm(newRoot[0]!.publicKey, 'x', draft.root), /whole number/);
  assert.throws(
    () => rotateRoot(draft, parseRootForm('not-a-key', '1', draft.root)),
    /the policy would be invalid, nothing was written: root\.keys\.0/,
  );
  const rotated = rotateRoot(draft, root);
  assert.match(
    rotated.notes.join('\n'),
    /signed by the threshold of BOTH the previous version's root and the new root/,
  );
  assert.equal(
    policyDiff(v1, rotated.policy).map((c) => c.section),
    ['root'],
  );
  const sign = (signers: typeof newRoot) => ({
    policy: rotated.policy,
    signatures: signers.map((k) => signPayload('policy', rotated.policy, k)),
  });
  // The old root alone hands over to nobody who accepted; one of the two new keys is not enough.
  const oldOnly = draftProgress(v1, sign([org.root]));
  assert.equal(
    [oldOnly.previousRoot, oldOnly.ownRoot],
    [
      { signed: 1, threshold: 1 },
      { signed: 0, threshold: 2 },
    ],
  );
  assert.is(oldOnly.verdict.ok, false);
  assert.is(draftProgress(v1, sign([org.root, newRoot[0]!])).verdict.ok, false);
  assert.equal(draftProgress(v1, sign([org.root, ...newRoot])).verdict, { ok: true });
  // New root keys alone cannot take the fleet over.
  assert.is(draftProgress(v1, sign(newRoot)).verdict.ok, false);
  // A revoked key never becomes a root key.
  const withRevoked = revokeKey(draft, org.carol.publicKey).policy;
  assert.throws(() => rotateRoot(withRevoked, { keys: [org.carol.publicKey], threshold: 1 }), /revoked/);
});

test('policyDiff: added, removed and changed entries by name', () => {
  let next = nextVersion(v1, new Date('2026-12-02T12:00:00Z'), false);
  next = addGroup(next, { name: 'lab', hosts: ['h3'], threshold: 1 }).policy;
  next = setGroupWindows(next, {
    name: 'production',
    maintenanceWindows: ['Tue 03:00-05:00'],
    rebootWindows: [],
    timeZone: 'UTC',
  }).policy;
  next = { ...next, admins: next.admins.filter((a) => a.name !== 'carol') };
  const changes = policyDiff(v1, next).map((c) => `${c.change} ${c.section} ${c.name}`);
  assert.equal(changes.sort(), ['added groups lab', 'changed groups production', 'removed admins carol']);
  assert.equal(policyDiff(v1, nextVersion(v1, new Date(), true)), [], 'version, epoch and time are not changes');
});

test.run();
