import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { createWriteStream, mkdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { type DaemonProcess, startCoordinatorProcess, waitFor } from './processes.js';

// Real nats-server processes (Debian's nats-server, installed by .ci/run) on 127.0.0.1: one node,
// or a JetStream cluster of several. Ports are picked free at runtime; each node keeps its store
// under the directory the test gives, so a stopped node restarts with its data.

export interface NatsNode {
  name: string;
  port: number;
  url: string;
  running(): boolean;
  start(): Promise<void>;
  // SIGKILL by default: a machine lost, not a polite shutdown.
  stop(signal?: NodeJS.Signals): Promise<void>;
}

export interface NatsCluster {
  nodes: NatsNode[];
  // The --backend value naming every node: nats://127.0.0.1:P1,127.0.0.1:P2,…
  backend: string;
  servers: string[];
  close(): Promise<void>;
}

export function natsServerAvailable(): boolean {
  try {
    execFileSync('nats-server', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

async function healthy(monitorPort: number): Promise<boolean> {
  const response = await fetch(`http://127.0.0.1:${monitorPort}/healthz`).catch(() => null);
  return response?.status === 200;
}

// `serverArgs` go to every node (e.g. --auth TOKEN, --tls --tlscert F --tlskey F).
export async function startNatsCluster(
  directory: string,
  size: number,
  serverArgs: string[] = [],
): Promise<NatsCluster> {
  const ports = await Promise.all(
    Array.from({ length: size }, async () => ({
      client: await freePort(),
      route: await freePort(),
      monitor: await freePort(),
    })),
  );
  const routes = ports.map((p) => `nats://127.0.0.1:${p.route}`).join(',');
  const nodes = ports.map((port, index): NatsNode & { child: ChildProcess | null; monitor: number } => {
    const name = `n${index + 1}`;
    const store = join(directory, name);
    mkdirSync(store, { recursive: true });
    const args = ['-n', name, '-a', '127.0.0.1', '-p', String(port.client), '-m', String(port.monitor)];
    args.push('-js', '-sd', store, ...serverArgs);
    if (size > 1)
      args.push('--cluster_name', 'outpost', '--cluster', `nats://127.0.0.1:${port.route}`, '--routes', routes);
    const node = {
      name,
      port: port.client,
      monitor: port.monitor,
      url: `nats://127.0.0.1:${port.client}`,
      child: null as ChildProcess | null,
      running: () => node.child !== null,
      async start() {
        if (node.child) return;
        const log = createWriteStream(join(directory, `${name}.log`), { flags: 'a' });
        const child = spawn('nats-server', args, { stdio: ['ignore', 'pipe', 'pipe'] });
        child.stdout!.pipe(log);
        child.stderr!.pipe(log);
        node.child = child;
        child.on('exit', () => {
          if (node.child === child) node.child = null;
        });
        await waitFor(
          `nats-server ${name} to listen`,
          () => healthy(port.monitor).then((ok) => ok || node.child === null),
          20_000,
        );
        // Its ports were free when picked, not reserved: another process may have bound one since
        // (a restart reuses them after seconds). A node that exited is a failed start, said so here
        // rather than as a cluster short of a node later.
        if (node.child !== child)
          throw new Error(
            `nats-server ${name} exited while starting (ports ${port.client}, ${port.route}, ${port.monitor}; log: ${join(directory, `${name}.log`)})`,
          );
      },
      async stop(signal: NodeJS.Signals = 'SIGKILL') {
        const child = node.child;
        if (!child) return;
        const exited = new Promise((resolve) => child.once('exit', resolve));
        child.kill(signal);
        await exited;
        node.child = null;
      },
    };
    return node;
  });
  const cluster: NatsCluster = {
    nodes,
    servers: nodes.map((n) => n.url),
    backend: `nats://${nodes.map((n) => `127.0.0.1:${n.port}`).join(',')}`,
    async close() {
      await Promise.all(nodes.map((n) => n.stop('SIGKILL')));
    },
  };
  try {
    await Promise.all(nodes.map((n) => n.start()));
    // JetStream answers once the cluster elected its meta leader: /healthz says so on every node.
    await waitFor(
      'JetStream to be ready on every node',
      async () => (await Promise.all(nodes.map((n) => healthy(n.monitor)))).every(Boolean),
      30_000,
      200,
    );
  } catch (error) {
    await cluster.close();
    throw error;
  }
  return cluster;
}

export interface ClusterCoordinators {
  // `port` 0 picks a free one; a coordinator restarted on its old port is found again by its clients.
  start(
    cluster: NatsCluster,
    name: string,
    moreArgs?: string[],
    port?: number,
  ): Promise<DaemonProcess & { url: string; port: number }>;
  // SIGKILL every coordinator started, at the end of a test file even if a test failed.
  stopAll(): Promise<void>;
}

// Coordinator processes on a cluster, with their data and logs under `directory`. Startup reads
// the fleet documents from the stream: on a loaded 2-core machine that can take longer than the
// harness's 20 s for a LevelDB coordinator, so each waits up to 60 s.
export function clusterCoordinators(directory: string, extraArgs: string[] = []): ClusterCoordinators {
  const started: DaemonProcess[] = [];
  return {
    async start(cluster, name, moreArgs = [], port = 0) {
      const daemon = await startCoordinatorProcess(
        join(directory, name),
        join(directory, `${name}.log`),
        port,
        ['--backend', cluster.backend, ...extraArgs, ...moreArgs],
        {},
        60_000,
      );
      started.push(daemon);
      return daemon;
    },
    async stopAll() {
      await Promise.all(started.map((daemon) => daemon.stop('SIGKILL')));
    },
  };
}
