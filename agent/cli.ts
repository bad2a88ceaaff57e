import { readKeyFile } from '../shared/crypto/keys.js';
import { parseFlags, renderHelp } from '../shared/cli/flags.js';
import { createLogger } from '../shared/log.js';
import { agentCommand, agentOptionsSchema } from './options.js';
import { startAgent } from './run-agent.js';
import { verifyIntent } from '../shared/trust/verify-intent.js';

export async function runAgentCommand(argv: string[]): Promise<number> {
  const parsed = parseFlags(agentCommand, argv, agentOptionsSchema);
  if (parsed.help) {
    console.log(renderHelp(agentCommand));
    return 0;
  }
  const options = parsed.value;
  const logger = createLogger('agent', options.logLevel);
  const key = await readKeyFile(options.key);
  const trustedAdminKeys = new Set(options.adminKey);
  const agent = await startAgent({
    host: options.host,
    key,
    coordinators: options.coordinator,
    verifyIntent: (signed) => verifyIntent(signed, { host: options.host, trustedAdminKeys, now: Date.now() }),
    substituters: options.substituter,
    trustedCacheKeys: options.trustedCacheKey,
    store: options.store,
    profile: options.profile,
    stateDir: options.stateDir,
    fetchTimeoutMs: options.fetchTimeout * 1000,
    activationTimeoutMs: options.activationTimeout * 1000,
    logger,
  });
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
