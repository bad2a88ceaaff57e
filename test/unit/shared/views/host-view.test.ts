import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as Y from 'yjs';
import { generateSigningKey } from '../../../../shared/crypto/keys.js';
import { signPayload } from '../../../../shared/crypto/signatures.js';
import { appendRolloutEntries, rolloutDocName } from '../../../../shared/rollout/document.js';
import { deriveRolloutIntent, placeHosts, planDigest } from '../../../../shared/rollout/plan.js';
import type { SignedPlan } from '../../../../shared/rollout/schemas.js';
import { cosignPlan } from '../../../../shared/rollout/sign.js';
import type { SignedIntent } from '../../../../shared/schemas/intent.js';
import {
  checkRolloutIntent,
  type HostViewInputs,
  hostViewFromDocuments,
  reportProblem,
  rolloutDocumentsNeeded,
  unreadableView,
} from '../../../../shared/views/host-view.js';
import { basePolicy, makeTestOrg } from '../../../harness/policy-fixtures.js';
import { type FixtureHost, makePlan } from '../../../harness/rollout-fixtures.js';
import { authorityFor, closure, desiredWith, intent, result, signed, status, statusDoc, T0 } from './view-fixtures.js';

const org = makeTestOrg();
const policy = basePolicy(org);
const h1 = generateSigningKey('h1');
const forger = generateSigningKey('forger');
const genuine = closure('a', 'nixos-system-h1');
const authority = authorityFor(org, policy, { h1, 'prod-1': generateSigningKey('prod-1') });

function view(host: string, inputs: Partial<HostViewInputs>) {
  return hostViewFromDocuments(host, {
    desired: new Y.Doc(),
    status: new Y.Doc(),
    awarenessStates: [],
    authority: null,
    now: T0,
    ...inputs,
  });
}

test('an empty host is not found; unreadableView says why and shows nothing', () => {
  const empty = view('h9', {});
  assert.is(empty.found, false);
  assert.is(empty.desired, null);
  assert.is(empty.hostKeys, 'unverified');
  const unreadable = unreadableView('h1', 'refused (4403)', authority);
  assert.is(unreadable.unreadable, 'refused (4403)');
  assert.is(unreadable.hostKeys, 'enrollment');
  assert.is(unreadable.enrolledKey, h1.publicKey);
  assert.is(unreadable.desired, null);
});

test('the newest intent is shown; its signature is checked, and trusted only with an admin key', () => {
  const older = signed(intent('h1', 1, genuine), org.alice);
  const newer = signed(intent('h1', 2, closure('b', 'nixos-system-h1')), org.alice);
  const other = signed(intent('h2', 7, genuine), org.alice);
  const v = view('h1', { desired: desiredWith(newer, older, other), adminKeys: new Set([org.alice.publicKey]) });
  assert.is(v.found, true);
  assert.is(v.desired?.generation, 2);
  assert.is(v.desired?.signatureValid, true);
  assert.is(v.desired?.trustedSigner, true);
  assert.is(v.desired?.rollout, undefined);
  // Not an admin key: valid signature, untrusted signer.
  assert.is(
    view('h1', { desired: desiredWith(newer), adminKeys: new Set([org.bob.publicKey]) }).desired?.trustedSigner,
    false,
  );
  // Altered after signing: the signature does not verify.
  const altered: SignedIntent = { ...newer, intent: { ...newer.intent, closure: closure('c', 'evil') } };
  const bad = view('h1', { desired: desiredWith(altered) });
  assert.is(bad.desired?.signatureValid, false);
  assert.is(bad.desired?.trustedSigner, null);
});

test('with an authority, intent signers count under the policy; a group needing two admins shows co-signing progress', () => {
  const byCarol = view('h1', {
    desired: desiredWith(signed(intent('h1', 1, genuine, { issuer: 'carol' }), org.carol)),
    authority,
  });
  assert.is(byCarol.desired?.trustedSigner, false);
  assert.match(String(byCarol.desired?.untrustedBecause), /carol lacks 'deploy' for host h1/);
  const prodIntent = intent('prod-1', 1, closure('d', 'nixos-system-prod-1'));
  const alone = view('prod-1', { desired: desiredWith(signed(prodIntent, org.alice)), authority });
  assert.is(alone.desired?.trustedSigner, false);
  assert.equal(alone.desired?.coSigning?.signed, ['alice']);
  assert.is(alone.desired?.coSigning?.missing, 1);
  assert.ok(alone.desired?.coSigning?.couldSign.includes('bob'));
  // Bob's signature in an envelope of its own counts together with alice's.
  const both = view('prod-1', {
    desired: desiredWith(signed(prodIntent, org.alice), signed(prodIntent, org.bob)),
    authority,
  });
  assert.is(both.desired?.trustedSigner, true);
  assert.is(both.desired?.coSigning?.missing, 0);
});

