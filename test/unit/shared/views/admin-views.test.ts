import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as Y from 'yjs';
import { generateSigningKey } from '../../../../shared/crypto/keys.js';
import { signPayload } from '../../../../shared/crypto/signatures.js';
import type { IntentEntry } from '../../../../shared/documents/desired.js';
import { appendRolloutEntries } from '../../../../shared/rollout/document.js';
import { cosignPlan } from '../../../../shared/rollout/sign.js';
import type { Intent, SignedIntent } from '../../../../shared/schemas/intent.js';
import { signEnrollRequest } from '../../../../shared/trust/sign-enroll-request.js';
import { signIntent } from '../../../../shared/trust/sign-intent.js';
import { alreadySigned, coSignedIntent, findProposal, mayApprove } from '../../../../shared/views/co-sign.js';
import { draftEnrollment, mayEnroll, pendingRequests } from '../../../../shared/views/enrollment-view.js';
import { hostTimeline } from '../../../../shared/views/host-timeline.js';
import { policyRootSigners } from '../../../../shared/views/policy-signers.js';
import {
  actionHosts,
  draftRolloutAction,
  mayActOnRollout,
  withPendingEntries,
} from '../../../../shared/views/rollout-actions.js';
import { judgeRolloutDocument } from '../../../../shared/views/rollout-judged.js';
import { basePolicy, makeTestOrg, signPolicy } from '../../../harness/policy-fixtures.js';
import { fixtureHosts, makePlan } from '../../../harness/rollout-fixtures.js';
import { authorityFor, closure, desiredWith, T0, intent as viewIntent, signed as viewSigned } from './view-fixtures.js';

// The admin's side shared by the CLI and the web editor (shared/views/): what may be approved,
// whether a key's signature would count, and what is signed. prod-1 is in group production
// (two admins); alice deploys everywhere and enrolls, bob deploys on production, carol reads.
const org = makeTestOrg();
const v1 = basePolicy(org);
const now = Date.parse('2026-11-22T12:00:00.000Z');

const intent = (overrides: Partial<Intent> = {}): Intent => ({
  kind: 'intent',
  host: 'prod-1',
  generation: 3,
  closure: `/nix/store/${'a'.repeat(32)}-nixos-system`,
  action: 'switch',
  issuedAt: new Date(now - 1000).toISOString(),
  expiresAt: new Date(now + 3_600_000).toISOString(),
  issuer: 'alice',
  policyVersion: 1,
  ...overrides,
});
const entry = (signed: SignedIntent): IntentEntry => ({ signed }) as IntentEntry;

test('findProposal: the newest validly signed intent, with who signed and who is missing', () => {
  const byAlice = signIntent(intent(), org.alice);
  const found = findProposal(
    [entry(signIntent(intent({ generation: 2 }), org.alice)), entry(byAlice)],
    'prod-1',
    [v1],
    {
      now,
    },
  );
  assert.ok(found.ok, found.ok ? '' : found.reason);
  if (!found.ok) return;
  assert.is(found.generation, 3);
  assert.equal(found.signing.progress, { threshold: 2, signed: ['alice'], missing: 1, couldSign: ['bob'] });
  assert.ok(alreadySigned(found, org.alice.publicKey));
  assert.not.ok(alreadySigned(found, org.bob.publicKey));
  const mine = signPayload('intent', found.intent, org.bob);
  assert.equal(coSignedIntent(found, mine).signatures, [mine, byAlice.signatures[0]!], 'own signature first');
});

test('findProposal refuses what no admin validly signed: a signature copied from another intent, or none', () => {
  const genuine = signIntent(intent({ generation: 1 }), org.alice);
  const copied = {
    intent: intent({ generation: 2, closure: `/nix/store/${'d'.repeat(32)}-backdoor` }),
    signatures: genuine.signatures,
  };
  const found = findProposal([entry(genuine), entry(copied)], 'prod-1', [v1], { now });
  assert.not.ok(found.ok);
  assert.match(
    (found as { reason: string }).reason,
    /no admin validly signed prod-1's generation 2 .*alice does not verify/,
  );
  assert.match(
    (findProposal([], 'prod-1', [v1], { now }) as { reason: string }).reason,
    /prod-1 has no intent to approve/,
  );
});

test('findProposal refuses an equivocation, a closure other than the one reviewed, and an expired intent', () => {
  const one = signIntent(intent(), org.alice);
  const other = signIntent(intent({ closure: `/nix/store/${'c'.repeat(32)}-nixos-system` }), org.alice);
  assert.match(
    (findProposal([entry(one), entry(other)], 'prod-1', [v1], { now }) as { reason: string }).reason,
    /2 different validly signed intents claim generation 3 .*equivocation/,
  );
  assert.match(
    (findProposal([entry(one)], 'prod-1', [v1], { now, closure: other.intent.closure }) as { reason: string }).reason,
    /installs .* not .* that you gave/,
  );
  assert.match(
    (findProposal([entry(one)], 'prod-1', [v1], { now: now + 7_200_000 }) as { reason: string }).reason,
    /agents will refuse it whatever is signed/,
  );
});

