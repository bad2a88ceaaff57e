import { openUpdateLog } from '../../coordinator/update-log.js';

// A process that appends to a LevelDB update log as fast as it can, for a crash test
// (test/integration/update-log-crash.test.ts) to SIGKILL: DOCUMENTS writers in parallel, each with
// several appends in flight at once (so a batch holds several entries of one document as well as
// other documents'), printing "<document> <seq> <hash>" once an append has resolved (stdout to a
// pipe is written synchronously on Linux, so a printed line left the process before any kill).
// Usage: node dist/test/harness/update-log-writer.js DIR [DOCUMENTS] [IN_FLIGHT_PER_DOCUMENT]
const [directory, documentsArg = '8', inFlightArg = '3'] = process.argv.slice(2);
if (!directory) throw new Error('usage: update-log-writer.js DIR [DOCUMENTS] [IN_FLIGHT_PER_DOCUMENT]');
const log = await openUpdateLog(directory);
const writer = async (document: string): Promise<never> => {
  for (let n = 0; ; n++) {
    await Promise.all(
      Array.from({ length: Number(inFlightArg) }, async (_, i) => {
        const entry = await log.append(document, 'crash-test', new Uint8Array(200 + ((n + i) % 300)).fill(n % 251));
        process.stdout.write(`${document} ${entry.seq} ${entry.hash}\n`);
      }),
    );
  }
};
await Promise.all(Array.from({ length: Number(documentsArg) }, (_, i) => writer(`hosts/h${i}/desired`)));
