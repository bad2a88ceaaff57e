import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { connectDocument, type DocumentConnection, waitForSync } from '../../shared/node/connect.js';
import { sleep } from '../../shared/time/sleep.js';
import { clusterCoordinators, type NatsCluster, startNatsCluster } from '../harness/nats-cluster.js';
import { type DaemonProcess, removeDirectory, temporaryDirectory } from '../harness/processes.js';

// A set workload (after Jepsen's) on 3 coordinators and a 3-node NATS cluster while NATS nodes
// and a coordinator are SIGKILLed: writers add unique items to three documents through random
// coordinators; an item counts as acknowledged once an observer saw it through any coordinator
// (a coordinator shows an update to nobody before the stream stored it). Then every client goes
// away — a writer still holding an item would resend it and hide a loss — and a coordinator
// started from nothing must have every acknowledged item in every document. Lost must be 0.
const test = suite('NATS backend under kills: no acknowledged update lost');
const dir = temporaryDirectory('nats-soak');
let cluster: NatsCluster;
const daemons: DaemonProcess[] = [];
const clients: DocumentConnection[] = [];

const onCluster = clusterCoordinators(dir, ['--log-level', 'warn']);
const startOnCluster = (name: string) => onCluster.start(cluster, name);

test.after(async () => {
  for (const client of clients) client.close();
  await Promise.all(daemons.map((d) => d.stop('SIGKILL')));
  await onCluster.stopAll();
  await cluster?.close();
  removeDirectory(dir);
});

test('writes through random coordinators while NATS nodes and a coordinator are killed: 0 acknowledged updates lost', async () => {
  cluster = await startNatsCluster(join(dir, 'nats'), 3);
  const coordinators = [await startOnCluster('a'), await startOnCluster('b'), await startOnCluster('c')];
  const urls = coordinators.map((c) => c.url);
  const documents = ['hosts/s1/status', 'hosts/s2/status', 'hosts/s3/desired'];
  const connect = (endpoints: string[], name: string): DocumentConnection => {
    const client = connectDocument(endpoints, name, { identity: null, maxBackoffMs: 300 });
    clients.push(client);
    return client;
  };
  // Observers: one per document and coordinator, each bound to its coordinator alone.
  const observers = documents.flatMap((name) => urls.map((url) => connect([url], name)));
  // Writers: two per document, each starting at a different coordinator and failing over to the others.
  const writers = documents.flatMap((name, d) =>
    [0, 1].map((w) => connect([...urls.slice((d + w) % 3), ...urls.slice(0, (d + w) % 3)], name)),
  );
  await Promise.all([...observers, ...writers].map((c) => waitForSync(c, 20_000)));

  let writing = true;
  let attempted = 0;
  const traffic = Promise.all(
    writers.map(async (writer, index) => {
      for (let n = 0; writing; n += 1) {
        writer.doc.getArray('set').push([`w${index}#${n}`]);
        attempted += 1;
        await sleep(15 + Math.floor(Math.random() * 15));
      }
    }),
  );
  const faults: string[] = [];
  const at = Date.now();
  const fault = async (what: string, action: () => Promise<void>): Promise<void> => {
    await action();
    faults.push(`${((Date.now() - at) / 1000).toFixed(1)} s ${what}`);
  };
  await sleep(2000);
  await fault('SIGKILL nats n1', () => cluster.nodes[0]!.stop('SIGKILL'));
  await sleep(3000);
  await fault('restart nats n1', () => cluster.nodes[0]!.start());
  await sleep(2000);
  await fault('SIGKILL coordinator c', async () => {
    coordinators[2]!.child.kill('SIGKILL');
    await coordinators[2]!.exited;
  });
  await sleep(2000);
  await fault('SIGKILL nats n2', () => cluster.nodes[1]!.stop('SIGKILL'));
  await sleep(3000);
  await fault('restart nats n2', () => cluster.nodes[1]!.start());
  await sleep(3000);
  writing = false;
  await traffic;
  // Let what is in flight land, then take what the observers saw as the acknowledged set.
  await sleep(3000);
  const acknowledged = documents.map((_, d) => {
    const seen = new Set<string>();
    for (const observer of observers.slice(d * 3, d * 3 + 3))
      for (const item of observer.doc.getArray<string>('set').toArray()) seen.add(item);
    return seen;
  });
  for (const client of clients.splice(0)) client.close();

  const fresh = await startOnCluster('fresh');
  let lost = 0;
  let total = 0;
  for (const [d, name] of documents.entries()) {
    const reader = connect([fresh.url], name);
    await waitForSync(reader, 20_000);
    const stored = new Set(reader.doc.getArray<string>('set').toArray());
    const missing = [...acknowledged[d]!].filter((item) => !stored.has(item));
    lost += missing.length;
    total += acknowledged[d]!.size;
    assert.equal(missing.slice(0, 10), [], `${name}: acknowledged items missing from the stream`);
  }
  console.log(
    `set workload: ${attempted} writes attempted, ${total} acknowledged (seen by an observer), ${lost} lost; faults: ${faults.join(', ')}`,
  );
  assert.is(lost, 0);
  assert.ok(total > attempted / 2, `most writes were acknowledged (${total} of ${attempted})`);
});

test.run();
