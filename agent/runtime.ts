import type { Awareness } from 'y-protocols/awareness';
import type * as Y from 'yjs';
import type { Logger } from '../shared/log.js';
import type { DocumentConnection } from '../shared/node/connect.js';
import type { AppStatus } from '../shared/schemas/apps.js';
import type { IntentVerifier } from '../shared/trust/verify-intent.js';
import type { SshSession } from '../shared/tunnel/session-log.js';
import type { AccessKeeper } from './access.js';
import type { ResolvedAgentConfig } from './config.js';
import type { AgentState } from './pipeline/state.js';
import type { ProgressPublisher } from './progress-publisher.js';
import type { RolloutTracker } from './rollout-tracker.js';
import type { DeliveredVector, DeliveryTracker } from './status-delivery.js';
import type { createStatusSaver } from './status-store.js';

// The agent's runtime record and what every agent module shares: the version, a report bound, poke.

export const AGENT_VERSION = '0.2.0';

// At most this many log lines per document instance about entries a reader skips.
export const MAX_ENTRY_REPORTS = 100;

// Everything a running agent holds, as one record the agent's module functions take (the yjs style):
// startAgent wires it to its documents, timers and loop; unit tests build one with
// createAgentRuntime (run-agent.ts) and stand-in connections (test/unit/agent/runtime-fixtures.ts).
export interface AgentRuntime {
  readonly config: ResolvedAgentConfig;
  readonly logger: Logger;
  state: AgentState;
  readonly statusDoc: Y.Doc;
  readonly desiredName: string;
  readonly statusName: string;
  readonly backoff: { baseBackoffMs: number; maxBackoffMs: number };
  stopped: boolean;
  // Ends the loop's current wait; `dirty` asks for another evaluation.
  wake: (() => void) | null;
  dirty: boolean;
  downloadAbort: AbortController;
  // The desired document is not kept on disk: when peers flood it, it is dropped and synced anew.
  desiredDoc: Y.Doc;
  desired: DocumentConnection | null;
  desiredBytes: number;
  desiredDrops: number;
  desiredReopen: NodeJS.Timeout | null;
  reportedMalformed: Set<string>;
  status: DocumentConnection | null;
  // What of the status document an upstream that keeps history holds (agent/status-delivery.ts):
  // only that is ever pruned.
  readonly delivered: DeliveredVector;
  delivery: DeliveryTracker | null;
  awareness: Pick<Awareness, 'setLocalState'> | null;
  preemptionCheck: NodeJS.Timeout | null;
  readonly statusSaver: ReturnType<typeof createStatusSaver>;
  statusRemoteBytes: number;
  statusPurge: NodeJS.Immediate | null;
  statusCheck: NodeJS.Timeout | null;
  readonly reportedAnomalies: Set<string>;
  readonly progress: ProgressPublisher;
  wasFrozen: boolean;
  // The newest intent that waits for more admins' signatures (shown in the status), if any.
  awaiting: { generation: number; reason: string } | null;
  heldFor: string;
  // Rollout intents are decided from their rollout's document (plan, evidence, actions); null
  // until startAgent follows them. `verify` is the selection's verifier (rollouts' decisions first).
  rollouts: RolloutTracker | null;
  verify: IntentVerifier;
  // Each wait of an intent logged once, by reason and digest: one that waited for its policy
  // version may then wait for more signatures, and that is said too.
  readonly waitingLogged: Set<string>;
  loggedWindows: string;
  errorsInARow: number;
  // Writes the policy's login keys for this host (--authorized-keys-dir), else null.
  readonly access: AccessKeeper | null;
  // The `outpost ssh` session log for the status (agent/tunnel.ts); null with tunnels off.
  sshSessions: (() => SshSession[]) | null;
  // Application services as last checked (agent/apps/), for the status; null when none are watched.
  apps: AppStatus[] | null;
}

// Something changed (a document, trust, a timer): evaluate again.
export function poke(agent: AgentRuntime): void {
  agent.dirty = true;
  agent.wake?.();
}
