import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { documentToken } from '../../coordinator/backends/nats-log.js';
import { statusDocName } from '../../shared/documents/names.js';
import { appendResult } from '../../shared/documents/status.js';
import { connectDocument, type DocumentConnection, waitForSync } from '../../shared/node/connect.js';
import { installNodeEd25519 } from '../../shared/node/ed25519.js';
import { sleep } from '../../shared/time/sleep.js';
import { startRelayProcess, waitForQuietRelay, waitForRelayFetch } from '../bench/relay-fixtures.js';
import { logEvents } from '../harness/lifecycle-fleet.js';
import { clusterCoordinators, type NatsCluster, startNatsCluster } from '../harness/nats-cluster.js';
import { type NatsDropProxy, startNatsDropProxy } from '../harness/nats-drop-proxy.js';
import { makeTestOrg } from '../harness/policy-fixtures.js';
import { type DaemonProcess, removeDirectory, temporaryDirectory, waitFor } from '../harness/processes.js';
import { fixtureHosts, hostResult, submitPlanOnceKnown, twoWaveRollout } from '../harness/rollout-fixtures.js';

// Coordinator B follows the shared NATS log through a proxy that drops the one message carrying
// an entry stored through coordinator A, then resets B's connection (B reconnects and its log
// reports that it may have missed entries). The document is not loaded on B, so the document
// host's own catch-up has nothing to do: what B's relay change feed and rollout driver do with
// that entry rests on their own catch-up (coordinator/followed-changes.ts).
installNodeEd25519();
const test = suite('a write B did not receive through the NATS follower still reaches its change feed and rollouts');
const org = makeTestOrg();
const [h1, h2] = fixtureHosts(2);
const dir = temporaryDirectory('nats-follow-catch-up');
let cluster: NatsCluster;
let proxy: NatsDropProxy;
const clients: DocumentConnection[] = [];
const daemons: DaemonProcess[] = [];

// Each test its own stream: the relay test runs without --org-root, the rollout one with it.
const feedCoordinators = clusterCoordinators(dir, ['--nats-replicas', '3', '--nats-stream', 'FEED']);
const rolloutCoordinators = clusterCoordinators(dir, [
  '--nats-replicas',
  '3',
  '--nats-stream',
  'ROLL',
  '--org-root',
  org.root.publicKey,
]);
// B's only NATS server is the proxy (to node 1); documents B loads unload a second after use.
const throughProxy = (): NatsCluster => ({ ...cluster, backend: proxy.url });
const B_ARGS = ['--idle-unload', '1'];

function connect(url: string, name: string, options: Parameters<typeof connectDocument>[2] = { identity: null }) {
  const client = connectDocument(url, name, { maxBackoffMs: 500, ...options });
  clients.push(client);
  return client;
}

const items = (client: DocumentConnection): string[] => client.doc.getArray<string>('log').toArray();

// Arms the proxy for the entry of `document` on `stream`, runs `write`, and once the proxy dropped
// that entry resets B's NATS connection.
async function dropThenReconnect(stream: string, document: string, write: () => void): Promise<number> {
  const dropped = proxy.dropNext(`${stream.toLowerCase()}.log.${documentToken(document)}`);
  write();
  await Promise.race([
    dropped,
    sleep(15_000).then(() => Promise.reject(new Error(`the proxy saw no entry of ${document} for B`))),
  ]);
  proxy.cut();
  return Date.now();
}

test.before(async () => {
  cluster = await startNatsCluster(join(dir, 'nats'), 3);
  proxy = await startNatsDropProxy(cluster.nodes[0]!.port);
});

test.after(async () => {
  for (const client of clients) client.close();
  await Promise.all(daemons.map((daemon) => daemon.stop('SIGKILL')));
  await Promise.all([feedCoordinators.stopAll(), rolloutCoordinators.stopAll()]);
  await proxy?.close();
  await cluster?.close();
  if (!process.env.OUTPOST_KEEP_TEST_DIR) removeDirectory(dir);
});

test('a relay on B hears of a write through A whose entry B never received', async () => {
  const a = await feedCoordinators.start(cluster, 'feed-a');
  const b = await feedCoordinators.start(throughProxy(), 'feed-b', B_ARGS);
  const relay = await startRelayProcess(join(dir, 'relay'), join(dir, 'relay.log'), [b.url]);
  daemons.push(relay);
  await waitFor('the relay to connect to B', () => logEvents(b, 'relay-connected')[0], 20_000);
  const writer = connect(a.url, 'hosts/h7/desired');
  await waitForSync(writer, 10_000);
  const before = await waitForQuietRelay(relay.url, 'the relay to be quiet');
  const cut = await dropThenReconnect('FEED', 'hosts/h7/desired', () => writer.doc.getArray('log').push(['via-a']));
  await waitForRelayFetch(relay.url, before, 'the relay to fetch the write B did not receive');
  console.log(`relay fetched the lost write ${Date.now() - cut} ms after B's NATS connection was reset`);
  // Its own copy has it: read with B gone, so the read cannot fetch it from B.
  await b.stop('SIGKILL');
  const reader = connect(relay.url, 'hosts/h7/desired');
  await waitFor('the site reader to get the write from the relay alone', () => items(reader).includes('via-a'), 10_000);
  assert.ok(logEvents(b, 'follow-caught-up').length > 0, 'B compared its change feed with the log');
});

test('a rollout driven by B advances on a result reported through A whose entry B never received', async () => {
  // B starts first, so it takes the rollout lease.
  const b = await rolloutCoordinators.start(throughProxy(), 'rb', B_ARGS);
  await waitFor('B to take the rollout lease', () => logEvents(b, 'rollout-lease-taken')[0], 20_000);
  const a = await rolloutCoordinators.start(cluster, 'ra');
  const plan = await twoWaveRollout(a.url, org, [h1!, h2!], 'lost');
  await submitPlanOnceKnown(a.url, plan, 'A to store the plan');
  await waitFor('B to deliver wave 1', () => logEvents(b, 'rollout-wave-delivered')[0], 30_000);
  const status = connect(a.url, statusDocName('h1'), { identity: h1!.key });
  await waitForSync(status, 10_000);
  // The status documents B read when it adopted the rollout unload (--idle-unload 1).
  await sleep(3000);
  const cut = await dropThenReconnect('ROLL', statusDocName('h1'), () =>
    appendResult(status.doc, hostResult(plan, h1!, 'applied', Date.now())),
  );
  await waitFor('B to deliver wave 2', () => logEvents(b, 'rollout-wave-delivered').length >= 2, 30_000, 200);
  console.log(`B delivered wave 2 ${Date.now() - cut} ms after its NATS connection was reset`);
  assert.equal(logEvents(b, 'rollout-lease-lost'), [], 'B held the lease throughout (a takeover would rescan)');
  assert.equal(logEvents(a, 'rollout-wave-delivered'), [], 'A, without the lease, delivered nothing');
});

test.run();
