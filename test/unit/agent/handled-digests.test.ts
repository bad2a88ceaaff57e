import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { evaluate } from '../../../agent/evaluate.js';
import type { AgentRuntime } from '../../../agent/runtime.js';
import { intentsArray } from '../../../shared/documents/desired.js';
import {
  closure,
  deploy,
  fakeConnection,
  harness,
  removeHarnessDirectories,
  results,
  stranger,
} from './runtime-fixtures.js';

// The intents an agent has answered (state.handledDigests, saved in state.json at every refusal)
// are remembered while they are in the desired document, not for ever: a compromised coordinator
// that writes intents and deletes them again (the fuzzer's wrote ~17,700) must not grow the state
// file and its rewrite without bound. What was attempted is still never installed again: the
// anti-rollback floor, not this list, guards that.

test.after.each(removeHarnessDirectories);

// The desired document as a complete copy: synced with a peer, nothing waiting.
function synced(agent: AgentRuntime): void {
  const connection = fakeConnection();
  connection.provider.synced = true;
  agent.desired = Object.assign(connection, { doc: agent.desiredDoc });
}

function deleteIntent(agent: AgentRuntime, digestIndex: number): void {
  intentsArray(agent.desiredDoc).delete(digestIndex, 1);
}

test('refused intents deleted from the desired document are forgotten: the list is bounded by the document', async () => {
  const { agent } = await harness();
  synced(agent);
  // A window of 4 forged intents, each written, refused, and deleted 4 intents later.
  for (let generation = 1; generation <= 40; generation++) {
    deploy(agent, generation, stranger);
    if (intentsArray(agent.desiredDoc).length > 4) deleteIntent(agent, 0);
    await evaluate(agent);
  }
  assert.is(results(agent).length, 40, 'each refused once while it was in the document');
  assert.ok(
    agent.state.handledDigests.length <= 5,
    `answered intents remembered: ${agent.state.handledDigests.length} (4 are in the document)`,
  );
});

test('an incomplete copy of the desired document forgets nothing', async () => {
  const { agent } = await harness();
  // Not synced: the document may lack entries that are still in the peer's copy.
  for (let generation = 1; generation <= 6; generation++) {
    deploy(agent, generation, stranger);
    if (intentsArray(agent.desiredDoc).length > 2) deleteIntent(agent, 0);
    await evaluate(agent);
  }
  assert.is(agent.state.handledDigests.length, 6);
  // Synced but with an update waiting for one it depends on: the same.
  synced(agent);
  agent.desiredDoc.store.pendingDs = new Uint8Array([0]);
  await evaluate(agent);
  assert.is(agent.state.handledDigests.length, 6);
  agent.desiredDoc.store.pendingDs = null;
  await evaluate(agent);
  assert.is(agent.state.handledDigests.length, 2, 'complete again: only the two in the document');
});

test('an intent deleted and written again is refused again, never installed: the floor guards it', async () => {
  const { agent } = await harness();
  synced(agent);
  // Generation 5 runs here; generation 3, validly signed, is below it.
  agent.state = {
    ...agent.state,
    phase: 'applied',
    applied: { generation: 5, closure: closure(5), digest: 'ab'.repeat(32) },
    floorGeneration: 5,
  };
  const old = deploy(agent, 3);
  const signed = intentsArray(agent.desiredDoc).get(0);
  await evaluate(agent);
  assert.ok(agent.state.handledDigests.includes(old));
  deleteIntent(agent, 0);
  await evaluate(agent);
  assert.not.ok(agent.state.handledDigests.includes(old), 'forgotten once deleted');
  intentsArray(agent.desiredDoc).push([signed]);
  await evaluate(agent);
  assert.is(agent.state.target, null, 'not taken on');
  assert.is(agent.state.applied?.generation, 5);
  assert.equal(
    results(agent).map((r) => [r.generation, r.outcome, r.reason.split(':')[0]]),
    [
      [3, 'refused', 'rollback'],
      [3, 'refused', 'rollback'],
    ],
    'judged again when written again: one more refusal',
  );
  assert.ok(agent.state.handledDigests.includes(old));
});

test.run();
