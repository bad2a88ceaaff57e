import { httpBaseFromWs } from '../../shared/sync/reconnect.js';
import { type DaemonProcess, startListeningDaemon, waitFor } from '../harness/processes.js';

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
  return startListeningDaemon('relay', args, logFile, options.env);
}

export interface RelayUplink {
  // Bytes the relay received from its upstream so far.
  bytes: number;
  // Documents queued for a pass with the upstream or in one.
  waiting: number;
}

export async function relayUplink(relayUrl: string): Promise<RelayUplink> {
  const text = await (await fetch(`${httpBaseFromWs(relayUrl)}/metrics`)).text();
  const value = (pattern: RegExp): number => Number(text.match(pattern)?.[1] ?? Number.NaN);
  return {
    bytes: value(/^outpost_relay_uplink_bytes_total\{direction="in",role="relay"\} (\d+)/m),
    waiting:
      value(/^outpost_relay_documents\{state="queued",role="relay"\} (\d+)/m) +
      value(/^outpost_relay_documents\{state="passing",role="relay"\} (\d+)/m),
  };
}

// Until the relay has nothing waiting and received nothing over half a second (and, with
// `fetched`, something before that): its catch-up with the upstream is done.
export async function waitForQuietRelay(relayUrl: string, what: string, fetched = false): Promise<RelayUplink> {
  let before = await relayUplink(relayUrl);
  await waitFor(
    what,
    async () => {
      const now = await relayUplink(relayUrl);
      const quiet = now.waiting === 0 && now.bytes === before.bytes && (!fetched || now.bytes > 0);
      before = now;
      return quiet;
    },
    30_000,
    500,
  );
  return before;
}

// Until the relay received more than `before` from its upstream and has nothing waiting.
export async function waitForRelayFetch(relayUrl: string, before: RelayUplink, what: string): Promise<void> {
  await waitFor(
    what,
    async () => {
      const now = await relayUplink(relayUrl);
      return now.bytes > before.bytes && now.waiting === 0;
    },
    20_000,
    200,
  );
}
