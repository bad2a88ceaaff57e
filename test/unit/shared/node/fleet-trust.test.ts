import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { RECENT_MS } from '../../../../shared/audit/kept-checkpoints.js';
import { checkpointKeeper } from '../../../../shared/node/fleet-trust.js';
import { createLogger } from '../../../../shared/node/log.js';
import type { SignedCheckpoint } from '../../../../shared/schemas/checkpoint.js';

// The keeper writes what checkpointsToKeep says to a file that survives restarts: every new
// checkpoint appended, a repeated or older seq ignored, a torn line dropped at the next thinning.
const checkpoint = (seq: number, at: number): SignedCheckpoint =>
  ({
    checkpoint: {
      kind: 'checkpoint',
      seq,
      at: new Date(at).toISOString(),
      policyVersion: 1,
      heads: { count: 1, root: 'r' },
    },
    signature: { publicKey: 'k', signature: 's' },
  }) as unknown as SignedCheckpoint;

const readSeqs = async (path: string): Promise<number[]> =>
  (await fs.readFile(path, 'utf8'))
    .split('\n')
    .filter(Boolean)
    .map((line) => (JSON.parse(line) as SignedCheckpoint).checkpoint.seq);

test('three days of checkpoints a minute: the last day whole, one an hour before, repeats ignored, and a restart goes on', async () => {
  const path = join(await fs.mkdtemp(join(tmpdir(), 'outpost-kept-')), 'kept-checkpoints.jsonl');
  const logger = createLogger('test', 'silent');
  const start = Date.parse('2026-12-01T00:00:00Z');
  let keep = checkpointKeeper(path, logger);
  const total = 3 * 1440;
  for (let seq = 1; seq <= total; seq += 1) {
    keep(checkpoint(seq, start + seq * 60_000));
    if (seq % 7 === 0) keep(checkpoint(seq, start + seq * 60_000)); // delivered twice
    if (seq === 2000) {
      // A crash mid-append, then a restart: a new keeper reads the file.
      while ((await readSeqs(path).catch(() => [])).at(-1) !== seq)
        await new Promise((resolve) => setTimeout(resolve, 50));
      await fs.appendFile(path, '{"checkpoint":{"se');
      await fs.appendFile(path, '\n');
      keep = checkpointKeeper(path, logger);
    }
    if (seq % 500 === 0) await new Promise((resolve) => setTimeout(resolve, 20));
  }
  // The keeper writes in the background, in order: wait for the newest.
  let seqs: number[] = [];
  for (let waited = 0; seqs.at(-1) !== total && waited < 30_000; waited += 100) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    seqs = await readSeqs(path).catch(() => []);
  }
  assert.equal(
    seqs,
    [...new Set(seqs)].sort((a, b) => a - b),
    'ascending, each once',
  );
  assert.is(seqs.at(-1), total, 'the newest kept');
  const lastDay = seqs.filter((seq) => start + seq * 60_000 > start + total * 60_000 - RECENT_MS);
  assert.is(lastDay.length, 1440, 'every checkpoint of the last day');
  assert.ok(seqs.length < total, `thinned: ${seqs.length} of ${total}`);
});

test.run();
