// The slow-drip defence: a transfer must move at least minBytesPerSecond averaged over every
// window of windowMs (after its first windowMs). Nix's stalled-download-timeout only catches a
// silent connection; a cache sending one byte every few minutes passes it forever.

export interface ThroughputRule {
  minBytesPerSecond: number;
  windowMs: number;
}

export interface ThroughputGuard {
  record(totalBytes: number, at: number): void;
  // null while the transfer keeps up; otherwise why it is too slow.
  check(at: number): string | null;
}

export function createThroughputGuard(rule: ThroughputRule, startedAt: number): ThroughputGuard {
  // (time, bytes so far) samples, oldest first; one at the start so a silent transfer is caught.
  const samples: { at: number; bytes: number }[] = [{ at: startedAt, bytes: 0 }];
  let latest = 0;
  return {
    record(totalBytes, at) {
      latest = totalBytes;
      samples.push({ at, bytes: totalBytes });
    },
    check(at) {
      if (rule.minBytesPerSecond <= 0 || at - startedAt < rule.windowMs) return null;
      // Keep the newest sample at or before the window's start as the baseline.
      while (samples.length > 1 && samples[1]!.at <= at - rule.windowMs) samples.shift();
      const baseline = samples[0]!;
      const seconds = Math.max(rule.windowMs, at - baseline.at) / 1000;
      const rate = (latest - baseline.bytes) / seconds;
      if (rate >= rule.minBytesPerSecond) return null;
      return `${Math.round(rate)} B/s over the last ${Math.round(seconds)} s is below the minimum throughput of ${rule.minBytesPerSecond} B/s (--min-throughput)`;
    },
  };
}
