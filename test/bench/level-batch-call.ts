import { execFileSync } from 'node:child_process';
import { loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { Level } from 'level';
import { desiredDocName } from '../../shared/documents/names.js';
import { removeDirectory, temporaryDirectory } from '../harness/processes.js';
import { integerOptions, percentiles } from './measure.js';

// What a group commit's call into LevelDB costs the main thread (issue 15), per document of a
// batch: the update log's two puts per document (the entry under u!<document>!<seq> and the head
// under d!<document>), handed over as
// - array, { sync: true }: db.batch(ops, { sync: true }), what the log does;
// - array, no options: the same without options (not durable: only to show what the options cost);
// - array, byte keys: keys encoded to bytes beforehand, { sync: true, keyEncoding: 'view' };
// - chained: db.batch().put(…)…write({ sync: true }), tried in the log and reverted: its CPU is a
//   fifth of the array's, but the dispatch bench's rollout p99 was 5–14× (docs/performance.md);
// - chained, byte keys: the same with keys encoded to bytes in the timed part (keyEncoding 'view').
// Each variant runs in a process of its own, as the log does in the coordinator (its only caller of
// db.batch): V8's handling of abstract-level's op clone ({ ...options, ...op }) depends on which
// shapes the call site has seen, so variants sharing a process change each other's figures.
// Timed: the synchronous part of the call (abstract-level's and classic-level's JS and the
// binding's copy of the keys and values, up to the write queued for LevelDB's thread), as wall time
// (the median of the batches: a preempted call is an outlier), and the process' CPU per document
// over the whole batch (all threads, the fsync'ed write included). Variants alternate per round.
// Usage: node dist/test/bench/level-batch-call.js [--documents N] [--batches N] [--rounds N]
// (--variant NAME: that variant alone in this process, figures as JSON)
const { values } = parseArgs({
  options: {
    documents: { type: 'string', default: '50' },
    batches: { type: 'string', default: '200' },
    rounds: { type: 'string', default: '4' },
    variant: { type: 'string' },
  },
});
const WARM_UP = 40;
const { documents: documentCount, batches, rounds } = integerOptions(values, { documents: 1, batches: 1, rounds: 1 });

const documents = Array.from({ length: documentCount }, (_, i) => desiredDocName(`h${String(i).padStart(5, '0')}`));
const entryValue = new Uint8Array(560).fill(7);
const utf8 = new TextEncoder();
const headValue = (seq: number): Uint8Array => utf8.encode(`${seq} ${'a'.repeat(64)}`);
const entryKey = (document: string, seq: number): string => `u!${document}!${seq.toString(16).padStart(12, '0')}`;

type Db = Level<string, Uint8Array>;
type Put = { type: 'put'; key: string; value: Uint8Array };
// Built inside each timed call, as the log builds them per group commit.
const arrayOps = (seq: number): Put[] => [
  ...documents.map((d): Put => ({ type: 'put', key: entryKey(d, seq), value: entryValue })),
  ...documents.map((d): Put => ({ type: 'put', key: `d!${d}`, value: headValue(seq) })),
];
// Each variant: the synchronous call, returning the write's promise.
const variants: Record<string, (db: Db, seq: number) => Promise<void>> = {
  'array, { sync: true }': (db, seq) => db.batch(arrayOps(seq), { sync: true }),
  'array, no options': (db, seq) => db.batch(arrayOps(seq)),
  'array, byte keys': (db, seq) => {
    const ops: { type: 'put'; key: Uint8Array; value: Uint8Array }[] = documents.map((d) => ({
      type: 'put',
      key: utf8.encode(entryKey(d, seq)),
      value: entryValue,
    }));
    for (const d of documents) ops.push({ type: 'put', key: utf8.encode(`d!${d}`), value: headValue(seq) });
    return db.batch<Uint8Array, Uint8Array>(ops, { sync: true, keyEncoding: 'view', valueEncoding: 'view' });
  },
  chained: (db, seq) => {
    const batch = db.batch();
    for (const d of documents) batch.put(entryKey(d, seq), entryValue);
    for (const d of documents) batch.put(`d!${d}`, headValue(seq));
    return batch.write({ sync: true });
  },
  'chained, byte keys': (db, seq) => {
    const batch = db.batch();
    for (const d of documents)
      batch.put<Uint8Array, Uint8Array>(utf8.encode(entryKey(d, seq)), entryValue, { keyEncoding: 'view' });
    for (const d of documents)
      batch.put<Uint8Array, Uint8Array>(utf8.encode(`d!${d}`), headValue(seq), { keyEncoding: 'view' });
    return batch.write({ sync: true });
  },
};

// One variant in this process: warm-up batches, then the timed ones; prints its figures as JSON.
async function runVariant(name: string): Promise<{ callP50: number; callP90: number; cpu: number }> {
  const call = variants[name];
  if (!call) throw new Error(`unknown --variant ${name}; one of: ${Object.keys(variants).join('; ')}`);
  const directory = temporaryDirectory('bench-level-batch-call');
  try {
    const db: Db = new Level<string, Uint8Array>(directory, { keyEncoding: 'utf8', valueEncoding: 'view' });
    await db.open();
    const samples: number[] = [];
    let cpu = 0;
    for (let seq = 1; seq <= WARM_UP + batches; seq++) {
      const cpuStart = process.cpuUsage();
      const start = process.hrtime.bigint();
      const written = call(db, seq);
      const took = Number(process.hrtime.bigint() - start) / 1000;
      await written;
      const used = process.cpuUsage(cpuStart);
      if (seq > WARM_UP) {
        samples.push(took / documentCount);
        cpu += used.user + used.system;
      }
    }
    await db.close();
    const p = percentiles(samples);
    return { callP50: p.p50, callP90: p.p90, cpu: cpu / (batches * documentCount) };
  } finally {
    removeDirectory(directory);
  }
}

if (values.variant !== undefined) console.log(JSON.stringify(await runVariant(values.variant)));
else {
  const load = loadavg()[0]!;
  const results = new Map<string, { callP50: number; callP90: number; cpu: number }[]>();
  for (let round = 0; round < rounds; round++)
    for (const name of Object.keys(variants)) {
      const output = execFileSync(
        process.execPath,
        [
          fileURLToPath(import.meta.url),
          '--variant',
          name,
          '--documents',
          `${documentCount}`,
          '--batches',
          `${batches}`,
        ],
        { encoding: 'utf8' },
      );
      results.set(name, [...(results.get(name) ?? []), JSON.parse(output)]);
    }
  console.log(
    `${rounds} processes per variant, each ${batches} batches of ${documentCount} documents (2 puts each) after ${WARM_UP} not counted; load ${load.toFixed(2)} → ${loadavg()[0]!.toFixed(2)}; µs per document, the processes' median (min–max)`,
  );
  console.log(
    '                          call p50              call p90              CPU (all threads, the write included)',
  );
  const spread = (figures: number[]): string => {
    const sorted = [...figures].sort((a, b) => a - b);
    const median = sorted[Math.floor(sorted.length / 2)]!;
    return `${median.toFixed(2)} (${sorted[0]!.toFixed(2)}–${sorted.at(-1)!.toFixed(2)})`.padEnd(22);
  };
  for (const [name, runs] of results)
    console.log(
      `  ${name.padEnd(22)}  ${spread(runs.map((r) => r.callP50))}${spread(runs.map((r) => r.callP90))}${spread(runs.map((r) => r.cpu))}`,
    );
}
