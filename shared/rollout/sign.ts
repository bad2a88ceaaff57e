import type { SigningKey } from '../crypto/keys.js';
import { signPayload } from '../crypto/signatures.js';
import { planDigest } from './plan.js';
import {
  type PlanCosignature,
  type RolloutAction,
  type RolloutPlan,
  rolloutActionSchema,
  rolloutPlanSchema,
  type SignedPlan,
  type SignedRolloutAction,
  signedPlanSchema,
} from './schemas.js';

// The admin's side (CLI, CI, web editor): validate, then sign the canonical form.

export function signPlan(plan: RolloutPlan, key: SigningKey): SignedPlan {
  const checked = rolloutPlanSchema.parse(plan);
  return signedPlanSchema.parse({ plan: checked, signature: signPayload('rollout-plan', checked, key) });
}

export function cosignPlan(plan: RolloutPlan, key: SigningKey): PlanCosignature {
  return { plan: planDigest(plan), signature: signPayload('rollout-plan', plan, key) };
}

export function signRolloutAction(action: RolloutAction, key: SigningKey): SignedRolloutAction {
  const checked = rolloutActionSchema.parse(action);
  return { action: checked, signature: signPayload('rollout-action', checked, key) };
}
