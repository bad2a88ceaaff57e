import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createThroughputGuard } from '../../../../agent/download/throughput.js';

test('throughput rule: a transfer below the minimum over a full window fails; one that keeps up does not', () => {
  const rule = { minBytesPerSecond: 1000, windowMs: 10_000 };
  const slow = createThroughputGuard(rule, 0);
  for (let t = 1000; t <= 20_000; t += 1000) slow.record((t / 1000) * 100, t);
  assert.is(slow.check(5000), null, 'not judged before the first full window');
  assert.match(slow.check(20_000) ?? '', /^100 B\/s over the last 10 s is below the minimum throughput of 1000 B\/s/);
  const fast = createThroughputGuard(rule, 0);
  for (let t = 1000; t <= 20_000; t += 1000) fast.record((t / 1000) * 5000, t);
  assert.is(fast.check(20_000), null);
  const silent = createThroughputGuard(rule, 0);
  assert.match(silent.check(10_000) ?? '', /^0 B\/s/, 'a silent connection fails too');
  assert.is(createThroughputGuard({ minBytesPerSecond: 0, windowMs: 1 }, 0).check(1e9), null, '0 turns the rule off');
});

test.run();
