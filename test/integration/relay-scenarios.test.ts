import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { HostView } from '../../admin/fleet-view.js';
import { readCurrentStatus } from '../../shared/documents/status.js';
import { connectDocument } from '../../shared/node/connect.js';
import { readKeyFile } from '../../shared/node/key-file.js';
import { httpBaseFromWs } from '../../shared/sync/reconnect.js';
import { sleep } from '../../shared/time/sleep.js';
import { startRelayProcess } from '../bench/relay-fixtures.js';
import { type BinaryCacheServer, serveBinaryCache } from '../harness/cache-server.js';
import { type FaultProxy, startFaultProxy } from '../harness/fault-proxy.js';
import { activations, prepareHost, type SimulatedHost, startAgentProcess } from '../harness/fleet.js';
import { buildTestClosure, DEFAULT_SWITCH_SCRIPT, makeCacheKey, publishToCache } from '../harness/nix-fixtures.js';
import {
  type DaemonProcess,
  removeDirectory,
  runCli,
  startCoordinatorProcess,
  temporaryDirectory,
  waitFor,
} from '../harness/processes.js';

// Must-show scenarios of issue 5 with real processes and real Nix: a coordinator, a relay (also
// the site's binary-cache mirror) and agents behind it, with fault proxies on the relay's uplink
// (up), on the agents' direct path to the coordinator (direct) and on one agent's link (site3).
type Server = DaemonProcess & { url: string; port: number };
let dir = '';
let cache: BinaryCacheServer;
let trustedCacheKey = '';
let adminKeyFile = '';
let adminKey = '';
let coordinator: Server;
let relay: Server;
let up: FaultProxy;
let direct: FaultProxy;
const closures: Record<string, string> = {};
const hosts: SimulatedHost[] = [];
const agents = new Map<string, DaemonProcess>();

function launch(host: SimulatedHost, endpoints: string[]): void {
  agents.set(
    host.host,
    startAgentProcess(host, {
      coordinators: endpoints,
      adminKeys: [adminKey],
      substituters: [`${httpBaseFromWs(relay.url)}/nix-cache`, cache.url],
      trustedCacheKeys: [trustedCacheKey],
    }),
  );
}

async function startRelay(): Promise<Server> {
  return startRelayProcess(join(dir, 'relay'), join(dir, 'relay.log'), [up.url()], {
    port: relay?.port,
    extra: ['--cache-upstream', cache.url],
  });
}

test.before(async () => {
  dir = temporaryDirectory('relay-scenarios');
  const key = await makeCacheKey(join(dir, 'keys'), 'site-cache-1');
  trustedCacheKey = key.publicKey;
  const stamp = `${process.pid}-${Date.now()}`;
  const slowSwitch = `sleep 3\n${DEFAULT_SWITCH_SCRIPT}`;
  for (const name of ['gen1', 'gen2', 'gen3', 'gen4', 'gen5', 'slow']) {
    closures[name] = await buildTestClosure({
      name: `nixos-system-${name}`,
      extraPaths: 1,
      payloadBytes: 4096,
      uniqueness: `${stamp}-${name}`,
      switchScript: name === 'slow' ? slowSwitch : undefined,
    });
    await publishToCache(closures[name]!, join(dir, 'cache'), key.secretKeyFile);
  }
  cache = await serveBinaryCache(join(dir, 'cache'));
  adminKeyFile = join(dir, 'alice.key');
  assert.is((await runCli(['keygen', '--out', adminKeyFile, '--name', 'alice'])).code, 0);
  adminKey = (await readKeyFile(adminKeyFile)).publicKey;
  coordinator = await startCoordinatorProcess(join(dir, 'coordinator'), join(dir, 'coordinator.log'), 0, [
    '--idle-unload',
    '2',
  ]);
  up = await startFaultProxy(coordinator.port);
  direct = await startFaultProxy(coordinator.port);
  relay = await startRelay();
  for (const id of ['h1', 'h2']) {
    const host = await prepareHost(dir, id);
    hosts.push(host);
    // The site's relay first, then the coordinator.
    launch(host, [relay.url, direct.url()]);
  }
});

test.after(async () => {
  await Promise.all([...agents.values()].map((a) => a.stop()));
  await relay?.stop();
  await coordinator?.stop();
  await Promise.all([up, direct].map((p) => p?.close()));
  await cache?.close();
  removeDirectory(dir);
});

async function fleet(url: string, only: string[] = []): Promise<HostView[]> {
  const result = await runCli([
    'status',
    '--coordinator',
    url,
    '--json',
    '--timeout',
    '5s',
    ...only.flatMap((h) => ['--host', h]),
  ]);
  if (result.code !== 0) throw new Error(result.stderr);
  return (JSON.parse(result.stdout) as { hosts: HostView[] }).hosts;
}

async function deploy(
  url: string,
  host: string,
  closure: string,
  extra: string[] = [],
  key = adminKeyFile,
): Promise<void> {
  const result = await runCli([
    'deploy',
    '--coordinator',
    url,
    '--key',
    key,
    '--host',
    host,
    '--closure',
    closure,
    '--timeout',
    '20s',
    ...extra,
  ]);
  assert.is(result.code, 0, result.stderr);
}

