import { z } from 'zod';
import { signatureSchema } from '../crypto/signatures.js';
import { sshSessionLogSchema } from '../tunnel/session-log.js';
import { hostLockSchema } from './action.js';
import { appsStatusSchema } from './apps.js';
import { accessStatusSchema } from './logins.js';
import {
  activationActionSchema,
  generationSchema,
  hostIdSchema,
  isoTimeSchema,
  storePathSchema,
} from './primitives.js';

export const agentPhaseSchema = z.enum([
  'idle',
  'waiting-for-window',
  'downloading',
  'activating',
  'confirming',
  'applied',
  'failed',
  'rolled-back',
]);
export type AgentPhase = z.infer<typeof agentPhaseSchema>;

// Results and status keep fields this version does not know (looseObject), so an admin CLI or
// auditor older than the agent still verifies the host's signature over exactly what it signed
// instead of reporting a bad signature; it just does not show the new fields.
export const resultOutcomeSchema = z.enum(['applied', 'failed', 'refused', 'rolled-back']);
export type ResultOutcome = z.infer<typeof resultOutcomeSchema>;

const generationRefSchema = z.looseObject({ generation: generationSchema, closure: storePathSchema });
export type GenerationRef = z.infer<typeof generationRefSchema>;

// One signed line in the host's append-only results array. `seq` counts up per host so a
// replayed result is detectable; `intentDigest` ties it to the exact signed intent it answers.
export const MAX_DROPPED_RANGES = 256;

export const resultSchema = z.looseObject({
  kind: z.literal('result'),
  host: hostIdSchema,
  seq: z.number().int().nonnegative(),
  at: isoTimeSchema,
  outcome: resultOutcomeSchema,
  generation: generationSchema,
  closure: storePathSchema,
  action: activationActionSchema,
  intentDigest: z.string().regex(/^[0-9a-f]{64}$/),
  reason: z.string().max(2000),
  outputTail: z.string().max(8192),
  // Results of this host deleted from its status document before any history keeper held them
  // (a host cut off past the agent's bound, agent/status-prune.ts), as [first, last] number
  // ranges: the audit names these as dropped by the host instead of a gap (docs/audit.md).
  droppedUndelivered: z
    .array(z.tuple([z.number().int().positive(), z.number().int().positive()]))
    .max(MAX_DROPPED_RANGES)
    .optional(),
});
export type Result = z.infer<typeof resultSchema>;

export const signedResultSchema = z.object({ result: resultSchema, signature: signatureSchema });
export type SignedResult = z.infer<typeof signedResultSchema>;

// Bytes are transfer bytes (compressed NAR files), counting only paths the host did not have.
export const downloadProgressSchema = z.looseObject({
  pathsDone: z.number().int().nonnegative(),
  pathsTotal: z.number().int().nonnegative(),
  bytesDone: z.number().int().nonnegative(),
  bytesTotal: z.number().int().nonnegative(),
  bytesPerSecond: z.number().nonnegative(),
  startedAt: isoTimeSchema,
});
export type DownloadProgress = z.infer<typeof downloadProgressSchema>;

// Why a host in phase waiting-for-window waits, and until when (null: no window within a week).
export const windowWaitSchema = z.looseObject({
  waitingFor: z.enum(['download', 'activation', 'reboot']),
  windows: z.string().max(1000),
  nextStart: isoTimeSchema.nullable(),
});
export type WindowWait = z.infer<typeof windowWaitSchema>;

// What the agent trusts and whether it is frozen (no fresh signed timestamp for too long, or one
// naming a policy version the agent does not have: a relay or coordinator may be withholding
// updates). While frozen the agent installs nothing new. Only transitions change it, so signed
// timestamps arriving every minute do not rewrite the status.
export const trustStatusSchema = z.looseObject({
  mode: z.enum(['policy', 'admin-keys']),
  policyVersion: z.number().int().positive().nullable(),
  frozen: z.boolean(),
  // When frozen: the last fresh timestamp seen (null: never).
  lastTimestampAt: isoTimeSchema.nullable(),
  // When frozen because a signed timestamp names a newer policy version than the agent has (it
  // may be withheld): that version. Nothing new is installed until it arrives.
  waitingForPolicyVersion: z.number().int().positive().optional(),
  // When frozen: why, in words.
  reason: z.string().max(1000).optional(),
});
export type TrustStatus = z.infer<typeof trustStatusSchema>;

// What the agent reports about itself; the status adds a counter and a time (statusSchema).
export const statusContentSchema = z.looseObject({
  kind: z.literal('status'),
  host: hostIdSchema,
  phase: agentPhaseSchema,
  applied: generationRefSchema.nullable(),
  target: generationRefSchema.nullable(),
  lastResultSeq: z.number().int().nonnegative().nullable(),
  agentVersion: z.string().max(64),
  // Download milestones (every 10 %); live progress travels in awareness, which is not stored.
  progress: downloadProgressSchema.optional(),
  window: windowWaitSchema.optional(),
  trust: trustStatusSchema.optional(),
  // The newest intent that some admins signed but fewer than the policy requires: the agent
  // waits for more to co-sign it (outpost approve) instead of refusing it.
  awaitingSignatures: z.looseObject({ generation: generationSchema, reason: z.string().max(1000) }).optional(),
  // The SSH login keys the agent enforces (docs/access.md), with --authorized-keys-dir.
  access: accessStatusSchema.optional(),
  // Set while an admin's `outpost action lock` holds the host: it takes on no new generation.
  lock: hostLockSchema.optional(),
  // `outpost ssh` sessions opened here, newest last (shared/tunnel/session-log.ts).
  sshSessions: sshSessionLogSchema.optional(),
  // Application services (services.outpost-apps, docs/apps.md) as the agent last saw them.
  apps: appsStatusSchema.optional(),
});
export type StatusContent = z.infer<typeof statusContentSchema>;

// The agent's current state: one JSON value under one key, rewritten only when it changes.
export const statusSchema = statusContentSchema.extend({
  seq: z.number().int().nonnegative(),
  updatedAt: isoTimeSchema,
});
export type Status = z.infer<typeof statusSchema>;

export const signedStatusSchema = z.object({ status: statusSchema, signature: signatureSchema });
export type SignedStatus = z.infer<typeof signedStatusSchema>;
