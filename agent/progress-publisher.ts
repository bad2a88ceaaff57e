import type { DownloadProgress } from '../shared/schemas/report.js';
import { crossedMilestone, percentDone } from './download/progress.js';

// Where download progress goes, and how often:
//   awareness   live, at most once per AWARENESS_INTERVAL_MS: ephemeral, never stored
//   log         at most once per LOG_INTERVAL_MS: `event: "download-progress"` lines
//   document    the signed status, only at every 10 % milestone (the log keeps it forever)
const AWARENESS_INTERVAL_MS = 1000;
const LOG_INTERVAL_MS = 10_000;

export interface ProgressSinks {
  awareness(progress: DownloadProgress): void;
  log(progress: DownloadProgress): void;
  milestone(progress: DownloadProgress): void;
  now(): number;
}

export interface ProgressPublisher {
  publish(progress: DownloadProgress): void;
  // The latest milestone written to the document (null before the first).
  milestone(): DownloadProgress | null;
  reset(): void;
}

export function createProgressPublisher(sinks: ProgressSinks): ProgressPublisher {
  let lastAwareness = -Infinity;
  let lastLog = -Infinity;
  let lastMilestone: DownloadProgress | null = null;
  return {
    publish(progress) {
      const now = sinks.now();
      const finished = progress.pathsDone === progress.pathsTotal;
      if (finished || now - lastAwareness >= AWARENESS_INTERVAL_MS) {
        lastAwareness = now;
        sinks.awareness(progress);
      }
      if (finished || now - lastLog >= LOG_INTERVAL_MS) {
        lastLog = now;
        sinks.log(progress);
      }
      if (crossedMilestone(lastMilestone ? percentDone(lastMilestone) : null, percentDone(progress))) {
        lastMilestone = progress;
        sinks.milestone(progress);
      }
    },
    milestone: () => lastMilestone,
    reset() {
      lastAwareness = -Infinity;
      lastLog = -Infinity;
      lastMilestone = null;
    },
  };
}
