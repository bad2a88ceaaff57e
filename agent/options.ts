import { z } from 'zod';
import { defineCommand, logLevelOption, numberSchema, option, secondsSchema, urlSchema } from '../cli/options.js';
import { timeZoneSchema, windowSchema } from '../shared/schedule/windows.js';
import { base64Key32Schema, hostIdSchema } from '../shared/schemas/primitives.js';

const cacheKeySchema = z
  .string()
  .regex(/^[A-Za-z0-9._-]+:[A-Za-z0-9+/]{43}=$/, 'expected NAME:BASE64KEY, as in trusted-public-keys');

const SIZE_UNITS: Record<string, number> = { '': 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 };

// "1073741824", "512M", "64G" → bytes.
export const sizeSchema = z
  .string()
  .regex(/^\d+(\.\d+)?[KMGT]?$/i, 'expected a byte count such as 1073741824, 512M or 64G')
  .transform((text) => Math.floor(Number.parseFloat(text) * SIZE_UNITS[text.replace(/^[\d.]+/, '').toUpperCase()]!));

// "journal=journalctl -n 100": a section name for the bundle and the shell command that fills it.
export const collectCommandSchema = z
  .string()
  .regex(/^[a-z0-9][a-z0-9-]{0,31}=.+$/s, 'expected NAME=COMMAND, e.g. "journal=journalctl -n 200 --no-pager"')
  .transform((text) => ({ name: text.slice(0, text.indexOf('=')), command: text.slice(text.indexOf('=') + 1) }));

const countSchema = numberSchema('a whole number').int().nonnegative().max(1000);
const throughputSchema = numberSchema('bytes per second').nonnegative();

