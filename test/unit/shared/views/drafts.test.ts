import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { signPayload } from '../../../../shared/crypto/signatures.js';
import type { Policy } from '../../../../shared/schemas/policy.js';
import { draftProgress, maySignPolicyDraft, policyDiff } from '../../../../shared/views/policy-draft.js';
import { addGroup, nextVersion, rotateRoot, setGroupWindows } from '../../../../shared/views/policy-edit.js';
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
