import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { RolloutReport } from '../../admin/rollout-render.js';
import { generateSigningKey } from '../../shared/crypto/keys.js';
import { appendPolicy, POLICY_DOC } from '../../shared/documents/fleet.js';
import { writeKeyFile } from '../../shared/node/key-file.js';
import { appendRolloutEntries, rolloutDocName } from '../../shared/rollout/document.js';
import type { SignedPlan } from '../../shared/rollout/schemas.js';
import { rolloutStatus } from '../harness/admin-cli.js';
import { type HostilePeer, startHostilePeer } from '../harness/hostile-peer.js';
import { basePolicy, makeTestOrg, signPolicy } from '../harness/policy-fixtures.js';
import { removeDirectory, temporaryDirectory } from '../harness/processes.js';
import { type FixtureHost, fixtureHosts, hostResult, makePlan } from '../harness/rollout-fixtures.js';

// A compromised coordinator forges a host's refusal of its placement ("at or below this host's
// floor") to halt a rollout and make `outpost rollout status` tell the admin a believable lie
// about that host. Its real position (test/harness/hostile-peer.ts): it serves every document the
// admin command reads — the genuine policy and admin-signed plan, and whatever evidence it likes —
// over the real sync protocol. It holds no admin key and no host key, but it has every genuine
// result the hosts ever sent (it relays them). Only h2's own refusal of this very placement,
// signed by the key the plan names for h2, may halt the wave.
const org = makeTestOrg();
const coordinatorKey = generateSigningKey('coordinator');
const floorReason =
  "rollback: rollout r1: generation 2 (epoch 0) is at or below this host's floor, generation 5 (epoch 0), already applied or attempted here";
let dir = '';
let peer: HostilePeer;
let plan: SignedPlan;
let h1: FixtureHost;
let h2: FixtureHost;

const status = (): Promise<RolloutReport> =>
  rolloutStatus({ coordinator: peer.url, key: join(dir, 'alice.key'), orgRoot: org.root.publicKey }, 'r1');

test.before(async () => {
  dir = temporaryDirectory('attack-rollout-refusal');
  await writeKeyFile(join(dir, 'alice.key'), org.alice);
  peer = await startHostilePeer();
  appendPolicy(peer.doc(POLICY_DOC), signPolicy(basePolicy(org), org.root));
  [h1, h2] = fixtureHosts(2) as [FixtureHost, FixtureHost];
  const createdAt = Date.now() - 60_000;
  plan = makePlan(org.alice, { id: 'r1', createdAt, waves: [{ name: 'first', hosts: [h1, h2] }] });
  // Another rollout with h2 in it, which h2 genuinely refused: the attacker's to replay.
  const other = makePlan(org.alice, {
    id: 'r2',
    createdAt: createdAt - 86_400_000,
    waves: [{ name: 'w', hosts: [h2] }],
  });
  const genuineRefusalOfOther = hostResult(other, h2, 'refused', createdAt, {
    reason: floorReason.replace('rollout r1', 'rollout r2'),
  });
  const genuineRefusal = hostResult(plan, h2, 'refused', Date.now(), { reason: floorReason });
  appendRolloutEntries(peer.doc(rolloutDocName('r1')), {
    plans: [plan],
    evidence: [
      hostResult(plan, h1, 'applied', createdAt + 1000),
      // h2's refusal signed by the coordinator's own key.
      hostResult(plan, h2, 'refused', Date.now(), { reason: floorReason }, coordinatorKey),
      // h2's genuine refusal of another rollout's placement, replayed here.
      genuineRefusalOfOther,
      // h2's genuine refusal of an earlier attempt, its digest and generation edited: the
      // signature no longer verifies.
      { ...genuineRefusal, result: { ...genuineRefusal.result, generation: 1 } },
      { ...genuineRefusal, result: { ...genuineRefusal.result, reason: `${floorReason} (edited)` } },
    ],
  });
});

test.after(async () => {
  await peer?.close();
  removeDirectory(dir);
});

test("refusals of h2's placement that h2 did not sign for this plan do not halt the rollout, and status says they do not count", async () => {
  const report = await status();
  assert.is(report.state, 'running');
  assert.is(report.halted, null);
  assert.equal(report.failures, []);
  assert.equal(
    report.rejectedEvidence.map((r) => r.host),
    ['h2', 'h2', 'h2', 'h2'],
  );
  const reasons = report.rejectedEvidence.map((r) => r.reason).join('\n');
  assert.match(reasons, /not the key the plan names for h2/);
  assert.match(reasons, /answers another intent/);
  assert.match(reasons, /signature does not verify/);
});

test("h2's own signed refusal of this placement halts the wave, naming h2 and its floor", async () => {
  appendRolloutEntries(peer.doc(rolloutDocName('r1')), {
    evidence: [hostResult(plan, h2, 'refused', Date.now(), { reason: floorReason })],
  });
  const report = await status();
  assert.is(report.state, 'halted');
  assert.is(report.halted?.wave, 'first');
  assert.ok(report.halted?.reason.includes(`h2 refused: ${floorReason}`), report.halted?.reason);
  assert.equal(report.failures, [{ host: 'h2', wave: 'first', outcome: 'refused', reason: floorReason }]);
});

test.run();
