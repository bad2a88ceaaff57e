import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { createProgressTracker, crossedMilestone } from '../../../../agent/download/progress.js';
import { createProgressPublisher } from '../../../../agent/progress-publisher.js';
import type { DownloadProgress } from '../../../../shared/schemas/report.js';

test('progress: rate over the last seconds; the document gets at most one write per 10 %', () => {
  let now = 0;
  const tracker = createProgressTracker({ paths: 4, bytes: 1000 }, () => now, 0);
  now = 1000;
  tracker.addBytes(100);
  now = 2000;
  tracker.addBytes(100);
  tracker.pathDone();
  const snapshot = tracker.snapshot();
  assert.equal(
    { ...snapshot, startedAt: undefined },
    { pathsDone: 1, pathsTotal: 4, bytesDone: 200, bytesTotal: 1000, bytesPerSecond: 100, startedAt: undefined },
  );
  assert.ok(crossedMilestone(null, 0));
  assert.not.ok(crossedMilestone(10, 19));
  assert.ok(crossedMilestone(19, 20));
  const milestones: number[] = [];
  const awareness: number[] = [];
  const publisher = createProgressPublisher({
    now: () => now,
    awareness: (p) => awareness.push(p.bytesDone),
    log: () => undefined,
    milestone: (p) => milestones.push(p.bytesDone),
  });
  const progress = (bytesDone: number): DownloadProgress => ({
    pathsDone: 0,
    pathsTotal: 4,
    bytesDone,
    bytesTotal: 1000,
    bytesPerSecond: 1,
    startedAt: new Date(0).toISOString(),
  });
  for (let b = 0; b <= 990; b += 10) {
    now += 100;
    publisher.publish(progress(b));
  }
  assert.equal(milestones, [0, 100, 200, 300, 400, 500, 600, 700, 800, 900]);
  assert.ok(awareness.length <= 11, `awareness at most once a second (${awareness.length})`);
});

test.run();
