import type { SigningKey } from '../crypto/keys.js';
import { signatureSchema, signPayload } from '../crypto/signatures.js';
import { planDigest } from './plan.js';
import {
  type PlanCosignature,
  type RolloutAction,
  type RolloutPlan,
  rolloutActionSchema,
  rolloutPlanSchema,
  type SignedPlan,
  type SignedRolloutAction,
} from './schemas.js';

// The admin's side (CLI, CI, web editor): validate, then sign the canonical form.

// The plan is checked once (a 1,000-host plan takes zod ~15 ms) and returned as checked, so that
// its digest, computed once per plan object (plan.ts encodedPlan), serves the caller after signing.
export function signPlan(plan: RolloutPlan, key: SigningKey): SignedPlan {
  const checked = rolloutPlanSchema.parse(plan);
  if (key.publicKey !== checked.issuerKey)
    throw new Error(`a plan's own signature is by its issuerKey (${checked.issuerKey.slice(0, 12)}…), not this key`);
  return { plan: checked, signature: signatureSchema.parse(signPayload('rollout-plan', checked, key)) };
}

export function cosignPlan(plan: RolloutPlan, key: SigningKey): PlanCosignature {
  return { plan: planDigest(plan), signature: signPayload('rollout-plan', plan, key) };
}

export function signRolloutAction(action: RolloutAction, key: SigningKey): SignedRolloutAction {
  const checked = rolloutActionSchema.parse(action);
  return { action: checked, signature: signPayload('rollout-action', checked, key) };
}
