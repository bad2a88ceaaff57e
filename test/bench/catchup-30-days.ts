import { join } from 'node:path';
import * as Y from 'yjs';
import { startCoordinator } from '../../coordinator/server.js';
import { startRelay } from '../../relay/relay.js';
import { generateSigningKey } from '../../shared/crypto/keys.js';
import { signPayload } from '../../shared/crypto/signatures.js';
import { appendIntent } from '../../shared/documents/desired.js';
import { appendResult, writeCurrentStatus } from '../../shared/documents/status.js';
import { connectDocument, waitForSync } from '../../shared/node/connect.js';
import { createLogger } from '../../shared/node/log.js';
import { sleep } from '../../shared/time/sleep.js';
import { signIntent } from '../../shared/trust/sign-intent.js';
import { startFaultProxy } from '../harness/fault-proxy.js';
import { removeDirectory, temporaryDirectory, waitFor } from '../harness/processes.js';
import { BENCH_CONNECTION_LIMITS } from './relay-fixtures.js';

// Bench (not a test): bytes on an agent's link when it catches up after 30 simulated days.
// The agent's two documents are stock y-websocket clients behind the fault proxy, to the site's
// relay. While the link is cut, admins issue one signed intent a day (30 in all) and the agent
// records a signed status and a signed result every day (its offline work); then the link returns
// and we count every byte both ways (HTTP upgrade, sync, awareness, websocket framing) until both
// sides hold everything. The reference is the size of the updates that had to cross: the
// relay-log entries of the 30 intents plus the agent's own offline updates.
//
//   npm run -s build && node dist/test/bench/catchup-30-days.js [days]
const days = Number(process.argv[2] ?? 30);
const dir = temporaryDirectory('bench-catchup');
const admin = generateSigningKey('alice');
const hostKey = generateSigningKey('h1');
const closure = '/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-h1';

