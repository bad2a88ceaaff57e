import { z } from 'zod';
import { signatureSchema } from '../crypto/signatures.js';
import { isTimeZone, parseWindow, TIME_ZONE_HINT } from '../schedule/windows.js';
import { loginIssues, loginListSchema, unknownLoginFields } from './logins.js';
import { base64Key32Schema, hostIdSchema, isoTimeSchema, policyNameSchema } from './primitives.js';

// The organisation's fleet policy, signed offline by the org root key(s). Every reader verifies
// it; the coordinator holds no key that can produce one.
// `audit` reads a host's logged history (the audit endpoints) and nothing live; every other
// capability on a host also reads it live (docs/audit.md, Access). `ssh` opens `outpost ssh`
// tunnels to the host's sshd; `reboot`, `lock` (lock and unlock), `collect` and `check` are the
// remote actions of the same names (docs/access.md).
export const capabilitySchema = z.enum([
  'deploy',
  'rollback',
  'enroll',
  'policy',
  'read',
  'audit',
  'ssh',
  'reboot',
  'lock',
  'collect',
  'check',
]);
export type Capability = z.infer<typeof capabilitySchema>;

export function isCapability(name: string): name is Capability {
  return capabilitySchema.safeParse(name).success;
}

const nameSchema = policyNameSchema;

// Every object of a policy keeps fields this version does not know (looseObject): a reader
// verifies the root's signature over exactly what was signed, so a policy written by a newer
// outpost (a field added later) still verifies on an agent not yet upgraded — otherwise its
// revocations and new admins would never reach that agent. The reader ignores such fields and
// says so (unknownPolicyFields); authoring commands refuse them, since there they are typos.
export const MAX_GROUP_WINDOWS = 16;
// Window strings stay strings: the signature covers exactly what the root signed.
const windowListSchema = z.array(z.string().max(64)).max(MAX_GROUP_WINDOWS).optional();

// A group's windows use the agent flags' syntax and parser; an error names the group, since the
// person reading it holds a policy file, not the agent's command line.
export const groupSchema = z
  .looseObject({
    name: nameSchema,
    hosts: z.array(hostIdSchema),
    threshold: z.number().int().positive().default(1),
    // When work (downloads, activations) and reboots may start on the group's hosts, unless the
    // host's own --maintenance-window / --reboot-window flags say otherwise. Optional and without a
    // default: policies signed before these fields existed keep their exact content (signatures).
    maintenanceWindows: windowListSchema,
    rebootWindows: windowListSchema,
    // IANA zone of the group's windows; absent: the host's --timezone, else its local time.
    timeZone: z.string().max(64).optional(),
  })
  .superRefine((group, ctx) => {
    for (const [field, kind] of [
      ['maintenanceWindows', 'maintenance'],
      ['rebootWindows', 'reboot'],
    ] as const) {
      group[field]?.forEach((text, i) => {
        try {
          parseWindow(text);
        } catch (error) {
          ctx.addIssue({
            code: 'custom',
            path: [field, i],
            message: `group ${group.name}: ${kind} ${(error as Error).message}`,
          });
        }
      });
    }
    if (group.timeZone !== undefined && !isTimeZone(group.timeZone))
      ctx.addIssue({
        code: 'custom',
        path: ['timeZone'],
        message: `group ${group.name}: time zone ${JSON.stringify(group.timeZone)}: ${TIME_ZONE_HINT}`,
      });
  });
export type Group = z.infer<typeof groupSchema>;

// A channel: hosts that follow releases together (`outpost rollout create --channel`), and the
// waves its rollouts use by default (docs/rollouts.md). Optional fields without defaults, so a
// policy without channels keeps its exact content and signatures.
const hostsAndGroups = {
  hosts: z.array(hostIdSchema).max(10_000).optional(),
  groups: z.array(nameSchema).max(1000).optional(),
};
export const channelWaveSchema = z.looseObject({ name: nameSchema, ...hostsAndGroups });
export const channelSchema = z.looseObject({
  name: nameSchema,
  ...hostsAndGroups,
  waves: z.array(channelWaveSchema).min(1).max(16).optional(),
});
export type Channel = z.infer<typeof channelSchema>;

