import { promises as fs } from 'node:fs';
import type * as Y from 'yjs';
import { desiredDocName, statusDocName } from '../shared/documents/names.js';
import { readOwnCurrentStatus } from '../shared/documents/status.js';
import { connectDocument, type DocumentConnection } from '../shared/node/connect.js';
import { createAccessKeeper, followPolicyForAccess } from './access.js';
import { loadActions, stopActions } from './actions.js';
import { startAppMonitor } from './apps/app-monitor.js';
import { type AgentConfig, type ResolvedAgentConfig, resolveAgentConfig } from './config.js';
import { newDesiredDoc, openDesired, statusDocumentChanged } from './documents.js';
import { requestEnrollment } from './enroll-request.js';
import { startAgentMetrics } from './metrics.js';
import { checkNixSignatureConfig } from './nix/nix-config.js';
import { type AgentState, loadAgentState } from './pipeline/state.js';
import { createProgressPublisher } from './progress-publisher.js';
import { openRolloutTracker } from './rollout-tracker.js';
import { runLoop } from './run-loop.js';
import { AGENT_VERSION, type AgentRuntime, poke } from './runtime.js';
import { trackDelivery } from './status-delivery.js';
import { publishCurrentStatus, setAwareness } from './status-publish.js';
import { createStatusSaver, loadStatusDocument, saveStatusDocument } from './status-store.js';
import { startSshTunnels } from './tunnel.js';

// The agent's entry point: builds the runtime record (runtime.ts) and wires it to its documents
// (documents.ts), trust, rollouts and the loop (run-loop.ts), which evaluates (evaluate.ts)
// what to select (select.ts) and publishes what it did (status-publish.ts).

export type { AgentConfig } from './config.js';

export interface RunningAgent {
  state(): AgentState;
  stop(): Promise<void>;
}

// The runtime of an agent whose state and status document are loaded, before anything connects.
export function createAgentRuntime(config: ResolvedAgentConfig, state: AgentState, statusDoc: Y.Doc): AgentRuntime {
  const desiredName = desiredDocName(config.host);
  const agent: AgentRuntime = {
    config,
    logger: config.logger.child({ host: config.host }),
    state,
    statusDoc,
    desiredName,
    statusName: statusDocName(config.host),
    backoff: config.reconnect ?? { baseBackoffMs: 1000, maxBackoffMs: 300_000 },
    stopped: false,
    wake: null,
    dirty: true,
    downloadAbort: new AbortController(),
    desiredDoc: newDesiredDoc(),
    desired: null,
    desiredBytes: 0,
    desiredDrops: 0,
    desiredReopen: null,
    reportedMalformed: new Set(),
    status: null,
    delivered: new Map(),
    delivery: null,
    awareness: null,
    preemptionCheck: null,
    // Remote changes (our own results echoed back, or merged after an outage) are saved too, and
    // checked: a peer may write anything into this document, and nothing it writes may count.
    statusSaver: createStatusSaver(config.stateDir, () => statusDoc),
    statusRemoteBytes: 0,
    statusPurge: null,
    statusCheck: null,
    reportedAnomalies: new Set(),
    progress: createProgressPublisher({
      now: config.now,
      awareness: (p) => setAwareness(agent, p),
      log: (p) =>
        agent.logger.info(
          {
            event: 'download-progress',
            document: statusDocName(config.host),
            generation: agent.state.target?.signed.intent.generation,
            ...p,
          },
          `downloaded ${p.pathsDone}/${p.pathsTotal} paths, ${p.bytesDone}/${p.bytesTotal} bytes`,
        ),
      milestone: () =>
        void publishCurrentStatus(agent).catch((error: unknown) =>
          agent.logger.warn({ event: 'status-write-failed', err: error }, 'cannot write the status document'),
        ),
    }),
    wasFrozen: false,
    awaiting: null,
    rollouts: null,
    verify: config.trust.verify,
    heldFor: '',
    waitingLogged: new Set(),
    loggedWindows: '',
    errorsInARow: 0,
    access: config.authorizedKeysDir
      ? createAccessKeeper({ dir: config.authorizedKeysDir, host: config.host, logger: config.logger })
      : null,
    sshSessions: null,
    apps: null,
  };
  return agent;
}

