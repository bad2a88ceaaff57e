import { type DaemonProcess, startDaemon, waitFor } from '../harness/processes.js';

// A real `outpost relay` process on a free port (or a given one, to restart it in place), with
// small timeouts so tests and benches see reconnects in seconds rather than minutes.
export const FAST_RELAY_FLAGS = [
  '--backoff-base',
  '0.2',
  '--backoff-max',
  '1',
  '--upstream-timeout',
  '3',
  '--idle-unload',
  '2',
];

// Benches put thousands of simulated hosts on 127.0.0.1: one client address, far past the
// per-address limits a server has in the field (coordinator/limits.ts).
export const BENCH_CONNECTION_LIMITS = { maxConnectionsPerAddress: 1_000_000, maxPendingUpgradesPerAddress: 1_000_000 };
export const BENCH_CONNECTION_FLAGS = ['--max-connections-per-address', '1000000', '--max-pending-upgrades', '1000000'];

export async function startRelayProcess(
  dataDir: string,
  logFile: string,
  upstreams: string[],
  options: { port?: number; extra?: string[]; env?: NodeJS.ProcessEnv } = {},
): Promise<DaemonProcess & { url: string; port: number }> {
  const args = [
    'relay',
    '--data-dir',
    dataDir,
    '--port',
    String(options.port ?? 0),
    ...upstreams.flatMap((u) => ['--upstream', u]),
    ...FAST_RELAY_FLAGS,
    ...(options.extra ?? []),
  ];
  const daemon = startDaemon(args, logFile, options.env);
  const line = await waitFor(
    'relay to listen',
    () =>
      daemon
        .logs()
        .split('\n')
        .find((l) => l.startsWith('{"event":"listening"')),
    20_000,
  );
  const { url, port } = JSON.parse(line) as { url: string; port: number };
  return Object.assign(daemon, { url, port });
}
