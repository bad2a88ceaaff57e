import { connect } from 'node:net';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { readKeyFile } from '../../shared/node/key-file.js';
import { httpBaseFromWs } from '../../shared/sync/reconnect.js';
import { startRelayProcess } from '../bench/relay-fixtures.js';
import { type BinaryCacheServer, serveBinaryCache } from '../harness/cache-server.js';
import { prepareHost, type SimulatedHost, startAgentProcess } from '../harness/fleet.js';
import { logEvents } from '../harness/lifecycle-fleet.js';
import { buildTestClosure, makeCacheKey, publishToCache } from '../harness/nix-fixtures.js';
import {
  type DaemonProcess,
  removeDirectory,
  runCli,
  startCoordinatorProcess,
  temporaryDirectory,
  waitFor,
} from '../harness/processes.js';

// GET /metrics scraped from real processes: a coordinator, a relay that mirrors the binary cache,
// and an agent behind the relay with --metrics-listen, applying a real Nix closure. Checks the
// documented names are there and that the counters move with what really happened.
type Server = DaemonProcess & { url: string; port: number };
const dir = temporaryDirectory('metrics');
let cache: BinaryCacheServer;
let coordinator: Server;
let relay: Server;
let agent: DaemonProcess;
let host: SimulatedHost;
let adminKeyFile = '';
let closure = '';
let agentMetricsUrl = '';

// Prometheus text → { 'name{labels}': value } (labels as written, role label included).
function parseMetrics(text: string): Map<string, number> {
  const values = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    values.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return values;
}

