import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import WebSocket from 'ws';
import { signEnrollToken } from '../../admin/enroll-entries.js';
import { generateSigningKey, type SigningKey } from '../../shared/crypto/keys.js';
import { writeKeyFile } from '../../shared/node/key-file.js';
import { httpBaseFromWs } from '../../shared/sync/reconnect.js';
import type { SignedTunnelRequest } from '../../shared/tunnel/request.js';
import { startRelayProcess } from '../bench/relay-fixtures.js';
import { prepareHost, type SimulatedHost } from './fleet.js';
import { logEvents, startPolicyAgent } from './lifecycle-fleet.js';
import { basePolicy, makeTestOrg, pushPolicy, signPolicy, type TestOrg } from './policy-fixtures.js';
import { type DaemonProcess, startCoordinatorProcess, waitFor } from './processes.js';
import { type CountingProxy, startCountingProxy, startSshd, type TestSshd } from './sshd.js';

// The `outpost ssh` fleet: a coordinator and a relay under a signed policy, hosts h1 and h2 behind
// the relay (enrolled with tokens, their agents connected only to the relay), one real sshd, and a
// counting proxy per host in front of it as the host's --ssh-port. Policy: alice has `ssh` on h1
// and h2 (role ssh-sites), carol only `read` (viewer), bob `deploy`/`read` on production.
export interface SshFleet {
  dir: string;
  org: TestOrg;
  keyFiles: { alice: string; bob: string; carol: string; stranger: string };
  stranger: SigningKey;
  coordinator: DaemonProcess & { url: string; port: number };
  relay: DaemonProcess & { url: string; port: number };
  sshd: TestSshd;
  knownHosts: string;
  hosts: Record<'h1' | 'h2', { host: SimulatedHost; proxy: CountingProxy; agent: DaemonProcess }>;
  restartAgent(name: 'h1' | 'h2', extra?: string[]): Promise<void>;
  close(): Promise<void>;
}

const FAKE_CACHE_KEY = `tunnel-test-1:${Buffer.alloc(32, 7).toString('base64')}`;

async function healthz(url: string): Promise<{ tunnels: { agents: number; reachableHosts: number } }> {
  const response = await fetch(`${httpBaseFromWs(url)}/healthz`);
  return (await response.json()) as { tunnels: { agents: number; reachableHosts: number } };
}

