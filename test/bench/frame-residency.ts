import { existsSync, readFileSync } from 'node:fs';
import { nsToMs, type Percentiles, percentiles } from './measure.js';

// Time each bench intent spent inside a server: from its frame arriving (from the admin) to the
// server handing the update on to the next socket (the host's agent), from frame-trace.ts's lines,
// for the frames that arrived between `fromNs` and `toNs`. Our coordinator stores the update
// (fsync'ed) between the two; the stock server only applies and encodes it.
export function serverResidency(file: string, fromNs: bigint, toNs: bigint): Percentiles | null {
  if (!existsSync(file)) return null;
  const arrived = new Map<string, bigint>();
  const samples: number[] = [];
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const [direction, host, at] = line.split('\t');
    if (!direction || !host || !at) continue;
    const ns = BigInt(at);
    if (direction === 'in') {
      if (ns >= fromNs && ns < toNs && !arrived.has(host)) arrived.set(host, ns);
      continue;
    }
    const since = arrived.get(host);
    if (since === undefined) continue;
    samples.push(nsToMs(ns - since));
    arrived.delete(host);
  }
  return percentiles(samples);
}
