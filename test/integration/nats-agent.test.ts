import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { HostView } from '../../admin/fleet-view.js';
import { serveBinaryCache } from '../harness/cache-server.js';
import { activations, prepareHost, profileTarget, startAgentProcess } from '../harness/fleet.js';
import { clusterCoordinators, type NatsCluster, startNatsCluster } from '../harness/nats-cluster.js';
import { buildTestClosure, makeCacheKey, publishToCache } from '../harness/nix-fixtures.js';
import { type DaemonProcess, removeDirectory, runCli, temporaryDirectory, waitFor } from '../harness/processes.js';

// Issue 15's headline, with real processes and real Nix: a 3-node NATS cluster, coordinators A
// and B on it, a real agent connected to B (A as its second --coordinator). An intent deployed
// through A is applied by the agent through B and its signed result is read through A; then B is
// SIGKILLed, the agent fails over to A, and the next intent is applied and reported there.
const test = suite('a real agent across coordinators on NATS');
const dir = temporaryDirectory('nats-agent');
let cluster: NatsCluster;
let cache: Awaited<ReturnType<typeof serveBinaryCache>>;
const daemons: DaemonProcess[] = [];

const onCluster = clusterCoordinators(dir);
const startOnCluster = (name: string) => onCluster.start(cluster, name);

test.after(async () => {
  await Promise.all(daemons.map((d) => d.stop('SIGKILL')));
  await onCluster.stopAll();
  await cache?.close();
  await cluster?.close();
  removeDirectory(dir);
});

test('deployed through A, applied through B; B SIGKILLed, the agent fails over to A and reports there', async () => {
  const cacheKey = await makeCacheKey(join(dir, 'keys'), 'test-cache-1');
  const closures: string[] = [];
  for (const name of ['gen1', 'gen2']) {
    const closure = await buildTestClosure({
      name: `nixos-system-${name}`,
      uniqueness: `${process.pid}-${Date.now()}-${name}`,
    });
    await publishToCache(closure, join(dir, 'cache'), cacheKey.secretKeyFile);
    closures.push(closure);
  }
  cache = await serveBinaryCache(join(dir, 'cache'));
  cluster = await startNatsCluster(join(dir, 'nats'), 3);
  const a = await startOnCluster('a');
  const b = await startOnCluster('b');

  const adminKeyFile = join(dir, 'alice.key');
  const keygen = await runCli(['keygen', '--out', adminKeyFile, '--name', 'alice', '--json']);
  assert.is(keygen.code, 0, keygen.stderr);
  const adminKey = (JSON.parse(keygen.stdout) as { publicKey: string }).publicKey;
  const host = await prepareHost(dir, 'h1');
  daemons.push(
    startAgentProcess(host, {
      coordinators: [b.url, a.url],
      adminKeys: [adminKey],
      substituters: [cache.url],
      trustedCacheKeys: [cacheKey.publicKey],
    }),
  );
  // The CLI is given the coordinators in `urls` (A alone, or B first and then A once B is gone).
  let urls = [a.url];
  const coordinatorFlags = (): string[] => urls.flatMap((url) => ['--coordinator', url]);
  const statusThroughA = async (): Promise<HostView | undefined> => {
    const result = await runCli(['status', ...coordinatorFlags(), '--json', '--admin-key', adminKey]);
    if (result.code !== 0) throw new Error(result.stderr);
    return (JSON.parse(result.stdout) as { hosts: HostView[] }).hosts.find((v) => v.host === 'h1');
  };
  const deployThroughA = async (closure: string): Promise<string> => {
    const result = await runCli([
      'deploy',
      ...coordinatorFlags(),
      '--key',
      adminKeyFile,
      '--host',
      'h1',
      '--closure',
      closure,
    ]);
    assert.is(result.code, 0, result.stderr);
    return result.stderr;
  };

  await deployThroughA(closures[0]!);
  const first = await waitFor(
    'the agent (on B) to apply generation 1 and A to show its result',
    async () => {
      const view = await statusThroughA();
      return view?.lastResult?.generation === 1 ? view.lastResult : null;
    },
    120_000,
    500,
  );
  assert.is(first.outcome, 'applied', first.reason);
  assert.ok(first.signatureValid, 'the result read through A verifies');
  assert.is(await profileTarget(host), closures[0]);
  // Nothing but the agent connects to B (the CLI goes to A): B's open connections are the agent's.
  const health = (await (await fetch(`${b.url.replace('ws://', 'http://')}/healthz`)).json()) as {
    connections: { connections: number };
  };
  assert.ok(health.connections.connections >= 2, 'the agent is connected to B (desired and status)');

  b.child.kill('SIGKILL');
  await b.exited;
  // The admin lists both coordinators, the dead one first: the CLI goes on to A and says so.
  urls = [b.url, a.url];
  const skipped = await deployThroughA(closures[1]!);
  assert.match(skipped, new RegExp(`using ${a.url}; .*${b.url.replace('ws://', '')}.*connection refused`));
  const second = await waitFor(
    'the agent to fail over to A and apply generation 2',
    async () => {
      const view = await statusThroughA();
      return view?.lastResult?.generation === 2 ? view.lastResult : null;
    },
    120_000,
    500,
  );
  assert.is(second.outcome, 'applied', second.reason);
  assert.ok(second.signatureValid);
  assert.is(await profileTarget(host), closures[1]);
  assert.equal(await activations(host), [`switch ${closures[0]}`, `switch ${closures[1]}`]);
});

test.run();
