import { z } from 'zod';
import { bytesFlag, type CommandSpec, secondsFlag } from '../cli/flags.js';
import { base64Key32Schema } from '../shared/schemas/primitives.js';

export const relayCommand: CommandSpec = {
  name: 'relay',
  summary:
    "serve a site's agents like the coordinator, keep a local copy, sync both ways with an upstream whenever one is reachable, and mirror the binary cache",
  usage:
    'outpost relay --upstream URL [--upstream URL …] --data-dir DIR [--key FILE] [--org-root KEY …] [--cache-upstream URL …] [--listen HOST] [--port N]',
  flags: [
    {
      name: 'upstream',
      kind: 'string',
      multiple: true,
      placeholder: 'URL',
      description: 'the coordinator, or a relay closer to it, ws:// or wss://; several fail over in order',
    },
    {
      name: 'key',
      kind: 'string',
      placeholder: 'FILE',
      description:
        "this relay's key file (outpost keygen); the policy lists its public key under relays. It signs nothing: it only proves to the upstream which relay is connecting",
    },
    {
      name: 'org-root',
      kind: 'string',
      multiple: true,
      placeholder: 'KEY',
      description:
        'pinned org root public key: agents connecting here must prove their key, checked against the policy the relay syncs from upstream (without it: open development mode)',
    },
    {
      name: 'data-dir',
      kind: 'string',
      placeholder: 'DIR',
      description: "the relay's update log (LevelDB, under DIR/log) and cache mirror (DIR/nix-cache)",
      defaultText: './outpost-relay',
    },
    {
      name: 'listen',
      kind: 'string',
      placeholder: 'HOST',
      description: "address the site's agents connect to",
      defaultText: '127.0.0.1',
    },
    {
      name: 'port',
      kind: 'string',
      placeholder: 'N',
      description: 'TCP port (0 picks a free one and prints it)',
      defaultText: '8421',
    },
    {
      name: 'max-payload',
      kind: 'string',
      placeholder: 'BYTES',
      description: 'largest websocket message accepted; bigger ones close the connection',
      defaultText: '1048576',
    },
    {
      name: 'idle-unload',
      kind: 'string',
      placeholder: 'SECONDS',
      description:
        'unload a document from memory this long after its last connection closes (documents with writes the upstream has not confirmed stay)',
      defaultText: '30',
    },
    {
      name: 'backoff-base',
      kind: 'string',
      placeholder: 'SECONDS',
      description: 'first reconnect delay towards the upstream; doubles per failure, with jitter',
      defaultText: '1',
    },
    {
      name: 'backoff-max',
      kind: 'string',
      placeholder: 'SECONDS',
      description: 'longest reconnect delay towards the upstream (minutes suit satellite links)',
      defaultText: '300',
    },
    {
      name: 'upstream-timeout',
      kind: 'string',
      placeholder: 'SECONDS',
      description:
        'drop the upstream link after this long without any message or pong (blackholed links, lost NAT state)',
      defaultText: '60',
    },
    {
      name: 'sync-concurrency',
      kind: 'string',
      placeholder: 'N',
      description: 'documents fetched from upstream at once after a reconnect or a restart',
      defaultText: '16',
    },
    {
      name: 'cache-upstream',
      kind: 'string',
      multiple: true,
      placeholder: 'URL',
      description:
        'binary cache to mirror at /nix-cache (http:// or https://); agents use http://RELAY:PORT/nix-cache as substituter and still check every signature',
    },
    {
      name: 'cache-max-size',
      kind: 'string',
      placeholder: 'BYTES',
      description: 'disk space the cache mirror may use; the least recently used files go first',
      defaultText: '10737418240',
    },
    {
      name: 'tls-cert',
      kind: 'string',
      placeholder: 'FILE',
      description: 'serve wss:// and https:// with this PEM certificate (needs --tls-key)',
    },
    { name: 'tls-key', kind: 'string', placeholder: 'FILE', description: 'PEM private key for --tls-cert' },
    {
      name: 'log-level',
      kind: 'string',
      placeholder: 'LEVEL',
      description: 'trace, debug, info, warn or error',
      defaultText: 'info',
    },
  ],
  examples: [
    'outpost relay --upstream wss://fleet.example.org --key /var/lib/outpost-relay/relay.key --data-dir /var/lib/outpost-relay \\\n    --listen 0.0.0.0 --cache-upstream https://cache.example.org',
  ],
};

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

export const relayOptionsSchema = z
  .object({
    upstream: z
      .array(urlSchema(['ws:', 'wss:']))
      .min(1, 'give at least one --upstream (the coordinator, or a relay closer to it)'),
    key: z.string().min(1).optional(),
    orgRoot: z.array(base64Key32Schema).default([]),
    dataDir: z.string().min(1).default('./outpost-relay'),
    listen: z.string().min(1).default('127.0.0.1'),
    port: z.coerce.number({ message: 'expected a port number' }).int().min(0).max(65535).default(8421),
    maxPayload: bytesFlag(1024 * 1024),
    idleUnload: secondsFlag(30),
    backoffBase: secondsFlag(1),
    backoffMax: secondsFlag(300),
    upstreamTimeout: secondsFlag(60),
    syncConcurrency: z.coerce.number({ message: 'expected a number' }).int().min(1).max(1024).default(16),
    cacheUpstream: z.array(urlSchema(['http:', 'https:'])).default([]),
    cacheMaxSize: bytesFlag(10 * 1024 * 1024 * 1024),
    tlsCert: z.string().min(1).optional(),
    tlsKey: z.string().min(1).optional(),
    logLevel: z.enum(['trace', 'debug', 'info', 'warn', 'error']).default('info'),
  })
  .refine((o) => (o.tlsCert === undefined) === (o.tlsKey === undefined), {
    message: 'give both --tls-cert and --tls-key, or neither',
    path: ['tlsCert'],
  })
  .refine((o) => o.orgRoot.length === 0 || o.key !== undefined, {
    message: 'with --org-root the upstream checks the policy too: give the relay key the policy lists',
    path: ['key'],
  })
  .refine((o) => o.backoffBase <= o.backoffMax, { message: 'must not exceed --backoff-max', path: ['backoffBase'] });
export type RelayOptions = z.infer<typeof relayOptionsSchema>;
