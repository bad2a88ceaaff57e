import { z } from 'zod';
import { type CommandSpec, secondsFlag } from '../cli/flags.js';
import { timeZoneSchema, windowSchema } from '../shared/schedule/windows.js';
import { base64Key32Schema, hostIdSchema } from '../shared/schemas/primitives.js';

export const agentCommand: CommandSpec = {
  name: 'agent',
  summary: "apply this host's newest valid signed intent with Nix and report signed results",
  usage:
    'outpost agent --host ID --key FILE --coordinator URL (--org-root KEY | --admin-key KEY) --substituter URL --trusted-cache-key NAME:KEY [options]',
  flags: [
    { name: 'host', kind: 'string', placeholder: 'ID', description: "this host's id (as in hosts/<id>/desired)" },
    {
      name: 'key',
      kind: 'string',
      placeholder: 'FILE',
      description: "this host's Ed25519 key file (outpost keygen); results and status are signed with it",
    },
    {
      name: 'coordinator',
      kind: 'string',
      multiple: true,
      placeholder: 'URL',
      description: 'sync endpoint, ws:// or wss://',
    },
    {
      name: 'org-root',
      kind: 'string',
      multiple: true,
      placeholder: 'KEY',
      description:
        "base64 public key of the fleet's org root, pinned: intents count when the signed policy (walked from this root) lets their signers deploy here",
    },
    {
      name: 'admin-key',
      kind: 'string',
      multiple: true,
      placeholder: 'KEY',
      description:
        'instead of --org-root, for development and small fleets: base64 public key of an admin whose intents this host trusts (no policy, no capabilities)',
    },
    {
      name: 'enroll-token',
      kind: 'string',
      placeholder: 'FILE',
      description:
        "with --org-root: a one-time token from 'outpost enroll token'; the agent's enrollment request then binds its key at once (without: it waits for an admin's approval)",
    },
    {
      name: 'freeze-after',
      kind: 'string',
      placeholder: 'SECONDS',
      description:
        'with --org-root: report a freeze when no fresh signed timestamp has arrived for this long (a relay or coordinator may be withholding updates)',
      defaultText: '86400',
    },
    {
      name: 'backoff-base',
      kind: 'string',
      placeholder: 'SECONDS',
      description: 'first reconnect delay; doubles per failure, with jitter',
      defaultText: '1',
    },
    {
      name: 'backoff-max',
      kind: 'string',
      placeholder: 'SECONDS',
      description:
        'longest reconnect delay (minutes suit satellite links: a fleet coming back after an outage does not storm its peers)',
      defaultText: '300',
    },
    {
      name: 'substituter',
      kind: 'string',
      multiple: true,
      placeholder: 'URL',
      description: 'binary cache the closures are fetched from',
    },
    {
      name: 'trusted-cache-key',
      kind: 'string',
      multiple: true,
      placeholder: 'NAME:KEY',
      description: 'Nix public key that must sign every fetched path (pinned; the machine-wide list is not used)',
    },
    {
      name: 'store',
      kind: 'string',
      placeholder: 'DIR',
      description: 'install into a separate store root (chroot store) instead of the system store; for tests and demos',
    },
    {
      name: 'profile',
      kind: 'string',
      placeholder: 'PATH',
      description: 'system profile to switch',
      defaultText: '/nix/var/nix/profiles/system',
    },
    {
      name: 'profile-type',
      kind: 'string',
      placeholder: 'TYPE',
      description: 'nixos (bin/switch-to-configuration) or system-manager (bin/activate, for non-NixOS hosts)',
      defaultText: 'nixos',
    },
    {
      name: 'state-dir',
      kind: 'string',
      placeholder: 'DIR',
      description: "where the agent's phase, counters, downloads and GC roots live",
      defaultText: '/var/lib/outpost-agent',
    },
    {
      name: 'fetch-timeout',
      kind: 'string',
      placeholder: 'SECONDS',
      description:
        'overall deadline for downloading a closure, counted from its start (agent restarts do not extend it)',
      defaultText: '86400',
    },
    {
      name: 'min-throughput',
      kind: 'string',
      placeholder: 'BYTES',
      description:
        'a NAR transfer slower than this many bytes per second over --throughput-window is aborted (slow-drip defence); 0 turns the rule off',
      defaultText: '256',
    },
    {
      name: 'throughput-window',
      kind: 'string',
      placeholder: 'SECONDS',
      description: 'the window --min-throughput is averaged over',
      defaultText: '600',
    },
    {
      name: 'download-retries',
      kind: 'string',
      placeholder: 'N',
      description:
        'failed attempts in a row without progress on one file (connection refused, cut mid-file, too slow) before the download fails',
      defaultText: '8',
    },
    {
      name: 'max-closure-size',
      kind: 'string',
      placeholder: 'BYTES',
      description: 'refuse closures whose narinfos declare more than this in total (suffixes K, M, G, T)',
      defaultText: '64G',
    },
    {
      name: 'min-free-space',
      kind: 'string',
      placeholder: 'BYTES',
      description:
        'keep this much disk space free: a closure that does not fit is refused before the download (suffixes K, M, G, T)',
      defaultText: '1G',
    },
    {
      name: 'maintenance-window',
      kind: 'string',
      multiple: true,
      placeholder: 'WINDOW',
      description:
        'downloads and activations start only inside these windows, e.g. "Tue 03:00-05:00" or "Mon-Fri 22:00-06:00" (host-local time); given, they win over the maintenance windows of the policy groups this host is in; none: the groups\' windows (every group\'s must allow), else any time',
    },
    {
      name: 'reboot-window',
      kind: 'string',
      multiple: true,
      placeholder: 'WINDOW',
      description:
        'when a switch changes the kernel or initrd it becomes boot + reboot, inside these windows, e.g. "01:00-05:00"; given, they win over the reboot windows of the policy groups this host is in; none: the groups\' windows, else reboot right away',
    },
    {
      name: 'timezone',
      kind: 'string',
      placeholder: 'ZONE',
      description: 'IANA time zone the windows are in (also group windows whose policy group names no time zone)',
      defaultText: "the host's",
    },
    {
      name: 'activation-timeout',
      kind: 'string',
      placeholder: 'SECONDS',
      description: 'kill switch-to-configuration (or bin/activate) after this long and roll back',
      defaultText: '600',
    },
    {
      name: 'activation-runner',
      kind: 'string',
      placeholder: 'RUNNER',
      description:
        'how the activation is started so it survives the agent: systemd-run (a transient unit), direct (own session), or auto (systemd-run where systemd runs)',
      defaultText: 'auto',
    },
    {
      name: 'confirm-timeout',
      kind: 'string',
      placeholder: 'SECONDS',
      description:
        'after an activation the host must reach a sync peer afresh and pass its health checks within this long, or it rolls back',
      defaultText: '300',
    },
    {
      name: 'health-check',
      kind: 'string',
      multiple: true,
      placeholder: 'COMMAND',
      description: 'shell command (/bin/sh -c) that must exit 0 after an activation',
    },
    {
      name: 'require-system-running',
      kind: 'string',
      placeholder: 'auto|true|false',
      description:
        "'systemctl is-system-running' must say running (degraded fails) after an activation; auto: where systemd runs",
      defaultText: 'auto',
    },
    {
      name: 'systemctl',
      kind: 'string',
      placeholder: 'PATH',
      description: 'systemctl binary used for is-system-running and the systemd-run runner',
      defaultText: 'systemctl',
    },
    {
      name: 'booted-system',
      kind: 'string',
      placeholder: 'PATH',
      description: 'link to the booted system, compared with the new closure to decide whether a reboot is needed',
      defaultText: '/run/booted-system',
    },
    {
      name: 'reboot-command',
      kind: 'string',
      placeholder: 'COMMAND',
      description: 'shell command that reboots the host',
      defaultText: 'systemctl reboot',
    },
    {
      name: 'log-level',
      kind: 'string',
      placeholder: 'LEVEL',
      description: 'trace, debug, info, warn or error',
      defaultText: 'info',
    },
  ],
  examples: [
    'outpost agent --host clinic-1 --key /var/lib/outpost-agent/host.key --coordinator wss://fleet.example.org \\\n    --admin-key 3q…= --substituter https://cache.example.org --trusted-cache-key cache.example.org-1:AbC…=',
    'outpost agent … --maintenance-window "Tue 03:00-05:00" --maintenance-window "Mon 16:00-18:00" --reboot-window 01:00-05:00 \\\n    --timezone Africa/Kinshasa --health-check "systemctl is-active nginx" --confirm-timeout 300',
  ],
};

