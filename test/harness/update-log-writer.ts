import { openUpdateLog } from '../../coordinator/update-log.js';

// A process that appends to a LevelDB update log as fast as it can, for a crash test
// (test/integration/update-log-crash.test.ts) to SIGKILL: DOCUMENTS writers in parallel, each
// printing "<document> <seq> <hash>" once its append has resolved (stdout to a pipe is written
// synchronously on Linux, so a printed line left the process before any kill).
// Usage: node dist/test/harness/update-log-writer.js DIR [DOCUMENTS] [SEGMENT_BYTES]
const [directory, documentsArg = '8', segmentArg] = process.argv.slice(2);
if (!directory) throw new Error('usage: update-log-writer.js DIR [DOCUMENTS] [SEGMENT_BYTES]');
const log = await openUpdateLog(directory, segmentArg ? { segmentBytes: Number(segmentArg) } : {});
process.stdout.write('ready\n');
const writer = async (document: string): Promise<never> => {
  for (let n = 0; ; n++) {
    const entry = await log.append(document, 'crash-test', new Uint8Array(200 + (n % 300)).fill(n % 251));
    process.stdout.write(`${document} ${entry.seq} ${entry.hash}\n`);
  }
};
await Promise.all(Array.from({ length: Number(documentsArg) }, (_, i) => writer(`hosts/h${i}/desired`)));
