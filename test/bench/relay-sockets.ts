import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as syncProtocol from 'y-protocols/sync';
import * as Y from 'yjs';
import { syncMessage } from '../../coordinator/wire.js';
import { startUpstreamLink } from '../../relay/upstream.js';
import { connectDocument, type DocumentConnection, waitForSync } from '../../shared/node/connect.js';
import { createLogger } from '../../shared/node/log.js';
import { removeDirectory, startCoordinatorProcess, temporaryDirectory } from '../harness/processes.js';
import { BENCH_CONNECTION_FLAGS } from './relay-fixtures.js';

// Bench (not a test): can a relay keep one upstream socket per document for H hosts (2 H
// documents)? Opens 2 H stock y-websocket clients to a coordinator process and measures connect
// time, memory and file descriptors on both sides; then the same 2 H documents as channels over
// one multiplexed socket (what the relay does).
//
//   npm run -s build && node dist/test/bench/relay-sockets.js [hosts]
const hosts = Number(process.argv[2] ?? 1000);
const logger = createLogger('bench', 'error');
const rssMb = (pid: number): number =>
  Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]) / 1024;
const fds = (pid: number): number => readdirSync(`/proc/${pid}/fd`).length;
const names = Array.from({ length: hosts }, (_, i) => [`hosts/h${i}/desired`, `hosts/h${i}/status`]).flat();

async function perDocument(url: string, coordinatorPid: number): Promise<Record<string, unknown>> {
  const before = { client: rssMb(process.pid), coordinator: rssMb(coordinatorPid) };
  const started = Date.now();
  const connections: DocumentConnection[] = [];
  let failed: string | null = null;
  try {
    for (const name of names)
      connections.push(connectDocument(url, name, { identity: null, baseBackoffMs: 1000, maxBackoffMs: 5000 }));
    await Promise.all(connections.map((c) => waitForSync(c, 120_000)));
  } catch (error) {
    failed = (error as Error).message;
  }
  const result = {
    mode: 'one socket per document',
    documents: names.length,
    synced: connections.filter((c) => c.provider.synced).length,
    seconds: (Date.now() - started) / 1000,
    clientRssMb: Math.round(rssMb(process.pid) - before.client),
    coordinatorRssMb: Math.round(rssMb(coordinatorPid) - before.coordinator),
    clientFds: fds(process.pid),
    coordinatorFds: fds(coordinatorPid),
    failed,
  };
  for (const c of connections) c.close();
  return result;
}

async function multiplexed(url: string, coordinatorPid: number): Promise<Record<string, unknown>> {
  const before = { client: rssMb(process.pid), coordinator: rssMb(coordinatorPid) };
  const started = Date.now();
  const docs = new Map<number, Y.Doc>();
  let synced = 0;
  let done: () => void = () => undefined;
  const all = new Promise<void>((resolve) => (done = resolve));
  const link = startUpstreamLink(
    {
      urls: [url],
      identity: null,
      logger,
      baseBackoffMs: 100,
      maxBackoffMs: 1000,
      timeoutMs: 120_000,
      maxPayload: 1 << 20,
    },
    {
      connected() {
        for (const name of names) {
          const channel = link.open(name)!;
          const doc = new Y.Doc();
          docs.set(channel, doc);
          link.send(
            channel,
            syncMessage((encoder) => syncProtocol.writeSyncStep1(encoder, doc)),
          );
        }
      },
      disconnected() {},
      data(channel, message) {
        // [0 = sync, 1 = step 2, …]: the answer to our step 1.
        if (message[0] === 0 && message[1] === 1 && docs.has(channel)) {
          synced += 1;
          if (synced === names.length) done();
        }
      },
      closed() {},
      changes() {},
    },
  );
  await all;
  const result = {
    mode: 'one multiplexed socket',
    documents: names.length,
    synced,
    seconds: (Date.now() - started) / 1000,
    clientRssMb: Math.round(rssMb(process.pid) - before.client),
    coordinatorRssMb: Math.round(rssMb(coordinatorPid) - before.coordinator),
    clientFds: fds(process.pid),
    coordinatorFds: fds(coordinatorPid),
    linkBytes: link.stats().bytesIn + link.stats().bytesOut,
  };
  link.stop();
  return result;
}

const dir = temporaryDirectory('bench-sockets');
const coordinator = await startCoordinatorProcess(join(dir, 'c1'), join(dir, 'c1.log'), 0, [
  '--log-level',
  'error',
  '--idle-unload',
  '600',
  ...BENCH_CONNECTION_FLAGS,
]);
console.log(
  JSON.stringify({
    hosts,
    ulimitNoFile: 'see `ulimit -n`',
    ...(await multiplexed(coordinator.url, coordinator.child.pid!)),
  }),
);
await coordinator.stop();
const second = await startCoordinatorProcess(join(dir, 'c2'), join(dir, 'c2.log'), 0, [
  '--log-level',
  'error',
  '--idle-unload',
  '600',
  ...BENCH_CONNECTION_FLAGS,
]);
console.log(JSON.stringify({ hosts, ...(await perDocument(second.url, second.child.pid!)) }));
await second.stop();
removeDirectory(dir);
process.exit(0);
