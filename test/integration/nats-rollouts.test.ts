import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { SigningKey } from '../../shared/crypto/keys.js';
import { readIntentEntries } from '../../shared/documents/desired.js';
import { desiredDocName, statusDocName } from '../../shared/documents/names.js';
import { appendResult } from '../../shared/documents/status.js';
import { connectDocument, type DocumentConnection, waitForSync } from '../../shared/node/connect.js';
import { installNodeEd25519 } from '../../shared/node/ed25519.js';
import { logEvents } from '../harness/lifecycle-fleet.js';
import { clusterCoordinators, type NatsCluster, startNatsCluster } from '../harness/nats-cluster.js';
import { makeTestOrg } from '../harness/policy-fixtures.js';
import { removeDirectory, temporaryDirectory, waitFor } from '../harness/processes.js';
import { fixtureHosts, hostResult, submitPlanOnceKnown, twoWaveRollout } from '../harness/rollout-fixtures.js';

// Rollouts on two coordinators sharing a NATS JetStream log (docs/scale-out.md): one holds the
// rollout lease and alone judges gates and delivers waves, whichever coordinator an admin
// submitted to; when it dies the other takes the lease over and finishes the rollout.
installNodeEd25519();
const org = makeTestOrg();
const dir = temporaryDirectory('nats-rollouts');
const [h1, h2] = fixtureHosts(2);
let cluster: NatsCluster;
const clients: DocumentConnection[] = [];

const onCluster = clusterCoordinators(dir, ['--nats-replicas', '3', '--org-root', org.root.publicKey]);
const startOnCluster = (name: string) => onCluster.start(cluster, name);

async function intentsOn(url: string, host: string, identity: SigningKey): Promise<number> {
  const client = connectDocument(url, desiredDocName(host), { identity, maxBackoffMs: 500 });
  clients.push(client);
  try {
    await waitForSync(client, 10_000);
    return readIntentEntries(client.doc).entries.length;
  } finally {
    client.close();
  }
}

test.before(async () => {
  cluster = await startNatsCluster(join(dir, 'nats'), 3);
});

test.after(async () => {
  for (const client of clients) client.close();
  await onCluster.stopAll();
  await cluster?.close();
  if (!process.env.OUTPOST_KEEP_TEST_DIR) removeDirectory(dir);
});

test('one coordinator delivers a rollout submitted to the other; when it is SIGKILLed the other takes over and delivers the next wave', async () => {
  // A starts first, so it takes the lease.
  const a = await startOnCluster('a');
  await waitFor('A to take the rollout lease', () => logEvents(a, 'rollout-lease-taken')[0], 20_000);
  const b = await startOnCluster('b');
  const plan = await twoWaveRollout(a.url, org, [h1!, h2!], 'ha');
  // Submitted to B, which is not the lease holder (B learns the policy and enrollments from the
  // stream: it may refuse until then).
  await submitPlanOnceKnown(b.url, plan, 'B to store the plan');
  await waitFor('A to deliver wave 1', () => logEvents(a, 'rollout-wave-delivered')[0], 30_000);
  // A's log line says the intent is in the stream, not that B's copy has it: B follows the stream
  // on its own time (it loaded h1's desired document to check the plan), so the read through B
  // waits for it (a 1.5 s hold on B's NATS delivery read 0 here).
  const throughB = await waitFor(
    "h1's rollout intent, read through B",
    async () => {
      const count = await intentsOn(b.url, 'h1', org.alice);
      return count > 0 ? count : null;
    },
    30_000,
    200,
  );
  assert.is(throughB, 1, "h1's rollout intent, read through B");
  assert.is(await intentsOn(b.url, 'h2', org.alice), 0, 'wave 2 waits for its gate');
  assert.equal(logEvents(b, 'rollout-wave-delivered'), [], 'B, without the lease, delivered nothing');

  a.child.kill('SIGKILL');
  await a.exited;
  // h1 reports success through B: the gate of wave 2 opens, and B, once it holds the lease, delivers.
  const status = connectDocument(b.url, statusDocName('h1'), { identity: h1!.key, maxBackoffMs: 500 });
  clients.push(status);
  await waitForSync(status, 10_000);
  appendResult(status.doc, hostResult(plan, h1!, 'applied', Date.now()));
  const taken = Date.now();
  await waitFor('B to take the lease over', () => logEvents(b, 'rollout-lease-taken')[0], 30_000);
  await waitFor('B to deliver wave 2', async () => (await intentsOn(b.url, 'h2', org.alice)) === 1, 30_000, 500);
  console.log(`wave 2 delivered by B ${Date.now() - taken} ms after A was SIGKILLed and h1 reported`);
});

test.run();
