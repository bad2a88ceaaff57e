import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { generateSigningKey } from '../../../../shared/crypto/keys.js';
import { installNodeEd25519 } from '../../../../shared/node/ed25519.js';
import { decideForHost, judgeRollout, successesNeeded } from '../../../../shared/rollout/judge.js';
import { deriveRolloutIntent, expectedResultDigest, placeHosts, planDigest } from '../../../../shared/rollout/plan.js';
import { rolloutPlanSchema, type SignedRolloutAction, signedPlanSchema } from '../../../../shared/rollout/schemas.js';
import { cosignPlan, signPlan, signRolloutAction } from '../../../../shared/rollout/sign.js';
import { intentDigest } from '../../../../shared/trust/verify-intent.js';
import { basePolicy, makeTestOrg } from '../../../harness/policy-fixtures.js';
import { entriesOf, fixtureHosts, hostResult, makePlan } from '../../../harness/rollout-fixtures.js';

// The agent's and coordinator's judgement of a rollout (shared/rollout/judge.ts): plan signers,
// gates from host-signed evidence, approvals, pause, abort, and evidence that must not count.
installNodeEd25519();
const org = makeTestOrg();
const hosts = fixtureHosts(6);
const [h1, h2, h3, h4, h5, h6] = hosts as [
  (typeof hosts)[0],
  (typeof hosts)[0],
  (typeof hosts)[0],
  (typeof hosts)[0],
  (typeof hosts)[0],
  (typeof hosts)[0],
];
const policy = basePolicy(org, {
  groups: [
    { name: 'production', hosts: ['prod-1'], threshold: 2 },
    { name: 'critical', hosts: ['h6'], threshold: 2 },
  ],
});
const chain = [policy];
const t0 = Date.parse('2026-12-01T12:00:00.000Z');
const minute = 60_000;

const plan = makePlan(org.alice, {
  waves: [
    { name: 'first', hosts: [h1, h2], gate: { soakSeconds: 600 } },
    { name: 'middle', hosts: [h3, h4], gate: { approval: true } },
    { name: 'final', hosts: [h5] },
  ],
  createdAt: t0,
});
const digest = planDigest(plan.plan);
const decide = (host: string, extra: Parameters<typeof entriesOf>[1] = {}, now = t0 + 60 * minute) =>
  decideForHost(entriesOf([plan], extra), digest, { host, chain, now });
const wave1Done = [hostResult(plan, h1, 'applied', t0 + minute), hostResult(plan, h2, 'applied', t0 + 2 * minute)];

function action(verb: SignedRolloutAction['action']['verb'], extra: Partial<SignedRolloutAction['action']> = {}) {
  return signRolloutAction(
    {
      kind: 'rollout-action',
      rollout: plan.plan.id,
      plan: digest,
      verb,
      seq: 1,
      at: new Date(t0 + 5 * minute).toISOString(),
      issuer: 'alice',
      ...extra,
    },
    org.alice,
  );
}

test('successes needed: max(1, ⌈S·n/100⌉, n − F), never more than n', () => {
  const wave = (n: number, minSuccessPercent: number, maxFailures: number | null) => ({
    name: 'w',
    hosts: hosts.slice(0, n).map((h) => ({ host: h.host, key: h.key.publicKey, closure: h.closure, generation: 1 })),
    gate: { minSuccessPercent, maxFailures, soakSeconds: 0, approval: false },
  });
  assert.is(successesNeeded(wave(3, 100, 0)), 3);
  assert.is(successesNeeded(wave(3, 100, null)), 3);
  assert.is(successesNeeded(wave(6, 50, null)), 3);
  assert.is(successesNeeded(wave(6, 50, 1)), 5, 'F binds harder than S');
  assert.is(successesNeeded(wave(6, 0, null)), 1, 'at least one host proves success');
  assert.is(successesNeeded(wave(6, 90, null)), 6, '⌈5.4⌉');
  assert.is(successesNeeded(wave(6, 0, 10)), 1);
});

