import { promises as fs } from 'node:fs';
import { runCommand, runDaemon } from '../cli/command.js';
import type { SigningKey } from '../shared/crypto/keys.js';
import type { Logger } from '../shared/log.js';
import { readKeyFile } from '../shared/node/key-file.js';
import { createLogger } from '../shared/node/log.js';
import { readTokenFile } from '../shared/node/token-file.js';
import { PENDING_NOTICE_MS, type ReconnectOptions } from '../shared/sync/connect.js';
import { MAX_VALUE_DEPTH, MAX_VALUE_OBJECTS_PER_KIB } from '../shared/sync/deep-values.js';
import { MAX_PENDING_UPDATE_BYTES } from '../shared/sync/pending-updates.js';
import { retryLogger } from '../shared/sync/retry-log.js';
import type { EnrollTokenFile } from '../shared/trust/sign-enroll-request.js';
import { type IntentTrust, openIntentTrust } from './intent-trust.js';
import { type AgentOptions, agentCommand } from './options.js';
import { type AgentConfig, startAgent } from './run-agent.js';

// Each call keeps its own memory of what it last logged per document (their documents differ).
function reconnectOptions(options: AgentOptions, logger: Logger): ReconnectOptions {
  return {
    baseBackoffMs: options.backoffBase * 1000,
    maxBackoffMs: options.backoffMax * 1000,
    onRetry: retryLogger(logger),
    onDeepValues: ({ document, values, counts, unreadable }) => {
      if (unreadable) {
        logger.warn(
          { event: 'update-unreadable', document },
          `${document}: dropped an update that is malformed as Yjs would read it (a relay or coordinator sent it; Yjs would have failed on it too)`,
        );
        return;
      }
      const deep = values.filter((value) => value.bound === 'depth');
      const dense = values.filter((value) => value.bound === 'objects');
      const writers = [...new Set(values.map((value) => value.client))];
      if (counts.depth > 0)
        logger.warn(
          {
            event: 'value-too-deep',
            document,
            writers,
            values: deep.slice(0, 8),
            count: counts.depth,
            limit: MAX_VALUE_DEPTH,
          },
          `${document}: ${counts.depth} value(s) nested past ${MAX_VALUE_DEPTH} levels (up to ${Math.max(...deep.map((value) => value.depth))}) from Yjs client(s) ${writers.join(', ')}, replaced by null before applying the update; entries holding them are invalid (a relay or coordinator wrote them: such values overflow the stack)`,
        );
      const densest = dense.reduce<(typeof dense)[number] | null>(
        (most, value) => (most && most.containers >= value.containers ? most : value),
        null,
      );
      if (counts.objects > 0)
        logger.warn(
          {
            event: 'value-too-many-objects',
            document,
            writers,
            values: dense.slice(0, 8),
            count: counts.objects,
            limit: MAX_VALUE_OBJECTS_PER_KIB,
          },
          `${document}: ${counts.objects} value(s) packing more than ${MAX_VALUE_OBJECTS_PER_KIB} objects and arrays per KiB (${densest ? `the densest listed: ${densest.containers} in ${densest.bytes} bytes` : 'listed: none'}) from Yjs client(s) ${writers.join(', ')}, in an update over that ratio: replaced by null before applying it; entries holding them are invalid (a relay or coordinator wrote them: decoded, such values cost ~100 bytes of memory per object or array)`,
        );
    },
    onPendingUpdates: ({ dropped, ...pending }) => {
      const missing = pending.missing.map((m) => `${m.client} from clock ${m.clock}`).join(', ');
      if (dropped)
        logger.warn(
          { event: 'updates-pending-dropped', ...pending, limit: MAX_PENDING_UPDATE_BYTES },
          `${pending.document}: dropped ${pending.bytes} bytes of updates from Yjs client(s) ${pending.writers.join(', ')} waiting for structs never sent (client(s) ${missing}), over ${MAX_PENDING_UPDATE_BYTES}; a relay or coordinator withholds them: entries after the gap stay unseen`,
        );
      else
        logger.warn(
          { event: 'updates-pending', ...pending, afterMs: PENDING_NOTICE_MS },
          `${pending.document}: ${pending.bytes} bytes of updates from Yjs client(s) ${pending.writers.join(', ')} wait for structs never sent (client(s) ${missing}) after ${PENDING_NOTICE_MS / 1000} s; a relay or coordinator withholds them: entries after the gap stay unseen`,
        );
    },
  };
}

export function agentConfigFromOptions(
  options: AgentOptions,
  key: SigningKey,
  trust: IntentTrust,
  token: EnrollTokenFile | null,
  logger: Logger,
): AgentConfig {
  return {
    host: options.host,
    key,
    coordinators: options.coordinator,
    trust,
    ...(options.orgRoot.length > 0 ? { enrollment: { token } } : {}),
    reconnect: reconnectOptions(options, logger),
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
    collectCommands: options.collectCommand,
    actionTimeoutMs: options.actionTimeout * 1000,
    ...(options.metricsListen ? { metricsListen: options.metricsListen } : {}),
    ...(options.authorizedKeysDir ? { authorizedKeysDir: options.authorizedKeysDir } : {}),
    ...(options.sshPort > 0
      ? {
          sshTunnel: {
            port: options.sshPort,
            idleTimeoutMs: options.sshIdleTimeout * 1000,
            maxSessions: options.sshMaxSessions,
          },
        }
      : {}),
    ...(options.appsManifest
      ? {
          apps: {
            manifest: options.appsManifest,
            intervalMs: options.appsInterval * 1000,
            docker: options.dockerCommand,
            timeoutMs: Math.min(options.appsInterval, 30) * 1000,
          },
        }
      : {}),
    logger,
  };
}

export function runAgentCommand(argv: string[]): Promise<number> {
  return runCommand(agentCommand, argv, runAgent);
}

async function runAgent(options: AgentOptions): Promise<number> {
  const logger = createLogger('agent', options.logLevel);
  const key = await readKeyFile(options.key);
  const token =
    options.enrollToken === undefined
      ? null
      : await readTokenFile(options.enrollToken).catch((error: Error) => {
          throw new Error(`--enroll-token: ${error.message}`);
        });
  if (token && token.token.host !== options.host)
    throw new Error(
      `--enroll-token: ${options.enrollToken} is for host ${token.token.host}, not ${options.host}; use the token made for this host`,
    );
  await fs.mkdir(options.stateDir, { recursive: true, mode: 0o700 });
  // Every connection proves this host key (coordinators and relays with --org-root require it).
  const trust = await openIntentTrust({
    host: options.host,
    endpoints: options.coordinator,
    identity: key,
    stateDir: options.stateDir,
    orgRootKeys: options.orgRoot,
    adminKeys: options.adminKey,
    freezeAfterMs: options.freezeAfter * 1000,
    deliveryWindowMs: options.deliveryWindow * 1000,
    logger,
    backoff: reconnectOptions(options, logger),
  });
  const agent = await startAgent(agentConfigFromOptions(options, key, trust, token, logger));
  return runDaemon('agent', logger, { close: () => agent.stop() });
}
