import { join } from 'node:path';
import { startCoordinator } from '../../coordinator/server.js';
import { startRelay } from '../../relay/relay.js';
import { connectDocument, type DocumentConnection, waitForSync } from '../../shared/node/connect.js';
import { createLogger } from '../../shared/node/log.js';
import { sleep } from '../../shared/time/sleep.js';
import { type FaultProxy, startFaultProxy } from '../harness/fault-proxy.js';
import { removeDirectory, temporaryDirectory } from '../harness/processes.js';
import { BENCH_CONNECTION_LIMITS } from './relay-fixtures.js';

// Bench (not a test): bytes on a relay's uplink for M agents behind it, against M agents talking
// to the coordinator directly, over three phases:
//   connect  every agent opens its two documents and announces itself (awareness)
//   idle     IDLE_S seconds: agents renew their awareness every 15 s, nothing else happens
//   flap     the site's LAN flaps: every agent disconnects and reconnects
// Simulated agents are stock y-websocket clients (what the agent uses); the fault proxy counts.
//
//   npm run -s build && node dist/test/bench/relay-uplink.js [M …]
const sizes = process.argv
  .slice(2)
  .map(Number)
  .filter((n) => n > 0);
const IDLE_S = Number(process.env.IDLE_S ?? 16);
const logger = createLogger('bench', 'error');

async function agentsAt(url: string, m: number, prefix: string): Promise<DocumentConnection[]> {
  const connections: DocumentConnection[] = [];
  for (let i = 0; i < m; i++) {
    for (const role of ['desired', 'status'])
      connections.push(
        connectDocument(url, `hosts/${prefix}-${i}/${role}`, {
          identity: null,
          baseBackoffMs: 100,
          maxBackoffMs: 1000,
        }),
      );
  }
  await Promise.all(connections.map((c) => waitForSync(c, 60_000)));
  connections.forEach((c, index) => {
    if (index % 2 === 1)
      c.provider.awareness.setLocalState({
        role: 'agent',
        host: `${prefix}-${(index - 1) / 2}`,
        phase: 'applied',
        generation: 1,
      });
  });
  return connections;
}

async function measure(m: number): Promise<Record<string, unknown>> {
  const dir = temporaryDirectory('bench-uplink');
  const coordinator = await startCoordinator({
    dataDir: join(dir, 'coordinator'),
    listen: '127.0.0.1',
    port: 0,
    maxPayload: 1 << 20,
    idleUnloadMs: 30_000,
    limits: BENCH_CONNECTION_LIMITS,
    logger,
  });
  const uplink: FaultProxy = await startFaultProxy(coordinator.port);
  const direct: FaultProxy = await startFaultProxy(coordinator.port);
  const relay = await startRelay({
    upstreams: [uplink.url()],
    key: null,
    orgRootKeys: [],
    dataDir: join(dir, 'relay'),
    listen: '127.0.0.1',
    port: 0,
    maxPayload: 1 << 20,
    idleUnloadMs: 30_000,
    baseBackoffMs: 100,
    maxBackoffMs: 1000,
    upstreamTimeoutMs: 60_000,
    syncConcurrency: 16,
    cacheUpstreams: [],
    cacheMaxBytes: 1 << 30,
    limits: BENCH_CONNECTION_LIMITS,
    logger,
  });
  try {
    while (!relay.upstream.connectedUrl()) await sleep(20);
    await sleep(300);
    const phases: Record<string, { relayUplink: number; direct: number }> = {};
    const mark = (): { relayUplink: number; direct: number } => {
      const a = uplink.bytes();
      const b = direct.bytes();
      uplink.resetCounters();
      direct.resetCounters();
      return { relayUplink: a.up + a.down, direct: b.up + b.down };
    };
    mark();
    const behindRelay = await agentsAt(relay.url, m, 'site');
    const alone = await agentsAt(direct.url(), m, 'direct');
    await sleep(1500);
    phases.connect = mark();
    await sleep(IDLE_S * 1000);
    phases.idle = mark();
    for (const c of [...behindRelay, ...alone]) c.close();
    await sleep(300);
    const again = [...(await agentsAt(relay.url, m, 'site')), ...(await agentsAt(direct.url(), m, 'direct'))];
    await sleep(1500);
    phases.flap = mark();
    for (const c of again) c.close();
    return { m, idleSeconds: IDLE_S, ...Object.fromEntries(Object.entries(phases).map(([k, v]) => [k, v])) };
  } finally {
    await relay.close();
    await uplink.close();
    await direct.close();
    await coordinator.close();
    removeDirectory(dir);
  }
}

for (const m of sizes.length ? sizes : [1, 10, 100]) console.log(JSON.stringify(await measure(m)));
process.exit(0);
