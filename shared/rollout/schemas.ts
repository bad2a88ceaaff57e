import { z } from 'zod';
import { signatureSchema } from '../crypto/signatures.js';
import {
  activationActionSchema,
  base64Key32Schema,
  generationSchema,
  hostIdSchema,
  isoTimeSchema,
  storePathSchema,
} from '../schemas/primitives.js';

// A rollout plan and what is appended to its document (docs/rollouts.md). Objects keep fields
// this version does not know (looseObject), so a signature verifies over exactly what was signed;
// an agent then *refuses* a plan with unknown fields (unknownPlanFields) rather than judge a gate
// it only half understands, as it refuses such intents.

export const MAX_WAVES = 16;
export const MAX_PLAN_HOSTS = 10_000;

// The document is fleet/rollout-<id>, and fleet document names are at most 63 characters.
export const rolloutIdSchema = z
  .string()
  .regex(
    /^[a-z0-9][a-z0-9-]{0,47}$/,
    'rollout ids are 1-48 lowercase letters, digits or dashes, starting with a letter or digit',
  );
export type RolloutId = z.infer<typeof rolloutIdSchema>;

export const waveNameSchema = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, 'wave names are 1-64 letters, digits, dots, dashes or underscores');

const sha256HexSchema = z.string().regex(/^[0-9a-f]{64}$/, 'expected a SHA-256 digest (64 hex digits)');

// What a wave's hosts must prove before the next wave starts (for the last wave: before the
// rollout is complete). See docs/rollouts.md, "Gate semantics".
export const gateSchema = z.looseObject({
  minSuccessPercent: z.number().min(0).max(100),
  // Hosts of the wave without proof of success allowed; null: no limit beyond minSuccessPercent.
  maxFailures: z.number().int().nonnegative().max(MAX_PLAN_HOSTS).nullable(),
  soakSeconds: z
    .number()
    .int()
    .nonnegative()
    .max(365 * 86_400),
  // The next wave also needs an admin's signed `approve` for it.
  approval: z.boolean(),
});
export type Gate = z.infer<typeof gateSchema>;

export const DEFAULT_GATE: Gate = { minSuccessPercent: 100, maxFailures: 0, soakSeconds: 0, approval: false };

// One host of a wave: its key as enrollment bound it when the plan was made (evidence counts only
// under this key), the closure the release gives it and the generation it is installed as.
export const planHostSchema = z.looseObject({
  host: hostIdSchema,
  key: base64Key32Schema,
  closure: storePathSchema,
  generation: generationSchema,
});
export type PlanHost = z.infer<typeof planHostSchema>;

export const waveSchema = z.looseObject({
  name: waveNameSchema,
  hosts: z.array(planHostSchema).min(1).max(MAX_PLAN_HOSTS),
  gate: gateSchema,
});
export type Wave = z.infer<typeof waveSchema>;

export const rolloutPlanSchema = z
  .looseObject({
    kind: z.literal('rollout-plan'),
    id: rolloutIdSchema,
    // The release's name as CI gave it ("2026-w49").
    release: z.string().min(1).max(128),
    channel: waveNameSchema.optional(),
    action: activationActionSchema,
    issuer: z.string().min(1).max(128),
    // The key whose signature is the plan's own (signedPlanSchema); others co-sign.
    issuerKey: base64Key32Schema,
    policyVersion: z.number().int().positive(),
    createdAt: isoTimeSchema,
    expiresAt: isoTimeSchema,
    waves: z.array(waveSchema).min(1).max(MAX_WAVES),
  })
  .superRefine((plan, ctx) => {
    const seen = new Set<string>();
    let total = 0;
    plan.waves.forEach((wave, w) => {
      wave.hosts.forEach((entry, i) => {
        total += 1;
        if (seen.has(entry.host))
          ctx.addIssue({
            code: 'custom',
            path: ['waves', w, 'hosts', i, 'host'],
            message: `host ${entry.host} is in more than one wave (or twice in one)`,
          });
        seen.add(entry.host);
      });
    });
    if (total > MAX_PLAN_HOSTS)
      ctx.addIssue({
        code: 'custom',
        path: ['waves'],
        message: `${total} hosts; a plan holds at most ${MAX_PLAN_HOSTS}`,
      });
    if (!(Date.parse(plan.expiresAt) > Date.parse(plan.createdAt)))
      ctx.addIssue({ code: 'custom', path: ['expiresAt'], message: 'expiresAt must be after createdAt' });
  });
