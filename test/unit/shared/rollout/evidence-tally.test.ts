import fc from 'fast-check';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { generateSigningKey } from '../../../../shared/crypto/keys.js';
import { installNodeEd25519 } from '../../../../shared/node/ed25519.js';
import { judgeRollout, newJudgeMemo, type RolloutView } from '../../../../shared/rollout/judge.js';
import { planDigest } from '../../../../shared/rollout/plan.js';
import { collectEvidence, EvidenceTally } from '../../../../shared/rollout/verify.js';
import type { SignedResult } from '../../../../shared/schemas/report.js';
import { basePolicy, makeTestOrg } from '../../../harness/policy-fixtures.js';
import { entriesOf, fixtureHosts, hostResult, makePlan } from '../../../harness/rollout-fixtures.js';

// The coordinator judges a rollout again at every batch of evidence, with a memo that tallies only
// the entries added since its last judgement (EvidenceTally). Its verdicts must be the ones a
// reader judging the whole evidence afresh gets, whatever arrives in whatever order: forged,
// wrong-key, other-host and duplicate results, failures then successes, entries inserted before
// the end (a concurrent writer), and a revocation in the middle.
installNodeEd25519();
const org = makeTestOrg();
const t0 = Date.parse('2026-12-01T12:00:00.000Z');
const wave1 = fixtureHosts(6, 'r1', 'a');
const wave2 = fixtureHosts(4, 'r1', 'b');
const wave3 = fixtureHosts(2, 'r1', 'c');
const plan = makePlan(org.alice, {
  waves: [
    { name: 'first', hosts: wave1, gate: { minSuccessPercent: 50, maxFailures: 2, soakSeconds: 60 } },
    { name: 'middle', hosts: wave2, gate: { minSuccessPercent: 100, maxFailures: null, soakSeconds: 0 } },
    { name: 'final', hosts: wave3 },
  ],
  createdAt: t0,
});
const stranger = generateSigningKey('stranger');
const outsider = fixtureHosts(1, 'r1', 'z')[0]!;
const everyHost = [...wave1, ...wave2, ...wave3];

// Every kind of entry a writer could put in the evidence.
const kinds = ['applied', 'failed', 'refused', 'forged', 'other-intent', 'not-in-plan'] as const;
function entryOf(kind: (typeof kinds)[number], hostIndex: number, minute: number): SignedResult {
  const host = everyHost[hostIndex % everyHost.length]!;
  const at = t0 + minute * 60_000;
  switch (kind) {
    case 'forged':
      return hostResult(plan, host, 'applied', at, {}, stranger);
    case 'other-intent':
      return hostResult(plan, host, 'applied', at, { generation: 9 });
    case 'not-in-plan':
      return hostResult(plan, outsider, 'applied', at);
    default:
      return hostResult(plan, host, kind, at);
  }
}

const entryArbitrary = fc.record({
  kind: fc.constantFrom(...kinds, 'applied', 'applied'),
  host: fc.nat({ max: everyHost.length - 1 }),
  minute: fc.nat({ max: 30 }),
});

// What the coordinator acts on and reports: state, gates, waves, evidence verdicts.
const verdicts = (view: RolloutView) => ({
  state: view.state,
  halted: view.halted,
  nextChangeAt: view.nextChangeAt,
  waves: view.waves.map((w) => ({ open: w.open, reason: w.reason, gate: w.gate })),
  succeeded: view.succeeded,
  rejected: view.rejectedEvidence,
});

test('judging with the memo, batch after batch, gives the verdicts of judging everything afresh', () => {
  fc.assert(
    fc.property(
      fc.array(entryArbitrary, { maxLength: 40 }),
      fc.array(fc.nat({ max: 40 }), { maxLength: 6 }),
      fc.nat({ max: 40 }),
      fc.option(fc.nat({ max: everyHost.length - 1 }), { nil: null }),
      (specs, cuts, insertAt, revokedHost) => {
        const all = specs.map((s) => entryOf(s.kind, s.host, s.minute));
        const memo = newJudgeMemo();
        const policy = basePolicy(org);
        const revoking =
          revokedHost === null ? policy : { ...policy, revokedKeys: [everyHost[revokedHost]!.key.publicKey] };
        const points = [...new Set([...cuts.map((c) => Math.min(c, all.length)), all.length])].sort((a, b) => a - b);
        points.forEach((end, step) => {
          const evidence = all.slice(0, end);
          // Halfway, an entry lands before the end (another writer's concurrent append).
          if (step === Math.floor(points.length / 2) && evidence.length > 1) {
            const moved = evidence.splice(evidence.length - 1, 1)[0]!;
            evidence.splice(insertAt % evidence.length, 0, moved);
          }
          // From the third batch on, the policy revokes a host's key.
          const chain = [step >= 2 ? revoking : policy];
          const now = t0 + 20 * 60_000;
          const entries = entriesOf([plan], { evidence });
          assert.equal(
            verdicts(judgeRollout(entries, plan, chain, now, memo)),
            verdicts(judgeRollout(entries, plan, chain, now)),
          );
        });
      },
    ),
    { numRuns: 150 },
  );
});

test('EvidenceTally.collect equals collectEvidence on every prefix, and starts over when the prefix changes', () => {
  const digest = planDigest(plan.plan);
  const evidence = [
    hostResult(plan, wave1[0]!, 'failed', t0),
    hostResult(plan, wave1[0]!, 'applied', t0 + 60_000),
    hostResult(plan, wave1[1]!, 'applied', t0, {}, stranger),
    hostResult(plan, wave1[1]!, 'applied', t0 + 120_000),
    hostResult(plan, wave1[2]!, 'failed', t0 + 180_000),
  ];
  const tally = new EvidenceTally(plan, digest);
  for (let end = 0; end <= evidence.length; end++)
    assert.equal(tally.collect(evidence.slice(0, end)), collectEvidence(plan, digest, evidence.slice(0, end)));
  const reordered = [evidence[4]!, ...evidence.slice(0, 4)];
  assert.equal(tally.collect(reordered), collectEvidence(plan, digest, reordered));
  assert.equal(tally.collect(evidence.slice(0, 2)), collectEvidence(plan, digest, evidence.slice(0, 2)));
});

test.run();
