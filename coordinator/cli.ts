import type { z } from 'zod';
import { runCommand, runDaemon } from '../cli/command.js';
import { readKeyFile } from '../shared/node/key-file.js';
import { createLogger } from '../shared/node/log.js';
import { natsAccessFrom } from './backends/backend-option.js';
import { describeMigration, migrateCommand, migrateLevelToNats } from './backends/migrate.js';
import { enrollmentLimitsFromOptions, limitsFromOptions } from './limit-flags.js';
import { type CoordinatorOptions, coordinatorCommand } from './options.js';
import { startCoordinator } from './server.js';

type MigrateOptions = z.output<typeof migrateCommand.options>;

export function runCoordinatorCommand(argv: string[]): Promise<number> {
  if (argv[0] === 'migrate') return runCommand(migrateCommand, argv.slice(1), runMigrate);
  return runCommand(coordinatorCommand, argv, runCoordinator);
}

async function runMigrate(options: MigrateOptions): Promise<number> {
  if (options.to.kind !== 'nats') {
    console.error(
      'outpost coordinator migrate: --to must name NATS servers (nats://HOST:PORT,…); the source is LevelDB already',
    );
    return 2;
  }
  const logger = createLogger('migrate', options.logLevel);
  const to = {
    ...options.to,
    stream: options.natsStream,
    replicas: options.natsReplicas,
    access: natsAccessFrom(options),
  };
  try {
    const report = await migrateLevelToNats(options.fromLevel, to, logger);
    console.log(describeMigration(report, to));
    return 0;
  } catch (error) {
    console.error(`outpost coordinator migrate: ${(error as Error).message}`);
    return 1;
  }
}

async function runCoordinator(options: CoordinatorOptions): Promise<number> {
  const logger = createLogger('coordinator', options.logLevel);
  const coordinator = await startCoordinator({
    dataDir: options.dataDir,
    backend:
      options.backend.kind === 'nats'
        ? {
            ...options.backend,
            stream: options.natsStream,
            replicas: options.natsReplicas,
            access: natsAccessFrom(options),
          }
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