async function waitApplied(url: string, host: string, generation: number, timeoutMs = 90_000): Promise<HostView> {
  return waitFor(
    `${host} to report generation ${generation} applied at ${url}`,
    async () => {
      const view = (await fleet(url, [host]))[0];
      return view &&
        view.applied?.generation === generation &&
        view.lastResult?.generation === generation &&
        view.lastResult.outcome === 'applied'
        ? view
        : null;
    },
    timeoutMs,
    300,
  );
}

const seqs = (view: HostView): number[] => view.results.map((r) => r.result.seq).sort((a, b) => a - b);

test('generation 1 through the relay: both agents apply it, each NAR and narinfo is fetched once from the upstream cache for the whole site, presence shows at the coordinator', async () => {
  for (const host of hosts) await deploy(coordinator.url, host.host, closures.gen1!);
  for (const host of hosts) await waitApplied(coordinator.url, host.host, 1);
  const fetched = cache.requests.filter(
    (r) => r.startsWith('GET /nar/') || (r.startsWith('GET /') && r.endsWith('.narinfo')),
  );
  assert.ok(
    fetched.some((r) => r.startsWith('GET /nar/')),
    'NARs came through the mirror',
  );
  assert.is(new Set(fetched).size, fetched.length, `each file once from the upstream cache, got ${fetched.join(', ')}`);
  const views = await fleet(coordinator.url);
  for (const view of views) assert.ok(view.online, `${view.host} online at the coordinator through the relay`);
  // The mirror answers Range requests (an agent resumes a cut NAR transfer with one) from its copy.
  const nar = fetched.find((r) => r.startsWith('GET /nar/'))!.slice('GET '.length);
  const mirror = `${httpBaseFromWs(relay.url)}/nix-cache${nar}`;
  const whole = Buffer.from(await (await fetch(mirror)).arrayBuffer());
  const tail = await fetch(mirror, { headers: { range: 'bytes=100-' } });
  assert.is(tail.status, 206);
  assert.is(tail.headers.get('content-range'), `bytes 100-${whole.length - 1}/${whole.length}`);
  assert.ok(Buffer.from(await tail.arrayBuffer()).equals(whole.subarray(100)), 'the tail is the same bytes');
  assert.is((await fetch(mirror, { headers: { range: `bytes=${whole.length}-` } })).status, 416);
  assert.is(cache.requests.filter((r) => r === `GET ${nar}`).length, 1, 'still fetched once from the upstream cache');
});

test('coordinator down: the relay keeps both agents working (admin deploys at the site), then merges everything back', async () => {
  coordinator.child.kill('SIGKILL');
  await coordinator.exited;
  for (const host of hosts) await deploy(relay.url, host.host, closures.gen2!);
  const atRelay = new Map<string, HostView>();
  for (const host of hosts) atRelay.set(host.host, await waitApplied(relay.url, host.host, 2));
  coordinator = await startCoordinatorProcess(
    join(dir, 'coordinator'),
    join(dir, 'coordinator-2.log'),
    coordinator.port,
    ['--idle-unload', '2'],
  );
  for (const host of hosts) {
    const view = await waitApplied(coordinator.url, host.host, 2);
    assert.is(view.desired?.generation, 2, 'the intent issued at the site reached the coordinator');
    const relayed = seqs(atRelay.get(host.host)!);
    assert.ok(
      relayed.every((s) => seqs(view).includes(s)),
      `every result the relay acknowledged is at the coordinator: ${relayed} ⊆ ${seqs(view)}`,
    );
    assert.ok(
      view.results.every((r) => r.signatureValid),
      'still signed by the host, end to end',
    );
  }
});

test('relay down: the agents fail over to the coordinator and keep applying', async () => {
  await relay.stop();
  // Back to the closure of generation 1 (already in the hosts' stores): with its relay down a
  // site has no cache mirror either, and Nix gives up on an unreachable first substituter.
  for (const host of hosts) await deploy(coordinator.url, host.host, closures.gen1!);
  for (const host of hosts) await waitApplied(coordinator.url, host.host, 3);
});

test('a relay restarted with an empty disk refills from upstream and serves the site again', async () => {
  rmSync(join(dir, 'relay'), { recursive: true, force: true });
  relay = await startRelay();
  const documents = await waitFor(
    'the relay to refill',
    async () => {
      const { documents: list } = (await (await fetch(`${httpBaseFromWs(relay.url)}/api/documents`)).json()) as {
        documents: string[];
      };
      return list.filter((d) => d.startsWith('hosts/')).length >= 4 ? list : null;
    },
    20_000,
  );
  assert.ok(documents.includes('hosts/h1/desired') && documents.includes('hosts/h2/status'));
  for (const host of hosts) await waitApplied(relay.url, host.host, 3, 20_000);
  // The coordinator's direct path goes away: the agents come back to the refilled relay.
  direct.cut();
  for (const host of hosts) await deploy(coordinator.url, host.host, closures.gen4!);
  for (const host of hosts) await waitApplied(coordinator.url, host.host, 4);
  direct.restore();
});

