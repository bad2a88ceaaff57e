import type { HostView } from './host-view.js';

// A manual rollback is a new, signed intent with the next generation number whose closure is one
// the host applied before (the anti-rollback floor never moves down). `outpost rollback` and the
// web editor choose the closure the same way.
export type RollbackTarget = { ok: true; generation: number; closure: string } | { ok: false; reason: string };

// Picks what to return to from the host's own signed results (only those that count as the host's:
// signed by its enrolled key under the pinned org root, host-view.ts): a generation it reported `applied`.
export function chooseRollbackTarget(
  view: Pick<HostView, 'host' | 'applied' | 'results'>,
  toGeneration?: number,
): RollbackTarget {
  const applied = view.results
    .filter((r) => r.signatureValid && r.result.outcome === 'applied')
    .map((r) => r.result)
    .sort((a, b) => a.seq - b.seq);
  const known = applied.map((r) => r.generation).join(', ') || 'none';
  if (toGeneration !== undefined) {
    const named = applied.filter((r) => r.generation === toGeneration).pop();
    if (!named)
      return {
        ok: false,
        reason: `${view.host} never reported generation ${toGeneration} as applied (applied: ${known}); name one of those with --to-generation (a status document keeps a host's newest 20 applied results)`,
      };
    if (view.applied && named.closure === view.applied.closure)
      return {
        ok: false,
        reason: `${view.host} already runs the closure of generation ${toGeneration} (as generation ${view.applied.generation})`,
      };
    return { ok: true, generation: named.generation, closure: named.closure };
  }
  if (!view.applied)
    return { ok: false, reason: `${view.host} reports no applied generation yet; there is nothing to roll back from` };
  const current = view.applied;
  const before = applied.filter((r) => r.generation < current.generation && r.closure !== current.closure).pop();
  if (!before)
    return {
      ok: false,
      reason: `${view.host} has applied no earlier generation with another closure (applied: ${known})`,
    };
  return { ok: true, generation: before.generation, closure: before.closure };
}
