import { z } from 'zod';
import { signatureSchema } from '../crypto/signatures.js';
import { isoTimeSchema } from './primitives.js';

// A signed commitment to the coordinator's update log: the heads (last seq and chain hash) of
// every document but fleet/timestamp itself, hashed in document order (shared/audit/checkpoint.ts).
// Signed by the timestamp key next to each freshness timestamp, in its own entry of
// fleet/timestamp (a separate entry: readers that predate it ignore it). Agents keep some;
// `outpost audit verify --head FILE` checks a history against them (docs/audit.md).
export const checkpointSchema = z.looseObject({
  kind: z.literal('checkpoint'),
  // The freshness timestamp's seq it was signed with; the coordinator stores the heads under it.
  seq: z.number().int().positive(),
  at: isoTimeSchema,
  policyVersion: z.number().int().positive(),
  heads: z.looseObject({
    count: z.number().int().nonnegative(),
    root: z.string().regex(/^[0-9a-f]{64}$/, 'expected a 64-digit hex sha256'),
  }),
});
export type Checkpoint = z.infer<typeof checkpointSchema>;
export const signedCheckpointSchema = z.object({ checkpoint: checkpointSchema, signature: signatureSchema });
export type SignedCheckpoint = z.infer<typeof signedCheckpointSchema>;
