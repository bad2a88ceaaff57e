import type { SigningKey } from '../crypto/keys.js';
import { type Signature, type SignedKind, signPayload } from '../crypto/signatures.js';
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

// The admin's side (CLI, CI, web editor): validate, then sign the canonical form. `sign` is
// tweetnacl (the portable reference) unless the platform brings a faster Ed25519 that signs the
// same bytes: the CLI passes Node's (shared/node/ed25519.ts nodeSignPayload), which signs a
// 1,000-host plan (250 KB) in a millisecond where tweetnacl's JS SHA-512 takes ~150 ms. Ed25519 is
// deterministic: both give the same signature (test/unit/shared/node/ed25519.test.ts).
export type SignPayload = (kind: SignedKind, payload: unknown, key: SigningKey) => Signature;

export function signPlan(plan: RolloutPlan, key: SigningKey, sign: SignPayload = signPayload): SignedPlan {
  const checked = rolloutPlanSchema.parse(plan);
  return signedPlanSchema.parse({ plan: checked, signature: sign('rollout-plan', checked, key) });
}

export function cosignPlan(plan: RolloutPlan, key: SigningKey, sign: SignPayload = signPayload): PlanCosignature {
  return { plan: planDigest(plan), signature: sign('rollout-plan', plan, key) };
}

export function signRolloutAction(
  action: RolloutAction,
  key: SigningKey,
  sign: SignPayload = signPayload,
): SignedRolloutAction {
  const checked = rolloutActionSchema.parse(action);
  return { action: checked, signature: sign('rollout-action', checked, key) };
}
