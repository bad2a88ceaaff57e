import fc from 'fast-check';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { installNodeEd25519 } from '../../../../shared/node/ed25519.js';
import { decideForHost, judgeGate } from '../../../../shared/rollout/judge.js';
import { planDigest } from '../../../../shared/rollout/plan.js';
import { collectEvidence } from '../../../../shared/rollout/verify.js';
import type { SignedResult } from '../../../../shared/schemas/report.js';
import { basePolicy, makeTestOrg } from '../../../harness/policy-fixtures.js';
import { entriesOf, fixtureHosts, hostResult, makePlan } from '../../../harness/rollout-fixtures.js';

// The property the design rests on (docs/rollouts.md, "Gate semantics"): whoever relays the
// evidence can only withhold or reorder it, so a gate judged on any subset of the evidence, in any
// order, with any duplicates, must never pass when the whole evidence keeps it closed, and never
// pass earlier.
installNodeEd25519();
const org = makeTestOrg();
const chain = [basePolicy(org)];
const t0 = Date.parse('2026-12-01T12:00:00.000Z');
const wave1 = fixtureHosts(8, 'r1', 'a');
const wave2 = fixtureHosts(2, 'r1', 'b');

const gateArbitrary = fc.record({
  minSuccessPercent: fc.integer({ min: 0, max: 100 }),
  maxFailures: fc.option(fc.integer({ min: 0, max: 9 }), { nil: null }),
  soakSeconds: fc.integer({ min: 0, max: 3600 }),
});
// Per wave-1 host: no result, a success or a failure (or both), at some minute.
const outcomeArbitrary = fc.array(
  fc.record({
    kind: fc.constantFrom('none', 'applied', 'failed', 'rolled-back', 'refused', 'failed-then-applied'),
    minute: fc.integer({ min: 0, max: 120 }),
  }),
  { minLength: wave1.length, maxLength: wave1.length },
);

function scenario(
  gate: { minSuccessPercent: number; maxFailures: number | null; soakSeconds: number },
  outcomes: { kind: string; minute: number }[],
) {
  const plan = makePlan(org.alice, {
    waves: [
      { name: 'first', hosts: wave1, gate: { ...gate, approval: false } },
      { name: 'final', hosts: wave2 },
    ],
    createdAt: t0,
  });
  const evidence: SignedResult[] = [];
  outcomes.forEach((o, i) => {
    const at = t0 + o.minute * 60_000;
    if (o.kind === 'none') return;
    if (o.kind === 'failed-then-applied') {
      evidence.push(hostResult(plan, wave1[i]!, 'failed', at));
      evidence.push(hostResult(plan, wave1[i]!, 'applied', at + 60_000));
    } else evidence.push(hostResult(plan, wave1[i]!, o.kind as 'applied', at));
  });
  return { plan, digest: planDigest(plan.plan), evidence };
}

test('withheld, reordered or duplicated evidence never opens a gate the whole evidence keeps closed, nor earlier', () => {
  fc.assert(
    fc.property(
      gateArbitrary,
      outcomeArbitrary,
      fc.array(fc.nat(), { maxLength: 40 }),
      fc.integer({ min: 0, max: 300 }),
      (gate, outcomes, picks, nowMinute) => {
        const { plan, digest, evidence } = scenario(gate, outcomes);
        // The relay's view: any selection (with repeats) of the evidence, in any order.
        const shown = evidence.length ? picks.map((p) => evidence[p % evidence.length]!) : [];
        const now = t0 + nowMinute * 60_000;
        const judge = (items: SignedResult[]) =>
          judgeGate(plan.plan.waves[0]!, collectEvidence(plan, digest, items).waves.get(0), now);
        const whole = judge(evidence);
        const part = judge(shown);
        if (part.passed) assert.ok(whole.passed, `part passed (${part.reason}) but whole did not (${whole.reason})`);
        if (part.soakEndsAt !== null) assert.ok(whole.soakEndsAt !== null && whole.soakEndsAt <= part.soakEndsAt);
        // The agent's full decision agrees with the gate.
        const decision = decideForHost(entriesOf([plan], { evidence: shown }), digest, { host: 'b1', chain, now });
        if (decision.decision === 'go') assert.ok(whole.passed);
      },
    ),
    { numRuns: 300 },
  );
});

test('a gate is a function of which hosts proved what: order and duplicates change nothing', () => {
  fc.assert(
    fc.property(gateArbitrary, outcomeArbitrary, fc.integer({ min: 0, max: 300 }), (gate, outcomes, nowMinute) => {
      const { plan, digest, evidence } = scenario(gate, outcomes);
      const now = t0 + nowMinute * 60_000;
      const judge = (items: SignedResult[]) =>
        judgeGate(plan.plan.waves[0]!, collectEvidence(plan, digest, items).waves.get(0), now);
      const forward = judge(evidence);
      const shuffled = judge([...evidence].reverse().concat(evidence));
      assert.equal(
        { ...shuffled, failures: shuffled.failures.length },
        { ...forward, failures: forward.failures.length },
      );
    }),
    { numRuns: 200 },
  );
});

test.run();