// Every option of `outpost agent`, declared once: the CLI, its --help, the agent's own defaults
// (config.ts) and the NixOS module test (through --help --json) all read this.
export const agentCommand = defineCommand({
  name: 'agent',
  summary: "apply this host's newest valid signed intent with Nix and report signed results",
  usage:
    'outpost agent --host ID --key FILE --coordinator URL (--org-root KEY | --admin-key KEY) --substituter URL --trusted-cache-key NAME:KEY [options]',
  options: z
    .object({
      host: option(hostIdSchema, { placeholder: 'ID', description: "this host's id (as in hosts/<id>/desired)" }),
      key: option(z.string().min(1, 'give the host key file'), {
        placeholder: 'FILE',
        description: "this host's Ed25519 key file (outpost keygen); results and status are signed with it",
      }),
      coordinator: option(
        z
          .array(urlSchema(['ws:', 'wss:']))
          .min(1, 'give at least one --coordinator URL (coordinator or relay; repeat for failover)'),
        { placeholder: 'URL', description: 'sync endpoint, ws:// or wss://' },
      ),
      orgRoot: option(z.array(base64Key32Schema).default([]), {
        placeholder: 'KEY',
        description:
          "base64 public key of the fleet's org root, pinned: intents count when the signed policy (walked from this root) lets their signers deploy here",
      }),
      adminKey: option(z.array(base64Key32Schema).default([]), {
        placeholder: 'KEY',
        description:
          'instead of --org-root, for development and small fleets: base64 public key of an admin whose intents this host trusts (no policy, no capabilities)',
      }),
      enrollToken: option(z.string().min(1).optional(), {
        placeholder: 'FILE',
        description:
          "with --org-root: a one-time token from 'outpost enroll token'; the agent's enrollment request then binds its key at once (without: it waits for an admin's approval)",
      }),
      freezeAfter: option(secondsSchema(365 * 24 * 3600).default(86_400), {
        placeholder: 'SECONDS',
        description:
          'with --org-root: report a freeze when no fresh signed timestamp has arrived for this long (a relay or coordinator may be withholding updates)',
      }),
      deliveryWindow: option(secondsSchema(365 * 24 * 3600).default(7 * 86_400), {
        placeholder: 'SECONDS',
        description:
          "with --org-root and timestamp keys: refuse an intent (stale) that reaches this host later than this after it could first have: after its issue if the host was in contact then, else after contact resumed (an intent's own --expires stays the hard limit)",
      }),
      backoffBase: option(secondsSchema().default(1), {
        placeholder: 'SECONDS',
        description: 'first reconnect delay; doubles per failure, with jitter',
      }),
      backoffMax: option(secondsSchema().default(300), {
        placeholder: 'SECONDS',
        description:
          'longest reconnect delay (minutes suit satellite links: a fleet coming back after an outage does not storm its peers)',
      }),
      substituter: option(z.array(urlSchema(['http:', 'https:', 'file:'])).min(1, 'give at least one --substituter'), {
        placeholder: 'URL',
        description: 'binary cache the closures are fetched from',
      }),
      trustedCacheKey: option(
        z.array(cacheKeySchema).min(1, 'give at least one --trusted-cache-key; unsigned paths are never installed'),
        {
          placeholder: 'NAME:KEY',
          description: 'Nix public key that must sign every fetched path (pinned; the machine-wide list is not used)',
        },
      ),
      store: option(z.string().min(1).optional(), {
        placeholder: 'DIR',
        description:
          'install into a separate store root (chroot store) instead of the system store; for tests and demos',
      }),
      profile: option(z.string().min(1).default('/nix/var/nix/profiles/system'), {
        placeholder: 'PATH',
        description: 'system profile to switch',
      }),
      profileType: option(
        z.enum(['nixos', 'system-manager'], { message: 'expected nixos or system-manager' }).default('nixos'),
        {
          placeholder: 'TYPE',
          description: 'nixos (bin/switch-to-configuration) or system-manager (bin/activate, for non-NixOS hosts)',
        },
      ),
      stateDir: option(z.string().min(1).default('/var/lib/outpost-agent'), {
        placeholder: 'DIR',
        description: "where the agent's phase, counters, downloads and GC roots live",
      }),
      fetchTimeout: option(secondsSchema().default(86_400), {
        placeholder: 'SECONDS',
        description:
          'overall deadline for downloading a closure, counted from its start (agent restarts do not extend it)',
      }),
      minThroughput: option(throughputSchema.default(256), {
        placeholder: 'BYTES',
        description:
          'a NAR transfer slower than this many bytes per second over --throughput-window is aborted (slow-drip defence); 0 turns the rule off',
      }),
      throughputWindow: option(secondsSchema().default(600), {
        placeholder: 'SECONDS',
        description: 'the window --min-throughput is averaged over',
      }),
      downloadRetries: option(countSchema.default(8), {
        placeholder: 'N',
        description:
          'failed attempts in a row without progress on one file (connection refused, cut mid-file, too slow) before the download fails',
      }),
      maxClosureSize: option(sizeSchema.prefault('64G'), {
        placeholder: 'BYTES',
        description: 'refuse closures whose narinfos declare more than this in total (suffixes K, M, G, T)',
      }),
      minFreeSpace: option(sizeSchema.prefault('1G'), {
        placeholder: 'BYTES',
        description:
          'keep this much disk space free: a closure that does not fit is refused before the download (suffixes K, M, G, T)',
      }),
      maintenanceWindow: option(z.array(windowSchema).default([]), {
        placeholder: 'WINDOW',
        description:
          'downloads and activations start only inside these windows, e.g. "Tue 03:00-05:00" or "Mon-Fri 22:00-06:00" (host-local time); given, they win over the maintenance windows of the policy groups this host is in; none: the groups\' windows (every group\'s must allow), else any time',
      }),
      rebootWindow: option(z.array(windowSchema).default([]), {
        placeholder: 'WINDOW',
        description:
          'when a switch changes the kernel or initrd it becomes boot + reboot, inside these windows, e.g. "01:00-05:00"; given, they win over the reboot windows of the policy groups this host is in; none: the groups\' windows, else reboot right away',
      }),
      timezone: option(timeZoneSchema.optional(), {
        placeholder: 'ZONE',
        description: 'IANA time zone the windows are in (also group windows whose policy group names no time zone)',
        defaultText: "the host's",
      }),
      activationTimeout: option(secondsSchema().default(600), {
        placeholder: 'SECONDS',
        description: 'kill switch-to-configuration (or bin/activate) after this long and roll back',
      }),
      activationRunner: option(
        z.enum(['auto', 'direct', 'systemd-run'], { message: 'expected auto, direct or systemd-run' }).default('auto'),
        {
          placeholder: 'RUNNER',
          description:
            'how the activation is started so it survives the agent: systemd-run (a transient unit), direct (own session), or auto (systemd-run where systemd runs)',
        },
      ),
      confirmTimeout: option(secondsSchema().default(300), {
        placeholder: 'SECONDS',
        description:
          'after an activation the host must reach a sync peer afresh and pass its health checks within this long, or it rolls back',
      }),
      healthCheck: option(z.array(z.string().min(1, 'a health check needs a command')).default([]), {
        placeholder: 'COMMAND',
        description: 'shell command (/bin/sh -c) that must exit 0 after an activation',
      }),
      requireSystemRunning: option(
        z.enum(['auto', 'true', 'false'], { message: 'expected auto, true or false' }).default('auto'),
        {
          placeholder: 'auto|true|false',
          description:
            "'systemctl is-system-running' must say running (degraded fails) after an activation; auto: where systemd runs",
        },
      ),
      systemctl: option(z.string().min(1).default('systemctl'), {
        placeholder: 'PATH',
        description: 'systemctl binary used for is-system-running and the systemd-run runner',
      }),
      bootedSystem: option(z.string().min(1).default('/run/booted-system'), {
        placeholder: 'PATH',
        description: 'link to the booted system, compared with the new closure to decide whether a reboot is needed',
      }),
      rebootCommand: option(z.string().min(1).default('systemctl reboot'), {
        placeholder: 'COMMAND',
        description: 'shell command that reboots the host',
      }),
      collectCommand: option(z.array(collectCommandSchema).default([]), {
        placeholder: 'NAME=COMMAND',
        description:
          "what 'outpost action collect' gathers: the output tail of a named shell command (/bin/sh -c); repeat; given, replaces the default set (journal, failed, disk, generations)",
        defaultText: 'journal, failed units, disk usage, Nix generations',
      }),
      actionTimeout: option(secondsSchema(3600).default(60), {
        placeholder: 'SECONDS',
        description:
          "each collect command is stopped after this long, and 'outpost action check' reports failure if the health checks do not pass within it",
      }),
      sshPort: option(numberSchema('a port').int().min(0).max(65535).default(22), {
        placeholder: 'PORT',
        description:
          "with --org-root: the local sshd's port on 127.0.0.1 that `outpost ssh` tunnels reach (after this agent checked the signed request against the policy); 0 turns tunnels off",
      }),
      sshIdleTimeout: option(secondsSchema(7 * 24 * 3600).default(1800), {
        placeholder: 'SECONDS',
        description: 'close an `outpost ssh` session after this long without a byte either way',
      }),
      sshMaxSessions: option(numberSchema('a count').int().min(1).max(100).default(4), {
        placeholder: 'N',
        description: '`outpost ssh` sessions open at once on this host, at most',
      }),
      appsManifest: option(z.string().min(1).optional(), {
        placeholder: 'FILE',
        description:
          'JSON list of the application services to watch (written by the NixOS module services.outpost-apps, docs/apps.md); their docker compose state goes into the signed status',
        defaultText: 'none: no apps are watched',
      }),
      appsInterval: option(secondsSchema(24 * 3600).default(60), {
        placeholder: 'SECONDS',
        description: "with --apps-manifest: how often each app's 'docker compose ps' is checked (also on start)",
      }),
      dockerCommand: option(z.string().min(1).default('docker'), {
        placeholder: 'PATH',
        description: "with --apps-manifest: the docker CLI (with the compose plugin) asked for the apps' state",
      }),
      logLevel: logLevelOption,
      metricsListen: option(
        z
          .string()
          .regex(
            /^(\[[0-9a-fA-F:.]+\]|[0-9A-Za-z.-]+):\d{1,5}$/,
            'expected ADDRESS:PORT such as 127.0.0.1:9464 ([::1]:9464 for IPv6)',
          )
          .optional(),
        {
          placeholder: 'ADDRESS:PORT',
          description:
            "serve the agent's Prometheus metrics (phase, generations, download bytes, last result) at http://ADDRESS:PORT/metrics; keep it on loopback",
          defaultText: 'off',
        },
      ),
      authorizedKeysDir: option(z.string().min(1).optional(), {
        placeholder: 'DIR',
        description:
          "with --org-root: write the SSH login keys the signed policy gives this host into DIR, one file per local account (point sshd's AuthorizedKeysFile at DIR/%u), whenever a newer policy version arrives",
        defaultText: 'off',
      }),
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
    .refine((o) => o.authorizedKeysDir === undefined || o.orgRoot.length > 0, {
      message: 'login keys come from the signed policy: --authorized-keys-dir needs --org-root',
      path: ['authorizedKeysDir'],
    })
    .refine((o) => o.backoffBase <= o.backoffMax, { message: 'must not exceed --backoff-max', path: ['backoffBase'] }),
  examples: [
    'outpost agent --host clinic-1 --key /var/lib/outpost-agent/host.key --coordinator wss://fleet.example.org \\\n    --admin-key 3q…= --substituter https://cache.example.org --trusted-cache-key cache.example.org-1:AbC…=',
    'outpost agent … --maintenance-window "Tue 03:00-05:00" --maintenance-window "Mon 16:00-18:00" --reboot-window 01:00-05:00 \\\n    --timezone Africa/Kinshasa --health-check "systemctl is-active nginx" --confirm-timeout 300',
  ],
});

export const agentOptionsSchema = agentCommand.options;
export type AgentOptions = z.output<typeof agentOptionsSchema>;
