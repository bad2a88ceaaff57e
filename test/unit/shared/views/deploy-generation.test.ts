import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { installNodeEd25519 } from '../../../../shared/node/ed25519.js';
import { planDigest } from '../../../../shared/rollout/plan.js';
import { signRolloutAction } from '../../../../shared/rollout/sign.js';
import {
  chooseDeployGeneration,
  overRolloutWarning,
  pendingPlacements,
} from '../../../../shared/views/deploy-generation.js';
import { basePolicy, makeTestOrg } from '../../../harness/policy-fixtures.js';
import { entriesOf, fixtureHosts, hostResult, makePlan } from '../../../harness/rollout-fixtures.js';

// A deploy's generation next to rollouts (shared/views/deploy-generation.ts): the placements a
// rollout still holds, and the choice the CLI and the web editor make from them.
installNodeEd25519();
const org = makeTestOrg();
const [h1, h2] = fixtureHosts(2) as [ReturnType<typeof fixtureHosts>[0], ReturnType<typeof fixtureHosts>[0]];
const chain = [basePolicy(org)];
const t0 = Date.parse('2026-12-01T12:00:00.000Z');
const now = t0 + 3_600_000;
const plan = makePlan(org.alice, {
  id: 'r1',
  release: 'w49',
  waves: [
    { name: 'first', hosts: [h1] },
    { name: 'final', hosts: [h2] },
  ],
  createdAt: t0,
  generation: 4,
});
const abort = signRolloutAction(
  {
    kind: 'rollout-action',
    rollout: 'r1',
    plan: planDigest(plan.plan),
    verb: 'abort',
    seq: 1,
    at: new Date(t0 + 60_000).toISOString(),
    issuer: 'alice',
  },
  org.alice,
);

test('a placement above the desired document, in a rollout still delivering, is pending; delivered, aborted or complete ones are not', () => {
  const running = [{ id: 'r1', entries: entriesOf([plan]) }];
  assert.equal(pendingPlacements('h2', 3, running, chain, now), [
    { rollout: 'r1', release: 'w49', wave: 2, waveName: 'final', generation: 4, state: 'running' },
  ]);
  assert.equal(pendingPlacements('h2', 4, running, chain, now), [], 'delivered: the desired document holds it');
  assert.equal(pendingPlacements('h3', 0, running, chain, now), [], 'not in the plan');
  const aborted = [{ id: 'r1', entries: entriesOf([plan], { actions: [abort] }) }];
  assert.equal(pendingPlacements('h2', 3, aborted, chain, now), []);
  const complete = entriesOf([plan], {
    evidence: [hostResult(plan, h1, 'applied', t0 + 1000), hostResult(plan, h2, 'applied', t0 + 2000)],
  });
  assert.equal(pendingPlacements('h2', 3, [{ id: 'r1', entries: complete }], chain, now), []);
  assert.equal(pendingPlacements('h2', 3, running, chain, t0 + 61 * 86_400_000), [], 'expired');
});

const pending = pendingPlacements('h2', 3, [{ id: 'r1', entries: entriesOf([plan]) }], chain, now);

test('without a generation: the next one when nothing is pending, else refused naming the rollout and the ways out', () => {
  assert.equal(chooseDeployGeneration({ host: 'h2', desiredHighest: 3, pending: [], canNameGeneration: true }), {
    ok: true,
    generation: 4,
    previousHighest: 3,
    overRollouts: [],
  });
  const cli = chooseDeployGeneration({ host: 'h2', desiredHighest: 3, pending, canNameGeneration: true });
  assert.not.ok(cli.ok);
  if (cli.ok) return;
  assert.match(
    cli.reason,
    /^h2 is in wave 2 \(final\) of rollout r1 \(release w49, running\), which gives it generation 4/,
  );
  assert.match(cli.reason, /'outpost rollout wait r1'.*'outpost rollout abort r1'.*--generation 5/);
  const page = chooseDeployGeneration({ host: 'h2', desiredHighest: 3, pending, canNameGeneration: false });
  assert.ok(!page.ok && !page.reason.includes('--generation'));
});

test('a named generation: at or below a pending placement refused (unless --force), above it signed with a warning', () => {
  const taken = chooseDeployGeneration({
    host: 'h2',
    desiredHighest: 3,
    pending,
    requested: 4,
    canNameGeneration: true,
  });
  assert.ok(!taken.ok && /generation 4 is not above 4, which wave 2 \(final\) of rollout r1/.test(taken.reason));
  const stale = chooseDeployGeneration({
    host: 'h2',
    desiredHighest: 3,
    pending,
    requested: 3,
    canNameGeneration: true,
  });
  assert.ok(!stale.ok && /not above 3, the highest already issued/.test(stale.reason));
  const over = chooseDeployGeneration({
    host: 'h2',
    desiredHighest: 3,
    pending,
    requested: 5,
    canNameGeneration: true,
  });
  assert.ok(over.ok);
  if (!over.ok) return;
  assert.is(over.generation, 5);
  assert.is(over.previousHighest, 4);
  assert.equal(
    over.overRollouts.map((p) => p.rollout),
    ['r1'],
  );
  assert.match(
    overRolloutWarning('h2', 5, over.overRollouts)[0]!,
    /h2 will not install the generation 4 .* below the 5/,
  );
  const forced = chooseDeployGeneration({
    host: 'h2',
    desiredHighest: 3,
    pending,
    requested: 4,
    force: true,
    canNameGeneration: true,
  });
  assert.ok(forced.ok);
});

test.run();