export async function startSshFleet(dir: string, agentExtra: string[] = []): Promise<SshFleet> {
  const org = makeTestOrg();
  const stranger = generateSigningKey('mallory');
  const keyFiles = {
    alice: join(dir, 'alice.key'),
    bob: join(dir, 'bob.key'),
    carol: join(dir, 'carol.key'),
    stranger: join(dir, 'stranger.key'),
  };
  await writeKeyFile(keyFiles.alice, org.alice);
  await writeKeyFile(keyFiles.bob, org.bob);
  await writeKeyFile(keyFiles.carol, org.carol);
  await writeKeyFile(keyFiles.stranger, stranger);
  const relayKey = generateSigningKey('site-1');
  const relayKeyFile = join(dir, 'relay.key');
  await writeKeyFile(relayKeyFile, relayKey);
  const coordinator = await startCoordinatorProcess(join(dir, 'coordinator'), join(dir, 'coordinator.log'), 0, [
    '--org-root',
    org.root.publicKey,
  ]);
  const base = basePolicy(org);
  const policy = {
    ...base,
    admins: base.admins.map((a) => (a.name === 'alice' ? { ...a, roles: [...a.roles, 'ssh-sites'] } : a)),
    roles: [...base.roles, { name: 'ssh-sites', capabilities: ['ssh'], hosts: ['h1', 'h2'], groups: [] }],
    relays: [{ name: 'site-1', key: relayKey.publicKey, hosts: ['h1', 'h2'], groups: [] }],
  };
  const pushed = await pushPolicy(coordinator.url, signPolicy(policy, org.root));
  if (pushed.status !== 200) throw new Error(`policy push failed: ${pushed.body.error}`);
  const relay = await startRelayProcess(join(dir, 'relay'), join(dir, 'relay.log'), [coordinator.url], {
    extra: ['--key', relayKeyFile, '--org-root', org.root.publicKey, '--log-level', 'debug'],
  });
  const sshd = await startSshd(join(dir, 'sshd'));
  const knownHosts = join(dir, 'known_hosts');
  await fs.writeFile(knownHosts, `${sshd.knownHostsLine('h1')}\n${sshd.knownHostsLine('h2')}\n`);
  const hosts = {} as SshFleet['hosts'];
  const launch = (host: SimulatedHost, proxy: CountingProxy, extra: string[]): DaemonProcess =>
    startPolicyAgent(host, {
      coordinators: [relay.url],
      orgRoot: org.root.publicKey,
      substituter: 'http://127.0.0.1:9/',
      cacheKey: FAKE_CACHE_KEY,
      extraArgs: ['--ssh-port', String(proxy.port), ...agentExtra, ...extra],
    });
  for (const name of ['h1', 'h2'] as const) {
    const host = await prepareHost(dir, name);
    const tokenFile = join(dir, `${name}.token`);
    await fs.writeFile(
      tokenFile,
      JSON.stringify(
        signEnrollToken(org.alice, {
          host: name,
          expiresAt: new Date(Date.now() + 3_600_000).toISOString(),
          policyVersion: 1,
        }),
      ),
      { mode: 0o600 },
    );
    const proxy = await startCountingProxy(sshd.port);
    hosts[name] = { host, proxy, agent: launch(host, proxy, ['--enroll-token', tokenFile]) };
  }
  // Both agents hold a tunnel link at the relay, and the relay announced both to the coordinator.
  await waitFor(
    'both agents to link their tunnels at the relay',
    async () => (await healthz(relay.url)).tunnels.agents === 2,
    60_000,
    200,
  );
  await waitFor(
    'the relay to announce h1 and h2 upstream',
    async () => (await healthz(coordinator.url)).tunnels.reachableHosts === 2,
    30_000,
    200,
  );
  // An agent answers a tunnel request from the policy it holds, walked on a document connection of
  // its own: a tunnel link up says nothing of it ('holds no signed policy' until then). A restarted
  // agent holds it from the start (trust.json).
  for (const [name, entry] of Object.entries(hosts))
    await waitFor(
      `${name} to hold policy version 1`,
      () => logEvents(entry.agent, 'policy-version').some((e) => e.version === 1),
      30_000,
      100,
    );
  const fleet: SshFleet = {
    dir,
    org,
    keyFiles,
    stranger,
    coordinator,
    relay,
    sshd,
    knownHosts,
    hosts,
    async restartAgent(name, extra = []) {
      const entry = hosts[name];
      await entry.agent.stop();
      entry.agent = launch(entry.host, entry.proxy, extra);
      // The relay registers a tunnel link before it answers the upgrade: once the agent logs its
      // link up, the relay routes to it (and the coordinator routes h1 and h2 to the relay).
      await waitFor(
        `${name} to link its tunnel again`,
        () => entry.agent.logs().includes('"event":"tunnel-link-up"'),
        60_000,
        100,
      );
      await waitFor(
        'the relay to announce both hosts',
        async () => (await healthz(coordinator.url)).tunnels.reachableHosts === 2,
        30_000,
        100,
      );
    },
    async close() {
      for (const entry of Object.values(hosts)) {
        await entry.agent.stop();
        await entry.proxy.close();
      }
      await sshd.stop();
      await relay.stop();
      await coordinator.stop();
    },
  };
  return fleet;
}

// What an attacker with a captured or self-made request does: the raw protocol, no CLI. Resolves
// with the verdict and, when the tunnel opened, the first bytes from the far end (sshd's banner).
export function openRawTunnel(
  serverUrl: string,
  routeTo: string,
  signed: SignedTunnelRequest,
): Promise<{ ok: boolean; reason: string; firstBytes: string }> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${serverUrl}/_tunnel/open?host=${routeTo}`);
    const timer = setTimeout(() => {
      ws.terminate();
      reject(new Error('no verdict within 20 s'));
    }, 20_000);
    let verdict: { ok: boolean; reason?: string } | null = null;
    ws.on('open', () => ws.send(JSON.stringify(signed)));
    ws.on('error', (error) => reject(error));
    ws.on('message', (data, isBinary) => {
      if (!verdict) {
        verdict = JSON.parse(data.toString()) as { ok: boolean; reason?: string };
        if (!verdict.ok) {
          clearTimeout(timer);
          ws.close();
          resolve({ ok: false, reason: verdict.reason ?? '', firstBytes: '' });
        }
        return;
      }
      if (isBinary) {
        clearTimeout(timer);
        ws.close();
        resolve({ ok: true, reason: '', firstBytes: data.toString() });
      }
    });
    ws.on('close', () => {
      clearTimeout(timer);
      resolve({ ok: verdict?.ok ?? false, reason: verdict?.reason ?? 'closed without a verdict', firstBytes: '' });
    });
  });
}
