import type { RolloutEntries } from '../rollout/document.js';
import { findPlan, judgeRollout, type RolloutView } from '../rollout/judge.js';
import { placeHosts, planDigest } from '../rollout/plan.js';
import type { Policy } from '../schemas/policy.js';

// Which generation a manual deploy or rollback takes, shared by `outpost deploy`/`rollback` and
// the web editor. A rollout fixes each host's generation when it is created but writes it into
// the host's desired document only when the host's wave starts; a deploy made meanwhile that
// looked at the desired document alone took that very generation. The host then ran the deploy
// and dropped the rollout's intent as below what it runs (no result, so the wave's gate waited
// for ever), or, holding both at once, refused both as an equivocation
// (test/integration/deploy-rollout-generation.test.ts).

// A generation a rollout still to come gives a host: not in its desired document yet.
export interface PendingPlacement {
  rollout: string;
  release: string;
  // 1-based, as `outpost rollout approve --wave N` counts.
  wave: number;
  waveName: string;
  generation: number;
  state: RolloutView['state'];
}

// A rollout that is aborted, complete or expired writes no more intents.
const STILL_DELIVERING: ReadonlySet<RolloutView['state']> = new Set(['running', 'paused', 'halted']);

// The placements of `host` in these rollout documents that are above what its desired document
// holds (`desiredHighest`) and whose rollout may still deliver them. Only rollouts naming the
// host with such a generation are judged (their evidence is checked): usually none or one.
export function pendingPlacements(
  host: string,
  desiredHighest: number,
  rollouts: readonly { id: string; entries: RolloutEntries }[],
  chain: Policy[],
  now: number,
): PendingPlacement[] {
  const pending: PendingPlacement[] = [];
  for (const { id, entries } of rollouts) {
    const first = entries.plans[0];
    const signed = first ? findPlan(entries, planDigest(first.plan)) : null;
    const placed = signed ? placeHosts(signed.plan).get(host) : undefined;
    if (!signed || !placed || placed.entry.generation <= desiredHighest) continue;
    const { state } = judgeRollout(entries, signed, chain, now);
    if (!STILL_DELIVERING.has(state)) continue;
    pending.push({
      rollout: id,
      release: signed.plan.release,
      wave: placed.wave + 1,
      waveName: signed.plan.waves[placed.wave]!.name,
      generation: placed.entry.generation,
      state,
    });
  }
  return pending.sort((a, b) => b.generation - a.generation || a.rollout.localeCompare(b.rollout));
}

export interface GenerationRequest {
  host: string;
  // The highest generation of any intent in the host's desired document.
  desiredHighest: number;
  pending: readonly PendingPlacement[];
  // A generation the admin named (`--generation N`); else the next one is chosen.
  requested?: number;
  // `--force`: record a generation not above what is issued (agents refuse it).
  force?: boolean;
  // Whether the admin can name a generation (the CLI's --generation; the web editor cannot).
  canNameGeneration: boolean;
}

export type GenerationChoice =
  | { ok: true; generation: number; previousHighest: number; overRollouts: PendingPlacement[] }
  | { ok: false; reason: string };

function placementText(p: PendingPlacement): string {
  return `wave ${p.wave} (${p.waveName}) of rollout ${p.rollout} (release ${p.release}, ${p.state})`;
}

function waysOut(pending: readonly PendingPlacement[]): string {
  const ids = [...new Set(pending.map((p) => p.rollout))];
  return ids
    .map((id) => `wait for it ('outpost rollout wait ${id}') or abort it ('outpost rollout abort ${id}')`)
    .join('; ');
}

export function chooseDeployGeneration(request: GenerationRequest): GenerationChoice {
  const { host, desiredHighest, pending, requested } = request;
  const topPending = pending.reduce((max, p) => Math.max(max, p.generation), 0);
  const issued = Math.max(desiredHighest, topPending);
  if (requested === undefined) {
    if (pending.length === 0)
      return { ok: true, generation: desiredHighest + 1, previousHighest: desiredHighest, overRollouts: [] };
    const first = pending[0]!;
    return {
      ok: false,
      reason: `${host} is in ${placementText(first)}${pending.length > 1 ? ` and ${pending.length - 1} more rollouts` : ''}, which gives it generation ${first.generation} when that wave starts; a deploy now would take a generation the rollout holds for it, and ${host} would then drop one of the two intents or refuse both. Nothing was signed: ${waysOut(pending)}${request.canNameGeneration ? `; or deploy over the rollout with --generation ${issued + 1} (${host} then never installs the rollout's generation, so that wave's gate cannot count it)` : ''}`,
    };
  }
  if (requested <= desiredHighest && !request.force)
    return {
      ok: false,
      reason: `generation ${requested} is not above ${desiredHighest}, the highest already issued for ${host}; agents refuse it as a rollback. Omit --generation to use ${desiredHighest + 1}, or pass --force to record it anyway`,
    };
  const colliding = pending.filter((p) => p.generation >= requested);
  if (colliding.length && !request.force)
    return {
      ok: false,
      reason: `generation ${requested} is not above ${colliding[0]!.generation}, which ${placementText(colliding[0]!)} gives ${host} when that wave starts; ${host} would drop one of the two intents or refuse both. Nothing was signed: ${waysOut(colliding)}; or use --generation ${issued + 1} to deploy over the rollout`,
    };
  return {
    ok: true,
    generation: requested,
    previousHighest: issued,
    overRollouts: pending.filter((p) => p.generation < requested),
  };
}

// What deploying over a rollout costs, said before the admin relies on the rollout finishing.
export function overRolloutWarning(host: string, generation: number, over: readonly PendingPlacement[]): string[] {
  return over.map(
    (p) =>
      `deploying over rollout ${p.rollout}: ${host} will not install the generation ${p.generation} its ${placementText(p)} names, below the ${generation} deployed now: it answers that placement with a signed refusal, which the wave's gate counts as a failure (the rollout halts unless its failure budget allows one more); abort it ('outpost rollout abort ${p.rollout}') if it should not go on`,
  );
}
