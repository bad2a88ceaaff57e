import { parseArgs } from 'node:util';
import { encodeLogEntry, type LogEntry } from '../../coordinator/update-log.js';
import { GENESIS_HASH, logEntryHash } from '../../shared/audit/log-chain.js';
import { referenceEncodeLogEntry, referenceLogEntryHash } from '../harness/log-entry-reference.js';
import { integerOptions } from './measure.js';

// Issue 15: the per-entry CPU of the coordinator's append, in isolation. Times logEntryHash and
// encodeLogEntry as shipped against the versions they replaced (test/harness/log-entry-reference.ts)
// in the same run, alternating rounds so both see the same machine load, and reports µs per call
// (median of the rounds) for a few update sizes.
// Usage: node dist/test/bench/log-entry-encoding.js [--calls N] [--rounds N]
const { values } = parseArgs({
  options: {
    calls: { type: 'string', default: '20000' },
    rounds: { type: 'string', default: '15' },
  },
});
const { calls, rounds } = integerOptions(values, { calls: 100, rounds: 3 });

// A desired document's name, a base64 key as the principal, and a Yjs-update-sized payload.
function entryOf(updateBytes: number, seq: number): LogEntry {
  const update = new Uint8Array(updateBytes);
  for (let i = 0; i < updateBytes; i++) update[i] = (i * 31 + seq) & 0xff;
  const partial = {
    document: `hosts/host-${String(seq % 1000).padStart(4, '0')}/desired`,
    seq,
    receivedAt: 1_764_000_000_000 + seq,
    principal: 'Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmE=',
    update,
  };
  const prevHash = referenceLogEntryHash(GENESIS_HASH, { ...partial, seq: seq - 1 || 1 });
  return { ...partial, prevHash, hash: referenceLogEntryHash(prevHash, partial) };
}

function microsPerCall(entries: readonly LogEntry[], run: (entry: LogEntry) => unknown): number {
  let sink = 0;
  const start = process.hrtime.bigint();
  for (let i = 0; i < calls; i++) {
    const out = run(entries[i % entries.length]!);
    sink += typeof out === 'string' ? out.length : (out as Uint8Array).length;
  }
  const elapsed = Number(process.hrtime.bigint() - start) / 1000;
  if (sink === 0) throw new Error('nothing produced');
  return elapsed / calls;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const cases: Array<[string, (entry: LogEntry) => unknown]> = [
  ['logEntryHash, before', (e) => referenceLogEntryHash(e.prevHash, e)],
  ['logEntryHash, now', (e) => logEntryHash(e.prevHash, e)],
  ['encodeLogEntry, before', (e) => referenceEncodeLogEntry(e)],
  ['encodeLogEntry, now', (e) => encodeLogEntry(e)],
];

console.log(`${calls} calls per round, ${rounds} rounds, median µs per call`);
for (const updateBytes of [100, 600, 4096, 65536]) {
  const entries = Array.from({ length: 64 }, (_, i) => entryOf(updateBytes, i + 1));
  for (const e of entries) {
    if (logEntryHash(e.prevHash, e) !== e.hash) throw new Error('logEntryHash differs from the reference');
    if (!sameBytes(encodeLogEntry(e), referenceEncodeLogEntry(e)))
      throw new Error('encodeLogEntry differs from the reference');
  }
  const samples = cases.map((): number[] => []);
  for (let r = 0; r < rounds; r++)
    for (const [i, [, run]] of cases.entries()) samples[i]!.push(microsPerCall(entries, run));
  const m = samples.map(median);
  console.log(
    `update ${updateBytes} B: logEntryHash ${m[0]!.toFixed(2)} → ${m[1]!.toFixed(2)} µs (${ratio(m[1]!, m[0]!)}), ` +
      `encodeLogEntry ${m[2]!.toFixed(2)} → ${m[3]!.toFixed(2)} µs (${ratio(m[3]!, m[2]!)})`,
  );
}

function ratio(now: number, before: number): string {
  return `${(now / before).toFixed(2)}×`;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((byte, i) => byte === b[i]);
}
