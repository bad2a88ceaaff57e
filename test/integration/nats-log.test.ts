import { join } from 'node:path';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import * as Y from 'yjs';
import { documentFromToken, documentToken, openNatsLog } from '../../coordinator/backends/nats-log.js';
import { openUpdateLog } from '../../coordinator/update-log.js';
import { type Logger, silentLogger } from '../../shared/log.js';
import { connectDocument, waitForSync } from '../../shared/node/connect.js';
import { createLogger } from '../../shared/node/log.js';
import { type NatsCluster, startNatsCluster } from '../harness/nats-cluster.js';
import { startNatsDropProxy } from '../harness/nats-drop-proxy.js';
import { removeDirectory, runCli, startCoordinatorProcess, temporaryDirectory, waitFor } from '../harness/processes.js';
import { defineUpdateLogConformance } from '../harness/update-log-conformance.js';

// The NATS JetStream update log against the suite every backend passes, on a real single-node
// nats-server (the cluster behaviour is in nats-backend.test.ts). Each test gets its own stream.
const test = suite('update log conformance: NATS JetStream');
const dir = temporaryDirectory('nats-log');
let server: NatsCluster;
let streams = 0;
const logger = createLogger('test', 'error');

test.before(async () => {
  server = await startNatsCluster(dir, 1);
});

test.after(async () => {
  await server.close();
  if (!process.env.OUTPOST_KEEP_TEST_DIR) removeDirectory(dir);
});

defineUpdateLogConformance(test, {
  shared: true,
  async fresh() {
    streams += 1;
    const stream = `CONFORMANCE${streams}`;
    return {
      open: () => openNatsLog({ kind: 'nats', servers: server.servers, stream, replicas: 1, logger }),
      cleanup: async () => undefined,
    };
  },
});

test('document names map to single subject tokens and back', () => {
  for (const name of ['hosts/a/desired', 'fleet/policy', 'a.b', '*', '>', 'ü_x', ' ', '_2E', '']) {
    const token = documentToken(name);
    assert.match(token, /^[A-Za-z0-9_-]*$/);
    assert.is(documentFromToken(token), name);
  }
  assert.is(documentFromToken('a_2'), null, 'a cut escape is no name');
  assert.is(documentFromToken('a.b'), null, 'a dot is never inside a token');
  assert.is(documentFromToken('_FF'), null, 'bytes that are not UTF-8 are no name');
});

test('a stream that needs more replicas than the servers there is refused with the fix', async () => {
  const error = await openNatsLog({
    kind: 'nats',
    servers: server.servers,
    stream: 'TOOMANY',
    replicas: 3,
    logger,
  }).then(
    () => null,
    (e: Error) => e,
  );
  assert.ok(error, 'opening must fail');
  assert.match(error.message, /--nats-replicas 1/);
});

test('an unreachable NATS is refused with the address and what to check', async () => {
  const error = await openNatsLog({
    kind: 'nats',
    servers: ['nats://127.0.0.1:1'],
    stream: 'X',
    replicas: 1,
    logger,
  }).then(
    () => null,
    (e: Error) => e,
  );
  assert.ok(error, 'opening must fail');
  assert.match(error.message, /cannot connect to NATS at nats:\/\/127\.0\.0\.1:1/);
});

