import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { judgeGrowth } from '../../fuzz/growth.js';
import type { RssSample } from '../../fuzz/live-process.js';

// The fuzzer's growth judge on made-up series: a working set that levels off passes, a leak in
// memory, descriptors or stored bytes per input does not.
const MiB = 1024 * 1024;

function series(n: number, at: (i: number) => { rssMiB: number; fds: number; storedMiB?: number | null }): RssSample[] {
  return Array.from({ length: n }, (_, i) => {
    const { rssMiB, fds, storedMiB = null } = at(i);
    return {
      at: i * 1000,
      inputs: i * 100,
      rssBytes: rssMiB * MiB,
      fds,
      storedBytes: storedMiB === null ? null : storedMiB * MiB,
    };
  });
}

test('a working set that grows during warm-up and levels off is bounded', () => {
  const verdict = judgeGrowth(
    series(200, (i) => ({ rssMiB: Math.min(100 + i * 2, 160) + (i % 3), fds: 30 + (i % 5), storedMiB: i * 0.1 })),
  );
  assert.ok(verdict.bounded, verdict.reason);
  assert.is(verdict.storedKiBPer1000Inputs, 1024);
});

test('memory that keeps climbing is a leak', () => {
  const verdict = judgeGrowth(series(200, (i) => ({ rssMiB: 100 + i, fds: 30 })));
  assert.not.ok(verdict.bounded);
  assert.match(verdict.reason, /still growing/);
});

test('descriptors that keep climbing are a leak long before memory shows it', () => {
  const verdict = judgeGrowth(series(200, (i) => ({ rssMiB: 100, fds: 30 + i })));
  assert.not.ok(verdict.bounded);
  assert.match(verdict.reason, /file descriptors/);
});

test('stored bytes that grow with the inputs pass; storing faster and faster does not', () => {
  assert.ok(judgeGrowth(series(200, (i) => ({ rssMiB: 100, fds: 30, storedMiB: i * 0.5 }))).bounded);
  const accelerating = judgeGrowth(series(200, (i) => ({ rssMiB: 100, fds: 30, storedMiB: (i * i) / 100 })));
  assert.not.ok(accelerating.bounded);
  assert.match(accelerating.reason, /stores faster and faster/);
  const none = judgeGrowth(series(200, () => ({ rssMiB: 100, fds: 30 })));
  assert.is(none.storedKiBPer1000Inputs, null, 'no data directory: nothing to judge');
});

test.run();
