import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { type DaemonProcess, runCli, startDaemon } from './processes.js';

// A simulated host: its own key, store root, system profile, state directory and activation
// log, running the real `outpost agent` process.
export interface SimulatedHost {
  host: string;
  dir: string;
  keyFile: string;
  publicKey: string;
  storeRoot: string;
  profile: string;
  stateDir: string;
  activationLog: string;
}

export async function prepareHost(parentDir: string, host: string): Promise<SimulatedHost> {
  const dir = join(parentDir, host);
  await fs.mkdir(dir, { recursive: true });
  const keyFile = join(dir, 'host.key');
  const result = await runCli(['keygen', '--out', keyFile, '--name', host, '--json']);
  if (result.code !== 0) throw new Error(`keygen for ${host} failed: ${result.stderr}`);
  const { publicKey } = JSON.parse(result.stdout) as { publicKey: string };
  return {
    host,
    dir,
    keyFile,
    publicKey,
    storeRoot: join(dir, 'root'),
    profile: join(dir, 'root', 'nix', 'var', 'nix', 'profiles', 'system'),
    stateDir: join(dir, 'state'),
    activationLog: join(dir, 'activations.log'),
  };
}

export interface AgentLaunch {
  coordinators: string[];
  adminKeys: string[];
  substituters: string[];
  trustedCacheKeys: string[];
  extraArgs?: string[];
  env?: NodeJS.ProcessEnv;
}

export function agentArgs(host: SimulatedHost, launch: AgentLaunch): string[] {
  return [
    'agent',
    '--host',
    host.host,
    '--key',
    host.keyFile,
    ...launch.coordinators.flatMap((c) => ['--coordinator', c]),
    ...launch.adminKeys.flatMap((k) => ['--admin-key', k]),
    ...launch.substituters.flatMap((s) => ['--substituter', s]),
    ...launch.trustedCacheKeys.flatMap((k) => ['--trusted-cache-key', k]),
    '--store',
    host.storeRoot,
    '--profile',
    host.profile,
    '--state-dir',
    host.stateDir,
    ...(launch.extraArgs ?? []),
  ];
}

export function startAgentProcess(host: SimulatedHost, launch: AgentLaunch): DaemonProcess {
  return startDaemon(agentArgs(host, launch), join(host.dir, 'agent.log'), {
    OUTPOST_TEST_ACTIVATION_LOG: host.activationLog,
    ...launch.env,
  });
}

export async function activations(host: SimulatedHost): Promise<string[]> {
  try {
    return (await fs.readFile(host.activationLog, 'utf8')).split('\n').filter(Boolean);
  } catch {
    return [];
  }
}

// Where the host's system profile points now (the closure it would boot and runs).
export async function profileTarget(host: SimulatedHost): Promise<string | null> {
  try {
    const link = await fs.readlink(host.profile);
    return await fs.readlink(join(host.profile, '..', link));
  } catch {
    return null;
  }
}