test('the uplink is reset in the middle of a sync message, down and then up: everything arrives once, both agents end on generation 5', async () => {
  const before = relay
    .logs()
    .split('\n')
    .filter((l) => l.includes('"upstream-disconnected"')).length;
  const cutDown = up.resetAfter(200, 'down');
  for (const host of hosts) await deploy(coordinator.url, host.host, closures.gen5!);
  await cutDown;
  // Past the reconnect handshake, into the agents' results on their way up.
  const cutUp = up.resetAfter(1500, 'up');
  for (const host of hosts) await waitApplied(coordinator.url, host.host, 5);
  await Promise.race([cutUp, sleep(3000)]);
  await waitFor(
    'the relay to report the resets',
    () =>
      relay
        .logs()
        .split('\n')
        .filter((l) => l.includes('"upstream-disconnected"')).length >=
      before + 1,
    5000,
  );
  for (const view of await fleet(coordinator.url)) {
    assert.equal(seqs(view), [...new Set(seqs(view))], 'no result stored twice');
    assert.is(view.results.filter((r) => r.result.generation === 5).length, 1);
  }
});

test('an agent comes back after 30 simulated days: its offline result merges, it applies only the newest valid of the intents issued meanwhile', async () => {
  const site3 = await startFaultProxy(relay.port);
  try {
    const host = await prepareHost(dir, 'h3');
    const endpoints = [site3.url()];
    launch(host, endpoints);
    await deploy(coordinator.url, 'h3', closures.gen1!);
    await waitApplied(coordinator.url, 'h3', 1);
    // Generation 2 takes 3 s to switch: the link goes down in the middle, the result is written offline.
    const watcher = connectDocument(relay.url, 'hosts/h3/status', { identity: null });
    try {
      await deploy(coordinator.url, 'h3', closures.slow!, ['--generation', '2']);
      await waitFor(
        'h3 to start activating generation 2',
        () => readCurrentStatus(watcher.doc)?.status.phase === 'activating',
        20_000,
        20,
      );
      site3.cut();
    } finally {
      watcher.close();
    }
    await waitFor(
      'h3 to finish generation 2 offline',
      async () => (await activations(host)).some((a) => a.includes(closures.slow!)),
      20_000,
    );
    // A reboot during the outage: it starts with nothing reachable.
    await agents.get('h3')!.stop();
    launch(host, endpoints);
    await sleep(1500);
    // Meanwhile the admins issue three valid intents (long expiry) and one nobody trusts.
    for (const name of ['gen3', 'gen4', 'gen5'])
      await deploy(coordinator.url, 'h3', closures[name]!, ['--expires', '40d']);
    const stranger = join(dir, 'mallory.key');
    await runCli(['keygen', '--out', stranger, '--name', 'mallory']);
    await deploy(coordinator.url, 'h3', closures.gen1!, ['--generation', '6', '--expires', '40d'], stranger);
    site3.resetCounters();
    site3.restore();
    const view = await waitFor(
      'h3 to apply generation 5 and refuse 6',
      async () => {
        const v = (await fleet(coordinator.url, ['h3']))[0];
        return v?.applied?.generation === 5 &&
          v.results.some((r) => r.result.generation === 6 && r.result.outcome === 'refused')
          ? v
          : null;
      },
      90_000,
      300,
    );
    assert.ok(
      view.results.some((r) => r.result.generation === 2 && r.result.outcome === 'applied'),
      'the result written offline reached the coordinator',
    );
    assert.equal(
      seqs(view),
      Array.from({ length: seqs(view).length }, (_, i) => i + 1),
      'every result, no gaps',
    );
    assert.match(view.results.find((r) => r.result.generation === 6)!.result.reason, /^unknown-signer/);
    const applied = (await activations(host)).map((a) => Object.entries(closures).find(([, c]) => a.endsWith(c))?.[0]);
    assert.equal(applied, ['gen1', 'slow', 'gen5'], 'generations 3 and 4 were never activated');
    const { up: sent, down: received } = site3.bytes();
    console.log(`  h3 catch-up over its link: ${sent} B up, ${received} B down`);
  } finally {
    await site3.close();
  }
});

test('nothing acknowledged was lost: relay and coordinator agree on every host, all on their newest valid intent', async () => {
  await waitFor(
    'relay and coordinator to agree',
    async () => {
      const [atCoordinator, atRelay] = await Promise.all([fleet(coordinator.url), fleet(relay.url)]);
      return atCoordinator.every((c) => {
        const r = atRelay.find((v) => v.host === c.host);
        return (
          r && JSON.stringify(seqs(r)) === JSON.stringify(seqs(c)) && r.applied?.generation === c.applied?.generation
        );
      });
    },
    20_000,
    500,
  );
  const views = await fleet(coordinator.url);
  assert.equal(Object.fromEntries(views.map((v) => [v.host, v.applied?.generation])), { h1: 5, h2: 5, h3: 5 });
});

test.run();
