import type { DownloadProgress } from '../../shared/schemas/report.js';

// Download progress as the host reports it: paths and bytes done out of what has to be fetched
// (paths already valid in the store are not counted), and the rate over the last RATE_WINDOW_MS.
const RATE_WINDOW_MS = 10_000;

export interface ProgressTracker {
  addBytes(count: number): void;
  // A byte count that was reported but has to be fetched again (a partial file thrown away).
  discardBytes(count: number): void;
  pathDone(): void;
  snapshot(): DownloadProgress;
}

export function createProgressTracker(
  totals: { paths: number; bytes: number },
  now: () => number,
  startedAt: number,
): ProgressTracker {
  let pathsDone = 0;
  let bytesDone = 0;
  const samples: { at: number; bytes: number }[] = [{ at: now(), bytes: 0 }];
  const sample = (): void => {
    const at = now();
    samples.push({ at, bytes: bytesDone });
    while (samples.length > 2 && samples[1]!.at <= at - RATE_WINDOW_MS) samples.shift();
  };
  return {
    addBytes(count) {
      bytesDone += count;
      sample();
    },
    discardBytes(count) {
      bytesDone = Math.max(0, bytesDone - count);
      samples.length = 0;
      sample();
    },
    pathDone() {
      pathsDone += 1;
    },
    snapshot() {
      sample();
      const first = samples[0]!;
      const last = samples[samples.length - 1]!;
      const seconds = (last.at - first.at) / 1000;
      return {
        pathsDone,
        pathsTotal: totals.paths,
        bytesDone: Math.min(bytesDone, totals.bytes),
        bytesTotal: totals.bytes,
        bytesPerSecond: seconds > 0 ? Math.max(0, Math.round((last.bytes - first.bytes) / seconds)) : 0,
        startedAt: new Date(startedAt).toISOString(),
      };
    },
  };
}

export function percentDone(
  progress: Pick<DownloadProgress, 'bytesDone' | 'bytesTotal' | 'pathsDone' | 'pathsTotal'>,
): number {
  if (progress.bytesTotal > 0) return Math.floor((progress.bytesDone / progress.bytesTotal) * 100);
  return progress.pathsTotal > 0 ? Math.floor((progress.pathsDone / progress.pathsTotal) * 100) : 100;
}

// The signed status document keeps its whole history in the coordinator's log, so download
// progress goes there only at every MILESTONE_PERCENT (at most 100 / MILESTONE_PERCENT writes per
// download, however long it takes); live progress goes through awareness instead.
export const MILESTONE_PERCENT = 10;

export function crossedMilestone(previousPercent: number | null, percent: number): boolean {
  if (previousPercent === null) return true;
  return Math.floor(percent / MILESTONE_PERCENT) > Math.floor(previousPercent / MILESTONE_PERCENT);
}
