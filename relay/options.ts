import { z } from 'zod';
import {
  bytesSchema,
  defineCommand,
  logLevelOption,
  numberSchema,
  option,
  portSchema,
  secondsSchema,
  urlSchema,
} from '../cli/options.js';
import { limitOptionsShape } from '../coordinator/limit-flags.js';
import { TLS_PAIR_ISSUE, tlsOptionsShape, tlsPairComplete } from '../coordinator/tls-flags.js';
import { base64Key32Schema } from '../shared/schemas/primitives.js';

// Every option of `outpost relay`, declared once (parsing, --help, --help --json).
export const relayCommand = defineCommand({
  name: 'relay',
  summary:
    "serve a site's agents like the coordinator, keep a local copy, sync both ways with an upstream whenever one is reachable, and mirror the binary cache",
  usage:
    'outpost relay --upstream URL [--upstream URL …] --data-dir DIR [--key FILE] [--org-root KEY …] [--cache-upstream URL …] [--listen HOST] [--port N]',
  options: z
    .object({
      upstream: option(
        z
          .array(urlSchema(['ws:', 'wss:']))
          .min(1, 'give at least one --upstream (the coordinator, or a relay closer to it)'),
        {
          placeholder: 'URL',
          description: 'the coordinator, or a relay closer to it, ws:// or wss://; several fail over in order',
        },
      ),
      key: option(z.string().min(1).optional(), {
        placeholder: 'FILE',
        description:
          "this relay's key file (outpost keygen); the policy lists its public key under relays. It signs nothing: it only proves to the upstream which relay is connecting",
      }),
      orgRoot: option(z.array(base64Key32Schema).default([]), {
        placeholder: 'KEY',
        description:
          'pinned org root public key: agents connecting here must prove their key, checked against the policy the relay syncs from upstream (without it: open development mode)',
      }),
      dataDir: option(z.string().min(1).default('./outpost-relay'), {
        placeholder: 'DIR',
        description: "the relay's update log (LevelDB, under DIR/log) and cache mirror (DIR/nix-cache)",
      }),
      listen: option(z.string().min(1).default('127.0.0.1'), {
        placeholder: 'HOST',
        description: "address the site's agents connect to",
      }),
      port: option(portSchema.default(8421), {
        placeholder: 'N',
        description: 'TCP port (0 picks a free one and prints it)',
      }),
      maxPayload: option(bytesSchema().default(1024 * 1024), {
        placeholder: 'BYTES',
        description: 'largest websocket message accepted; bigger ones close the connection',
      }),
      idleUnload: option(secondsSchema().default(30), {
        placeholder: 'SECONDS',
        description:
          'unload a document from memory this long after its last connection closes (documents with writes the upstream has not confirmed stay)',
      }),
      backoffBase: option(secondsSchema().default(1), {
        placeholder: 'SECONDS',
        description: 'first reconnect delay towards the upstream; doubles per failure, with jitter',
      }),
      backoffMax: option(secondsSchema().default(300), {
        placeholder: 'SECONDS',
        description: 'longest reconnect delay towards the upstream (minutes suit satellite links)',
      }),
      upstreamTimeout: option(secondsSchema().default(60), {
        placeholder: 'SECONDS',
        description:
          'drop the upstream link after this long without any message or pong (blackholed links, lost NAT state)',
      }),
      syncConcurrency: option(numberSchema('a number').int().min(1).max(1024).default(16), {
        placeholder: 'N',
        description: 'documents fetched from upstream at once after a reconnect or a restart',
      }),
      cacheUpstream: option(z.array(urlSchema(['http:', 'https:'])).default([]), {
        placeholder: 'URL',
        description:
          'binary cache to mirror at /nix-cache (http:// or https://); agents use http://RELAY:PORT/nix-cache as substituter and still check every signature',
      }),
      cacheMaxSize: option(bytesSchema().default(10 * 1024 * 1024 * 1024), {
        placeholder: 'BYTES',
        description: 'disk space the cache mirror may use; the least recently used files go first',
      }),
      ...tlsOptionsShape,
      ...limitOptionsShape,
      logLevel: logLevelOption,
    })
    .refine(tlsPairComplete, TLS_PAIR_ISSUE)
    .refine((o) => o.orgRoot.length === 0 || o.key !== undefined, {
      message: 'with --org-root the upstream checks the policy too: give the relay key the policy lists',
      path: ['key'],
    })
    .refine((o) => o.backoffBase <= o.backoffMax, { message: 'must not exceed --backoff-max', path: ['backoffBase'] }),
  examples: [
    'outpost relay --upstream wss://fleet.example.org --key /var/lib/outpost-relay/relay.key --data-dir /var/lib/outpost-relay \\\n    --listen 0.0.0.0 --cache-upstream https://cache.example.org',
  ],
});

export const relayOptionsSchema = relayCommand.options;
export type RelayOptions = z.output<typeof relayOptionsSchema>;
