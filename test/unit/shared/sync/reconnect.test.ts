import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  backoffDelay,
  connectionFailed,
  connectionSucceeded,
  connectNow,
  createReconnectState,
  currentUrl,
  HEALTHY_LINK_MS,
  type ReconnectHooks,
  stopReconnecting,
} from '../../../../shared/sync/reconnect.js';
import { sleep } from '../../../../shared/time/sleep.js';

test('reconnect backoff doubles from the base, is capped, and is jittered between half and full', () => {
  assert.is(
    backoffDelay(0, 250, 300_000, () => 1),
    250,
  );
  assert.is(
    backoffDelay(3, 250, 300_000, () => 1),
    2000,
  );
  assert.is(
    backoffDelay(30, 250, 300_000, () => 1),
    300_000,
    'capped (minutes for satellite links)',
  );
  assert.is(
    backoffDelay(3, 250, 300_000, () => 0),
    1000,
    'jitter spreads a fleet that reconnects at once',
  );
  const spread = new Set(Array.from({ length: 50 }, () => Math.round(backoffDelay(10, 250, 300_000))));
  assert.ok(spread.size > 10, 'different agents wait different times');
});

test('failover moves to the next endpoint after two failures in a row, backoff restarts after a success', async () => {
  const state = createReconnectState(['ws://a', 'ws://b'], { baseMs: 1, capMs: 5 });
  const tried: string[] = [];
  const switched: string[] = [];
  let fail = true;
  const hooks: ReconnectHooks = {
    attempt: async (url) => {
      tried.push(url);
      if (fail) throw new Error('refused');
    },
    onEndpoint: (url) => switched.push(url),
  };
  connectNow(state, hooks);
  while (tried.length < 5) await sleep(2);
  fail = false;
  while (tried.length < 6) await sleep(2);
  assert.equal(tried.slice(0, 5), ['ws://a', 'ws://a', 'ws://b', 'ws://b', 'ws://a']);
  assert.equal(switched.slice(0, 2), ['ws://b', 'ws://a']);
  assert.ok(state.attempt >= 5, 'failures counted');
  connectionSucceeded(state);
  assert.is(state.attempt, 0);
  assert.is(currentUrl(state), tried.at(-1));
  stopReconnecting(state);
  const before = tried.length;
  connectionFailed(state, hooks);
  await sleep(20);
  assert.is(tried.length, before, 'a stopped loop schedules nothing');
});

// An endpoint that accepts every connection and drops it soon after the sync (a coordinator that
// cannot store, a hostile one) must not hold its peers while another endpoint works.
test('a link that ends soon after it synced counts as a failure: two of them fail over', async () => {
  let clock = 1_000_000;
  const state = createReconnectState(['ws://flaky', 'ws://good'], { baseMs: 1, capMs: 2 }, () => clock);
  const tried: string[] = [];
  const hooks: ReconnectHooks = { attempt: async (url) => void tried.push(url) };
  connectNow(state, hooks);
  for (let link = 0; link < 2; link += 1) {
    while (tried.length <= link) await sleep(1);
    connectionSucceeded(state);
    clock += 2_000;
    connectionFailed(state, hooks, 'closed with 1011: coordinator storage error');
  }
  while (tried.length < 3) await sleep(1);
  assert.equal(tried, ['ws://flaky', 'ws://flaky', 'ws://good']);
  assert.is(state.attempt, 1, 'the backoff still restarts after each success');
  stopReconnecting(state);
});

test('a link that lasted HEALTHY_LINK_MS starts the failure count afresh', async () => {
  let clock = 1_000_000;
  const state = createReconnectState(['ws://a', 'ws://b'], { baseMs: 1, capMs: 2 }, () => clock);
  const tried: string[] = [];
  const hooks: ReconnectHooks = { attempt: async (url) => void tried.push(url) };
  connectNow(state, hooks);
  for (let link = 0; link < 3; link += 1) {
    while (tried.length <= link) await sleep(1);
    connectionSucceeded(state);
    clock += HEALTHY_LINK_MS;
    connectionFailed(state, hooks, 'closed with 1001: restarting');
  }
  while (tried.length < 4) await sleep(1);
  assert.equal(tried, ['ws://a', 'ws://a', 'ws://a', 'ws://a'], 'each link lasted: no failover');
  assert.is(state.failuresHere, 1);
  stopReconnecting(state);
});

test('no endpoint is a clear error', () => {
  assert.throws(() => createReconnectState([], { baseMs: 1, capMs: 1 }), /no endpoint to connect to/);
});

test.run();
