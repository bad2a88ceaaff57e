import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { appendSignedResult } from '../../../agent/pipeline/report.js';
import { verifyFloor } from '../../../agent/run-loop.js';
import { sleep } from '../../../shared/time/sleep.js';
import {
  closure,
  deploy,
  fakeConnection,
  harness,
  hostKey,
  logged,
  NOW,
  removeHarnessDirectories,
  stranger,
} from './runtime-fixtures.js';

// The agent's loop on an explicit runtime record: the wait for a sync peer before the floor is
// rebuilt from the host's own signed results.

test.after.each(removeHarnessDirectories);

test('with no agent state, the floor waits for both documents to sync, then comes from own signed results', async () => {
  const { agent, events } = await harness();
  agent.state = { ...agent.state, floorUnverified: true };
  const desired = fakeConnection();
  const status = fakeConnection();
  agent.desired = desired;
  agent.status = status;
  let done = false;
  const waiting = verifyFloor(agent).then(() => {
    done = true;
  });
  const digest = deploy(agent, 7);
  const result = {
    kind: 'result' as const,
    host: 'h1',
    seq: 1,
    at: new Date(NOW).toISOString(),
    outcome: 'failed' as const,
    generation: 7,
    closure: closure(7),
    action: 'switch' as const,
    intentDigest: digest,
    reason: 'x',
    outputTail: '',
  };
  appendSignedResult(agent.statusDoc, result, hostKey);
  // A peer's result with a huge generation: not this host's key, so it moves nothing.
  appendSignedResult(agent.statusDoc, { ...result, seq: 2, generation: 999_999 }, stranger);
  desired.provider.synced = true;
  await sleep(450);
  assert.not.ok(done, 'one document synced is not enough');
  assert.is(logged(events, 'floor-rebuild-waiting').length, 1);
  status.provider.synced = true;
  await waiting;
  assert.is(agent.state.floorUnverified, false);
  assert.is(agent.state.floorGeneration, 7, "from this host's own attempt, not the peer's entry");
  assert.is(logged(events, 'floor-rebuilt').length, 1);

  // Stopping ends the wait without deciding anything.
  const other = (await harness()).agent;
  other.state = { ...other.state, floorUnverified: true };
  const stopped = verifyFloor(other);
  other.stopped = true;
  await stopped;
  assert.is(other.state.floorUnverified, true);
});

test.run();