export const policySchema = z
  .looseObject({
    kind: z.literal('policy'),
    version: z.number().int().positive(),
    // Raised to recover from a compromised deploy key that pushed a huge generation: intents
    // signed under a higher epoch rank above every intent of a lower one (see docs/trust.md).
    epoch: z.number().int().nonnegative().default(0),
    issuedAt: isoTimeSchema,
    // The keys that sign the next version, and how many of them must.
    root: z.looseObject({ keys: z.array(base64Key32Schema).min(1).max(16), threshold: z.number().int().positive() }),
    admins: z
      .array(z.looseObject({ name: nameSchema, keys: z.array(base64Key32Schema).max(8), roles: z.array(nameSchema) }))
      .max(1000),
    roles: z
      .array(
        z.looseObject({
          name: nameSchema,
          // Names, not the enum: a capability added by a newer outpost must not make this reader
          // refuse the whole policy (its revocations would never arrive). Unknown names grant
          // nothing here (capabilitiesFor) and are named by unknownPolicyFields.
          capabilities: z.array(z.string().max(32)).min(1).max(32),
          // '*' is every host.
          hosts: z.array(z.union([hostIdSchema, z.literal('*')])).default([]),
          groups: z.array(nameSchema).default([]),
        }),
      )
      .max(1000),
    groups: z.array(groupSchema).max(1000),
    relays: z
      .array(
        z.looseObject({
          name: nameSchema,
          key: base64Key32Schema,
          hosts: z.array(z.union([hostIdSchema, z.literal('*')])).default([]),
          groups: z.array(nameSchema).default([]),
        }),
      )
      .max(1000)
      .default([]),
    // Online keys whose only power is signing freshness timestamps.
    timestampKeys: z.array(base64Key32Schema).max(8).default([]),
    // Keys that must never count again, even under an older policy version an intent names.
    revokedKeys: z.array(base64Key32Schema).max(10_000).default([]),
    channels: z.array(channelSchema).max(100).optional(),
    // Who may log in as which local account on which hosts, with their SSH keys (logins.ts,
    // docs/access.md). Optional without a default, like channels.
    logins: loginListSchema,
  })
  .superRefine((policy, ctx) => {
    if (policy.root.threshold > policy.root.keys.length)
      ctx.addIssue({
        code: 'custom',
        path: ['root', 'threshold'],
        message: `threshold ${policy.root.threshold} exceeds the ${policy.root.keys.length} root keys`,
      });
    const roles = new Set(policy.roles.map((r) => r.name));
    const groups = new Set(policy.groups.map((g) => g.name));
    for (const [i, admin] of policy.admins.entries())
      for (const role of admin.roles)
        if (!roles.has(role))
          ctx.addIssue({
            code: 'custom',
            path: ['admins', i, 'roles'],
            message: `admin ${admin.name} has unknown role ${role}`,
          });
    for (const [i, role] of policy.roles.entries())
      for (const group of role.groups)
        if (!groups.has(group))
          ctx.addIssue({
            code: 'custom',
            path: ['roles', i, 'groups'],
            message: `role ${role.name} names unknown group ${group}`,
          });
    const channels = new Set<string>();
    for (const [i, channel] of (policy.channels ?? []).entries()) {
      if (channels.has(channel.name))
        ctx.addIssue({
          code: 'custom',
          path: ['channels', i, 'name'],
          message: `channel ${channel.name} is declared twice`,
        });
      channels.add(channel.name);
      for (const [where, names] of [
        [['channels', i, 'groups'], channel.groups ?? []],
        ...(channel.waves ?? []).map((wave, w) => [['channels', i, 'waves', w, 'groups'], wave.groups ?? []] as const),
      ] as const)
        for (const group of names)
          if (!groups.has(group))
            ctx.addIssue({
              code: 'custom',
              path: [...where],
              message: `channel ${channel.name} names unknown group ${group}`,
            });
    }
    for (const issue of loginIssues(policy.logins, groups)) ctx.addIssue({ code: 'custom', ...issue });
    const seenKeys = new Map<string, string>();
    for (const admin of policy.admins) {
      for (const key of admin.keys) {
        const other = seenKeys.get(key);
        if (other !== undefined)
          ctx.addIssue({
            code: 'custom',
            path: ['admins'],
            message: `key ${key.slice(0, 12)}… belongs to both ${other} and ${admin.name}`,
          });
        seenKeys.set(key, admin.name);
      }
    }
  });
export type Policy = z.infer<typeof policySchema>;

