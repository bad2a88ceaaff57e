// Which signed checkpoints an agent or relay keeps (docs/audit.md, "Signed checkpoints"): every
// one of the last day, so a coordinator compromised now cannot rewrite more than the time since
// the newest one without contradicting a kept checkpoint, and one an hour before that, so the file
// stays small (at most RECENT_MAX + HOURLY_MAX lines, ≈ 2 MB) and still reaches back ≈ 83 days.

export const RECENT_MS = 86_400_000;
// A day of checkpoints at the default 60 s interval, twice over; a shorter interval keeps one
// every 30 s of the last day at least.
export const RECENT_MAX = 2880;
export const HOURLY_MS = 3_600_000;
export const HOURLY_MAX = 2000;

// Given the times of the kept checkpoints (oldest first), the indices to keep.
export function checkpointsToKeep(times: readonly number[]): number[] {
  if (times.length === 0) return [];
  const newest = times[times.length - 1]!;
  const recent: number[] = [];
  const older: number[] = [];
  for (const [index, at] of times.entries()) (at > newest - RECENT_MS ? recent : older).push(index);
  // Recent ones beyond the cap are thinned like older ones.
  const overflow = recent.splice(0, Math.max(0, recent.length - RECENT_MAX));
  const hourly: number[] = [];
  let lastKept = Number.NEGATIVE_INFINITY;
  for (const index of [...older, ...overflow]) {
    const at = times[index]!;
    if (at >= lastKept + HOURLY_MS) {
      hourly.push(index);
      lastKept = at;
    }
  }
  return [...hourly.slice(-HOURLY_MAX), ...recent];
}