export async function startAgent(agentConfig: AgentConfig): Promise<RunningAgent> {
  const config = resolveAgentConfig(agentConfig);
  await checkNixSignatureConfig(config.substituters);
  await fs.mkdir(config.stateDir, { recursive: true, mode: 0o700 });
  const state = await loadAgentState(config.stateDir);
  const statusDoc = await loadStatusDocument(config.stateDir);
  const agent = createAgentRuntime(config, state, statusDoc);
  await loadActions(agent);
  const { logger, backoff } = agent;

  // Documents: the agent reads its desired document and writes its status document.
  const coordinator = config.coordinators[0]!;
  openDesired(agent);
  const status: DocumentConnection = connectDocument(config.coordinators, agent.statusName, {
    doc: statusDoc,
    identity: config.key,
    ...config.reconnect,
  });
  agent.status = status;
  const delivery = trackDelivery(status.provider, agent.delivered, () =>
    logger.debug(
      { event: 'status-delivered', document: agent.statusName },
      'the upstream holds more of the status document',
    ),
  );
  agent.delivery = delivery;
  // Results numbered before a stop but maybe never written wait for this sync (status-publish.ts).
  status.provider.on('sync', (synced: boolean) => {
    if (synced && agent.state.reservedResults.length) poke(agent);
  });
  const awareness = status.provider.awareness;
  agent.awareness = awareness;
  const metrics = config.metricsListen
    ? await startAgentMetrics(config.metricsListen, { statusDoc, awareness, logger })
    : null;

  // A new policy version or a fresh timestamp may change what is valid, or end a freeze.
  config.trust.onChange(() => poke(agent));
  if (agent.access) followPolicyForAccess(agent, agent.access);
  const rollouts = openRolloutTracker({
    endpoints: config.coordinators,
    host: config.host,
    identity: config.key,
    trust: config.trust,
    logger,
    ...(config.reconnect ? { reconnect: config.reconnect } : {}),
  });
  rollouts.onChange(() => poke(agent));
  agent.rollouts = rollouts;
  agent.verify = rollouts.verifier(config.trust.verify);
  const enrollment = config.enrollment
    ? requestEnrollment({
        endpoints: config.coordinators,
        host: config.host,
        key: config.key,
        token: config.enrollment.token,
        logger,
        backoff,
      })
    : null;
  statusDoc.on('update', (update: Uint8Array, origin: unknown) => {
    // What this agent wrote: ask the upstream to confirm it holds it (status-delivery.ts).
    if (origin !== status.provider) delivery.requestProbe();
    statusDocumentChanged(agent, update, origin);
  });

  const tunnels =
    config.sshTunnel && config.trust.mode === 'policy'
      ? await startSshTunnels({
          host: config.host,
          key: config.key,
          endpoints: config.coordinators,
          settings: config.sshTunnel,
          stateDir: config.stateDir,
          logger,
          policy: () => config.trust.chain().at(-1) ?? null,
          blocked: () => {
            const freshness = config.trust.freshness();
            return freshness.frozen
              ? `${config.host} is frozen (${freshness.reason}); no tunnel until it is fresh again`
              : null;
          },
          now: config.now,
          backoff,
          onSessionsChanged: () =>
            void publishCurrentStatus(agent).catch((error: unknown) =>
              logger.warn({ event: 'status-write-failed', err: error }, 'cannot write the status document'),
            ),
        }).catch((error: Error) => {
          // Deployments go on without tunnels; the reason names the fix.
          logger.error({ event: 'tunnels-off', reason: error.message }, 'outpost ssh tunnels are off');
          return null;
        })
      : null;
  agent.sshSessions = tunnels ? () => tunnels.sessions() : null;

  // The apps last reported stay in the status across a restart (and keep their `since`) until the
  // first check says otherwise.
  if (config.apps) agent.apps = readOwnCurrentStatus(statusDoc, config.key.publicKey)?.status.apps ?? null;
  const loop = runLoop(agent);
  const apps = config.apps
    ? startAppMonitor(config.apps, {
        logger,
        now: config.now,
        initial: agent.apps,
        publish: async (seen) => {
          agent.apps = seen;
          await publishCurrentStatus(agent);
        },
      })
    : null;

  logger.info(
    {
      event: 'agent-started',
      phase: agent.state.phase,
      applied: agent.state.applied?.generation ?? null,
      coordinator,
      version: AGENT_VERSION,
    },
    'agent started',
  );
  return {
    state: () => agent.state,
    async stop() {
      agent.stopped = true;
      agent.downloadAbort.abort();
      agent.wake?.();
      await loop.catch(() => undefined);
      await apps?.stop();
      enrollment?.stop();
      stopActions(agent);
      tunnels?.close();
      rollouts.close();
      for (const timer of [agent.desiredReopen, agent.preemptionCheck, agent.statusCheck])
        if (timer) clearTimeout(timer);
      if (agent.statusPurge) clearImmediate(agent.statusPurge);
      agent.desired?.close();
      delivery.stop();
      status.close();
      await config.trust.close();
      await agent.statusSaver.idle();
      await saveStatusDocument(config.stateDir, statusDoc);
      await metrics?.close();
    },
  };
}
