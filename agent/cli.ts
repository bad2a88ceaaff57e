import { readKeyFile } from '../shared/crypto/keys.js';
import { parseFlags, renderHelp } from '../shared/cli/flags.js';
import { createLogger } from '../shared/log.js';
import { agentCommand, agentOptionsSchema, type AgentOptions } from './options.js';
import { startAgent, type AgentConfig } from './run-agent.js';
import { verifyIntent } from '../shared/trust/verify-intent.js';
import type { SigningKey } from '../shared/crypto/keys.js';
import type { Logger } from '../shared/log.js';

export function agentConfigFromOptions(options: AgentOptions, key: SigningKey, logger: Logger): AgentConfig {
  const trustedAdminKeys = new Set(options.adminKey);
  return {
    host: options.host,
    key,
    coordinators: options.coordinator,
    verifyIntent: (signed) => verifyIntent(signed, { host: options.host, trustedAdminKeys, now: Date.now() }),
    substituters: options.substituter,
    trustedCacheKeys: options.trustedCacheKey,
    store: options.store,
    profile: options.profile,
    profileType: options.profileType,
    stateDir: options.stateDir,
    fetchTimeoutMs: options.fetchTimeout * 1000,
    activationTimeoutMs: options.activationTimeout * 1000,
    activationRunner: options.activationRunner,
    download: {
      minBytesPerSecond: options.minThroughput,
      throughputWindowMs: options.throughputWindow * 1000,
      retries: options.downloadRetries,
      maxClosureBytes: options.maxClosureSize,
      minFreeBytes: options.minFreeSpace,
    },
    maintenanceWindows: options.maintenanceWindow,
    rebootWindows: options.rebootWindow,
    timeZone: options.timezone,
    health: {
      confirmTimeoutMs: options.confirmTimeout * 1000,
      checks: options.healthCheck,
      requireSystemRunning: options.requireSystemRunning,
      systemctl: options.systemctl,
    },
    bootedSystem: options.bootedSystem,
    rebootCommand: options.rebootCommand,
    logger,
  };
}

export async function runAgentCommand(argv: string[]): Promise<number> {
  const parsed = parseFlags(agentCommand, argv, agentOptionsSchema);
  if (parsed.help) {
    console.log(renderHelp(agentCommand));
    return 0;
  }
  const options = parsed.value;
  const logger = createLogger('agent', options.logLevel);
  const key = await readKeyFile(options.key);
  const agent = await startAgent(agentConfigFromOptions(options, key, logger));
  await new Promise<void>((resolve) => {
    const stop = (signal: string): void => {
      logger.info({ event: 'agent-stopping', signal }, 'stopping');
      agent.stop().then(resolve, resolve);
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
  });
  return 0;
}
