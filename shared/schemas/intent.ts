import { z } from 'zod';
import { signatureSchema } from '../crypto/signatures.js';
import { activationActionSchema, generationSchema, hostIdSchema, isoTimeSchema, storePathSchema } from './primitives.js';

// "Host H runs closure C as generation G", signed by admins. Stored in hosts/<H>/desired.
export const intentSchema = z.object({
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
});
export type Intent = z.infer<typeof intentSchema>;

export const signedIntentSchema = z.object({
  intent: intentSchema,
  signatures: z.array(signatureSchema).min(1).max(16),
});
export type SignedIntent = z.infer<typeof signedIntentSchema>;
