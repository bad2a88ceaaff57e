import { Registry } from 'prom-client';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { type RolloutService, registerRolloutMetrics } from '../../../coordinator/rollouts.js';

// /metrics series of followed rollouts: read at each scrape from the coordinator's last judgement,
// and gone once a rollout is no longer followed.
test('hosts by rollout wave, open waves and rollout state; a rollout no longer followed leaves no series', async () => {
  let rollouts: ReturnType<RolloutService['waveCounts']> = [
    {
      id: 'r1',
      state: 'running',
      waves: [
        { wave: 'first', planned: 2, succeeded: 2, open: true },
        { wave: 'final', planned: 4, succeeded: 0, open: false },
      ],
    },
  ];
  const service = { waveCounts: () => rollouts } as unknown as RolloutService;
  const registry = new Registry();
  registerRolloutMetrics(registry, service);
  const text = await registry.metrics();
  assert.match(text, /outpost_rollout_wave_hosts\{rollout="r1",wave="first",hosts="planned"\} 2/);
  assert.match(text, /outpost_rollout_wave_hosts\{rollout="r1",wave="final",hosts="succeeded"\} 0/);
  assert.match(text, /outpost_rollout_wave_open\{rollout="r1",wave="final"\} 0/);
  assert.match(text, /outpost_rollout_state\{rollout="r1",state="running"\} 1/);
  rollouts = [{ ...rollouts[0]!, state: 'complete' }];
  const later = await registry.metrics();
  assert.match(later, /outpost_rollout_state\{rollout="r1",state="complete"\} 1/);
  assert.not.match(later, /state="running"/, 'the old state is not left behind');
  rollouts = [];
  assert.not.match(await registry.metrics(), /rollout="r1"/);
});

test.run();
