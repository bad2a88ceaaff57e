import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { backoffDelay } from '../../../../shared/sync/reconnect.js';

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

test.run();
