import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import * as Y from 'yjs';
import { REPLAY_TRANSACTION_BYTES, replayLog } from '../../coordinator/hosted-documents.js';
import { INTENTS_KEY } from '../../shared/documents/desired.js';

// Loading a document whose log wrote and deleted many entries (issue 11): the servers' copies
// collect garbage, but only as a transaction ends, so replaying the whole log in one transaction
// would hold every entry the log ever carried decoded until the load ends. The coordinator replays
// in transactions of up to 64 KiB (coordinator/hosted-documents.ts); this compares the live heap at
// the end of each transaction (the peak: garbage is collected after) and the time, against one
// transaction for the whole log, in the same run.
// Run: npm run -s build && node dist/test/bench/replay-history.js

setFlagsFromString('--expose-gc');
const collect = runInNewContext('gc') as () => void;
const MiB = 2 ** 20;

type LoggedUpdate = { seq: number; update: Uint8Array };

function writtenAndDeleted(count: number, entry: (n: number) => unknown, deleteEvery: number): LoggedUpdate[] {
  const doc = new Y.Doc({ gc: true });
  const log: LoggedUpdate[] = [];
  doc.on('update', (update: Uint8Array) => log.push({ seq: log.length + 1, update }));
  const intents = doc.getArray(INTENTS_KEY);
  for (let n = 0; n < count; n++) {
    doc.transact(() => intents.push([entry(n)]));
    if (n % deleteEvery === 0) doc.transact(() => intents.delete(0, 1));
  }
  doc.destroy();
  return log;
}

function replayOnce(log: LoggedUpdate[], transactionBytes: number): { peak: number; ms: number } {
  collect();
  collect();
  const base = process.memoryUsage().heapUsed;
  const doc = new Y.Doc({ gc: true });
  let peak = 0;
  doc.on('afterTransaction', () => {
    collect();
    peak = Math.max(peak, process.memoryUsage().heapUsed - base);
  });
  replayLog(doc, log, transactionBytes);
  doc.destroy();
  // Timed without the probe, which collects garbage at each transaction.
  const timed = new Y.Doc({ gc: true });
  const start = performance.now();
  replayLog(timed, log, transactionBytes);
  const ms = performance.now() - start;
  timed.destroy();
  return { peak, ms };
}

const median = (values: number[]): number => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]!;

function compare(name: string, log: LoggedUpdate[]): void {
  const bytes = log.reduce((sum, { update }) => sum + update.length, 0);
  const runs = { whole: [] as { peak: number; ms: number }[], chunked: [] as { peak: number; ms: number }[] };
  for (let i = 0; i < 5; i++) {
    runs.whole.push(replayOnce(log, Number.POSITIVE_INFINITY));
    runs.chunked.push(replayOnce(log, REPLAY_TRANSACTION_BYTES));
  }
  const line = (label: string, r: { peak: number; ms: number }[]): string =>
    `${label}: peak live heap ${(median(r.map((x) => x.peak)) / MiB).toFixed(1)} MiB, ${median(r.map((x) => x.ms)).toFixed(0)} ms`;
  console.log(`${name} (${log.length} updates, ${(bytes / MiB).toFixed(1)} MiB; medians of 5)`);
  console.log(`  ${line('one transaction', runs.whole)}`);
  console.log(`  ${line(`${REPLAY_TRANSACTION_BYTES / 1024} KiB transactions`, runs.chunked)}`);
  console.log(
    `  time ratio (chunked / one): ${(median(runs.chunked.map((x) => x.ms)) / median(runs.whole.map((x) => x.ms))).toFixed(2)}`,
  );
}

// Large entries, each deleted again (the attack test's shape: ~22 KB, 1,000 objects).
compare(
  '400 entries written and deleted',
  writtenAndDeleted(
    400,
    (n) => ({ n, rows: Array.from({ length: 1000 }, (_, i) => ({ k: `row-${String(i).padStart(11, '0')}` })) }),
    1,
  ),
);
// Many small updates, every second entry deleted: where one transaction was chosen for speed.
const small = writtenAndDeleted(10_000, (n) => ({ n, note: 'x'.repeat(200) }), 2);
compare('10,000 small entries, half deleted', small);

// Time against transaction size for the small log (medians of 7, sizes interleaved).
const sizes = [Number.POSITIVE_INFINITY, MiB, 256 * 1024, 64 * 1024, 16 * 1024, 1];
const times = new Map<number, number[]>(sizes.map((size) => [size, []]));
for (let round = 0; round < 7; round++)
  for (const size of sizes) {
    const doc = new Y.Doc({ gc: true });
    const start = performance.now();
    replayLog(doc, small, size);
    times.get(size)!.push(performance.now() - start);
    doc.destroy();
  }
const label = (size: number): string =>
  size === Number.POSITIVE_INFINITY ? 'one' : size === 1 ? 'one per update' : `${size / 1024} KiB`;
console.log(
  `  by transaction size: ${sizes.map((size) => `${label(size)} ${median(times.get(size)!).toFixed(0)} ms`).join(', ')}`,
);
