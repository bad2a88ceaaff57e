import { existsSync } from 'node:fs';
import { defaultOf } from '../cli/options.js';
import type { SigningKey } from '../shared/crypto/keys.js';
import type { Logger } from '../shared/log.js';
import type { TimeWindow } from '../shared/schedule/windows.js';
import type { ReconnectOptions } from '../shared/sync/connect.js';
import type { EnrollTokenFile } from '../shared/trust/sign-enroll-request.js';
import type { AppsSettings } from './apps/app-monitor.js';
import type { IntentTrust } from './intent-trust.js';
import type { ActivationRunner } from './nix/activation-runner.js';
import type { SystemRunningRule } from './nix/health.js';
import { agentCommand } from './options.js';
import type { ProfileType } from './pipeline/activate.js';
import type { SshTunnelSettings } from './tunnel.js';

// Everything the agent runs with. The CLI (cli.ts) builds it from flags; tests may build it directly.
export interface AgentConfig {
  host: string;
  key: SigningKey;
  coordinators: string[];
  // Whether one intent may be installed here, and how it ranks: the fleet policy walked from the
  // pinned org root, or a static admin key list (intent-trust.ts). Closed when the agent stops.
  trust: IntentTrust;
  // Under a policy: ask to be enrolled at start (idempotent), with a one-time token if given.
  enrollment?: { token: EnrollTokenFile | null };
  // Reconnect backoff towards the sync endpoints (jittered, doubling, capped).
  // onRetry: told why each connection ended (close code and reason), to log it.
  reconnect?: ReconnectOptions;
  substituters: string[];
  trustedCacheKeys: string[];
  store?: string;
  profile: string;
  profileType?: ProfileType;
  stateDir: string;
  // Overall download deadline, from the download's (persisted) start.
  fetchTimeoutMs: number;
  activationTimeoutMs: number;
  activationRunner?: ActivationRunner | 'auto';
  logger: Logger;
  // Re-evaluates intents this often even without document changes (expiry is time-based).
  wakeIntervalMs?: number;
  download?: Partial<DownloadSettings>;
  maintenanceWindows?: TimeWindow[];
  rebootWindows?: TimeWindow[];
  timeZone?: string;
  health?: Partial<HealthSettings>;
  bootedSystem?: string;
  rebootCommand?: string;
  // Remote actions (agent/actions.ts): what collect gathers (none: the defaults), and how long a
  // collect command or a check may take.
  collectCommands?: CollectCommand[];
  actionTimeoutMs?: number;
  // The agent's clock (ms since the epoch); injectable so window logic is testable.
  now?: () => number;
  // `outpost ssh` tunnels to the local sshd (agent/tunnel.ts); off when absent. Under a policy only.
  sshTunnel?: SshTunnelSettings;
  // ADDRESS:PORT to serve GET /metrics on (agent/metrics.ts); none by default.
  metricsListen?: string;
  // Under a policy: where the policy's SSH login keys for this host go, one file per account
  // (agent/access.ts); none by default.
  authorizedKeysDir?: string;
  // Application services to watch and report in the status (agent/apps/, docs/apps.md).
  apps?: AppsSettings;
}

export interface DownloadSettings {
  minBytesPerSecond: number;
  throughputWindowMs: number;
  retries: number;
  maxClosureBytes: number;
  minFreeBytes: number;
  concurrency: number;
  retryDelayMs: number;
}

export interface HealthSettings {
  confirmTimeoutMs: number;
  checks: string[];
  requireSystemRunning: SystemRunningRule;
  systemctl: string;
}

export interface ResolvedAgentConfig extends AgentConfig {
  profileType: ProfileType;
  activationRunner: ActivationRunner;
  download: DownloadSettings;
  maintenanceWindows: TimeWindow[];
  rebootWindows: TimeWindow[];
  health: HealthSettings;
  bootedSystem: string;
  rebootCommand: string;
  collectCommands: CollectCommand[];
  actionTimeoutMs: number;
  now: () => number;
}

export interface CollectCommand {
  name: string;
  command: string;
}

// The defaults of everything that is also a flag come from the flag's declaration (options.ts),
// so an agent built without the CLI (tests, the demo) runs like `outpost agent` with no flags.
const flag = agentCommand.options.shape;

export const DEFAULT_DOWNLOAD: DownloadSettings = {
  minBytesPerSecond: defaultOf(flag.minThroughput),
  throughputWindowMs: defaultOf(flag.throughputWindow) * 1000,
  retries: defaultOf(flag.downloadRetries),
  maxClosureBytes: defaultOf(flag.maxClosureSize),
  minFreeBytes: defaultOf(flag.minFreeSpace),
  // Parallel NAR transfers: hides a satellite link's round trips between small files.
  concurrency: 4,
  retryDelayMs: 1000,
};

export const DEFAULT_HEALTH: HealthSettings = {
  confirmTimeoutMs: defaultOf(flag.confirmTimeout) * 1000,
  checks: defaultOf(flag.healthCheck),
  requireSystemRunning: defaultOf(flag.requireSystemRunning),
  systemctl: defaultOf(flag.systemctl),
};

// What `outpost action collect` gathers unless --collect-command says otherwise: the recent
// warnings and errors, the failed units, disk usage and the system profile's generations.
export function defaultCollectCommands(systemctl: string, profile: string): CollectCommand[] {
  const quote = (text: string): string => `'${text.replaceAll("'", "'\\''")}'`;
  return [
    { name: 'journal', command: 'journalctl --no-pager --quiet --priority warning --lines 200' },
    { name: 'failed', command: `${quote(systemctl)} --failed --no-legend --plain` },
    { name: 'disk', command: 'df -h; df -i' },
    { name: 'generations', command: `nix-env --list-generations --profile ${quote(profile)}` },
  ];
}

// systemd-run wherever systemd runs the machine (the activation then survives even a restart of
// the agent's own unit), a process of its own session elsewhere.
export function chooseRunner(
  runner: ActivationRunner | 'auto' | undefined,
  runDir = '/run/systemd/system',
): ActivationRunner {
  if (runner && runner !== 'auto') return runner;
  return existsSync(runDir) ? 'systemd-run' : 'direct';
}

export function resolveAgentConfig(config: AgentConfig): ResolvedAgentConfig {
  return {
    ...config,
    profileType: config.profileType ?? defaultOf(flag.profileType),
    activationRunner: chooseRunner(config.activationRunner),
    download: { ...DEFAULT_DOWNLOAD, ...config.download },
    maintenanceWindows: config.maintenanceWindows ?? [],
    rebootWindows: config.rebootWindows ?? [],
    health: { ...DEFAULT_HEALTH, ...config.health },
    bootedSystem: config.bootedSystem ?? defaultOf(flag.bootedSystem),
    rebootCommand: config.rebootCommand ?? defaultOf(flag.rebootCommand),
    collectCommands: config.collectCommands?.length
      ? config.collectCommands
      : defaultCollectCommands(config.health?.systemctl ?? DEFAULT_HEALTH.systemctl, config.profile),
    actionTimeoutMs: config.actionTimeoutMs ?? defaultOf(flag.actionTimeout) * 1000,
    now: config.now ?? Date.now,
  };
}