export type RolloutPlan = z.infer<typeof rolloutPlanSchema>;

// The plan as its creator signed it (with plan.issuerKey). More admins sign the same plan as
// co-signatures.
export const signedPlanSchema = z
  .object({ plan: rolloutPlanSchema, signature: signatureSchema })
  .refine((signed) => signed.signature.publicKey === signed.plan.issuerKey, {
    path: ['signature', 'publicKey'],
    message: "a plan's own signature is by its issuerKey",
  });
export type SignedPlan = z.infer<typeof signedPlanSchema>;

// Another admin's signature over the plan with this digest (`outpost rollout approve`).
export const planCosignatureSchema = z.object({ plan: sha256HexSchema, signature: signatureSchema });
export type PlanCosignature = z.infer<typeof planCosignatureSchema>;

export const actionVerbSchema = z.enum(['approve', 'pause', 'resume', 'abort']);
export type ActionVerb = z.infer<typeof actionVerbSchema>;

// A signed admin action on one rollout (bound to its id and plan digest, so it means nothing for
// another). `seq` orders pauses and resumes; `wave` (1-based) is the wave an approval lets start.
export const rolloutActionSchema = z
  .looseObject({
    kind: z.literal('rollout-action'),
    rollout: rolloutIdSchema,
    plan: sha256HexSchema,
    verb: actionVerbSchema,
    wave: z.number().int().min(2).max(MAX_WAVES).optional(),
    seq: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER),
    at: isoTimeSchema,
    issuer: z.string().min(1).max(128),
    reason: z.string().max(500).optional(),
  })
  .superRefine((action, ctx) => {
    if ((action.verb === 'approve') !== (action.wave !== undefined))
      ctx.addIssue({
        code: 'custom',
        path: ['wave'],
        message:
          action.verb === 'approve' ? 'an approval names the wave it lets start' : 'only an approval names a wave',
      });
  });
export type RolloutAction = z.infer<typeof rolloutActionSchema>;
export const signedRolloutActionSchema = z.object({ action: rolloutActionSchema, signature: signatureSchema });
export type SignedRolloutAction = z.infer<typeof signedRolloutActionSchema>;

// What `POST /api/rollouts` takes: exactly one of them.
export const rolloutSubmissionSchema = z.union([
  z.object({ plan: signedPlanSchema }),
  z.object({ cosignature: planCosignatureSchema.extend({ rollout: rolloutIdSchema }) }),
  z.object({ action: signedRolloutActionSchema }),
]);
export type RolloutSubmission = z.infer<typeof rolloutSubmissionSchema>;

// Paths of fields in a plan this version does not declare.
const KNOWN = {
  plan: new Set(Object.keys(rolloutPlanSchema.shape)),
  wave: new Set(Object.keys(waveSchema.shape)),
  gate: new Set(Object.keys(gateSchema.shape)),
  host: new Set(Object.keys(planHostSchema.shape)),
};
// Per plan object (plans are immutable values; an agent asks at every change of the document).
const unknownFieldsOfPlan = new WeakMap<RolloutPlan, string[]>();
export function unknownPlanFields(plan: RolloutPlan): string[] {
  let unknown = unknownFieldsOfPlan.get(plan);
  if (!unknown) {
    unknown = findUnknownPlanFields(plan);
    unknownFieldsOfPlan.set(plan, unknown);
  }
  return [...unknown];
}

function findUnknownPlanFields(plan: RolloutPlan): string[] {
  const unknown: string[] = [];
  const check = (value: object, known: ReadonlySet<string>, path: string): void => {
    for (const key in value) if (!known.has(key)) unknown.push(`${path}${key}`);
  };
  check(plan, KNOWN.plan, '');
  plan.waves.forEach((wave, w) => {
    check(wave, KNOWN.wave, `waves.${w}.`);
    check(wave.gate, KNOWN.gate, `waves.${w}.gate.`);
    wave.hosts.forEach((entry, i) => {
      check(entry, KNOWN.host, `waves.${w}.hosts.${i}.`);
    });
  });
  return unknown;
}

export function unknownActionFields(action: RolloutAction): string[] {
  const known = Object.keys(rolloutActionSchema.shape);
  return Object.keys(action).filter((key) => !known.includes(key));
}
