import { loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { openUpdateLog } from '../../coordinator/update-log.js';
import { desiredDocName } from '../../shared/documents/names.js';
import { removeDirectory, temporaryDirectory } from '../harness/processes.js';
import { integerOptions } from './measure.js';

// The LevelDB update log alone under a rollout wave (issue 15): --documents appends to as many
// documents at once, so all but the first share one group commit; the process' CPU per append
// (all threads: LevelDB's thread pool included). For A/B runs of two builds, copy this compiled
// file into the other build's dist/test/bench/: it measures whichever coordinator/update-log.js
// sits beside it.
// Usage: node dist/test/bench/log-append-waves.js [--documents N] [--waves N] [--bytes N]
const { values } = parseArgs({
  options: {
    documents: { type: 'string', default: '1000' },
    waves: { type: 'string', default: '30' },
    bytes: { type: 'string', default: '426' },
  },
});
const { documents: documentCount, waves, bytes } = integerOptions(values, { documents: 1, waves: 1, bytes: 1 });

const directory = temporaryDirectory('bench-log-append-waves');
const load = loadavg()[0]!;
let cpu = 0;
try {
  const log = await openUpdateLog(directory);
  const update = new Uint8Array(bytes).fill(7);
  const documents = Array.from({ length: documentCount }, (_, i) => desiredDocName(`h${String(i).padStart(5, '0')}`));
  // A whole read, as loading a document does: the appends then need no meta read.
  for (const document of documents) await log.read(document);
  // One warm-up wave, not counted.
  for (let wave = 0; wave <= waves; wave++) {
    const start = process.cpuUsage();
    await Promise.all(documents.map((document) => log.append(document, 'admin:bench', update)));
    const used = process.cpuUsage(start);
    if (wave > 0) cpu += used.user + used.system;
  }
  await log.close();
} finally {
  removeDirectory(directory);
}
console.log(
  `${waves} waves of ${documentCount} appends (${bytes} bytes each); load ${load.toFixed(2)} → ${loadavg()[0]!.toFixed(2)}: ${(cpu / (waves * documentCount)).toFixed(1)} µs CPU per append (all threads)`,
);
