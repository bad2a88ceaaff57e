import { z } from 'zod';
import { hostIdSchema } from '../shared/schemas/primitives.js';
import { base64Key32Schema } from '../shared/schemas/primitives.js';
import { secondsFlag, type CommandSpec } from '../shared/cli/flags.js';

export const agentCommand: CommandSpec = {
  name: 'agent',
  summary: "apply this host's newest valid signed intent with Nix and report signed results",
  usage: 'outpost agent --host ID --key FILE --coordinator URL --admin-key KEY --substituter URL --trusted-cache-key NAME:KEY [options]',
  flags: [
    { name: 'host', kind: 'string', placeholder: 'ID', description: "this host's id (as in hosts/<id>/desired)" },
    { name: 'key', kind: 'string', placeholder: 'FILE', description: "this host's Ed25519 key file (outpost keygen); results and status are signed with it" },
    { name: 'coordinator', kind: 'string', multiple: true, placeholder: 'URL', description: 'sync endpoint, ws:// or wss://' },
    { name: 'admin-key', kind: 'string', multiple: true, placeholder: 'KEY', description: 'base64 public key of an admin whose intents this host trusts' },
    { name: 'substituter', kind: 'string', multiple: true, placeholder: 'URL', description: 'binary cache the closures are fetched from' },
    { name: 'trusted-cache-key', kind: 'string', multiple: true, placeholder: 'NAME:KEY', description: 'Nix public key that must sign every fetched path (pinned; the machine-wide list is not used)' },
    { name: 'store', kind: 'string', placeholder: 'DIR', description: 'install into a separate store root (chroot store) instead of the system store; for tests and demos' },
    { name: 'profile', kind: 'string', placeholder: 'PATH', description: 'system profile to switch', defaultText: '/nix/var/nix/profiles/system' },
    { name: 'state-dir', kind: 'string', placeholder: 'DIR', description: "where the agent's phase and counters are persisted", defaultText: '/var/lib/outpost-agent' },
    { name: 'fetch-timeout', kind: 'string', placeholder: 'SECONDS', description: 'give up fetching a closure after this long', defaultText: '86400' },
    { name: 'activation-timeout', kind: 'string', placeholder: 'SECONDS', description: 'give up on switch-to-configuration after this long', defaultText: '600' },
    { name: 'log-level', kind: 'string', placeholder: 'LEVEL', description: 'trace, debug, info, warn or error', defaultText: 'info' },
  ],
  examples: [
    'outpost agent --host clinic-1 --key /var/lib/outpost-agent/host.key --coordinator wss://fleet.example.org \\\n    --admin-key 3q…= --substituter https://cache.example.org --trusted-cache-key cache.example.org-1:AbC…=',
  ],
};

const cacheKeySchema = z.string().regex(/^[A-Za-z0-9._-]+:[A-Za-z0-9+/]{43}=$/, 'expected NAME:BASE64KEY, as in trusted-public-keys');
const urlSchema = (protocols: string[]) =>
  z.string().refine((value) => {
    try {
      return protocols.includes(new URL(value).protocol);
    } catch {
      return false;
    }
  }, `expected a URL starting with ${protocols.map((p) => `${p}//`).join(' or ')}`);

export const agentOptionsSchema = z.object({
  host: hostIdSchema,
  key: z.string().min(1, 'give the host key file'),
  coordinator: z.array(urlSchema(['ws:', 'wss:'])).min(1, 'give at least one --coordinator URL'),
  adminKey: z.array(base64Key32Schema).min(1, 'give at least one --admin-key; without one no intent can be trusted'),
  substituter: z.array(urlSchema(['http:', 'https:', 'file:'])).min(1, 'give at least one --substituter'),
  trustedCacheKey: z.array(cacheKeySchema).min(1, 'give at least one --trusted-cache-key; unsigned paths are never installed'),
  store: z.string().min(1).optional(),
  profile: z.string().min(1).default('/nix/var/nix/profiles/system'),
  stateDir: z.string().min(1).default('/var/lib/outpost-agent'),
  fetchTimeout: secondsFlag(86_400),
  activationTimeout: secondsFlag(600),
  logLevel: z.enum(['trace', 'debug', 'info', 'warn', 'error']).default('info'),
});
export type AgentOptions = z.infer<typeof agentOptionsSchema>;
