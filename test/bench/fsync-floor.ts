import { closeSync, fdatasyncSync, mkdtempSync, openSync, writeSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Level } from 'level';
import { removeDirectory } from '../harness/processes.js';
import { nsToMs, percentiles } from './measure.js';

// The physical floor under the coordinator's write path (issue 15): how long one durable append
// of an intent-sized log entry takes on this disk, one at a time (what a single write waits for
// before it is fanned out), in the same directory the dispatch bench's coordinator uses (tmpdir).
// - raw: write(2) + fdatasync(2) on an append-only file, on the main thread (no thread pool);
// - raw, preallocated: write(2) + fdatasync(2) over a file written and synced beforehand, so
//   each append changes no file size or block map and its fdatasync has no metadata to commit
//   (on ext4: no journal commit, which waits for whatever else the journal holds);
// - raw, async: the same through Node's thread pool (fs.promises: two hops, write then sync);
// - LevelDB sync batch: what coordinator/update-log.ts does per group commit (one entry and the
//   document's meta key, `sync: true`: one hop);
// - LevelDB without sync: the same batch without the fsync, to separate the disk from the rest.
// Usage: node dist/test/bench/fsync-floor.js [--appends N] [--entry-bytes N]
const { values } = parseArgs({
  options: {
    appends: { type: 'string', default: '2000' },
    'entry-bytes': { type: 'string', default: '600' },
  },
});
const appends = Number(values.appends);
const entryBytes = Number(values['entry-bytes']);
if (!Number.isInteger(appends) || appends < 10 || !Number.isInteger(entryBytes) || entryBytes < 1)
  throw new Error('--appends must be an integer ≥ 10 and --entry-bytes ≥ 1');

const directory = mkdtempSync(join(tmpdir(), 'outpost-bench-fsync-'));
const entry = new Uint8Array(entryBytes).fill(7);
const timings = new Map<string, number[]>();

async function timed(name: string, append: (i: number) => Promise<void> | void): Promise<void> {
  const samples: number[] = [];
  for (let i = 0; i < appends; i++) {
    const start = process.hrtime.bigint();
    await append(i);
    samples.push(nsToMs(process.hrtime.bigint() - start));
  }
  timings.set(name, samples);
}

try {
  const rawFd = openSync(join(directory, 'raw.log'), 'a');
  await timed('raw write + fdatasync (main thread)', () => {
    writeSync(rawFd, entry);
    fdatasyncSync(rawFd);
  });
  closeSync(rawFd);

  const preallocatedFd = openSync(join(directory, 'preallocated.log'), 'w');
  writeSync(preallocatedFd, new Uint8Array(appends * entryBytes));
  fdatasyncSync(preallocatedFd);
  await timed('raw, preallocated file (main thread)', (i) => {
    writeSync(preallocatedFd, entry, 0, entry.length, i * entryBytes);
    fdatasyncSync(preallocatedFd);
  });
  closeSync(preallocatedFd);

  const asyncFile = await open(join(directory, 'async.log'), 'a');
  await timed('raw write + fdatasync (thread pool)', async () => {
    await asyncFile.write(entry);
    await asyncFile.datasync();
  });
  await asyncFile.close();

  for (const sync of [true, false]) {
    const db = new Level<string, Uint8Array>(join(directory, `level-${sync}`), {
      keyEncoding: 'utf8',
      valueEncoding: 'view',
    });
    await db.open();
    await timed(sync ? 'LevelDB batch, sync: true' : 'LevelDB batch, sync: false', (i) =>
      db.batch(
        [
          { type: 'put', key: `u!d!${i.toString(16).padStart(12, '0')}`, value: entry },
          { type: 'put', key: 'd!d', value: new TextEncoder().encode(`${i} ${'0'.repeat(64)}`) },
        ],
        { sync },
      ),
    );
    await db.close();
  }
} finally {
  removeDirectory(directory);
}

console.log(
  `${appends} appends of ${entryBytes} bytes, one at a time, in ${tmpdir()}; load ${loadavg()[0]!.toFixed(2)}`,
);
for (const [name, samples] of timings) {
  const p = percentiles(samples);
  console.log(
    `  ${name.padEnd(38)} p50 ${p.p50.toFixed(3)} ms  p99 ${p.p99.toFixed(3)} ms  mean ${p.mean.toFixed(3)} ms`,
  );
}
