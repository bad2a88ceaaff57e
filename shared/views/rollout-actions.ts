import type { RolloutEntries } from '../rollout/document.js';
import { type ActionState, judgeActions } from '../rollout/judge.js';
import { planDigest } from '../rollout/plan.js';
import {
  type ActionVerb,
  type PlanCosignature,
  type RolloutAction,
  type RolloutPlan,
  rolloutActionSchema,
  type SignedRolloutAction,
} from '../rollout/schemas.js';
import { actionAuthority } from '../rollout/verify.js';
import type { Policy } from '../schemas/policy.js';
import { adminForKey, capabilitiesFor } from '../trust/capabilities.js';
import type { HostView } from './host-view.js';
import { chooseRollbackTarget } from './rollback-target.js';

// The admin's side of a rollout action (approve a wave, pause, resume, abort), shared by
// `outpost rollout` and the web editor: the action as both sign it, and whether this key's
// signature would count (shared/rollout/verify.ts actionAuthority: an admin with 'deploy' for
// every host it concerns under the policy in force) before anything is signed.

// The hosts an action concerns: an approval, its wave's; the others, every host of the plan.
export function actionHosts(plan: RolloutPlan, verb: ActionVerb, wave?: number): string[] {
  if (verb === 'approve') return plan.waves[(wave ?? 0) - 1]?.hosts.map((h) => h.host) ?? [];
  return plan.waves.flatMap((w) => w.hosts.map((h) => h.host));
}

export function mayActOnRollout(
  policy: Policy,
  publicKey: string,
  plan: RolloutPlan,
  verb: ActionVerb,
  wave?: number,
): { ok: true; admin: string } | { ok: false; reason: string } {
  const admin = adminForKey(policy, publicKey);
  if (!admin)
    return {
      ok: false,
      reason: `this key is not an admin key under policy ${policy.version}${policy.revokedKeys.includes(publicKey) ? ' (it is revoked)' : ''}; nothing was signed`,
    };
  if (verb === 'approve' && (wave === undefined || wave < 2 || wave > plan.waves.length))
    return { ok: false, reason: `rollout ${plan.id} has no wave ${wave} to approve (waves 2..${plan.waves.length})` };
  const lacking = actionHosts(plan, verb, wave).filter((h) => !capabilitiesFor(policy, admin, h).has('deploy'));
  if (lacking.length)
    return {
      ok: false,
      reason: `admin ${admin.name} lacks 'deploy' for ${lacking.slice(0, 5).join(', ')}${lacking.length > 5 ? ` and ${lacking.length - 5} more` : ''} under policy ${policy.version}: agents would ignore the ${verb}, so nothing was signed`,
    };
  return { ok: true, admin: admin.name };
}

// Actions and plan co-signatures signed but not in the document yet (the web editor's outbox:
// they go through the server's API when the link returns), read together with it: a view judges
// as if they had arrived, and a new action's sequence number goes above them too (a resume signed
// offline after a pause signed offline must win over it). Readers judge each on its own signature
// again.
export interface PendingRolloutEntries {
  actions?: readonly SignedRolloutAction[];
  cosignatures?: readonly PlanCosignature[];
}

export function withPendingEntries<E extends Pick<RolloutEntries, 'actions' | 'cosignatures'>>(
  entries: E,
  pending: PendingRolloutEntries,
): E {
  const heldActions = new Set(entries.actions.map((a) => a.signature.signature));
  const heldCosignatures = new Set(entries.cosignatures.map((c) => c.signature.signature));
  const actions = (pending.actions ?? []).filter((p) => !heldActions.has(p.signature.signature));
  const cosignatures = (pending.cosignatures ?? []).filter((p) => !heldCosignatures.has(p.signature.signature));
  if (!actions.length && !cosignatures.length) return entries;
  return {
    ...entries,
    actions: [...entries.actions, ...actions],
    cosignatures: [...entries.cosignatures, ...cosignatures],
  };
}