test('migrate copies a LevelDB log entry for entry, verifies it, copies only what is new when run again, and a coordinator on the stream serves it', async () => {
  const level = join(dir, 'level-log');
  const source = await openUpdateLog(level);
  const doc = new Y.Doc();
  const updates: Uint8Array[] = [];
  doc.on('update', (update: Uint8Array) => updates.push(update));
  for (const item of ['one', 'two', 'three']) doc.getArray('log').push([item]);
  for (const update of updates) await source.append('hosts/m/desired', 'admin-1', update);
  const fleet = await source.append('fleet/policy', 'admin-1', new Uint8Array([0, 0]));
  await source.putCheckpoint({
    seq: 1,
    at: '2026-01-01T00:00:00.000Z',
    changed: [{ document: 'fleet/policy', seq: 1, hash: fleet.hash }],
  });
  const expected = await source.read('hosts/m/desired');
  await source.close();

  const args = [
    'coordinator',
    'migrate',
    '--from-level',
    level,
    '--to',
    server.backend,
    '--nats-stream',
    'MIGRATED',
    '--nats-replicas',
    '1',
  ];
  const first = await runCli(args);
  assert.is(first.code, 0, first.stderr);
  assert.match(first.stdout, /copied 4 of 4 entries in 2 documents and 1 checkpoints/);
  const again = await runCli(args);
  assert.is(again.code, 0, again.stderr);
  assert.match(again.stdout, /copied 0 of 4 entries in 2 documents and 0 checkpoints/);

  const copy = await openNatsLog({ kind: 'nats', servers: server.servers, stream: 'MIGRATED', replicas: 1, logger });
  try {
    assert.equal(
      await copy.read('hosts/m/desired'),
      expected,
      'entries copied as they were: numbers, times, principals, hashes',
    );
    const checkpoints = [];
    for await (const checkpoint of copy.checkpoints()) checkpoints.push(checkpoint);
    assert.is(checkpoints.length, 1);
  } finally {
    await copy.close();
  }

  const missing = await runCli([
    'coordinator',
    'migrate',
    '--from-level',
    join(dir, 'typo'),
    '--to',
    server.backend,
    '--nats-replicas',
    '1',
  ]);
  assert.is(missing.code, 1);
  assert.match(missing.stderr, /holds no update log/);

  const coordinator = await startCoordinatorProcess(join(dir, 'unused'), join(dir, 'migrated.log'), 0, [
    '--backend',
    server.backend,
    '--nats-stream',
    'MIGRATED',
    '--nats-replicas',
    '1',
  ]);
  try {
    const reader = connectDocument(coordinator.url, 'hosts/m/desired', { identity: null });
    try {
      await waitForSync(reader, 10_000);
      assert.equal(reader.doc.getArray('log').toArray(), ['one', 'two', 'three']);
    } finally {
      reader.close();
    }
  } finally {
    await coordinator.stop();
  }
});

// The soak saw a follower lose entries 2–6 s after a reconnect with no sign from the consumer:
// one compared with the log 2 s after it would stay behind, so the follower is told again later.
test('after a reconnect the follower is told twice that it may have missed entries: soon, and after an entry lost later', async () => {
  const proxy = await startNatsDropProxy(server.nodes[0]!.port);
  const options = { kind: 'nats', stream: 'RECONNECT', replicas: 1, logger } as const;
  const writer = await openNatsLog({ ...options, servers: server.servers });
  const follower = await openNatsLog({ ...options, servers: [proxy.url] });
  try {
    const reports: number[] = [];
    follower.follow(
      () => undefined,
      () => reports.push(Date.now()),
    );
    proxy.cut();
    await waitFor('the first report after the reconnect', () => reports.length > 0, 10_000);
    const dropped = proxy.dropNext(`reconnect.log.${documentToken('hosts/h1/status')}`);
    await writer.append('hosts/h1/status', 'test', Y.encodeStateAsUpdate(new Y.Doc()));
    await dropped;
    const lostAt = Date.now();
    await waitFor('a report after the entry the follower lost', () => reports.some((at) => at > lostAt), 20_000);
  } finally {
    await Promise.all([writer.close(), follower.close()]);
    await proxy.close();
  }
});