test('mayApprove: only an admin with deploy on the host; a revoked key is told so', () => {
  assert.equal(mayApprove(v1, org.bob.publicKey, 'prod-1'), { ok: true });
  assert.match((mayApprove(v1, org.carol.publicKey, 'prod-1') as { reason: string }).reason, /carol lacks 'deploy'/);
  assert.match(
    (mayApprove(v1, org.bob.publicKey, 'h1') as { reason: string }).reason,
    /bob lacks 'deploy' for host h1/,
  );
  const revoked = basePolicy(org, { revokedKeys: [org.bob.publicKey] });
  assert.match((mayApprove(revoked, org.bob.publicKey, 'prod-1') as { reason: string }).reason, /revoked/);
});

test('rollout actions: deploy on every host concerned (an approval: its wave), the CLI action with the next seq', () => {
  const hosts = fixtureHosts(3);
  const signed = makePlan(org.alice, {
    waves: [
      { name: 'first', hosts: hosts.slice(0, 1) },
      { name: 'second', hosts: hosts.slice(1) },
    ],
  });
  const { plan } = signed;
  assert.equal(actionHosts(plan, 'approve', 2), ['h2', 'h3']);
  assert.equal(actionHosts(plan, 'pause'), ['h1', 'h2', 'h3']);
  assert.equal(mayActOnRollout(v1, org.alice.publicKey, plan, 'pause'), { ok: true, admin: 'alice' });
  assert.match(
    (mayActOnRollout(v1, org.bob.publicKey, plan, 'pause') as { reason: string }).reason,
    /bob lacks 'deploy' for h1, h2, h3/,
  );
  assert.match(
    (mayActOnRollout(v1, org.alice.publicKey, plan, 'approve', 3) as { reason: string }).reason,
    /no wave 3/,
  );
  const first = draftRolloutAction(plan, { actions: [] }, 'pause', 'alice', now, { reason: 'why' });
  assert.is(first.seq, 1);
  assert.is(first.reason, 'why');
  const signedFirst = { action: first, signature: signPayload('rollout-action', first, org.alice) };
  const second = draftRolloutAction(plan, { actions: [signedFirst] }, 'approve', 'alice', now, { wave: 2 });
  assert.equal([second.seq, second.wave, second.verb], [2, 2, 'approve']);
  assert.throws(
    () => draftRolloutAction(plan, { actions: [] }, 'pause', 'alice', now, { wave: 2 }),
    /only an approval names a wave/,
  );
});

test('rollout actions signed offline: judged with the document as if arrived, numbered above, never remembered as the document', () => {
  const signed = makePlan(org.alice, {
    waves: [
      { name: 'first', hosts: fixtureHosts(1) },
      { name: 'second', hosts: fixtureHosts(2).slice(1), gate: { approval: true } },
    ],
  });
  const at = Date.parse(signed.plan.createdAt) + 60_000;
  const doc = new Y.Doc();
  appendRolloutEntries(doc, { plans: [signed] });
  const sign = (action: ReturnType<typeof draftRolloutAction>) => ({
    action,
    signature: signPayload('rollout-action', action, org.alice),
  });
  const pause = sign(draftRolloutAction(signed.plan, { actions: [] }, 'pause', 'alice', at));
  const entries = withPendingEntries({ actions: [], cosignatures: [] }, { actions: [pause] });
  const resume = sign(draftRolloutAction(signed.plan, entries, 'resume', 'alice', at + 1));
  assert.equal([pause.action.seq, resume.action.seq], [1, 2], 'the resume is numbered above the waiting pause');
  const judged = (pending: (typeof pause)[]) => {
    const j = judgeRolloutDocument(doc, [v1], at + 2, { actions: pending });
    return j.ok ? j.view.state : j.reason;
  };
  assert.is(judged([]), 'running');
  assert.is(judged([pause]), 'paused');
  assert.is(judged([pause, resume]), 'running', 'the newest (by seq) decides');
  assert.is(judged([]), 'running', 'a judgement with waiting actions is not remembered as the document');
  // Arrived: the document holds it, nothing is added twice.
  appendRolloutEntries(doc, { actions: [pause] });
  const held = withPendingEntries({ actions: [pause], cosignatures: [] }, { actions: [pause] });
  assert.is(held.actions.length, 1);
  assert.is(judged([pause]), 'paused');
  // A forged action waiting here counts no more than it would in the document.
  const forged = { ...resume, action: { ...resume.action, seq: 9 } };
  const j = judgeRolloutDocument(doc, [v1], at + 2, { actions: [forged] });
  assert.ok(j.ok && j.view.state === 'paused' && j.view.actions.rejected.length === 1);
});

