import { parseFlags, renderHelp } from '../cli/flags.js';
import { readKeyFile } from '../shared/node/key-file.js';
import { createLogger } from '../shared/node/log.js';
import { relayCommand, relayOptionsSchema } from './options.js';
import { startRelay } from './relay.js';

export async function runRelayCommand(argv: string[]): Promise<number> {
  const parsed = parseFlags(relayCommand, argv, relayOptionsSchema);
  if (parsed.help) {
    console.log(renderHelp(relayCommand));
    return 0;
  }
  const options = parsed.value;
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
    logger,
  });
  // Like the coordinator: the first stdout line is machine-readable (the port chosen with --port 0).
  console.log(JSON.stringify({ event: 'listening', url: relay.url, port: relay.port }));
  await new Promise<void>((resolve) => {
    const stop = (signal: string): void => {
      logger.info({ event: 'relay-stopping', signal }, 'stopping');
      relay.close().then(resolve, resolve);
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
  });
  return 0;
}