async function scrape(url: string): Promise<{ text: string; values: Map<string, number> }> {
  const response = await fetch(url);
  assert.is(response.status, 200, url);
  assert.match(response.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  const text = await response.text();
  return { text, values: parseMetrics(text) };
}

// The value of one series, found by name and the labels it must carry.
function value(values: Map<string, number>, name: string, labels: Record<string, string> = {}): number {
  for (const [series, v] of values) {
    const [seriesName] = series.split('{');
    if (seriesName !== name) continue;
    if (Object.entries(labels).every(([k, l]) => series.includes(`${k}="${l}"`))) return v;
  }
  throw new Error(`no series ${name} ${JSON.stringify(labels)}`);
}

const metricsOf = (server: Server): string => `${httpBaseFromWs(server.url)}/metrics`;

test.before(async () => {
  const key = await makeCacheKey(join(dir, 'keys'), 'metrics-cache-1');
  closure = await buildTestClosure({
    name: 'nixos-system-metrics',
    extraPaths: 2,
    payloadBytes: 20_000,
    uniqueness: `${process.pid}-${Date.now()}`,
  });
  await publishToCache(closure, join(dir, 'cache'), key.secretKeyFile);
  cache = await serveBinaryCache(join(dir, 'cache'));
  adminKeyFile = join(dir, 'alice.key');
  assert.is((await runCli(['keygen', '--out', adminKeyFile, '--name', 'alice'])).code, 0);
  const adminKey = (await readKeyFile(adminKeyFile)).publicKey;
  coordinator = await startCoordinatorProcess(join(dir, 'coordinator'), join(dir, 'coordinator.log'));
  relay = await startRelayProcess(join(dir, 'relay'), join(dir, 'relay.log'), [coordinator.url], {
    extra: ['--cache-upstream', cache.url],
  });
  host = await prepareHost(dir, 'm1');
  agent = startAgentProcess(host, {
    coordinators: [relay.url],
    adminKeys: [adminKey],
    // Only the relay's mirror: every path passes through it.
    substituters: [`${httpBaseFromWs(relay.url)}/nix-cache`],
    trustedCacheKeys: [key.publicKey],
    extraArgs: ['--metrics-listen', '127.0.0.1:0'],
  });
  const listening = await waitFor('the agent to serve /metrics', () => logEvents(agent, 'metrics-listening')[0]);
  assert.is(listening.address, '127.0.0.1');
  agentMetricsUrl = `http://127.0.0.1:${listening.port as number}/metrics`;
});

test.after(async () => {
  await agent?.stop();
  await relay?.stop();
  await coordinator?.stop();
  await cache?.close();
  removeDirectory(dir);
});

test('every documented series is there before anything happens', async () => {
  const documented = {
    coordinator: [
      'outpost_hosts_by_phase',
      'outpost_hosts',
      'outpost_websocket_connections',
      'outpost_tcp_connections',
      'outpost_relay_sessions',
      'outpost_sync_bytes_total',
      'outpost_open_documents',
      'outpost_update_log_entries',
      'outpost_update_log_documents',
      'outpost_update_log_bytes',
      'outpost_update_log_append_seconds',
      'outpost_refusals_total',
    ],
    relay: [
      'outpost_relay_uplink_up',
      'outpost_relay_uplink_channels',
      'outpost_relay_uplink_connects_total',
      'outpost_relay_uplink_bytes_total',
      'outpost_relay_documents',
      'outpost_cache_mirror_requests_total',
      'outpost_cache_mirror_fetched_bytes_total',
      'outpost_cache_mirror_stored',
    ],
    agent: [
      'outpost_agent_phase',
      'outpost_agent_generation',
      'outpost_agent_download_bytes_total',
      'outpost_agent_download_bytes',
      'outpost_agent_last_result',
      'outpost_agent_last_result_generation',
      'outpost_agent_last_result_timestamp_seconds',
      'outpost_agent_results',
    ],
  };
  const fromCoordinator = await scrape(metricsOf(coordinator));
  for (const name of documented.coordinator) assert.match(fromCoordinator.text, new RegExp(`^# TYPE ${name} `, 'm'));
  assert.match(fromCoordinator.text, /^outpost_open_documents\{role="coordinator"\} /m);
  for (const name of documented.relay) assert.not.match(fromCoordinator.text, new RegExp(`^# TYPE ${name} `, 'm'));
  const fromRelay = await scrape(metricsOf(relay));
  for (const name of [...documented.coordinator, ...documented.relay])
    assert.match(fromRelay.text, new RegExp(`^# TYPE ${name} `, 'm'), name);
  assert.match(fromRelay.text, /^outpost_open_documents\{role="relay"\} /m);
  const fromAgent = await scrape(agentMetricsUrl);
  for (const name of documented.agent) assert.match(fromAgent.text, new RegExp(`^# TYPE ${name} `, 'm'), name);
  // Counts only: no host name appears anywhere on the servers' pages.
  assert.not.match(fromCoordinator.text, /m1/);
  assert.not.match(fromRelay.text, /m1/);
});

test('a deploy through the relay moves the counters on all three', async () => {
  const before = {
    coordinator: (await scrape(metricsOf(coordinator))).values,
    relay: (await scrape(metricsOf(relay))).values,
  };
  await waitFor('the relay uplink to be up', async () =>
    value((await scrape(metricsOf(relay))).values, 'outpost_relay_uplink_up') === 1 ? true : null,
  );
  const deployed = await runCli([
    'deploy',
    '--coordinator',
    coordinator.url,
    '--key',
    adminKeyFile,
    '--host',
    'm1',
    '--closure',
    closure,
    '--timeout',
    '20s',
  ]);
  assert.is(deployed.code, 0, deployed.stderr);

  const agentAfter = await waitFor(
    'the agent to report generation 1 applied on its metrics',
    async () => {
      const { values } = await scrape(agentMetricsUrl);
      // The result is signed before the status moves to applied: wait for both.
      return value(values, 'outpost_agent_last_result', { outcome: 'applied' }) === 1 &&
        value(values, 'outpost_agent_phase', { phase: 'applied' }) === 1
        ? values
        : null;
    },
    120_000,
    300,
  );
  assert.is(value(agentAfter, 'outpost_agent_phase', { phase: 'applied' }), 1);
  assert.is(value(agentAfter, 'outpost_agent_phase', { phase: 'downloading' }), 0);
  assert.is(value(agentAfter, 'outpost_agent_generation', { kind: 'applied' }), 1);
  assert.is(value(agentAfter, 'outpost_agent_last_result_generation'), 1);
  assert.is(value(agentAfter, 'outpost_agent_results', { outcome: 'applied' }), 1);
  assert.ok(value(agentAfter, 'outpost_agent_download_bytes_total') >= 20_000, 'the 20 kB payloads downloaded');
  assert.ok(Date.now() / 1000 - value(agentAfter, 'outpost_agent_last_result_timestamp_seconds') < 300);

  // The relay: the host's applied phase arrived, the mirror fetched every file once (misses),
  // the uplink carried bytes.
  const relayAfter = await waitFor('the relay to count the host as applied', async () => {
    const { values } = await scrape(metricsOf(relay));
    return value(values, 'outpost_hosts_by_phase', { phase: 'applied' }) === 1 ? values : null;
  });
  const misses = value(relayAfter, 'outpost_cache_mirror_requests_total', { result: 'miss' });
  assert.ok(misses >= 3, `the mirror fetched the closure's files: ${misses}`);
  // The two payloads have the same content, so one NAR file serves both.
  assert.ok(value(relayAfter, 'outpost_cache_mirror_fetched_bytes_total') >= 20_000);
  assert.ok(value(relayAfter, 'outpost_cache_mirror_stored', { unit: 'files' }) >= misses);
  assert.ok(
    value(relayAfter, 'outpost_relay_uplink_bytes_total', { direction: 'out' }) >
      value(before.relay, 'outpost_relay_uplink_bytes_total', { direction: 'out' }),
  );
  assert.ok(value(relayAfter, 'outpost_websocket_connections', { kind: 'document' }) >= 2, 'the agent is connected');
  assert.is(value(relayAfter, 'outpost_hosts', { state: 'online' }), 1);

  // A second fetch of a file the mirror holds is a hit.
  const narinfo = `${httpBaseFromWs(relay.url)}/nix-cache/${closure.slice('/nix/store/'.length, '/nix/store/'.length + 32)}.narinfo`;
  assert.is((await fetch(narinfo)).status, 200);
  const hits = value((await scrape(metricsOf(relay))).values, 'outpost_cache_mirror_requests_total', { result: 'hit' });
  assert.ok(hits > value(relayAfter, 'outpost_cache_mirror_requests_total', { result: 'hit' }), 'a hit counted');

  // The coordinator: the relay's link, the log grew, bytes moved, the host's phase arrived.
  const coordinatorAfter = await waitFor('the coordinator to count the host as applied', async () => {
    const { values } = await scrape(metricsOf(coordinator));
    return value(values, 'outpost_hosts_by_phase', { phase: 'applied' }) === 1 ? values : null;
  });
  assert.is(value(coordinatorAfter, 'outpost_websocket_connections', { kind: 'relay-link' }), 1);
  assert.is(value(coordinatorAfter, 'outpost_relay_sessions'), 1);
  assert.ok(
    value(coordinatorAfter, 'outpost_update_log_entries') > value(before.coordinator, 'outpost_update_log_entries'),
  );
  assert.ok(value(coordinatorAfter, 'outpost_update_log_documents') >= 2, 'desired and status of m1');
  assert.ok(value(coordinatorAfter, 'outpost_update_log_bytes') > 0);
  // Each append's time to durable was observed, on the coordinator and on the relay (which logs
  // what it bridges): the count grew, the sum is time spent, every append is in the +Inf bucket.
  for (const [server, after, earlier] of [
    ['coordinator', coordinatorAfter, before.coordinator],
    ['relay', relayAfter, before.relay],
  ] as const) {
    const appends = value(after, 'outpost_update_log_append_seconds_count');
    assert.ok(appends > value(earlier, 'outpost_update_log_append_seconds_count'), `${server}: appends timed`);
    assert.ok(value(after, 'outpost_update_log_append_seconds_sum') > 0, server);
    assert.is(value(after, 'outpost_update_log_append_seconds_bucket', { le: '+Inf' }), appends, server);
  }
  for (const direction of ['in', 'out'])
    assert.ok(
      value(coordinatorAfter, 'outpost_sync_bytes_total', { direction, kind: 'relay-link' }) >
        value(before.coordinator, 'outpost_sync_bytes_total', { direction, kind: 'relay-link' }),
      direction,
    );
});

test('refusals are counted by reason', async () => {
  const reason = { reason: 'badRequests' };
  const before = value((await scrape(metricsOf(coordinator))).values, 'outpost_refusals_total', reason);
  // Not HTTP at all: the server answers 400 and counts it.
  const answer = await new Promise<string>((resolve, reject) => {
    const socket = connect(coordinator.port, '127.0.0.1', () => socket.write('NONSENSE\r\n\r\n'));
    let text = '';
    socket.on('data', (d: Buffer) => (text += d.toString()));
    socket.on('end', () => resolve(text));
    socket.on('error', reject);
  });
  assert.match(answer, /^HTTP\/1\.1 400 /);
  const after = value((await scrape(metricsOf(coordinator))).values, 'outpost_refusals_total', reason);
  // At least this one: a peer resetting a connection meanwhile counts as a bad request too.
  assert.ok(after >= before + 1, `${before} → ${after}`);
});

test('the agent serves nothing but GET /metrics', async () => {
  const other = await fetch(agentMetricsUrl.replace('/metrics', '/state'));
  assert.is(other.status, 404);
  await other.text();
});

test.run();
