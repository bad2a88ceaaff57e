import type { RssSample } from './live-process.js';

// Whether a process's memory and file descriptors stayed bounded under fuzz. RSS and open file
// descriptors are sampled throughout; the baseline
// is taken after warm-up (V8 grows its heap to a working size under load first), and two things
// must hold: the end of the run is not far above the baseline, and the second half of the run
// does not keep climbing (a leak grows with inputs; a working set does not).

export interface GrowthVerdict {
  samples: number;
  baselineMiB: number;
  midpointMiB: number;
  finalMiB: number;
  peakMiB: number;
  baselineFds: number;
  finalFds: number;
  peakFds: number;
  bounded: boolean;
  reason: string;
}

export interface GrowthLimits {
  // Allowed rise from the post-warm-up baseline to the end: max(absolute, fraction × baseline).
  overallMiB: number;
  overallFraction: number;
  // Allowed rise over the second half of the run.
  secondHalfMiB: number;
  // Open file descriptors: the inputs in flight hold a few dozen at a time, a leak holds more and more.
  overallFds: number;
  secondHalfFds: number;
}

export const DEFAULT_LIMITS: GrowthLimits = {
  overallMiB: 96,
  overallFraction: 0.75,
  secondHalfMiB: 48,
  overallFds: 96,
  secondHalfFds: 48,
};

const MiB = 1024 * 1024;

function median(values: number[]): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

function window(samples: RssSample[], from: number, to: number, field: 'rssBytes' | 'fds' = 'rssBytes'): number[] {
  const start = Math.floor(samples.length * from);
  const end = Math.max(start + 1, Math.ceil(samples.length * to));
  return samples.slice(start, end).map((s) => s[field]);
}

export function judgeGrowth(samples: RssSample[], limits: GrowthLimits = DEFAULT_LIMITS): GrowthVerdict {
  if (samples.length < 5) {
    const peak = Math.round(Math.max(0, ...samples.map((s) => s.rssBytes)) / MiB);
    const fds = Math.max(0, ...samples.map((s) => s.fds));
    return {
      samples: samples.length,
      baselineMiB: peak,
      midpointMiB: peak,
      finalMiB: peak,
      peakMiB: peak,
      baselineFds: fds,
      finalFds: fds,
      peakFds: fds,
      bounded: true,
      reason: 'too few samples to judge a trend',
    };
  }
  const baseline = median(window(samples, 0.1, 0.25)) / MiB;
  const midpoint = median(window(samples, 0.45, 0.55)) / MiB;
  const final = median(window(samples, 0.9, 1)) / MiB;
  const peak = Math.max(...samples.map((s) => s.rssBytes)) / MiB;
  const overallAllowance = Math.max(limits.overallMiB, limits.overallFraction * baseline);
  const problems: string[] = [];
  if (final - baseline > overallAllowance)
    problems.push(`grew ${(final - baseline).toFixed(0)} MiB after warm-up (allowed ${overallAllowance.toFixed(0)})`);
  if (final - midpoint > limits.secondHalfMiB)
    problems.push(
      `still growing: +${(final - midpoint).toFixed(0)} MiB over the second half (allowed ${limits.secondHalfMiB})`,
    );
  const baselineFds = median(window(samples, 0.1, 0.25, 'fds'));
  const midpointFds = median(window(samples, 0.45, 0.55, 'fds'));
  const finalFds = median(window(samples, 0.9, 1, 'fds'));
  if (finalFds - baselineFds > limits.overallFds)
    problems.push(
      `holds ${finalFds - baselineFds} more file descriptors than after warm-up (allowed ${limits.overallFds})`,
    );
  if (finalFds - midpointFds > limits.secondHalfFds)
    problems.push(
      `file descriptors still rising: +${finalFds - midpointFds} over the second half (allowed ${limits.secondHalfFds})`,
    );
  return {
    samples: samples.length,
    baselineMiB: Math.round(baseline),
    midpointMiB: Math.round(midpoint),
    finalMiB: Math.round(final),
    peakMiB: Math.round(peak),
    baselineFds,
    finalFds,
    peakFds: Math.max(...samples.map((s) => s.fds)),
    bounded: problems.length === 0,
    reason: problems.join('; ') || 'bounded',
  };
}
