import { verifyPayloadSignature } from '../../shared/crypto/signatures.js';
import type { SignedIntent } from '../../shared/schemas/intent.js';
import type { SignedResult } from '../../shared/schemas/report.js';
import { intentDigest } from '../../shared/trust/verify-intent.js';
import { type AgentState, HISTORY_LENGTH } from './state.js';

// Threat 14, "agent state wiped": the anti-rollback floor lives in the agent's state file, so a
// wiped state directory would let an old, validly signed intent be installed again. Before such
// an agent decides anything, it rebuilds what it knows from evidence it can verify itself: its
// own signed results (synced back from any peer; only its own key counts, so a peer cannot
// invent a lower floor, only withhold results) and the system that runs now (the profile).
export interface FloorEvidence {
  hostKey: string;
  results: SignedResult[];
  // Intents of the desired document, to find the policy epoch each result's intent ranked under.
  intents: SignedIntent[];
  epochOf: (signed: SignedIntent) => number;
  // The closure the system profile points at, if any.
  running: string | null;
}

export type RebuiltFloor = Pick<
  AgentState,
  | 'floorEpoch'
  | 'floorGeneration'
  | 'resultSeq'
  | 'lastResultSeq'
  | 'handledDigests'
  | 'applied'
  | 'previous'
  | 'history'
>;

export function rebuildFloor(evidence: FloorEvidence): RebuiltFloor {
  const own = evidence.results
    .filter(
      (r) => r.signature.publicKey === evidence.hostKey && verifyPayloadSignature('result', r.result, r.signature),
    )
    .map((r) => r.result)
    .sort((a, b) => a.seq - b.seq);
  const byDigest = new Map(evidence.intents.map((signed) => [intentDigest(signed), signed]));
  let floorEpoch = 0;
  let floorGeneration = 0;
  for (const result of own) {
    // A refusal attempted nothing: its generation may be anything an attacker signed.
    if (result.outcome === 'refused') continue;
    const intent = byDigest.get(result.intentDigest);
    const epoch = intent ? evidence.epochOf(intent) : 0;
    if (epoch > floorEpoch) {
      floorEpoch = epoch;
      floorGeneration = result.generation;
    } else if (epoch === floorEpoch) {
      floorGeneration = Math.max(floorGeneration, result.generation);
    }
  }
  const appliedResults = own.filter((r) => r.outcome === 'applied');
  const history = appliedResults
    .map((r) => ({ generation: r.generation, closure: r.closure, digest: r.intentDigest }))
    .slice(-HISTORY_LENGTH);
  // What runs is what the last applied result says, if the profile agrees; after a rollback the
  // profile points at an earlier applied generation.
  const runningAt = evidence.running === null ? -1 : history.map((h) => h.closure).lastIndexOf(evidence.running);
  const applied = runningAt >= 0 ? history[runningAt]! : null;
  const previous = runningAt > 0 ? history[runningAt - 1]! : null;
  const lastSeq = own.at(-1)?.seq ?? null;
  return {
    floorEpoch,
    floorGeneration,
    resultSeq: lastSeq ?? 0,
    lastResultSeq: lastSeq,
    handledDigests: [...new Set(own.map((r) => r.intentDigest))],
    applied,
    previous,
    history,
  };
}
