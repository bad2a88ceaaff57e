import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { sleep } from '../../shared/time/sleep.js';

// Readings from /proc and small statistics for the benchmark.

export function rssKiB(pid: number): number {
  const match = /^VmRSS:\s+(\d+)\s+kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!match) throw new Error(`no VmRSS in /proc/${pid}/status`);
  return Number(match[1]);
}

// Median of a few readings some time apart, once the process has settled.
export async function settledRssKiB(pid: number, samples = 5, intervalMs = 400): Promise<number> {
  const readings: number[] = [];
  for (let i = 0; i < samples; i++) {
    if (i > 0) await sleep(intervalMs);
    readings.push(rssKiB(pid));
  }
  readings.sort((a, b) => a - b);
  return readings[Math.floor(readings.length / 2)]!;
}

let clockTicks: number | null = null;
function ticksPerSecond(): number {
  if (clockTicks === null) {
    try {
      clockTicks = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

// User + system CPU seconds the process has used so far.
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // After the command: state(3) … utime(14) stime(15), here 0-based from state.
  return (Number(fields[11]) + Number(fields[12])) / ticksPerSecond();
}

export function openFiles(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

// The soft RLIMIT_NOFILE of this process (children inherit it).
export function openFileLimit(): { soft: number; hard: number } {
  const match = /^Max open files\s+(\S+)\s+(\S+)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
  const parse = (value: string | undefined): number =>
    value === undefined || value === 'unlimited' ? Number.POSITIVE_INFINITY : Number(value);
  return { soft: parse(match?.[1]), hard: parse(match?.[2]) };
}

export interface Percentiles {
  count: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  mean: number;
}

// Nearest-rank percentiles of values in milliseconds.
export function percentiles(values: number[]): Percentiles {
  if (values.length === 0)
    return { count: 0, p50: Number.NaN, p90: Number.NaN, p99: Number.NaN, max: Number.NaN, mean: Number.NaN };
  const sorted = [...values].sort((a, b) => a - b);
  const rank = (p: number): number => sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)]!;
  return {
    count: sorted.length,
    p50: rank(50),
    p90: rank(90),
    p99: rank(99),
    max: sorted[sorted.length - 1]!,
    mean: sorted.reduce((sum, v) => sum + v, 0) / sorted.length,
  };
}

export function nsToMs(ns: bigint): number {
  return Number(ns) / 1e6;
}

// CPU seconds all processes of the machine have used so far (/proc/stat, busy time only).
export function machineCpuSeconds(): number {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
  const [, user, nice, system, , , irq, softirq, steal] = line.trim().split(/\s+/).map(Number);
  return ((user ?? 0) + (nice ?? 0) + (system ?? 0) + (irq ?? 0) + (softirq ?? 0) + (steal ?? 0)) / ticksPerSecond();
}

// CPU seconds of a set of processes that may have exited meanwhile (0 then).
export function processesCpuSeconds(pids: number[]): number {
  let total = 0;
  for (const pid of pids) {
    try {
      total += cpuSeconds(pid);
    } catch {
      // gone
    }
  }
  return total;
}

// Whole-number options of a bench's command line (parseArgs gives strings), each at least its
// minimum; anything else stops the bench with the option, the bound and what was given.
export function integerOptions<K extends string>(
  values: { readonly [name: string]: unknown },
  minimums: Record<K, number>,
): Record<K, number> {
  const parsed = {} as Record<K, number>;
  for (const name of Object.keys(minimums) as K[]) {
    const value = Number(values[name]);
    if (!Number.isInteger(value) || value < minimums[name])
      throw new Error(`--${name} must be an integer ≥ ${minimums[name]} (got ${String(values[name])})`);
    parsed[name] = value;
  }
  return parsed;
}
