import { z } from 'zod';
import { signatureSchema } from '../crypto/signatures.js';
import {
  activationActionSchema,
  generationSchema,
  hostIdSchema,
  isoTimeSchema,
  storePathSchema,
} from './primitives.js';

// "Host H runs closure C as generation G", signed by admins. Stored in hosts/<H>/desired.
// Fields this version does not know are kept (looseObject) so the signature still verifies over
// what was signed; the agent then refuses the intent by name ('unknown-field': upgrade the agent)
// rather than act on an intent it only half understands.
export const intentSchema = z.looseObject({
  kind: z.literal('intent'),
  host: hostIdSchema,
  generation: generationSchema,
  closure: storePathSchema,
  action: activationActionSchema,
  issuedAt: isoTimeSchema,
  expiresAt: isoTimeSchema,
  issuer: z.string().min(1).max(128),
  // The fleet policy version the issuer signed under (absent only with a static --admin-key list).
  policyVersion: z.number().int().positive().optional(),
  // Set only on intents derived from a rollout plan (shared/rollout/plan.ts): which rollout, the
  // digest of the plan, and the host's wave. Such an intent is never trusted as it stands: the
  // agent derives it again from the signed plan and checks its wave's gate (docs/rollouts.md).
  rollout: z
    .object({
      id: z.string().regex(/^[a-z0-9][a-z0-9-]{0,47}$/),
      plan: z.string().regex(/^[0-9a-f]{64}$/),
      wave: z.number().int().positive().max(64),
    })
    .optional(),
});
export type Intent = z.infer<typeof intentSchema>;

export function unknownIntentFields(intent: Intent): string[] {
  const known = Object.keys(intentSchema.shape);
  return Object.keys(intent).filter((key) => !known.includes(key));
}

export const signedIntentSchema = z.object({
  intent: intentSchema,
  signatures: z.array(signatureSchema).min(1).max(16),
});
export type SignedIntent = z.infer<typeof signedIntentSchema>;