// Paths of fields in a parsed policy that this version's schema does not declare.
export function unknownPolicyFields(policy: Policy): string[] {
  const unknown: string[] = [];
  const check = (value: object, known: readonly string[], path: string): void => {
    for (const key of Object.keys(value)) if (!known.includes(key)) unknown.push(`${path}${key}`);
  };
  const shape = policySchema.shape;
  check(policy, Object.keys(shape), '');
  check(policy.root, Object.keys(shape.root.shape), 'root.');
  const lists = [
    ['admins', policy.admins, shape.admins.element.shape],
    ['roles', policy.roles, shape.roles.element.shape],
    ['groups', policy.groups, groupSchema.shape],
    ['relays', policy.relays, shape.relays.unwrap().element.shape],
    ['channels', policy.channels ?? [], channelSchema.shape],
  ] as const;
  for (const [name, items, itemShape] of lists)
    for (const [i, item] of items.entries()) check(item, Object.keys(itemShape), `${name}.${i}.`);
  for (const [i, channel] of (policy.channels ?? []).entries())
    for (const [w, wave] of (channel.waves ?? []).entries())
      check(wave, Object.keys(channelWaveSchema.shape), `channels.${i}.waves.${w}.`);
  for (const [i, role] of policy.roles.entries())
    for (const capability of role.capabilities)
      if (!isCapability(capability)) unknown.push(`roles.${i}.capabilities.${capability}`);
  unknown.push(...unknownLoginFields(policy.logins));
  return unknown;
}

export const signedPolicySchema = z.object({
  policy: policySchema,
  signatures: z.array(signatureSchema).min(1).max(32),
});
export type SignedPolicy = z.infer<typeof signedPolicySchema>;

// Binding of a host id to its key, approved by an admin with `enroll` for that host.
export const enrollmentSchema = z.object({
  kind: z.literal('enrollment'),
  host: hostIdSchema,
  hostKey: base64Key32Schema,
  approvedAt: isoTimeSchema,
  policyVersion: z.number().int().positive(),
});
export type Enrollment = z.infer<typeof enrollmentSchema>;
export const signedEnrollmentSchema = z.object({
  enrollment: enrollmentSchema,
  signatures: z.array(signatureSchema).min(1).max(16),
});
export type SignedEnrollment = z.infer<typeof signedEnrollmentSchema>;

// One-time token for unattended installs: an admin pre-approves whichever key presents it first.
// `proofKey` is the public half of a one-time key whose secret half only the token file holds: a
// request proves it holds the token file by signing with it, so whoever merely forwards a request
// (a relay, the coordinator) cannot reuse the token for a key of its own. Tokens made before it
// existed parse, and are refused with a reason (shared/trust/enrollment.ts).
export const enrollTokenSchema = z.object({
  kind: z.literal('enroll-token'),
  host: hostIdSchema,
  expiresAt: isoTimeSchema,
  nonce: z.string().regex(/^[0-9a-f]{32}$/),
  policyVersion: z.number().int().positive(),
  proofKey: base64Key32Schema.optional(),
});
export type EnrollToken = z.infer<typeof enrollTokenSchema>;
export const signedEnrollTokenSchema = z.object({
  token: enrollTokenSchema,
  signatures: z.array(signatureSchema).min(1).max(16),
});
export type SignedEnrollToken = z.infer<typeof signedEnrollTokenSchema>;

// A new host asks to be enrolled; signed by its own key as proof of possession.
export const enrollRequestSchema = z.object({
  kind: z.literal('enroll-request'),
  host: hostIdSchema,
  hostKey: base64Key32Schema,
  requestedAt: isoTimeSchema,
  token: signedEnrollTokenSchema.optional(),
});
export type EnrollRequest = z.infer<typeof enrollRequestSchema>;
// `tokenProof`: the same request signed by the token's proof key (only with a token).
export const signedEnrollRequestSchema = z.object({
  request: enrollRequestSchema,
  signature: signatureSchema,
  tokenProof: signatureSchema.optional(),
});
export type SignedEnrollRequest = z.infer<typeof signedEnrollRequestSchema>;

// An admin with `enroll` asks the coordinator to drop pending enrollment requests (all of them, a
// host's, or one key's). Only pending requests go: bindings never do. Fresh `issuedAt` bounds
// replays, and a replay could only clear requests again.
export const enrollClearSchema = z.object({
  kind: z.literal('enroll-clear'),
  host: hostIdSchema.optional(),
  hostKey: base64Key32Schema.optional(),
  issuedAt: isoTimeSchema,
});
export type EnrollClear = z.infer<typeof enrollClearSchema>;
export const signedEnrollClearSchema = z.object({
  clear: enrollClearSchema,
  signatures: z.array(signatureSchema).min(1).max(4),
});
export type SignedEnrollClear = z.infer<typeof signedEnrollClearSchema>;

// Freshness: signed by an online timestamp key, rewritten in fleet/timestamp.
export const timestampSchema = z.object({
  kind: z.literal('timestamp'),
  at: isoTimeSchema,
  seq: z.number().int().nonnegative(),
  policyVersion: z.number().int().positive(),
});
export type Timestamp = z.infer<typeof timestampSchema>;
export const signedTimestampSchema = z.object({ timestamp: timestampSchema, signature: signatureSchema });
export type SignedTimestamp = z.infer<typeof signedTimestampSchema>;
