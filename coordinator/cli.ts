import { parseFlags, renderHelp } from '../cli/flags.js';
import { readKeyFile } from '../shared/node/key-file.js';
import { createLogger } from '../shared/node/log.js';
import { coordinatorCommand, coordinatorOptionsSchema } from './options.js';
import { startCoordinator } from './server.js';

export async function runCoordinatorCommand(argv: string[]): Promise<number> {
  const parsed = parseFlags(coordinatorCommand, argv, coordinatorOptionsSchema);
  if (parsed.help) {
    console.log(renderHelp(coordinatorCommand));
    return 0;
  }
  const options = parsed.value;
  const logger = createLogger('coordinator', options.logLevel);
  const coordinator = await startCoordinator({
    dataDir: options.dataDir,
    listen: options.listen,
    port: options.port,
    maxPayload: options.maxPayload,
    idleUnloadMs: options.idleUnload * 1000,
    logger,
    orgRootKeys: options.orgRoot,
    timestampKey: options.timestampKey ? await readKeyFile(options.timestampKey) : undefined,
    timestampIntervalMs: options.timestampInterval * 1000,
    tls: options.tlsCert && options.tlsKey ? { certFile: options.tlsCert, keyFile: options.tlsKey } : undefined,
  });
  // The first stdout line is machine-readable so tests and scripts can find a port chosen with --port 0.
  console.log(JSON.stringify({ event: 'listening', url: coordinator.url, port: coordinator.port }));
  await new Promise<void>((resolve) => {
    const stop = (signal: string): void => {
      logger.info({ event: 'coordinator-stopping', signal }, 'stopping');
      coordinator.close().then(resolve, resolve);
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
  });
  return 0;
}
