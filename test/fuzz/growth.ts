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
  // What the process keeps on disk (null when it has no data directory): stored data grows with
  // the writes it accepts (the update log keeps every accepted update, for audits), so the judge
  // is the rate: the second half may not store more per input than twice the first half.
  baselineStoredMiB: number | null;
  finalStoredMiB: number | null;
  storedKiBPer1000Inputs: number | null;
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
  // Stored bytes: allowed per input over the second half, as a multiple of the first half's rate,
  // plus an absolute allowance (LevelDB writes logs and compacts in steps).
  storedRateFactor: number;
  storedSlackMiB: number;
}

export const DEFAULT_LIMITS: GrowthLimits = {
  overallMiB: 96,
  overallFraction: 0.75,
  secondHalfMiB: 48,
  overallFds: 96,
  secondHalfFds: 48,
  storedRateFactor: 2,
  storedSlackMiB: 16,
};

const MiB = 1024 * 1024;

function median(values: number[]): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

function window(
  samples: RssSample[],
  from: number,
  to: number,
  field: 'rssBytes' | 'fds' | 'inputs' | 'storedBytes' = 'rssBytes',
): number[] {
  const start = Math.floor(samples.length * from);
  const end = Math.max(start + 1, Math.ceil(samples.length * to));
  return samples.slice(start, end).map((s) => s[field] ?? 0);
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
      baselineStoredMiB: null,
      finalStoredMiB: null,
      storedKiBPer1000Inputs: null,
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
  const stored = storedVerdict(samples, limits);
  if (stored.problem) problems.push(stored.problem);
  return {
    samples: samples.length,
    baselineMiB: Math.round(baseline),
    midpointMiB: Math.round(midpoint),
    finalMiB: Math.round(final),
    peakMiB: Math.round(peak),
    baselineFds,
    finalFds,
    peakFds: Math.max(...samples.map((s) => s.fds)),
    baselineStoredMiB: stored.baselineMiB,
    finalStoredMiB: stored.finalMiB,
    storedKiBPer1000Inputs: stored.kiBPer1000,
    bounded: problems.length === 0,
    reason: problems.join('; ') || 'bounded',
  };
}

function storedVerdict(
  samples: RssSample[],
  limits: GrowthLimits,
): { baselineMiB: number | null; finalMiB: number | null; kiBPer1000: number | null; problem: string | null } {
  if (samples.some((s) => s.storedBytes === null))
    return { baselineMiB: null, finalMiB: null, kiBPer1000: null, problem: null };
  const at = (from: number, to: number): { bytes: number; inputs: number } => ({
    bytes: median(window(samples, from, to, 'storedBytes')),
    inputs: median(window(samples, from, to, 'inputs')),
  });
  const baseline = at(0.1, 0.25);
  const midpoint = at(0.45, 0.55);
  const final = at(0.9, 1);
  const first = Math.max(0, midpoint.bytes - baseline.bytes);
  const firstInputs = Math.max(1, midpoint.inputs - baseline.inputs);
  const second = final.bytes - midpoint.bytes;
  const secondInputs = Math.max(0, final.inputs - midpoint.inputs);
  const allowed = limits.storedRateFactor * (first / firstInputs) * secondInputs + limits.storedSlackMiB * MiB;
  const overall = Math.max(1, final.inputs - baseline.inputs);
  return {
    baselineMiB: Math.round((baseline.bytes / MiB) * 10) / 10,
    finalMiB: Math.round((final.bytes / MiB) * 10) / 10,
    kiBPer1000: Math.round(((final.bytes - baseline.bytes) / 1024 / overall) * 1000),
    problem:
      second > allowed
        ? `stores faster and faster: ${(second / MiB).toFixed(1)} MiB over the second half (allowed ${(allowed / MiB).toFixed(1)}: ${limits.storedRateFactor}x the first half's rate per input + ${limits.storedSlackMiB} MiB)`
        : null,
  };
}
