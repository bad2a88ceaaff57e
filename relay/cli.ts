import { runCommand, runDaemon } from '../cli/command.js';
import { limitsFromOptions } from '../coordinator/limit-flags.js';
import { readKeyFile } from '../shared/node/key-file.js';
import { createLogger } from '../shared/node/log.js';
import { type RelayOptions, relayCommand } from './options.js';
import { startRelay } from './relay.js';

export function runRelayCommand(argv: string[]): Promise<number> {
  return runCommand(relayCommand, argv, runRelay);
}

async function runRelay(options: RelayOptions): Promise<number> {
  const logger = createLogger('relay', options.logLevel);
  const relay = await startRelay({
    upstreams: options.upstream,
    key: options.key ? await readKeyFile(options.key) : null,
    orgRootKeys: options.orgRoot,
    dataDir: options.dataDir,
    listen: options.listen,
    port: options.port,
    maxPayload: options.maxPayload,
    idleUnloadMs: options.idleUnload * 1000,
    baseBackoffMs: options.backoffBase * 1000,
    maxBackoffMs: options.backoffMax * 1000,
    upstreamTimeoutMs: options.upstreamTimeout * 1000,
    syncConcurrency: options.syncConcurrency,
    cacheUpstreams: options.cacheUpstream,
    cacheMaxBytes: options.cacheMaxSize,
    tls: options.tlsCert && options.tlsKey ? { certFile: options.tlsCert, keyFile: options.tlsKey } : undefined,
    limits: limitsFromOptions(options),
    logger,
  });
  return runDaemon('relay', logger, relay, { url: relay.url, port: relay.port });
}
