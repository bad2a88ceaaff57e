import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { runSoak } from '../bench/nats-soak-workload.js';
import { removeDirectory, temporaryDirectory } from '../harness/processes.js';

// The set workload of test/bench/nats-soak-workload.ts, short and seeded: writes to intent and
// status documents through 3 random coordinators, acknowledged only once the coordinator answers a
// barrier after them, while coordinators and NATS nodes (one, or two at once: no quorum) are
// SIGKILLed and restarted. Afterwards every acknowledged item must be in its document through
// every coordinator and through one started from nothing: 0 lost. `npm run soak:nats` runs the
// issue's 10,000 writes (docs/scale-out.md has its figures).
const test = suite('NATS backend under kills: no acknowledged update lost');
const dir = temporaryDirectory('nats-soak');

test.after(() => {
  if (!process.env.OUTPOST_KEEP_TEST_DIR) removeDirectory(dir);
});

test('writes through random coordinators while coordinators and NATS nodes are killed: 0 acknowledged lost', async () => {
  const result = await runSoak({
    directory: dir,
    writes: 2000,
    workers: 6,
    hosts: 3,
    seed: 15,
    pauseMs: 40,
    upMs: [1500, 3000],
    downMs: [1500, 3500],
  });
  console.log(
    `set workload: ${result.attempted} writes to ${result.documents} documents in ${result.writingSeconds.toFixed(0)} s, ` +
      `${result.acknowledged} acknowledged, ${result.indeterminate} indeterminate, ${result.lost} lost; ` +
      `missing per coordinator ${JSON.stringify(result.missing)}; faults: ${result.faults.join(', ')}`,
  );
  assert.equal(result.examples, [], 'acknowledged items missing');
  assert.is(result.lost, 0);
  for (const [coordinator, missing] of Object.entries(result.missing)) assert.is(missing, 0, coordinator);
  assert.ok(result.faults.length >= 4, `faults were injected (${result.faults.length})`);
  assert.ok(
    result.acknowledged > result.attempted / 2,
    `most writes were acknowledged (${result.acknowledged} of ${result.attempted})`,
  );
});

test.run();
