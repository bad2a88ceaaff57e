import { z } from 'zod';
import { signatureSchema } from '../crypto/signatures.js';
import { hostIdSchema, isoTimeSchema } from './primitives.js';

// Remote actions (docs/access.md, "Remote actions"): an admin signs "host H: reboot / lock /
// unlock / collect / check, valid until T"; the request travels in hosts/<H>/desired beside the
// intents (array `actions`), so relays and sneakernet bundles carry it as they carry intents; the
// agent executes it at most once and appends a signed action result to hosts/<H>/status (array
// `actionResults`, numbered on its own so deployment results keep their numbering).
export const actionKindSchema = z.enum(['reboot', 'lock', 'unlock', 'collect', 'check']);
export type ActionKind = z.infer<typeof actionKindSchema>;

// 16 random bytes, hex: names the request in the host's records and in its result.
export const actionIdSchema = z.string().regex(/^[0-9a-f]{32}$/, 'an action id is 32 lowercase hex characters');

// An action is for now, not for months: at most this long between issue and expiry (a site
// reached by a USB stick every few weeks still gets `--expires 30d`).
export const MAX_ACTION_VALIDITY_MS = 31 * 86_400_000;

// Fields this version does not know are kept (looseObject) so the signature verifies over what
// was signed; the agent then refuses the request by name (unknown-field: upgrade the agent).
export const actionRequestSchema = z.looseObject({
  kind: z.literal('action'),
  action: actionKindSchema,
  host: hostIdSchema,
  id: actionIdSchema,
  issuedAt: isoTimeSchema,
  expiresAt: isoTimeSchema,
  issuer: z.string().min(1).max(128),
  // reboot only: run now even outside the host's reboot window.
  force: z.boolean().optional(),
  // Why (lock: shown in the host's status while it is locked; any action: in its result).
  reason: z.string().max(500).optional(),
  // The fleet policy version the issuer signed under (absent only with static --admin-key trust).
  policyVersion: z.number().int().positive().optional(),
});
export type ActionRequest = z.infer<typeof actionRequestSchema>;

export function unknownActionFields(request: ActionRequest): string[] {
  const known = Object.keys(actionRequestSchema.shape);
  return Object.keys(request).filter((key) => !known.includes(key));
}

export const signedActionSchema = z.object({
  request: actionRequestSchema,
  signatures: z.array(signatureSchema).min(1).max(16),
});
export type SignedAction = z.infer<typeof signedActionSchema>;

// What a collect returns: one section per configured command, each output's tail kept, the whole
// bundle capped (MAX_COLLECT_BYTES). The signed answer carries the bundle's digest; the bundle
// itself is kept beside it in the status document, only the newest few (MAX_KEPT_BUNDLES), so a
// host collected from every day does not grow its status document without bound.
export const MAX_COLLECT_BYTES = 48 * 1024;
export const collectSectionSchema = z.looseObject({
  name: z.string().regex(/^[a-z0-9][a-z0-9-]{0,31}$/),
  command: z.string().max(1000),
  exitCode: z.number().int().nullable(),
  timedOut: z.boolean(),
  // Set when output was cut to fit (its tail is kept).
  truncated: z.boolean(),
  output: z.string().max(MAX_COLLECT_BYTES),
});
export type CollectSection = z.infer<typeof collectSectionSchema>;
export const collectBundleSchema = z.looseObject({ sections: z.array(collectSectionSchema).max(16) });
export type CollectBundle = z.infer<typeof collectBundleSchema>;
export const MAX_KEPT_BUNDLES = 4;

// done: executed (reboot: the reboot command ran, or the host rebooted); failed: executed and it
// did not work (a failing health check, a reboot command exiting non-zero); refused: not
// executed (code says why); interrupted: the agent stopped while it ran and did not run it again.
export const actionOutcomeSchema = z.enum(['done', 'failed', 'refused', 'interrupted']);
export type ActionOutcome = z.infer<typeof actionOutcomeSchema>;

export const actionRefusalCodeSchema = z.enum([
  'unknown-signer',
  'bad-signature',
  'no-capability',
  'unknown-policy-version',
  'wrong-host',
  'expired',
  'not-yet-valid',
  'too-long',
  'unknown-field',
  'outside-window',
  'superseded',
]);
export type ActionRefusalCode = z.infer<typeof actionRefusalCodeSchema>;

// A host's lock, as its signed status shows it (and the agent keeps it, agent/actions.ts).
export const hostLockSchema = z.looseObject({
  since: isoTimeSchema,
  by: z.string().max(128),
  id: actionIdSchema,
  reason: z.string().max(500).optional(),
});
export type HostLock = z.infer<typeof hostLockSchema>;

export const actionResultSchema = z.looseObject({
  kind: z.literal('action-result'),
  host: hostIdSchema,
  // Counts up per host, apart from deployment results.
  seq: z.number().int().positive(),
  at: isoTimeSchema,
  action: actionKindSchema,
  id: actionIdSchema,
  // sha256 over the signed request envelope: exactly which signed request this answers.
  requestDigest: z.string().regex(/^[0-9a-f]{64}$/),
  outcome: actionOutcomeSchema,
  code: actionRefusalCodeSchema.optional(),
  reason: z.string().max(2000),
  outputTail: z.string().max(8192).optional(),
  // collect: sha256 over the canonical JSON of the bundle (kept under the request id in the status
  // document's collectBundles map while it is among the newest).
  bundleDigest: z
    .string()
    .regex(/^[0-9a-f]{64}$/)
    .optional(),
  // lock and unlock: the lock after the action (null: unlocked).
  lock: hostLockSchema.nullable().optional(),
});
export type ActionResult = z.infer<typeof actionResultSchema>;

export const signedActionResultSchema = z.object({ result: actionResultSchema, signature: signatureSchema });
export type SignedActionResult = z.infer<typeof signedActionResultSchema>;

// The capability a role must grant on the host for each action (shared/schemas/policy.ts).
export const ACTION_CAPABILITY = {
  reboot: 'reboot',
  lock: 'lock',
  unlock: 'lock',
  collect: 'collect',
  check: 'check',
} as const satisfies Record<ActionKind, string>;