test('wave 1 may start at once; wave 2 waits for proven successes, then the soak, judged against the signed result times', () => {
  const first = decide('h1');
  assert.is(first.decision, 'go');
  if (first.decision !== 'go') return;
  assert.equal(first.intent.intent.rollout, { id: 'r1', plan: digest, wave: 1 });
  assert.is(first.intent.intent.closure, h1.closure);
  const none = decide('h3');
  assert.is(none.decision, 'wait');
  assert.match(none.decision === 'wait' ? none.reason : '', /0 of 2 needed successes/);
  const half = decide('h3', { evidence: [wave1Done[0]!] });
  assert.match(half.decision === 'wait' ? half.reason : '', /1 of 2 needed/);
  // Both proven at t0+2 min; soak 600 s: until t0+12 min.
  const soaking = decide('h3', { evidence: wave1Done }, t0 + 10 * minute);
  assert.is(soaking.decision, 'wait');
  if (soaking.decision === 'wait') {
    assert.match(soaking.reason, /soaking until/);
    assert.is(soaking.retryAt, t0 + 12 * minute);
  }
  assert.is(decide('h3', { evidence: wave1Done }, t0 + 12 * minute).decision, 'go');
});

test("a gate that needs approval waits for an admin's signed approval of that wave", () => {
  const wave2Done = [
    hostResult(plan, h3, 'applied', t0 + 20 * minute),
    hostResult(plan, h4, 'applied', t0 + 21 * minute),
  ];
  const waiting = decide('h5', { evidence: [...wave1Done, ...wave2Done] });
  assert.match(waiting.decision === 'wait' ? waiting.reason : '', /approval.*--wave 3/);
  assert.is(
    decide('h5', { evidence: [...wave1Done, ...wave2Done], actions: [action('approve', { wave: 3 })] }).decision,
    'go',
  );
  // An approval of another wave, or by an admin without deploy, does not count.
  assert.is(
    decide('h5', { evidence: [...wave1Done, ...wave2Done], actions: [action('approve', { wave: 2 })] }).decision,
    'wait',
  );
  const byCarol = signRolloutAction({ ...action('approve', { wave: 3 }).action, issuer: 'carol' }, org.carol);
  assert.is(decide('h5', { evidence: [...wave1Done, ...wave2Done], actions: [byCarol] }).decision, 'wait');
});

test('a failure in wave 1 halts the rollout: wave 2 never opens, and the view says which host and why', () => {
  const failed = [hostResult(plan, h1, 'applied', t0 + minute), hostResult(plan, h2, 'failed', t0 + 2 * minute)];
  assert.is(decide('h3', { evidence: failed }, t0 + 600 * minute).decision, 'wait');
  const view = judgeRollout(entriesOf([plan], { evidence: failed }), plan, chain, t0 + 600 * minute);
  assert.is(view.state, 'halted');
  assert.is(view.halted?.wave, 'first');
  assert.match(view.halted?.reason ?? '', /h2 failed: switch-to-configuration exited 3/);
  assert.not.ok(view.waves[1]!.open);
});

test('a pause and a resume with the same number (two admins acting at once): the pause holds, in any order and whatever their times', () => {
  const pause = action('pause', { seq: 2, at: new Date(t0 + 5 * minute).toISOString() });
  const laterResume = action('resume', { seq: 2, at: new Date(t0 + 6 * minute).toISOString() });
  const earlierResume = action('resume', { seq: 2, at: new Date(t0 + 4 * minute).toISOString() });
  for (const resume of [laterResume, earlierResume])
    for (const actions of [
      [pause, resume],
      [resume, pause],
    ])
      assert.is(decide('h1', { actions }).decision, 'wait');
  // One above both is a decision taken after seeing them: it counts.
  assert.is(decide('h1', { actions: [pause, laterResume, action('resume', { seq: 3 })] }).decision, 'go');
  // Equal numbers and equal verbs: any of them decides the same way.
  assert.is(decide('h1', { actions: [laterResume, earlierResume] }).decision, 'go');
});

