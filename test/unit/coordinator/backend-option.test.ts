import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parseOptions } from '../../../cli/options.js';
import { coordinatorCommand } from '../../../coordinator/options.js';

// --backend, --nats-stream and --nats-replicas of outpost coordinator: what parses, and what a
// mistake says.
const parse = (argv: string[]) => parseOptions(coordinatorCommand, argv);

test('LevelDB is the default; nats:// lists parse into servers', () => {
  const plain = parse([]);
  assert.ok(!plain.help);
  if (plain.help) return;
  assert.equal(plain.value.backend, { kind: 'level' });
  assert.is(plain.value.natsStream, 'OUTPOST');
  assert.is(plain.value.natsReplicas, 3);
  const nats = parse(['--backend', 'nats://10.0.0.1:4222,nats://n2.example:4223,[::1]:4222', '--nats-replicas', '1']);
  if (nats.help) return assert.unreachable();
  assert.equal(nats.value.backend, {
    kind: 'nats',
    servers: ['nats://10.0.0.1:4222', 'nats://n2.example:4223', 'nats://[::1]:4222'],
  });
  assert.is(nats.value.natsReplicas, 1);
});

test('a wrong backend, stream or replica count is refused with what to write', () => {
  const refused = (argv: string[], pattern: RegExp): void => {
    try {
      parse(argv);
      assert.unreachable(`${argv.join(' ')} must be refused`);
    } catch (error) {
      assert.match((error as Error).message, pattern);
    }
  };
  refused(['--backend', 'redis://x:1'], /expected "level" or nats:\/\/HOST:PORT/);
  refused(['--backend', 'nats://host'], /"host" is not HOST:PORT/);
  refused(['--backend', 'nats://h:99999'], /is not HOST:PORT/);
  refused(['--backend', 'nats://h:1,,h:2'], /is not HOST:PORT/);
  refused(['--nats-stream', 'a.b'], /JetStream stream name/);
  refused(['--nats-replicas', '7'], /at most 5 replicas/);
  refused(['--nats-replicas', 'two'], /expected a number of replicas/);
});

test.run();
