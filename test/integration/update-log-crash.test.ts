import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { openUpdateLog } from '../../coordinator/update-log.js';
import { checkLogChain } from '../../shared/audit/log-chain.js';
import { removeDirectory, temporaryDirectory } from '../harness/processes.js';

const WRITER = fileURLToPath(new URL('../harness/update-log-writer.js', import.meta.url));

// Runs the writer until it has acknowledged `acks` appends, SIGKILLs it, and returns what it
// acknowledged: document -> seq -> hash.
async function writeUntilKilled(directory: string, acks: number): Promise<Map<string, Map<number, string>>> {
  const child = spawn(process.execPath, [WRITER, directory, '8', '3'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const acknowledged = new Map<string, Map<number, string>>();
  let count = 0;
  let rest = '';
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  child.stdout.setEncoding('utf8');
  child.stdout.on('data', (chunk: string) => {
    const lines = (rest + chunk).split('\n');
    rest = lines.pop()!;
    for (const line of lines) {
      const [document, seq, hash] = line.split(' ');
      if (!hash) continue;
      if (!acknowledged.has(document!)) acknowledged.set(document!, new Map());
      acknowledged.get(document!)!.set(Number(seq), hash);
      count += 1;
      if (count === acks) child.kill('SIGKILL');
    }
  });
  await exited;
  // Lines still in the pipe were acknowledged before the kill too.
  await new Promise((resolve) => setImmediate(resolve));
  assert.ok(count >= acks, `the writer acknowledged ${count} appends before it died (wanted ${acks})`);
  return acknowledged;
}

// What the LevelDB log promises (update-log.ts): an append resolves only once its batch is
// fsync'ed, and each batch writes a document's entries together with its head. So a process killed
// mid-traffic, at any point of a batch, loses no acknowledged append and leaves each document one
// unbroken chain whose stored head is its last entry (the next append after a restart numbers and
// chains on from that head).
test('SIGKILL while appending to many documents: every acknowledged append is in the reopened log, each chain whole', async () => {
  const directory = temporaryDirectory('log-crash');
  try {
    for (const [round, acks] of [1500, 4000, 2500].entries()) {
      const acknowledged = await writeUntilKilled(directory, acks);
      const log = await openUpdateLog(directory);
      try {
        for (const [document, hashes] of acknowledged) {
          const entries = await log.read(document);
          const bySeq = new Map(entries.map((e) => [e.seq, e.hash]));
          for (const [seq, hash] of hashes)
            assert.is(
              bySeq.get(seq),
              hash,
              `round ${round}: ${document} #${seq} was acknowledged and must be in the log`,
            );
          const check = checkLogChain(document, entries);
          assert.equal(check.problems, [], `round ${round}: ${document} is one unbroken chain`);
          assert.equal(
            await log.head(document),
            check.head,
            `round ${round}: ${document}'s stored head is its last entry`,
          );
        }
      } finally {
        await log.close();
      }
    }
  } finally {
    removeDirectory(directory);
  }
});

test.run();
