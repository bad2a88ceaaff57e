import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import type { HostView } from '../../admin/fleet-view.js';
import { type AgentState, loadAgentState } from '../../agent/pipeline/state.js';
import type { SigningKey } from '../../shared/crypto/keys.js';
import { readKeyFile } from '../../shared/node/key-file.js';
import { type BinaryCacheServer, type CacheServerOptions, serveBinaryCache } from './cache-server.js';
import { prepareHost, type SimulatedHost, startAgentProcess } from './fleet.js';
import { type CacheKeyFiles, makeCacheKey, publishToCache } from './nix-fixtures.js';
import { type DaemonProcess, runCli, startCoordinatorProcess, waitFor } from './processes.js';

// A coordinator, a signed cache and an admin for the agent lifecycle tests, with the few verbs
// every scenario uses: publish a closure, deploy it, start an agent, wait for its next result.

export type Coordinator = DaemonProcess & { url: string; port: number };
export type HostResult = NonNullable<HostView['lastResult']>;

export interface LifecycleFleet {
  dir: string;
  coordinator: Coordinator;
  cacheKey: CacheKeyFiles;
  cacheDir: string;
  adminKeyFile: string;
  admin: SigningKey;
  // Serves cacheDir (each scenario may want its own speed); closed by close().
  serveCache(options?: CacheServerOptions): Promise<BinaryCacheServer>;
  publish(closure: string): Promise<void>;
  host(id: string): Promise<SimulatedHost>;
  // Starts `outpost agent` for the host against `cacheUrl`, with lifecycle flags sized for tests.
  startAgent(
    host: SimulatedHost,
    cacheUrl: string,
    extraArgs?: string[],
    options?: { coordinators?: string[]; env?: NodeJS.ProcessEnv },
  ): DaemonProcess;
  deploy(host: string, closure: string, extra?: string[]): Promise<void>;
  view(host: string): Promise<HostView>;
  // The view once the host's signed status has left the phases of work in progress.
  settledView(host: string): Promise<HostView>;
  nextResult(host: string, seqAbove: number, timeoutMs?: number): Promise<HostResult>;
  lastSeq(host: string): Promise<number>;
  close(): Promise<void>;
}

// Short timeouts: the tests must take seconds, not the minutes the defaults give slow links.
export const TEST_AGENT_FLAGS = [
  '--log-level',
  'debug',
  '--activation-runner',
  'direct',
  '--confirm-timeout',
  '20',
  '--activation-timeout',
  '30',
  '--min-free-space',
  '0',
  '--throughput-window',
  '5',
  '--min-throughput',
  '1',
];

export interface PolicyAgentLaunch {
  coordinators: string[];
  orgRoot: string;
  substituter: string;
  cacheKey: string;
  extraArgs?: string[];
  env?: NodeJS.ProcessEnv;
}

// An agent that trusts only what the fleet policy walked from its pinned org root says (no static
// admin keys), with the tests' short timeouts and reconnects within a second.
export function startPolicyAgent(host: SimulatedHost, launch: PolicyAgentLaunch): DaemonProcess {
  return startAgentProcess(host, {
    coordinators: launch.coordinators,
    adminKeys: [],
    substituters: [launch.substituter],
    trustedCacheKeys: [launch.cacheKey],
    extraArgs: [
      ...TEST_AGENT_FLAGS,
      '--org-root',
      launch.orgRoot,
      '--backoff-base',
      '0.2',
      '--backoff-max',
      '1',
      ...(launch.extraArgs ?? []),
    ],
    env: launch.env,
  });
}

// A window "HH:MM-HH:MM" in UTC from now + fromMinutes to now + toMinutes: open or closed now, as the test needs.
export function utcWindow(fromMinutes: number, toMinutes: number): string {
  const at = (offset: number): string => {
    const date = new Date(Date.now() + offset * 60_000);
    return `${String(date.getUTCHours()).padStart(2, '0')}:${String(date.getUTCMinutes()).padStart(2, '0')}`;
  };
  return `${at(fromMinutes)}-${at(toMinutes)}`;
}

const IN_PROGRESS_PHASES: readonly string[] = ['downloading', 'activating', 'confirming'];