test('pause holds hosts that have not started; resume (a higher seq) lets them go; abort is final and refuses', () => {
  const paused = decide('h1', { actions: [action('pause', { seq: 1 })] });
  assert.is(paused.decision, 'wait');
  assert.match(paused.decision === 'wait' ? paused.reason : '', /paused \(by alice/);
  assert.is(decide('h1', { actions: [action('pause', { seq: 1 }), action('resume', { seq: 2 })] }).decision, 'go');
  // A replayed older pause does not undo the newer resume.
  assert.is(
    decide('h1', { actions: [action('resume', { seq: 2 }), action('pause', { seq: 1 }), action('pause', { seq: 1 })] })
      .decision,
    'go',
  );
  const aborted = decide('h1', { actions: [action('abort', { seq: 3, reason: 'db migrations fail' })] });
  assert.is(aborted.decision, 'refuse');
  if (aborted.decision === 'refuse') {
    assert.is(aborted.code, 'rollout-aborted');
    assert.match(aborted.reason, /aborted by alice .*db migrations fail/);
  }
  // An action for another rollout or plan, or signed by a stranger, counts for nothing.
  const other = action('abort', { rollout: 'r2' });
  const forged = {
    ...action('abort'),
    signature: signRolloutAction(action('abort').action, generateSigningKey('mallory')).signature,
  };
  assert.is(decide('h1', { actions: [other, forged] }).decision, 'go');
  assert.is(judgeRollout(entriesOf([plan], { actions: [other, forged] }), plan, chain, t0).actions.rejected.length, 2);
});

test("the plan's signers must meet the host's threshold with deploy; a co-signature completes it", () => {
  const withCritical = makePlan(org.alice, { id: 'r2', waves: [{ name: 'only', hosts: [h6] }], createdAt: t0 });
  const criticalDigest = planDigest(withCritical.plan);
  const alone = decideForHost(entriesOf([withCritical]), criticalDigest, { host: 'h6', chain, now: t0 });
  assert.is(alone.decision, 'wait');
  assert.match(alone.decision === 'wait' ? alone.reason : '', /1 of 2 required admin signatures for h6/);
  // carol co-signs: she has no deploy, so still one admin.
  const byCarol = { ...cosignPlan(withCritical.plan, org.carol) };
  assert.is(
    decideForHost(entriesOf([withCritical], { cosignatures: [byCarol] }), criticalDigest, {
      host: 'h6',
      chain,
      now: t0,
    }).decision,
    'wait',
  );
  const critical = basePolicy(org, {
    groups: [{ name: 'critical', hosts: ['h6'], threshold: 2 }],
    roles: [
      { name: 'ops', capabilities: ['deploy', 'rollback', 'read'], hosts: ['*'], groups: [] },
      { name: 'enroller', capabilities: ['enroll'], hosts: ['*'], groups: [] },
      { name: 'prod-ops', capabilities: ['deploy', 'read'], hosts: [], groups: ['critical'] },
      { name: 'viewer', capabilities: ['read'], hosts: ['*'], groups: [] },
    ],
  });
  const bobSigns = cosignPlan(withCritical.plan, org.bob);
  // The same co-signature twice still counts once.
  const both = decideForHost(entriesOf([withCritical], { cosignatures: [bobSigns, bobSigns] }), criticalDigest, {
    host: 'h6',
    chain: [critical],
    now: t0,
  });
  assert.is(both.decision, 'go');
  // A co-signature over another plan does not count for this one.
  const wrong = { plan: criticalDigest, signature: cosignPlan(plan.plan, org.bob).signature };
  assert.is(
    decideForHost(entriesOf([withCritical], { cosignatures: [wrong] }), criticalDigest, {
      host: 'h6',
      chain: [critical],
      now: t0,
    }).decision,
    'wait',
  );
});

test('a plan signed by an admin without deploy for the host, or by a stranger, never starts it', () => {
  const byCarol = signPlan({ ...plan.plan, id: 'r3', issuer: 'carol', issuerKey: org.carol.publicKey }, org.carol);
  const d = decideForHost(entriesOf([byCarol]), planDigest(byCarol.plan), { host: 'h1', chain, now: t0 });
  assert.is(d.decision, 'wait');
  assert.match(d.decision === 'wait' ? d.reason : '', /carol lacks 'deploy' for host h1/);
  const mallory = generateSigningKey('mallory');
  const byMallory = signPlan({ ...plan.plan, id: 'r4', issuer: 'mallory', issuerKey: mallory.publicKey }, mallory);
  assert.match(
    (() => {
      const v = decideForHost(entriesOf([byMallory]), planDigest(byMallory.plan), { host: 'h1', chain, now: t0 });
      return v.decision === 'wait' ? v.reason : v.decision;
    })(),
    /not an admin key/,
  );
  // The plan's own signature must verify: a plan copied with its content changed is no plan.
  const altered = { ...plan, plan: { ...plan.plan, release: 'evil' } };
  assert.is(
    decideForHost(entriesOf([altered]), planDigest(altered.plan), { host: 'h1', chain, now: t0 }).decision,
    'wait',
  );
});

test('forged evidence does not open a gate: unenrolled key, another rollout or release, wrong host, another wave, replays', () => {
  const stranger = generateSigningKey('h1');
  const otherRelease = makePlan(org.alice, {
    id: 'r9',
    release: 'release-0',
    waves: [{ name: 'first', hosts: [h1, h2] }],
    createdAt: t0 - 86_400_000,
  });
  const forged = [
    // h1's result signed by a key the plan does not name for h1.
    hostResult(plan, h1, 'applied', t0 + minute, {}, stranger),
    // genuine results of h1 and h2 for another rollout (another release)
    hostResult(otherRelease, h1, 'applied', t0 + minute),
    hostResult(otherRelease, h2, 'applied', t0 + minute),
    // h3's genuine result (wave 2) offered as h2's: signed by h3, claims h2
    hostResult(plan, { ...h2, key: h3.key }, 'applied', t0 + minute),
    // a wave-2 host's genuine success does not count for wave 1
    hostResult(plan, h3, 'applied', t0 + minute),
    // h1's genuine success, replayed three times, counts once
    ...Array.from({ length: 3 }, () => hostResult(plan, h1, 'applied', t0 + minute)),
    // h2's result for an earlier attempt (another digest), and one with its closure changed
    hostResult(plan, h2, 'applied', t0 + minute, { intentDigest: 'a'.repeat(64) }),
  ];
  const decision = decide('h3', { evidence: forged }, t0 + 600 * minute);
  assert.is(decision.decision, 'wait');
  assert.match(decision.decision === 'wait' ? decision.reason : '', /1 of 2 needed successes/);
  const view = judgeRollout(entriesOf([plan], { evidence: forged }), plan, chain, t0 + 600 * minute);
  assert.is(view.waves[1]!.open, false);
  const reasons = view.rejectedEvidence.map((r) => r.reason).join('\n');
  assert.match(reasons, /not the key the plan names for h1/);
  assert.match(reasons, /answers another intent/);
  assert.match(reasons, /not the key the plan names for h2/);
  // With h2's genuine success added, the gate opens (after its soak).
  assert.is(decide('h3', { evidence: [...forged, wave1Done[1]!] }, t0 + 600 * minute).decision, 'go');
});

test('a host key the policy revokes no longer proves anything', () => {
  const revoked = basePolicy(org, { version: 2, revokedKeys: [h2.key.publicKey] });
  const d = decideForHost(entriesOf([plan], { evidence: wave1Done }), digest, {
    host: 'h3',
    chain: [policy, revoked],
    now: t0 + 600 * minute,
  });
  assert.is(d.decision, 'wait');
});

// The agent's answer to a placement at or below its anti-rollback floor (raised by a deploy, a
// bundle or another coordinator since the plan was made): a refusal, never a wait for ever.
const withFloor = (host: string, floor: { epoch: number; generation: number }, extra = {}, policies = chain) =>
  decideForHost(entriesOf([plan], extra), digest, { host, chain: policies, now: t0 + 60 * minute, floor });

test('a placement at or below the floor is refused, naming the generation and the floor; above it goes', () => {
  // The plan gives every host generation 2.
  const refused = withFloor('h1', { epoch: 0, generation: 5 });
  assert.is(refused.decision, 'refuse');
  if (refused.decision === 'refuse') {
    assert.is(refused.code, 'rollback');
    assert.is(
      refused.reason,
      "rollout r1: generation 2 (epoch 0) is at or below this host's floor, generation 5 (epoch 0), already applied or attempted here",
    );
    assert.is(intentDigest(refused.intent), expectedResultDigest(plan, digest, 'h1'), 'the intent its result names');
  }
  assert.is(withFloor('h1', { epoch: 0, generation: 2 }).decision, 'refuse', 'at the floor');
  assert.is(withFloor('h1', { epoch: 0, generation: 1 }).decision, 'go');
  // A higher epoch outranks any generation of a lower one.
  const epoch = withFloor('h1', { epoch: 1, generation: 0 });
  assert.match(epoch.decision === 'refuse' ? epoch.reason : '', /generation 2 \(epoch 0\) .* generation 0 \(epoch 1\)/);
  const raised = basePolicy(org, { version: 2, epoch: 2 });
  const newer = makePlan(org.alice, { id: 'r5', policyVersion: 2, waves: [{ name: 'w', hosts: [h1] }], createdAt: t0 });
  assert.is(
    decideForHost(entriesOf([newer]), planDigest(newer.plan), {
      host: 'h1',
      chain: [policy, raised],
      now: t0 + minute,
      floor: { epoch: 1, generation: 9 },
    }).decision,
    'go',
    "a plan under a higher epoch's policy ranks above the floor",
  );
  // Without a floor (the check before installing a target, which is the floor) nothing changes.
  assert.is(decideForHost(entriesOf([plan]), digest, { host: 'h1', chain, now: t0 }).decision, 'go');
});

test('the floor refusal comes before the gate and a pause, after an abort; a plan not signed enough for the host is not answered', () => {
  // h3's wave waits for wave 1's gate; it can never install generation 2 whatever the gate does.
  assert.is(withFloor('h3', { epoch: 0, generation: 3 }).decision, 'refuse');
  assert.is(withFloor('h1', { epoch: 0, generation: 3 }, { actions: [action('pause')] }).decision, 'refuse');
  const aborted = withFloor('h1', { epoch: 0, generation: 3 }, { actions: [action('abort', { seq: 2 })] });
  assert.is(aborted.decision === 'refuse' ? aborted.code : null, 'rollout-aborted');
  // h6 needs two signers: a plan signed by one is no placement, and a host answers nothing for it.
  const critical = makePlan(org.alice, { id: 'r6', waves: [{ name: 'only', hosts: [h6] }], createdAt: t0 });
  const unsigned = decideForHost(entriesOf([critical]), planDigest(critical.plan), {
    host: 'h6',
    chain,
    now: t0 + minute,
    floor: { epoch: 0, generation: 9 },
  });
  assert.is(unsigned.decision, 'wait');
});

test("a host's signed refusal fails its wave's gate, naming the host and its floor; a refusal signed by any other key, or for another placement, counts for nothing", () => {
  const floorReason =
    "rollback: rollout r1: generation 2 (epoch 0) is at or below this host's floor, generation 5 (epoch 0), already applied or attempted here";
  const refusal = hostResult(plan, h2, 'refused', t0 + 2 * minute, { reason: floorReason });
  const evidence = [hostResult(plan, h1, 'applied', t0 + minute), refusal];
  const view = judgeRollout(entriesOf([plan], { evidence }), plan, chain, t0 + 60 * minute);
  assert.is(view.state, 'halted');
  assert.is(view.halted?.wave, 'first');
  assert.match(
    view.halted?.reason ?? '',
    /h2 refused: rollback: rollout r1: generation 2 \(epoch 0\) is at or below this host's floor, generation 5 \(epoch 0\)/,
  );
  assert.is(decide('h3', { evidence }).decision, 'wait');
  // A coordinator (or any peer) forging h2's refusal: its own key, h2's key over another rollout's
  // placement, or h2's refusal of an earlier attempt; none is h2's answer to this placement.
  const coordinatorKey = generateSigningKey('coordinator');
  const otherPlan = makePlan(org.alice, { id: 'r7', waves: [{ name: 'first', hosts: [h1, h2] }], createdAt: t0 });
  const forged = [
    hostResult(plan, h1, 'applied', t0 + minute),
    hostResult(plan, h2, 'refused', t0 + 2 * minute, { reason: floorReason }, coordinatorKey),
    hostResult(otherPlan, h2, 'refused', t0 + 2 * minute, { reason: floorReason }),
    hostResult(plan, h2, 'refused', t0 + 2 * minute, { reason: floorReason, intentDigest: 'b'.repeat(64) }),
    hostResult(plan, h2, 'refused', t0 + 2 * minute, { reason: floorReason, generation: 1 }),
    { ...refusal, result: { ...refusal.result, reason: 'edited after signing' } },
  ];
  const judged = judgeRollout(entriesOf([plan], { evidence: forged }), plan, chain, t0 + 60 * minute);
  assert.is(judged.state, 'running');
  assert.is(judged.waves[0]!.gate.failures.length, 0);
  assert.is(judged.rejectedEvidence.length, 5);
});

test('the derived intent binds rollout, plan, host, closure and generation; its digest is what results name', () => {
  const placed = placeHosts(plan.plan).get('h3')!;
  const derived = deriveRolloutIntent(plan, digest, placed);
  assert.is(derived.intent.host, 'h3');
  assert.is(derived.intent.generation, 2);
  assert.equal(derived.intent.rollout, { id: 'r1', plan: digest, wave: 2 });
  assert.is(expectedResultDigest(plan, digest, 'h3'), intentDigest(derived));
  assert.is(expectedResultDigest(plan, digest, 'nobody'), null);
  const other = makePlan(org.alice, {
    id: 'r1',
    // Same id, host, closure and generation, another plan: another digest to answer.
    waves: [{ name: 'first', hosts: [h3] }],
    createdAt: t0,
  });
  assert.is.not(expectedResultDigest(other, planDigest(other.plan), 'h3'), expectedResultDigest(plan, digest, 'h3'));
});

test('plans are checked: one wave per host, ids, expiry after creation, the signature by the issuer key; unknown fields are refused by the agent', () => {
  const base = plan.plan;
  const twice = {
    ...base,
    waves: [base.waves[0]!, { ...base.waves[1]!, hosts: [...base.waves[1]!.hosts, base.waves[0]!.hosts[0]!] }],
  };
  assert.match(rolloutPlanSchema.safeParse(twice).error?.message ?? '', /h1 is in more than one wave/);
  assert.not.ok(rolloutPlanSchema.safeParse({ ...base, id: 'Bad_Id' }).success);
  assert.match(
    rolloutPlanSchema.safeParse({ ...base, expiresAt: base.createdAt }).error?.message ?? '',
    /after createdAt/,
  );
  assert.match(
    signedPlanSchema.safeParse({ plan: base, signature: cosignPlan(base, org.bob).signature }).error?.message ?? '',
    /issuerKey/,
  );
  const newer = signPlan({ ...base, id: 'r5', canary: { hosts: 1 } } as typeof base, org.alice);
  const d = decideForHost(entriesOf([newer]), planDigest(newer.plan), { host: 'h1', chain, now: t0 });
  assert.is(d.decision, 'refuse');
  if (d.decision === 'refuse') {
    assert.is(d.code, 'unknown-field');
    assert.match(d.reason, /canary.*upgrade this host's agent/);
  }
});

test('the rollout view: complete when every gate passed; waves, approvals and signers shown', () => {
  const wave2Done = [
    hostResult(plan, h3, 'applied', t0 + 20 * minute),
    hostResult(plan, h4, 'applied', t0 + 21 * minute),
  ];
  const wave3Done = [hostResult(plan, h5, 'applied', t0 + 30 * minute)];
  const running = judgeRollout(
    entriesOf([plan], { evidence: [...wave1Done, ...wave2Done] }),
    plan,
    chain,
    t0 + 25 * minute,
  );
  assert.is(running.state, 'running');
  assert.equal(
    running.waves.map((w) => w.open),
    [true, true, false],
  );
  assert.match(running.waves[2]!.reason, /waiting for approval/);
  assert.equal(running.signers, ['alice']);
  const done = judgeRollout(
    entriesOf([plan], {
      evidence: [...wave1Done, ...wave2Done, ...wave3Done],
      actions: [action('approve', { wave: 3 })],
    }),
    plan,
    chain,
    t0 + 40 * minute,
  );
  assert.is(done.state, 'complete');
  assert.equal(done.waves[2]!.approvedBy, ['alice']);
  const soaking = judgeRollout(entriesOf([plan], { evidence: wave1Done }), plan, chain, t0 + 5 * minute);
  assert.is(soaking.nextChangeAt, t0 + 12 * minute);
});

test.run();
