import { runCommand, runDaemon } from '../cli/command.js';
import { readKeyFile } from '../shared/node/key-file.js';
import { createLogger } from '../shared/node/log.js';
import { enrollmentLimitsFromOptions, limitsFromOptions } from './limit-flags.js';
import { type CoordinatorOptions, coordinatorCommand } from './options.js';
import { startCoordinator } from './server.js';

export function runCoordinatorCommand(argv: string[]): Promise<number> {
  return runCommand(coordinatorCommand, argv, runCoordinator);
}

async function runCoordinator(options: CoordinatorOptions): Promise<number> {
  const logger = createLogger('coordinator', options.logLevel);
  const coordinator = await startCoordinator({
    dataDir: options.dataDir,
    backend:
      options.backend.kind === 'nats'
        ? { ...options.backend, stream: options.natsStream, replicas: options.natsReplicas }
        : options.backend,
    listen: options.listen,
    port: options.port,
    maxPayload: options.maxPayload,
    idleUnloadMs: options.idleUnload * 1000,
    logger,
    orgRootKeys: options.orgRoot,
    timestampKey: options.timestampKey ? await readKeyFile(options.timestampKey) : undefined,
    timestampIntervalMs: options.timestampInterval * 1000,
    tls: options.tlsCert && options.tlsKey ? { certFile: options.tlsCert, keyFile: options.tlsKey } : undefined,
    limits: limitsFromOptions(options),
    enrollmentLimits: enrollmentLimitsFromOptions(options),
  });
  return runDaemon('coordinator', logger, coordinator, { url: coordinator.url, port: coordinator.port });
}
