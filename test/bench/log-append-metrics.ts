// The coordinator's own view of its update log's commits, read from its /metrics
// (outpost_update_log_append_seconds, coordinator/metrics.ts), so that every dispatch bench run
// says how long appends took to become durable in each phase, without a diagnostic build.

export const APPEND_HISTOGRAM = 'outpost_update_log_append_seconds';

// Cumulative counts per upper bound (seconds, ascending, the last +Infinity), as Prometheus has them.
export interface AppendHistogram {
  buckets: [number, number][];
  count: number;
  sum: number;
}

export interface AppendSummary {
  count: number;
  meanMs: number;
  // Estimated within the bucket, as Prometheus' histogram_quantile does: read as "about".
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
}

// The histogram in a Prometheus text page, or null when the page has none (the stock server).
export function parseAppendHistogram(text: string): AppendHistogram | null {
  const buckets: [number, number][] = [];
  let count: number | null = null;
  let sum: number | null = null;
  for (const line of text.split('\n')) {
    if (!line.startsWith(APPEND_HISTOGRAM)) continue;
    const value = Number(line.slice(line.lastIndexOf(' ') + 1));
    const series = line.slice(0, line.lastIndexOf(' '));
    if (series.startsWith(`${APPEND_HISTOGRAM}_bucket{`)) {
      const le = /le="([^"]+)"/.exec(series)?.[1];
      if (le === undefined) continue;
      buckets.push([le === '+Inf' ? Number.POSITIVE_INFINITY : Number(le), value]);
    } else if (series.startsWith(`${APPEND_HISTOGRAM}_count`)) count = value;
    else if (series.startsWith(`${APPEND_HISTOGRAM}_sum`)) sum = value;
  }
  if (count === null || sum === null || buckets.length === 0) return null;
  buckets.sort((a, b) => a[0] - b[0]);
  return { buckets, count, sum };
}

// What was observed between two readings of the same server.
export function appendsBetween(before: AppendHistogram, after: AppendHistogram): AppendHistogram {
  const earlier = new Map(before.buckets);
  return {
    buckets: after.buckets.map(([le, n]) => [le, n - (earlier.get(le) ?? 0)]),
    count: after.count - before.count,
    sum: after.sum - before.sum,
  };
}

// The q-quantile in seconds, linear within its bucket (from 0 for the first). A quantile that
// falls in the +Inf bucket is the highest finite bound: "at least".
export function histogramQuantile(histogram: AppendHistogram, q: number): number {
  const { buckets, count } = histogram;
  if (count <= 0) return Number.NaN;
  const rank = q * count;
  let lower = 0;
  let below = 0;
  for (const [le, cumulative] of buckets) {
    if (cumulative >= rank) {
      if (!Number.isFinite(le)) return lower;
      const inBucket = cumulative - below;
      return inBucket === 0 ? le : lower + ((le - lower) * (rank - below)) / inBucket;
    }
    lower = le;
    below = cumulative;
  }
  return lower;
}

export function summarizeAppends(histogram: AppendHistogram): AppendSummary {
  const ms = (seconds: number): number => seconds * 1000;
  return {
    count: histogram.count,
    meanMs: histogram.count > 0 ? ms(histogram.sum / histogram.count) : Number.NaN,
    p50Ms: ms(histogramQuantile(histogram, 0.5)),
    p90Ms: ms(histogramQuantile(histogram, 0.9)),
    p99Ms: ms(histogramQuantile(histogram, 0.99)),
  };
}

// GET /metrics of a server given by its websocket URL; null when it serves no such histogram.
export async function readAppendHistogram(serverUrl: string): Promise<AppendHistogram | null> {
  const url = `${serverUrl.replace(/^ws/, 'http').replace(/\/+$/, '')}/metrics`;
  try {
    const response = await fetch(url);
    if (!response.ok) return null;
    return parseAppendHistogram(await response.text());
  } catch {
    return null;
  }
}