const logger = createLogger('bench', 'warn');
const coordinator = await startCoordinator({
  dataDir: join(dir, 'coordinator'),
  listen: '127.0.0.1',
  port: 0,
  maxPayload: 1 << 20,
  idleUnloadMs: 30_000,
  limits: BENCH_CONNECTION_LIMITS,
  logger,
});
const relay = await startRelay({
  upstreams: [coordinator.url],
  key: null,
  orgRootKeys: [],
  dataDir: join(dir, 'relay'),
  listen: '127.0.0.1',
  port: 0,
  maxPayload: 1 << 20,
  idleUnloadMs: 30_000,
  baseBackoffMs: 100,
  maxBackoffMs: 1000,
  upstreamTimeoutMs: 5000,
  syncConcurrency: 16,
  cacheUpstreams: [],
  cacheMaxBytes: 1 << 30,
  limits: BENCH_CONNECTION_LIMITS,
  logger,
});
const link = await startFaultProxy(relay.port);
try {
  const desiredDoc = new Y.Doc({ gc: false });
  const statusDoc = new Y.Doc({ gc: true });
  const connect = (): ReturnType<typeof connectDocument>[] => [
    connectDocument(link.url(), 'hosts/h1/desired', {
      identity: null,
      doc: desiredDoc,
      baseBackoffMs: 100,
      maxBackoffMs: 500,
    }),
    connectDocument(link.url(), 'hosts/h1/status', {
      identity: null,
      doc: statusDoc,
      baseBackoffMs: 100,
      maxBackoffMs: 500,
    }),
  ];
  let agent = connect();
  await Promise.all(agent.map((c) => waitForSync(c, 10_000)));
  agent[1]!.provider.awareness.setLocalState({ role: 'agent', host: 'h1', phase: 'applied', generation: 1 });
  const adminDesired = connectDocument(coordinator.url, 'hosts/h1/desired', {
    identity: null,
    baseBackoffMs: 100,
    maxBackoffMs: 500,
  });
  await waitForSync(adminDesired, 10_000);
  const statusEntriesBefore = (await fetchLogSizes(relay.url, 'hosts/h1/status')).length;

  // The outage: the agent's process keeps its documents (as the real agent persists its status).
  for (const c of agent) c.close();
  link.cut();
  const offlineUpdates: Uint8Array[] = [];
  statusDoc.on('update', (update: Uint8Array) => offlineUpdates.push(update));
  const start = Date.now();
  for (let day = 1; day <= days; day++) {
    const issuedAt = new Date(start + day * 86_400_000 - 40 * 86_400_000);
    const intent = {
      kind: 'intent' as const,
      host: 'h1',
      generation: day + 1,
      closure,
      action: 'switch' as const,
      issuedAt: issuedAt.toISOString(),
      expiresAt: new Date(start + 60 * 86_400_000).toISOString(),
      issuer: 'alice',
    };
    appendIntent(adminDesired.doc, signIntent(intent, admin));
    const status = {
      kind: 'status' as const,
      host: 'h1',
      seq: day,
      updatedAt: issuedAt.toISOString(),
      phase: 'applied' as const,
      applied: { generation: 1, closure },
      target: null,
      lastResultSeq: day,
      agentVersion: '0.1.0',
    };
    statusDoc.transact(() =>
      writeCurrentStatus(statusDoc, { status, signature: signPayload('status', status, hostKey) }),
    );
    const result = {
      kind: 'result' as const,
      host: 'h1',
      seq: day,
      at: issuedAt.toISOString(),
      outcome: 'applied' as const,
      generation: 1,
      closure,
      action: 'switch' as const,
      intentDigest: 'a'.repeat(64),
      reason: 'health check passed',
      outputTail: '',
    };
    statusDoc.transact(() => appendResult(statusDoc, { result, signature: signPayload('result', result, hostKey) }));
  }
  await waitFor(
    'the relay to hold every intent',
    async () => (await fetchLogSizes(relay.url, 'hosts/h1/desired')).length >= days,
    20_000,
  );
  const missedDown = (await fetchLogSizes(relay.url, 'hosts/h1/desired')).slice(-days).reduce((s, n) => s + n, 0);
  const missedUp = offlineUpdates.reduce((s, u) => s + u.length, 0);
  const missedUpMerged = Y.mergeUpdates(offlineUpdates).length;

  link.resetCounters();
  link.restore();
  const began = Date.now();
  agent = connect();
  await Promise.all(agent.map((c) => waitForSync(c, 20_000)));
  agent[1]!.provider.awareness.setLocalState({ role: 'agent', host: 'h1', phase: 'applied', generation: 1 });
  await waitFor('the agent to hold every intent', () => desiredDoc.getArray('intents').length >= days, 20_000, 20);
  await waitFor(
    'the relay to hold every offline update',
    async () => (await fetchLogSizes(relay.url, 'hosts/h1/status')).length > statusEntriesBefore,
    20_000,
    20,
  );
  await sleep(300);
  const { up, down } = link.bytes();
  const reference = missedDown + missedUpMerged;
  console.log(
    JSON.stringify({
      bench: 'catch-up after an outage',
      days,
      intentsMissedBytes: missedDown,
      offlineUpdatesBytes: missedUp,
      offlineUpdatesMergedBytes: missedUpMerged,
      linkBytesUp: up,
      linkBytesDown: down,
      linkBytesTotal: up + down,
      ratio: Number(((up + down) / reference).toFixed(3)),
      ratioDown: Number((down / missedDown).toFixed(3)),
      ms: Date.now() - began,
    }),
  );
  for (const c of agent) c.close();
  adminDesired.close();
} finally {
  await link.close();
  await relay.close();
  await coordinator.close();
  removeDirectory(dir);
}

// Sizes of the updates the relay stored for a document, in log order.
async function fetchLogSizes(_url: string, name: string): Promise<number[]> {
  return (await relay.log.read(name)).map((entry) => entry.update.length);
}
