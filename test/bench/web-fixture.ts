import type { SignedIntent } from '../../shared/schemas/intent.js';
import type { Policy } from '../../shared/schemas/policy.js';
import type { SignedResult, SignedStatus } from '../../shared/schemas/report.js';

// What test/bench/web.ts hands the benchmark page (web/bench/fleet-bench.tsx) and gets back.
export interface BenchFixture {
  policy: Policy;
  hosts: { host: string; hostKey: string; intent: SignedIntent; status: SignedStatus; result: SignedResult }[];
  // Newer statuses, signed by the hosts' keys, applied in rounds.
  updates: SignedStatus[];
}

export interface BenchResult {
  hosts: number;
  // Cold: signatures checked, views built, table painted.
  firstRenderMs: number;
  // Again with the signature verdicts known.
  warmRenderMs: number;
  firstRenderRows: number;
  peerFirstRenderMs: number;
  peerRows: number;
  updates: { batch: number; rounds: number; msPerFrame: number; msPerUpdate: number }[];
  peerUpdateMs: number;
}