export async function startLifecycleFleet(dir: string): Promise<LifecycleFleet> {
  const cacheKey = await makeCacheKey(join(dir, 'keys'), 'lifecycle-cache-1');
  const cacheDir = join(dir, 'cache');
  const adminKeyFile = join(dir, 'alice.key');
  const keygen = await runCli(['keygen', '--out', adminKeyFile, '--name', 'alice']);
  if (keygen.code !== 0) throw new Error(`keygen failed: ${keygen.stderr}`);
  const admin = await readKeyFile(adminKeyFile);
  const coordinator = await startCoordinatorProcess(join(dir, 'coordinator'), join(dir, 'coordinator.log'));
  const caches: BinaryCacheServer[] = [];
  const agents: DaemonProcess[] = [];

  const view = async (host: string): Promise<HostView> => {
    const result = await runCli(['status', '--coordinator', coordinator.url, '--json', '--host', host]);
    if (result.code !== 0) throw new Error(result.stderr);
    const found = (JSON.parse(result.stdout) as { hosts: HostView[] }).hosts.find((v) => v.host === host);
    if (!found) throw new Error(`outpost status does not list ${host}`);
    return found;
  };

  return {
    dir,
    coordinator,
    cacheKey,
    cacheDir,
    adminKeyFile,
    admin,
    async serveCache(options) {
      const cache = await serveBinaryCache(cacheDir, options);
      caches.push(cache);
      return cache;
    },
    publish: (closure) => publishToCache(closure, cacheDir, cacheKey.secretKeyFile),
    host: (id) => prepareHost(dir, id),
    startAgent(host, cacheUrl, extraArgs = [], options = {}) {
      const agent = startAgentProcess(host, {
        coordinators: options.coordinators ?? [coordinator.url],
        adminKeys: [admin.publicKey],
        substituters: [cacheUrl],
        trustedCacheKeys: [cacheKey.publicKey],
        extraArgs: [...TEST_AGENT_FLAGS, ...extraArgs],
        env: options.env,
      });
      agents.push(agent);
      return agent;
    },
    async deploy(host, closure, extra = []) {
      const result = await runCli([
        'deploy',
        '--coordinator',
        coordinator.url,
        '--key',
        adminKeyFile,
        '--host',
        host,
        '--closure',
        closure,
        ...extra,
      ]);
      if (result.code !== 0) throw new Error(`deploy to ${host} failed: ${result.stderr}`);
    },
    view,
    // The agent appends its result before it saves the final phase and publishes the status that
    // says it (finish() in agent/status-publish.ts), so a view read right after the result may
    // still show 'activating' or 'confirming'; the final phase follows within moments.
    settledView: (host) =>
      waitFor(
        `${host}'s status to leave ${IN_PROGRESS_PHASES.join('/')}`,
        async () => {
          const found = await view(host);
          return found.phase !== null && IN_PROGRESS_PHASES.includes(found.phase) ? null : found;
        },
        30_000,
        300,
      ),
    async nextResult(host, seqAbove, timeoutMs = 60_000) {
      return waitFor(
        `a result from ${host} after #${seqAbove}`,
        async () => {
          const last = (await view(host)).lastResult;
          return last && last.seq > seqAbove ? last : null;
        },
        timeoutMs,
        300,
      );
    },
    async lastSeq(host) {
      try {
        return (await view(host)).lastResult?.seq ?? 0;
      } catch {
        return 0;
      }
    },
    async close() {
      await Promise.all(agents.map((a) => a.stop('SIGKILL')));
      await coordinator.stop();
      await Promise.all(caches.map((c) => c.close()));
    },
  };
}

export async function readAgentState(host: SimulatedHost): Promise<AgentState> {
  return loadAgentState(host.stateDir);
}

// pino lines of an agent's log with this event name.
export function logEvents(agent: DaemonProcess, event: string): Record<string, unknown>[] {
  return agent
    .logs()
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => {
      try {
        return JSON.parse(line) as Record<string, unknown>;
      } catch {
        return {};
      }
    })
    .filter((entry) => entry.event === event);
}

// Lines the reboot-command stub wrote.
export async function readLines(path: string): Promise<string[]> {
  try {
    return (await fs.readFile(path, 'utf8')).split('\n').filter(Boolean);
  } catch {
    return [];
  }
}
