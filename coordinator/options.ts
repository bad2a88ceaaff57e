import { z } from 'zod';
import { bytesFlag, type CommandSpec, secondsFlag } from '../cli/flags.js';
import { base64Key32Schema } from '../shared/schemas/primitives.js';

export const coordinatorCommand: CommandSpec = {
  name: 'coordinator',
  summary: 'serve the fleet documents over the y-websocket protocol and keep an append-only log of every update',
  usage:
    'outpost coordinator --data-dir DIR [--listen HOST] [--port N] [--org-root KEY …] [--timestamp-key FILE] [--tls-cert FILE --tls-key FILE]',
  flags: [
    {
      name: 'data-dir',
      kind: 'string',
      placeholder: 'DIR',
      description: 'where the update log (LevelDB) lives',
      defaultText: './outpost-coordinator',
    },
    {
      name: 'listen',
      kind: 'string',
      placeholder: 'HOST',
      description: 'address to listen on',
      defaultText: '127.0.0.1',
    },
    {
      name: 'port',
      kind: 'string',
      placeholder: 'N',
      description: 'TCP port (0 picks a free one and prints it)',
      defaultText: '8420',
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
      description: 'unload a document from memory this long after its last connection closes',
      defaultText: '30',
    },
    {
      name: 'org-root',
      kind: 'string',
      multiple: true,
      placeholder: 'KEY',
      description:
        'pinned org root public key; with it every connection must prove a key and the fleet policy decides access (without it: open development mode)',
    },
    {
      name: 'timestamp-key',
      kind: 'string',
      placeholder: 'FILE',
      description: 'key file of the online timestamp key (listed in the policy) used to sign freshness timestamps',
    },
    {
      name: 'timestamp-interval',
      kind: 'string',
      placeholder: 'SECONDS',
      description: 'how often to sign a fresh timestamp',
      defaultText: '60',
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
  examples: ['outpost coordinator --data-dir /var/lib/outpost-coordinator --listen 0.0.0.0 --port 8420'],
};

export const coordinatorOptionsSchema = z
  .object({
    dataDir: z.string().min(1).default('./outpost-coordinator'),
    listen: z.string().min(1).default('127.0.0.1'),
    port: z.coerce.number({ message: 'expected a port number' }).int().min(0).max(65535).default(8420),
    maxPayload: bytesFlag(1024 * 1024),
    idleUnload: secondsFlag(30),
    orgRoot: z.array(base64Key32Schema).default([]),
    timestampKey: z.string().min(1).optional(),
    timestampInterval: secondsFlag(60),
    tlsCert: z.string().min(1).optional(),
    tlsKey: z.string().min(1).optional(),
    logLevel: z.enum(['trace', 'debug', 'info', 'warn', 'error']).default('info'),
  })
  .refine((o) => (o.tlsCert === undefined) === (o.tlsKey === undefined), {
    message: 'give both --tls-cert and --tls-key, or neither',
    path: ['tlsCert'],
  })
  .refine((o) => o.timestampKey === undefined || o.orgRoot.length > 0, {
    message: 'timestamps need a policy: give --org-root too',
    path: ['timestampKey'],
  });
export type CoordinatorOptions = z.infer<typeof coordinatorOptionsSchema>;
