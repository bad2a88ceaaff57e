import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as Y from 'yjs';
import { evaluate } from '../../../agent/evaluate.js';
import type { IntentTrust } from '../../../agent/intent-trust.js';
import { loadAgentState } from '../../../agent/pipeline/state.js';
import { type AdmitContext, openRolloutTracker, type RolloutTracker } from '../../../agent/rollout-tracker.js';
import type { AgentRuntime } from '../../../agent/runtime.js';
import { generateSigningKey } from '../../../shared/crypto/keys.js';
import { signPayload } from '../../../shared/crypto/signatures.js';
import { appendIntent } from '../../../shared/documents/desired.js';
import type { DocumentConnection } from '../../../shared/node/connect.js';
import { installNodeEd25519 } from '../../../shared/node/ed25519.js';
import { createMemoryLogger } from '../../../shared/node/log.js';
import { appendRolloutEntries, rolloutDocName } from '../../../shared/rollout/document.js';
import { deriveRolloutIntent, placeHosts, planDigest } from '../../../shared/rollout/plan.js';
import type { SignedIntent } from '../../../shared/schemas/intent.js';
import { intentDigest, selectIntent } from '../../../shared/trust/verify-intent.js';
import { basePolicy, makeTestOrg } from '../../harness/policy-fixtures.js';
import { fixtureHosts, makePlan } from '../../harness/rollout-fixtures.js';
import { fakeConnection, harness, hostKey, removeHarnessDirectories, results } from './runtime-fixtures.js';

// The agent's admission of rollout placements (agent/rollout-tracker.ts) against its anti-rollback
// floor: a placement at or below it (the floor rose through a deploy, a bundle or another
// coordinator since the plan was made) is answered once with a refusal, so its wave's gate counts
// the host as failed instead of waiting for it for ever. The rollout document comes through a
// stand-in for the websocket; the plan, signatures and decisions are real.
installNodeEd25519();
test.after.each(removeHarnessDirectories);

const org = makeTestOrg();
const chain = [basePolicy(org)];
const [h1] = fixtureHosts(1) as [ReturnType<typeof fixtureHosts>[0]];
// The plan gives h1 generation 2 (rollout-fixtures), under the agent's own host key.
const plan = makePlan(org.alice, {
  waves: [{ name: 'first', hosts: [{ ...h1, key: hostKey }] }],
  createdAt: Date.now() - 60_000,
});
const digest = planDigest(plan.plan);
const pointer = deriveRolloutIntent(plan, digest, placeHosts(plan.plan).get('h1')!);

const trust = { mode: 'policy', chain: () => chain, now: () => Date.now() } as unknown as IntentTrust;

function tracker(): { rollouts: RolloutTracker; followed: string[] } {
  const rolloutDoc = new Y.Doc();
  appendRolloutEntries(rolloutDoc, { plans: [plan] });
  const followed: string[] = [];
  const rollouts = openRolloutTracker({
    endpoints: ['ws://127.0.0.1:9'],
    host: 'h1',
    identity: hostKey,
    trust,
    logger: createMemoryLogger('agent').logger,
    connect: (_endpoints, name, options) => {
      followed.push(name);
      if (name === rolloutDocName('r1')) Y.applyUpdate(options.doc!, Y.encodeStateAsUpdate(rolloutDoc));
      return { close() {} } as unknown as DocumentConnection;
    },
  });
  return { rollouts, followed };
}

const context = (floor: number, extra: Partial<AdmitContext> = {}): AdmitContext => ({
  floor: { epoch: 0, generation: floor },
  current: null,
  answered: new Set(),
  applied: null,
  ...extra,
});

// The same intent in another envelope (a junk signature added): another digest, one content.
const otherEnvelope: SignedIntent = {
  ...pointer,
  signatures: [...pointer.signatures, signPayload('intent', pointer.intent, generateSigningKey('mallory'))],
};

test('a placement below the floor is admitted as a refusal naming the floor, and selection refuses it with that reason', () => {
  const { rollouts } = tracker();
  const admitted = rollouts.admit([pointer], context(5));
  assert.equal(admitted.map(intentDigest), [intentDigest(pointer)], 'the intent the host derives');
  const verify = rollouts.verifier(() => ({ ok: true }));
  const selection = selectIntent(admitted, { verify, floor: { epoch: 0, generation: 5 }, appliedDigest: null });
  assert.is(selection.chosen, null);
  assert.is(selection.refused.length, 1);
  assert.is(selection.refused[0]!.code, 'rollback');
  assert.is(
    selection.refused[0]!.reason,
    "rollout r1: generation 2 (epoch 0) is at or below this host's floor, generation 5 (epoch 0), already applied or attempted here",
  );
  rollouts.close();
});

test('above the floor it goes as before; at or below, an answered placement is not followed, and what runs is never refused', () => {
  const above = tracker();
  const admitted = above.rollouts.admit([pointer], context(1));
  assert.is(admitted.length, 1);
  assert.ok(above.rollouts.verifier(() => ({ ok: true }))(admitted[0]!).ok);
  above.rollouts.close();

  const answered = tracker();
  assert.equal(answered.rollouts.admit([pointer], context(5, { answered: new Set([intentDigest(pointer)]) })), []);
  assert.equal(answered.followed, [], 'its document is not followed');
  answered.rollouts.close();

  // What runs came from this placement: a pointer in another envelope is followed, not refused.
  const applied = tracker();
  assert.equal(applied.rollouts.admit([otherEnvelope], context(2, { applied: intentDigest(pointer) })), []);
  applied.rollouts.close();

  // The target being installed is the floor (raised to it when it was taken on): it goes on.
  const current = tracker();
  assert.is(current.rollouts.admit([pointer], context(2, { current: pointer })).length, 1);
  assert.equal(current.rollouts.installGate(pointer), { decision: 'go' });
  current.rollouts.close();
});

async function agentWithFloor(floor: number): Promise<AgentRuntime> {
  const { agent } = await harness();
  const connection = fakeConnection();
  connection.provider.synced = true;
  agent.desired = Object.assign(connection, { doc: agent.desiredDoc });
  agent.state = { ...agent.state, floorGeneration: floor };
  return agent;
}

function useTracker(agent: AgentRuntime): RolloutTracker {
  const { rollouts } = tracker();
  agent.rollouts = rollouts;
  agent.verify = rollouts.verifier(agent.config.trust.verify);
  return rollouts;
}

test('the agent answers the placement once with a signed refused result, also across a restart, and in any envelope', async () => {
  for (const envelope of [pointer, otherEnvelope]) {
    const agent = await agentWithFloor(5);
    appendIntent(agent.desiredDoc, envelope);
    const first = useTracker(agent);
    for (let i = 0; i < 3; i++) await evaluate(agent);
    const refused = results(agent);
    assert.is(refused.length, 1, 'one result, not one per evaluation');
    assert.is(refused[0]!.outcome, 'refused');
    assert.is(refused[0]!.intentDigest, intentDigest(pointer), 'it names the intent the plan gives this host');
    assert.is(refused[0]!.generation, 2);
    assert.match(
      refused[0]!.reason,
      /^rollback: rollout r1: generation 2 \(epoch 0\) is at or below this host's floor, generation 5/,
    );
    // A restart: the state as saved, a tracker that remembers nothing.
    first.close();
    agent.state = await loadAgentState(agent.config.stateDir);
    const second = useTracker(agent);
    for (let i = 0; i < 2; i++) await evaluate(agent);
    assert.is(results(agent).length, 1, 'not answered again after a restart');
    second.close();
  }
});

test.run();