// The action to sign: bound to this rollout's id and plan digest, with a sequence number above
// every action the document holds (the newest pause or resume wins).
export function draftRolloutAction(
  plan: RolloutPlan,
  entries: Pick<RolloutEntries, 'actions'>,
  verb: ActionVerb,
  issuer: string,
  now: number,
  extra: { wave?: number; reason?: string } = {},
): RolloutAction {
  const seq = entries.actions.reduce((max, a) => Math.max(max, a.action.seq), 0) + 1;
  return rolloutActionSchema.parse({
    kind: 'rollout-action',
    rollout: plan.id,
    plan: planDigest(plan),
    verb,
    seq,
    at: new Date(now).toISOString(),
    issuer,
    ...(extra.wave !== undefined ? { wave: extra.wave } : {}),
    ...(extra.reason !== undefined ? { reason: extra.reason } : {}),
  });
}

// `outpost rollout abort --rollback` and the web editor's Abort with rollback: for every host of
// the plan that runs the release (applied) or is activating it, the closure to go back to — the
// one it ran before, chosen from its own signed results (chooseRollbackTarget) — or why none.
// Hosts that have not started need nothing: the abort makes them drop the release.
export type AbortRollback = { host: string; ok: true; closure: string } | { host: string; ok: false; reason: string };

export function abortRollbackTargets(plan: RolloutPlan, views: (host: string) => HostView | null): AbortRollback[] {
  const out: AbortRollback[] = [];
  for (const entry of plan.waves.flatMap((w) => w.hosts)) {
    const view = views(entry.host);
    if (!view) continue;
    const runsRelease = view.applied?.generation === entry.generation && view.applied.closure === entry.closure;
    const activating =
      view.target?.generation === entry.generation &&
      view.target.closure === entry.closure &&
      (view.phase === 'activating' || view.phase === 'confirming');
    if (!runsRelease && !activating) continue;
    const back = runsRelease
      ? chooseRollbackTarget(view)
      : view.applied
        ? ({ ok: true, generation: view.applied.generation, closure: view.applied.closure } as const)
        : ({ ok: false, reason: `${view.host} ran nothing before` } as const);
    out.push(
      back.ok
        ? { host: view.host, ok: true, closure: back.closure }
        : { host: view.host, ok: false, reason: back.reason },
    );
  }
  return out;
}

// After a pause or resume is stored, what the document decides: another admin's action signed at
// the same moment (the same sequence number) may decide instead (judgeActions: a pause wins). The
// CLI and the web editor read the rollout back and say this rather than assume their action won.
export type PauseResumeOutcome = { decided: true } | { decided: false; reason: string };

export function pauseResumeOutcome(
  id: string,
  verb: 'pause' | 'resume',
  actions: Pick<ActionState, 'paused' | 'aborted'>,
  again: string,
): PauseResumeOutcome {
  if (actions.aborted !== null || (verb === 'pause') === (actions.paused !== null)) return { decided: true };
  return {
    decided: false,
    reason:
      verb === 'resume'
        ? `rollout ${id}: your resume is stored but the rollout stays paused: ${actions.paused!.by} paused it (signed ${actions.paused!.at}) without having seen your resume, and a pause wins over a resume made at the same moment. ${again} to resume after their pause.`
        : `rollout ${id}: your pause is stored but the rollout is not paused: a resume made after it decides. ${again} to pause after it.`,
  };
}

// The pause, resume and abort that count in `actions` (signed by an admin with 'deploy' for every
// host of the plan, as the coordinator and the CLI count them).
export function judgedPauseAndAbort(
  plan: RolloutPlan,
  actions: SignedRolloutAction[],
  chain: Policy[],
): Pick<ActionState, 'paused' | 'aborted'> {
  const hosts = actionHosts(plan, 'abort');
  return judgeActions(
    plan.id,
    planDigest(plan),
    actions,
    actionAuthority(chain, () => hosts),
  );
}