// The ordered consumer recreates itself when it finds a gap or its consumer gone, and says so only
// on its status iterator ('reset'): the follower is told it may have missed entries then too.
test("when the follower's consumer is deleted on the server, the follower is told it may have missed entries and keeps following", async () => {
  const options = { kind: 'nats', stream: 'CONSUMERGONE', replicas: 1, logger, servers: server.servers } as const;
  const writer = await openNatsLog(options);
  const follower = await openNatsLog(options);
  const admin = await connect({ servers: server.servers });
  try {
    const reports: number[] = [];
    const followed: string[] = [];
    follower.follow(
      (entry) => followed.push(entry.document),
      () => reports.push(Date.now()),
    );
    const jsm = await jetstreamManager(admin);
    // Both logs follow the stream, each with its own consumer: delete both.
    const consumers = await waitFor("the two logs' consumers", async () => {
      const names = (await jsm.consumers.list('CONSUMERGONE').next()).map((info) => info.name);
      return names.length === 2 ? names : null;
    });
    const deletedAt = Date.now();
    for (const name of consumers) await jsm.consumers.delete('CONSUMERGONE', name);
    await waitFor('a report after the consumer was deleted', () => reports.some((at) => at > deletedAt), 15_000);
    await writer.append('hosts/h2/status', 'test', Y.encodeStateAsUpdate(new Y.Doc()));
    await waitFor('the entry through the recreated consumer', () => followed.includes('hosts/h2/status'), 10_000);
  } finally {
    await Promise.all([writer.close(), follower.close(), admin.close()]);
  }
});

// An ordered consumer is an R1 consumer on one server. When that server is lost together with the
// follower's connection, the client asks for the consumer's info until that server answers again
// and reports nothing meanwhile (no missed heartbeats, no reset): the follower stalled for as long
// as the server was down. It must notice the silence itself and follow through a new consumer.
test('the follower keeps following while the server holding its consumer stays down', async () => {
  const cluster = await startNatsCluster(join(dir, 'consumer-server-down'), 3);
  const proxy = await startNatsDropProxy(cluster.nodes[0]!.port);
  const admin = await connect({ servers: cluster.servers });
  const warnings: string[] = [];
  const recording: Logger = {
    ...silentLogger,
    warn: (fields: object | string) => {
      if (typeof fields === 'object' && 'event' in fields) warnings.push(String(fields.event));
    },
    child: () => recording,
  };
  const options = { kind: 'nats', stream: 'CONSUMERDOWN', replicas: 3 } as const;
  const writer = await openNatsLog({ ...options, logger, servers: cluster.servers });
  try {
    const jsm = await jetstreamManager(admin);
    const consumers = async () => await jsm.consumers.list('CONSUMERDOWN').next();
    const writerConsumers = await waitFor("the writer's consumer", async () => {
      const list = await consumers();
      return list.length > 0 ? list : null;
    });
    const writers = new Set(writerConsumers.map((info) => info.name));
    const follower = await openNatsLog({ ...options, logger: recording, servers: [proxy.url] });
    try {
      const followed: number[] = [];
      follower.follow((entry) => followed.push(entry.seq));
      const home = await waitFor("the follower's consumer", async () => {
        const info = (await consumers()).find((candidate) => !writers.has(candidate.name));
        return info?.cluster?.leader ?? null;
      });
      const empty = Y.encodeStateAsUpdate(new Y.Doc());
      const first = await writer.append('hosts/h3/status', 'test', empty);
      await waitFor('the first entry through the follower', () => followed.includes(first.seq), 10_000);

      // The server holding the follower's consumer goes and stays down; the follower's connection
      // drops with it (through the proxy, when it was connected to another server).
      const lost = cluster.nodes.find((node) => node.name === home)!;
      await lost.stop('SIGKILL');
      proxy.cut();
      // Writes go on with two servers of three (after a re-election when the lost one led).
      const second = await waitFor(
        'an entry written after the loss',
        () => writer.append('hosts/h3/status', 'test', empty).catch(() => null),
        30_000,
      );
      await waitFor(
        'the entry written after the loss through the follower',
        () => followed.includes(second.seq),
        30_000,
      );
      assert.ok(
        warnings.includes('nats-follow-stalled'),
        `the follower says it restarted a silent consumer (its warnings: ${warnings.join(', ')}; the lost server ${home})`,
      );
    } finally {
      await follower.close();
    }
  } finally {
    await Promise.all([writer.close(), admin.close()]);
    await proxy.close();
    await cluster.close();
  }
});

test.run();
