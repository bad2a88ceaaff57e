import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  checkpointsToKeep,
  HOURLY_MAX,
  HOURLY_MS,
  RECENT_MAX,
  RECENT_MS,
} from '../../../../shared/audit/kept-checkpoints.js';

const every = (intervalMs: number, spanMs: number, start = 0): number[] =>
  Array.from({ length: Math.floor(spanMs / intervalMs) + 1 }, (_, i) => start + i * intervalMs);

const gaps = (times: number[]): number[] => times.slice(1).map((at, i) => at - times[i]!);

test('every checkpoint of the last day stays (the rewrite window is one interval), one an hour before it', () => {
  const times = every(60_000, 3 * RECENT_MS);
  const kept = checkpointsToKeep(times).map((i) => times[i]!);
  const newest = times.at(-1)!;
  const recent = kept.filter((at) => at > newest - RECENT_MS);
  assert.is(recent.length, 1440, 'all of the last day');
  assert.ok(
    gaps(recent).every((g) => g === 60_000),
    'no gap in the last day',
  );
  const older = kept.filter((at) => at <= newest - RECENT_MS);
  assert.ok(older.length >= 47 && older.length <= 49, `about one an hour for two days: ${older.length}`);
  assert.ok(gaps(older).every((g) => g >= HOURLY_MS));
  assert.equal(
    kept,
    [...kept].sort((a, b) => a - b),
    'in order',
  );
});

test('a short interval keeps the newest RECENT_MAX of the last day and thins the rest to one an hour', () => {
  const times = every(500, 2 * HOURLY_MS);
  const kept = checkpointsToKeep(times);
  assert.is(kept.length, RECENT_MAX + 2, 'the newest 2,880 plus one for each of two earlier hours');
  assert.equal(
    kept.slice(-RECENT_MAX),
    times.slice(-RECENT_MAX).map((_, i) => times.length - RECENT_MAX + i),
  );
});

test('months of checkpoints stay bounded: HOURLY_MAX hourly ones plus the last day', () => {
  const times = every(300_000, 120 * RECENT_MS);
  const kept = checkpointsToKeep(times);
  assert.is(kept.length, HOURLY_MAX + 288, 'the last day at 5 min is 288');
  assert.equal(checkpointsToKeep([]), []);
  assert.equal(checkpointsToKeep([5]), [0]);
});

test.run();