const cacheKeySchema = z
  .string()
  .regex(/^[A-Za-z0-9._-]+:[A-Za-z0-9+/]{43}=$/, 'expected NAME:BASE64KEY, as in trusted-public-keys');
const urlSchema = (protocols: string[]) =>
  z.string().refine(
    (value) => {
      try {
        return protocols.includes(new URL(value).protocol);
      } catch {
        return false;
      }
    },
    `expected a URL starting with ${protocols.map((p) => `${p}//`).join(' or ')}`,
  );

const SIZE_UNITS: Record<string, number> = { '': 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 };

// "1073741824", "512M", "64G" → bytes.
export const sizeSchema = z
  .string()
  .regex(/^\d+(\.\d+)?[KMGT]?$/i, 'expected a byte count such as 1073741824, 512M or 64G')
  .transform((text) => Math.floor(Number.parseFloat(text) * SIZE_UNITS[text.replace(/^[\d.]+/, '').toUpperCase()]!));

const countSchema = z.coerce.number({ message: 'expected a whole number' }).int().nonnegative().max(1000);
const throughputSchema = z.coerce.number({ message: 'expected bytes per second' }).nonnegative();

export const agentOptionsSchema = z
  .object({
    host: hostIdSchema,
    key: z.string().min(1, 'give the host key file'),
    coordinator: z
      .array(urlSchema(['ws:', 'wss:']))
      .min(1, 'give at least one --coordinator URL (coordinator or relay; repeat for failover)'),
    orgRoot: z.array(base64Key32Schema).default([]),
    adminKey: z.array(base64Key32Schema).default([]),
    enrollToken: z.string().min(1).optional(),
    freezeAfter: secondsFlag(86_400, 365 * 24 * 3600),
    backoffBase: secondsFlag(1),
    backoffMax: secondsFlag(300),
    substituter: z.array(urlSchema(['http:', 'https:', 'file:'])).min(1, 'give at least one --substituter'),
    trustedCacheKey: z
      .array(cacheKeySchema)
      .min(1, 'give at least one --trusted-cache-key; unsigned paths are never installed'),
    store: z.string().min(1).optional(),
    profile: z.string().min(1).default('/nix/var/nix/profiles/system'),
    profileType: z.enum(['nixos', 'system-manager'], { message: 'expected nixos or system-manager' }).default('nixos'),
    stateDir: z.string().min(1).default('/var/lib/outpost-agent'),
    fetchTimeout: secondsFlag(86_400),
    minThroughput: throughputSchema.default(256),
    throughputWindow: secondsFlag(600),
    downloadRetries: countSchema.default(8),
    maxClosureSize: sizeSchema.prefault('64G'),
    minFreeSpace: sizeSchema.prefault('1G'),
    maintenanceWindow: z.array(windowSchema).default([]),
    rebootWindow: z.array(windowSchema).default([]),
    timezone: timeZoneSchema.optional(),
    activationTimeout: secondsFlag(600),
    activationRunner: z
      .enum(['auto', 'direct', 'systemd-run'], { message: 'expected auto, direct or systemd-run' })
      .default('auto'),
    confirmTimeout: secondsFlag(300),
    healthCheck: z.array(z.string().min(1, 'a health check needs a command')).default([]),
    requireSystemRunning: z
      .enum(['auto', 'true', 'false'], { message: 'expected auto, true or false' })
      .default('auto'),
    systemctl: z.string().min(1).default('systemctl'),
    bootedSystem: z.string().min(1).default('/run/booted-system'),
    rebootCommand: z.string().min(1).default('systemctl reboot'),
    logLevel: z.enum(['trace', 'debug', 'info', 'warn', 'error']).default('info'),
  })
  .refine((o) => o.orgRoot.length > 0 || o.adminKey.length > 0, {
    message:
      "give --org-root (the fleet's pinned org root key) or, without a policy, at least one --admin-key; without either no intent can be trusted",
    path: ['orgRoot'],
  })
  .refine((o) => o.orgRoot.length === 0 || o.adminKey.length === 0, {
    message:
      'give --org-root or --admin-key, not both: under a policy, admins and their capabilities come from the policy',
    path: ['adminKey'],
  })
  .refine((o) => o.enrollToken === undefined || o.orgRoot.length > 0, {
    message: 'an enrollment token needs --org-root (enrollment is part of the policy)',
    path: ['enrollToken'],
  })
  .refine((o) => o.backoffBase <= o.backoffMax, { message: 'must not exceed --backoff-max', path: ['backoffBase'] });
export type AgentOptions = z.infer<typeof agentOptionsSchema>;
