import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { documentFromToken, documentToken, openNatsLog } from '../../coordinator/backends/nats-log.js';
import { createLogger } from '../../shared/node/log.js';
import { type NatsCluster, startNatsCluster } from '../harness/nats-cluster.js';
import { removeDirectory, temporaryDirectory } from '../harness/processes.js';
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
  removeDirectory(dir);
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

test.run();