test("with an authority, a status or result counts only under the host's enrolled key", () => {
  const statusByH1 = { status: status('h1', 'idle', { generation: 1, closure: genuine }), key: h1 };
  const good = view('h1', {
    status: statusDoc(statusByH1, [
      { result: result('h1', 1, 1, genuine), key: h1 },
      { result: result('h1', 2, 99, closure('g', 'patched')), key: forger },
    ]),
    authority,
  });
  assert.is(good.hostKeys, 'enrollment');
  assert.is(good.statusSignatureValid, true);
  assert.equal(good.applied, { generation: 1, closure: genuine });
  assert.is(good.lastResult?.seq, 1, 'the forged seq 2 does not count');
  assert.is(good.rejectedResults.count, 1);
  assert.match(String(good.rejectedResults.firstReason), /not h1's enrolled key .*forged/);

  const forged = view('h1', {
    status: statusDoc({
      status: status('h1', 'applied', { generation: 99, closure: closure('g', 'patched') }),
      key: forger,
    }),
    authority,
  });
  assert.is(forged.statusSignatureValid, false);
  assert.is(forged.applied, null, 'nothing a rejected status claims is shown');
  assert.is(forged.phase, null);
  assert.is(forged.rejectedStatus?.signer, forger.publicKey);
  // A host with no enrolled key: nothing it signs counts.
  const stranger = generateSigningKey('h3');
  const unenrolled = view('h3', {
    status: statusDoc({ status: status('h3', 'idle', null), key: stranger }),
    authority,
  });
  assert.match(String(unenrolled.rejectedStatus?.reason), /h3 has no enrolled key under policy 1/);
});

test("without an authority, the status's own signer is what results are compared with (unverified)", () => {
  const v = view('h1', {
    status: statusDoc({ status: status('h1', 'idle', { generation: 1, closure: genuine }), key: forger }, [
      { result: result('h1', 1, 1, genuine), key: forger },
      { result: result('h1', 2, 2, genuine), key: h1 },
    ]),
  });
  assert.is(v.hostKeys, 'unverified');
  assert.is(v.hostKey, forger.publicKey);
  assert.is(v.statusSignatureValid, true);
  assert.equal(v.applied, { generation: 1, closure: genuine });
  assert.is(v.lastResult?.seq, 1);
  assert.is(v.rejectedResults.count, 1);
  // A signature that does not verify is named as such.
  const r = result('h1', 3, 3, genuine);
  const other = result('h1', 4, 3, genuine);
  // h1's signature over another result, copied onto this one.
  const junk = signPayload('result', other, h1);
  assert.is(reportProblem('result', r, junk, 'h1', h1.publicKey, null), 'its signature does not verify');
});

test("live download progress comes from the agent's awareness while it downloads, else the signed milestone", () => {
  const progress = {
    pathsDone: 1,
    pathsTotal: 4,
    bytesDone: 10,
    bytesTotal: 40,
    bytesPerSecond: 5,
    startedAt: new Date(T0).toISOString(),
  };
  const downloading = statusDoc({
    status: status('h1', 'downloading', null, { progress: { ...progress, bytesDone: 4 } }),
    key: h1,
  });
  const live = view('h1', {
    status: downloading,
    awarenessStates: [{ role: 'agent', progress }, { role: 'admin' }],
    authority,
  });
  assert.is(live.online, true);
  assert.equal(live.progress, { ...progress, live: true });
  const offline = view('h1', { status: downloading, authority, presence: { online: false, lastSeen: 'yesterday' } });
  assert.is(offline.online, false);
  assert.is(offline.lastSeen, 'yesterday');
  assert.equal(offline.progress, { ...progress, bytesDone: 4, live: false });
});

// --- rollout intents ---------------------------------------------------------------------------

const fixture = (host: string, c = 'a'): FixtureHost => ({
  host,
  key: generateSigningKey(host),
  closure: closure(c, `nixos-system-${host}`),
});
const plan = makePlan(org.alice, {
  id: 'r1',
  createdAt: T0,
  waves: [
    { name: 'first', hosts: [fixture('h1'), fixture('prod-1')] },
    { name: 'second', hosts: [fixture('h2')] },
  ],
});
const digest = planDigest(plan.plan);
const rolloutIntent = (signedPlan: SignedPlan, host: string): SignedIntent =>
  deriveRolloutIntent(signedPlan, planDigest(signedPlan.plan), placeHosts(signedPlan.plan).get(host)!);
function rolloutDoc(entries: Parameters<typeof appendRolloutEntries>[1]): Y.Doc {
  const doc = new Y.Doc();
  appendRolloutEntries(doc, entries);
  return doc;
}
const withPlan = rolloutDoc({ plans: [plan] });

test('rolloutDocumentsNeeded names the rollout document of the newest intent only', () => {
  assert.equal(rolloutDocumentsNeeded('h1', desiredWith(rolloutIntent(plan, 'h1'))), [rolloutDocName('r1')]);
  const later = signed(intent('h1', 5, genuine), org.alice);
  assert.equal(rolloutDocumentsNeeded('h1', desiredWith(rolloutIntent(plan, 'h1'), later)), []);
  assert.equal(rolloutDocumentsNeeded('h1', new Y.Doc()), []);
});

test('a rollout intent is valid only as the signed plan gives it; without the plan it is unverified', () => {
  const genuineIntent = rolloutIntent(plan, 'h1');
  const lookup = (doc: Y.Doc | null) => (name: string) => (name === rolloutDocName('r1') ? doc : null);
  const valid = view('h1', { desired: desiredWith(genuineIntent), authority, rolloutDocument: lookup(withPlan) });
  assert.is(valid.desired?.signatureValid, true);
  assert.is(valid.desired?.trustedSigner, true);
  assert.equal(valid.desired?.rollout, {
    id: 'r1',
    wave: 1,
    plan: digest,
    verdict: 'valid',
    reason: null,
    signers: ['alice'],
  });

  const notRead = view('h1', { desired: desiredWith(genuineIntent), authority });
  assert.is(notRead.desired?.signatureValid, false);
  assert.is(notRead.desired?.trustedSigner, null);
  assert.is(notRead.desired?.rollout?.verdict, 'unverified');
  assert.is(notRead.desired?.rollout?.reason, 'plan not available: fleet/rollout-r1 was not read');

  // The document holds the plan, but a copy whose issuer signature fails is no plan.
  const altered = rolloutDoc({ plans: [{ ...plan, plan: { ...plan.plan, release: 'evil' } }] });
  const withoutPlan = checkRolloutIntent(genuineIntent, 'h1', altered, authority);
  assert.is(withoutPlan.check.verdict, 'unverified');
  assert.match(String(withoutPlan.check.reason), /holds no plan with digest/);
});

test('a rollout intent for another wave, host, closure or expiry than the plan gives is invalid', () => {
  const base = rolloutIntent(plan, 'h2');
  const cases: [SignedIntent, string, RegExp][] = [
    [
      { ...base, intent: { ...base.intent, rollout: { ...base.intent.rollout!, wave: 1 } } },
      'h2',
      /puts h2 in wave 2, not 1/,
    ],
    [{ ...base, intent: { ...base.intent, host: 'h3' } }, 'h3', /has no wave for h3/],
    [{ ...base, intent: { ...base.intent, generation: 9 } }, 'h2', /gives h2 generation 2 of .*, not generation 9/],
    [
      { ...base, intent: { ...base.intent, expiresAt: new Date(T0 + 999 * 86_400_000).toISOString() } },
      'h2',
      /differs from the intent the signed plan gives h2 \(expiresAt\)/,
    ],
  ];
  for (const [forged, host, reason] of cases) {
    const verdict = checkRolloutIntent(forged, host, withPlan, authority);
    assert.is(verdict.check.verdict, 'invalid', String(reason));
    assert.match(String(verdict.check.reason), reason);
    assert.is(verdict.trustedSigner, null);
    const v = view(host, { desired: desiredWith(forged), authority, rolloutDocument: () => withPlan });
    assert.is(v.desired?.signatureValid, false, String(reason));
  }
});

test("a rollout intent's signers: the plan's issuer and co-signers under the policy; a stranger's plan is untrusted", () => {
  const prod = rolloutIntent(plan, 'prod-1');
  const alone = checkRolloutIntent(prod, 'prod-1', withPlan, authority);
  assert.is(alone.check.verdict, 'valid');
  assert.is(alone.trustedSigner, false);
  assert.match(String(alone.untrustedBecause), /1 of 2 required admin signatures for prod-1/);
  const cosigned = rolloutDoc({ plans: [plan], cosignatures: [cosignPlan(plan.plan, org.bob)] });
  const both = checkRolloutIntent(prod, 'prod-1', cosigned, authority);
  assert.is(both.trustedSigner, true);
  assert.equal(both.check.signers, ['alice', 'bob']);

  const mallory = generateSigningKey('mallory');
  const own = makePlan(mallory, { id: 'r1', createdAt: T0, waves: [{ name: 'only', hosts: [fixture('h1', 'f')] }] });
  const byMallory = checkRolloutIntent(rolloutIntent(own, 'h1'), 'h1', rolloutDoc({ plans: [plan, own] }), authority);
  assert.is(byMallory.check.verdict, 'valid');
  assert.is(byMallory.trustedSigner, false);
  assert.match(String(byMallory.untrustedBecause), /not an admin key under policy 1/);
  // Without an authority: trusted only when an admin key (adminKeys) signed the plan.
  const keys = new Set([org.alice.publicKey]);
  assert.is(
    checkRolloutIntent(rolloutIntent(own, 'h1'), 'h1', rolloutDoc({ plans: [own] }), null, keys).trustedSigner,
    false,
  );
  assert.is(checkRolloutIntent(rolloutIntent(plan, 'h1'), 'h1', withPlan, null, keys).trustedSigner, true);
  assert.is(checkRolloutIntent(rolloutIntent(plan, 'h1'), 'h1', withPlan, null).trustedSigner, null);
});

test.run();