test('a plan co-signature signed offline: judged with the document as if arrived (a group needing two admins opens)', () => {
  const [prod] = fixtureHosts(1, 'r1', 'prod-');
  const signed = makePlan(org.alice, { waves: [{ name: 'only', hosts: [prod!] }] });
  const at = Date.parse(signed.plan.createdAt) + 60_000;
  const doc = new Y.Doc();
  appendRolloutEntries(doc, { plans: [signed] });
  const open = (pending: Parameters<typeof judgeRolloutDocument>[3]) => {
    const j = judgeRolloutDocument(doc, [v1], at, pending);
    return j.ok && j.view.waves[0]!.open;
  };
  assert.is(prod!.host, 'prod-1');
  assert.is(open({}), false, 'production needs two admins: alice alone is not enough');
  const bob = cosignPlan(signed.plan, org.bob);
  assert.is(open({ cosignatures: [bob] }), true);
  assert.is(open({}), false, 'not remembered as the document');
  const carol = cosignPlan(signed.plan, org.carol);
  assert.is(open({ cosignatures: [carol] }), false, 'carol has no deploy: her signature does not count here either');
});

test('enrollment: requests that prove their key and are not bound; enroll capability; the enrollment signed', () => {
  const h3 = generateSigningKey('h3');
  const good = signEnrollRequest(h3, 'h3', undefined, new Date(now));
  const forged = { ...good, request: { ...good.request, host: 'h4' } };
  const pending = pendingRequests([good, forged], () => false, v1, null);
  assert.equal(
    pending.map((p) => p.host),
    ['h3'],
    'a request whose signature does not cover what it says is dropped',
  );
  assert.equal(
    pendingRequests([good], (host, key) => host === 'h3' && key === h3.publicKey, v1, null),
    [],
  );
  assert.equal(mayEnroll(v1, org.alice.publicKey, 'h3'), { ok: true });
  assert.match((mayEnroll(v1, org.bob.publicKey, 'h3') as { reason: string }).reason, /bob lacks 'enroll' for host h3/);
  const enrollment = draftEnrollment({ host: 'h3', hostKey: h3.publicKey, policyVersion: 1 }, new Date(now));
  assert.equal(enrollment, {
    kind: 'enrollment',
    host: 'h3',
    hostKey: h3.publicKey,
    policyVersion: 1,
    approvedAt: new Date(now).toISOString(),
  });
});

test('policy signers: root keys of this and the previous version, copies pooled, junk not counted', () => {
  const newRoot = generateSigningKey('root-2');
  const v2 = basePolicy(org, { version: 2, root: { keys: [newRoot.publicKey], threshold: 1 } });
  const byOld = signPolicy(v2, org.root);
  const byNew = signPolicy(v2, newRoot);
  const junk = { policy: v2, signatures: [{ publicKey: org.carol.publicKey, signature: `${'A'.repeat(86)}==` }] };
  const { signers, invalid } = policyRootSigners([byOld, byNew, junk, signPolicy(v1, org.root)], v2, v1);
  assert.equal(signers, [
    { key: newRoot.publicKey, of: ['this version'], signed: true },
    { key: org.root.publicKey, of: ['previous version'], signed: true },
  ]);
  assert.is(invalid, 1);
});

test('timeline: an intent awaiting co-signers is marked so; once bob co-signs, every copy counts; a copied signature stays untrusted', () => {
  const prod1 = generateSigningKey('prod-1');
  const authority = authorityFor(org, v1, { 'prod-1': prod1 });
  const content = viewIntent('prod-1', 1, closure('a', 'one'));
  const byAlice = viewSigned(content, org.alice);
  const forged = { intent: viewIntent('prod-1', 2, closure('d', 'backdoor')), signatures: byAlice.signatures };
  const marks = (doc: ReturnType<typeof desiredWith>) =>
    hostTimeline('prod-1', doc, { results: [], hostKeys: 'enrollment' }, authority, T0 + 1000)
      .filter((e) => e.kind === 'intent')
      .map((e) => [e.generation, e.mark, e.note]);
  assert.equal(marks(desiredWith(byAlice, forged)), [
    [1, 'awaiting', '1 of 2 admin signatures (alice); needs 1 more of: bob'],
    [2, 'untrusted', marks(desiredWith(forged))[0]![2]],
  ]);
  assert.match(String(marks(desiredWith(forged))[0]![2]), /alice does not verify/);
  const approval = { intent: content, signatures: [signPayload('intent', content, org.bob), ...byAlice.signatures] };
  assert.equal(
    marks(desiredWith(byAlice, approval)).map((m) => m[1]),
    ['trusted', 'trusted'],
  );
});

test.run();
