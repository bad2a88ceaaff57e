import { readIntentEntries } from '../shared/documents/desired.js';
import { statusDocName } from '../shared/documents/names.js';
import { readOwnCurrentStatus, readOwnResults } from '../shared/documents/status.js';
import { describeRules, nextAllowedStart } from '../shared/schedule/window-rules.js';
import type { AgentPhase } from '../shared/schemas/report.js';
import { processActions } from './actions.js';
import { kindOf, windowRules } from './effective-windows.js';
import { evaluate } from './evaluate.js';
import { currentProfileTarget } from './pipeline/activate.js';
import { rebuildFloor } from './pipeline/floor.js';
import type { AgentRuntime } from './runtime.js';
import { persist, pinGenerations, publishCurrentStatus, writeReservedResults } from './status-publish.js';

// The agent's loop: the floor checked once, then an evaluation whenever something changed.

const ERROR_RETRY_MS = 5000;
const ERROR_RETRY_MAX_MS = 300_000;

// While waiting for a window, wake when it opens (rechecked at least every wakeInterval).
export function sleepMs(agent: AgentRuntime): number {
  const { config, state } = agent;
  // Wake when a freeze would begin, so it shows in the status when it does.
  const { frozen, freezesAt } = config.trust.freshness();
  const untilFreeze =
    !frozen && freezesAt !== null ? Math.max(100, freezesAt - config.trust.now() + 100) : Number.POSITIVE_INFINITY;
  const interval = Math.min(config.wakeIntervalMs ?? 60_000, untilFreeze);
  if (state.phase !== 'waiting-for-window') return interval;
  const next = nextAllowedStart(windowRules(config, kindOf(state.work.waitingFor)), config.now());
  return next === null ? interval : Math.min(interval, Math.max(1000, next - config.now()));
}

// The effective windows, logged at start and whenever a policy version (or nothing) changes them.
function logWindows(agent: AgentRuntime): void {
  const { config, logger } = agent;
  const maintenance = describeRules(windowRules(config, 'maintenance'));
  const reboot = describeRules(windowRules(config, 'reboot'));
  if (`${maintenance}\n${reboot}` === agent.loggedWindows) return;
  agent.loggedWindows = `${maintenance}\n${reboot}`;
  logger.info(
    {
      event: 'windows',
      document: statusDocName(config.host),
      policyVersion: config.trust.policyVersion(),
      maintenance,
      reboot,
    },
    `work starts in: ${maintenance}; reboots in: ${reboot}`,
  );
}

// Both documents have synced with a peer (a coordinator or relay) on their current connections.
export function syncPeerReached(agent: AgentRuntime): boolean {
  return Boolean(agent.desired?.provider.synced && agent.status?.provider.synced);
}

// Threat 14: a state created from nothing waits for a sync peer and rebuilds the floor from
// the host's own signed results and the running system before it looks at any intent.
export async function verifyFloor(agent: AgentRuntime): Promise<void> {
  const { config, logger, statusDoc } = agent;
  if (!agent.state.floorUnverified) return;
  logger.info(
    { event: 'floor-rebuild-waiting', document: statusDocName(config.host) },
    "no agent state: waiting for a sync peer to rebuild the anti-rollback floor from this host's signed results",
  );
  await new Promise<void>((resolve) => {
    const check = (): void => {
      if (agent.stopped || syncPeerReached(agent)) {
        clearInterval(timer);
        resolve();
      }
    };
    const timer = setInterval(check, 200);
    check();
  });
  if (agent.stopped) return;
  await agent.statusSaver.idle();
  const rebuilt = rebuildFloor({
    hostKey: config.key.publicKey,
    results: readOwnResults(statusDoc, config.key.publicKey),
    intents: readIntentEntries(agent.desiredDoc).entries.map((e) => e.signed),
    epochOf: config.trust.epochOf,
    running: await currentProfileTarget({ profile: config.profile }),
  });
  const state = agent.state;
  const phase: AgentPhase = rebuilt.applied ? 'applied' : state.phase;
  agent.state = {
    ...state,
    ...rebuilt,
    resultSeq: Math.max(state.resultSeq, rebuilt.resultSeq),
    phase,
    // Only this host's own signed status counts: a peer's seq = MAX_SAFE_INTEGER must not stick.
    statusSeq: Math.max(state.statusSeq, readOwnCurrentStatus(statusDoc, config.key.publicKey)?.status.seq ?? 0),
    floorUnverified: false,
  };
  logger.info(
    {
      event: 'floor-rebuilt',
      document: statusDocName(config.host),
      floorEpoch: agent.state.floorEpoch,
      floorGeneration: agent.state.floorGeneration,
      applied: agent.state.applied?.generation ?? null,
      results: rebuilt.lastResultSeq ?? 0,
    },
    `anti-rollback floor rebuilt: generation ${agent.state.floorGeneration}${agent.state.floorEpoch ? ` (epoch ${agent.state.floorEpoch})` : ''}`,
  );
}

// The agent's loop: evaluate whenever something changed, else sleep until the next reason to look.
export async function runLoop(agent: AgentRuntime): Promise<void> {
  const { logger } = agent;
  await verifyFloor(agent);
  if (agent.stopped) return;
  await persist(agent, agent.state);
  await pinGenerations(agent);
  while (!agent.stopped) {
    if (agent.dirty) {
      agent.dirty = false;
      try {
        logWindows(agent);
        // Results numbered before a stop and maybe never written: before anything new is reported.
        await writeReservedResults(agent);
        // Remote actions first: a lock that arrived with a new intent holds it.
        await processActions(agent);
        await evaluate(agent);
        // Trust changes (a freeze, a new policy version) show in the status without other work.
        await publishCurrentStatus(agent);
        agent.errorsInARow = 0;
      } catch (error) {
        // Work in progress (a confirm deadline runs) must not wait for the next document change;
        // an error that persists is retried less and less often.
        agent.errorsInARow += 1;
        const delayMs = Math.min(ERROR_RETRY_MAX_MS, ERROR_RETRY_MS * 2 ** (agent.errorsInARow - 1));
        logger.error(
          { event: 'agent-error', phase: agent.state.phase, err: error },
          `evaluation failed; retrying in ${delayMs / 1000} s`,
        );
        await new Promise<void>((resolve) => {
          agent.wake = resolve;
          setTimeout(resolve, delayMs).unref();
        });
        agent.wake = null;
        agent.dirty = true;
      }
      continue;
    }
    await new Promise<void>((resolve) => {
      agent.wake = resolve;
      setTimeout(resolve, sleepMs(agent)).unref();
    });
    agent.wake = null;
    agent.dirty = true;
  }
}
