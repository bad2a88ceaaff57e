import { exponentialBuckets, Histogram, Registry } from 'prom-client';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  APPEND_HISTOGRAM,
  appendsBetween,
  histogramQuantile,
  parseAppendHistogram,
  summarizeAppends,
} from '../../../test/bench/log-append-metrics.js';

// The page as the coordinator writes it: prom-client, its buckets, a role label.
async function page(observations: number[]): Promise<string> {
  const registry = new Registry();
  registry.setDefaultLabels({ role: 'coordinator' });
  const histogram = new Histogram({
    name: APPEND_HISTOGRAM,
    help: 'test',
    buckets: exponentialBuckets(0.00025, 2, 15),
    registers: [registry],
  });
  for (const seconds of observations) histogram.observe(seconds);
  return registry.metrics();
}

test('reads count, sum and cumulative buckets from a prom-client page', async () => {
  const parsed = parseAppendHistogram(await page([0.0003, 0.0003, 0.002, 0.05]));
  assert.ok(parsed);
  assert.is(parsed.count, 4);
  assert.ok(Math.abs(parsed.sum - 0.0526) < 1e-9);
  assert.is(parsed.buckets.length, 16, '15 bounds and +Inf');
  assert.equal(parsed.buckets.at(-1), [Number.POSITIVE_INFINITY, 4]);
  assert.equal(parsed.buckets[0], [0.00025, 0]);
  assert.equal(parsed.buckets[1], [0.0005, 2]);
});

test('a page without the histogram (the stock server answers "okay") gives null', () => {
  assert.is(parseAppendHistogram('okay'), null);
  assert.is(parseAppendHistogram('# HELP other\nother_metric 1\n'), null);
});

test('quantiles fall inside the bucket that holds them, and a difference covers one phase', async () => {
  const before = parseAppendHistogram(await page(Array(100).fill(0.0003)))!;
  const after = parseAppendHistogram(await page([...Array(100).fill(0.0003), ...Array(100).fill(0.003)]))!;
  const phase = appendsBetween(before, after);
  assert.is(phase.count, 100);
  const summary = summarizeAppends(phase);
  assert.ok(Math.abs(summary.meanMs - 3) < 1e-6, `mean ${summary.meanMs}`);
  // 3 ms lies in (2 ms, 4 ms]: so do the estimates.
  for (const ms of [summary.p50Ms, summary.p90Ms, summary.p99Ms]) assert.ok(ms > 2 && ms <= 4, `${ms}`);
  // Over both phases the median is at the 0.5 ms boundary: half the appends are in the bucket below it.
  assert.ok(Math.abs(histogramQuantile(after, 0.5) - 0.0005) < 1e-12);
});

test('a quantile beyond the last finite bound is that bound ("at least"); none observed is NaN', async () => {
  const slow = parseAppendHistogram(await page([10, 10]))!;
  assert.is(histogramQuantile(slow, 0.5), 0.00025 * 2 ** 14);
  assert.ok(Number.isNaN(summarizeAppends(appendsBetween(slow, slow)).p50Ms));
});

test.run();
