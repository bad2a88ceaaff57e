import { z } from 'zod';
import { bytesSchema, defineCommand, logLevelOption, option, portSchema, secondsSchema } from '../cli/options.js';
import { base64Key32Schema } from '../shared/schemas/primitives.js';
import {
  backendSchema,
  natsAccessOptionsShape,
  natsStreamOptionsShape,
  refineNatsAccess,
} from './backends/backend-option.js';
import { enrollmentOptionsShape, limitOptionsShape } from './limit-flags.js';
import { TLS_PAIR_ISSUE, tlsOptionsShape, tlsPairComplete } from './tls-flags.js';

// Every option of `outpost coordinator`, declared once (parsing, --help, --help --json).
export const coordinatorCommand = defineCommand({
  name: 'coordinator',
  summary: 'serve the fleet documents over the y-websocket protocol and keep an append-only log of every update',
  usage:
    'outpost coordinator --data-dir DIR [--backend level|nats://HOST:PORT,…] [--listen HOST] [--port N] [--org-root KEY …] [--timestamp-key FILE] [--tls-cert FILE --tls-key FILE]',
  options: z
    .object({
      dataDir: option(z.string().min(1).default('./outpost-coordinator'), {
        placeholder: 'DIR',
        description: 'where the update log (LevelDB) lives; with a NATS --backend nothing is kept there',
      }),
      backend: option(backendSchema.prefault('level'), {
        placeholder: 'level|nats://HOST:PORT,…',
        description:
          'where the update log lives: level (embedded LevelDB in --data-dir) or a NATS JetStream cluster that several coordinators share (docs/scale-out.md)',
      }),
      ...natsStreamOptionsShape,
      ...natsAccessOptionsShape,
      listen: option(z.string().min(1).default('127.0.0.1'), {
        placeholder: 'HOST',
        description: 'address to listen on',
      }),
      port: option(portSchema.default(8420), {
        placeholder: 'N',
        description: 'TCP port (0 picks a free one and prints it)',
      }),
      maxPayload: option(bytesSchema().default(1024 * 1024), {
        placeholder: 'BYTES',
        description: 'largest websocket message accepted; bigger ones close the connection',
      }),
      idleUnload: option(secondsSchema().default(30), {
        placeholder: 'SECONDS',
        description: 'unload a document from memory this long after its last connection closes',
      }),
      orgRoot: option(z.array(base64Key32Schema).default([]), {
        placeholder: 'KEY',
        description:
          'pinned org root public key; with it every connection must prove a key and the fleet policy decides access (without it: open development mode)',
      }),
      timestampKey: option(z.string().min(1).optional(), {
        placeholder: 'FILE',
        description: 'key file of the online timestamp key (listed in the policy) used to sign freshness timestamps',
      }),
      timestampInterval: option(secondsSchema().default(60), {
        placeholder: 'SECONDS',
        description: 'how often to sign a fresh timestamp',
      }),
      ...tlsOptionsShape,
      ...limitOptionsShape,
      ...enrollmentOptionsShape,
      logLevel: logLevelOption,
    })
    .refine(tlsPairComplete, TLS_PAIR_ISSUE)
    .superRefine(refineNatsAccess)
    .refine((o) => o.timestampKey === undefined || o.orgRoot.length > 0, {
      message: 'timestamps need a policy: give --org-root too',
      path: ['timestampKey'],
    }),
  examples: [
    'outpost coordinator --data-dir /var/lib/outpost-coordinator --listen 0.0.0.0 --port 8420',
    'outpost coordinator --backend nats://10.0.0.1:4222,10.0.0.2:4222,10.0.0.3:4222 --listen 0.0.0.0',
    'outpost coordinator migrate --from-level /var/lib/outpost-coordinator --to nats://10.0.0.1:4222',
  ],
});

export const coordinatorOptionsSchema = coordinatorCommand.options;
export type CoordinatorOptions = z.output<typeof coordinatorOptionsSchema>;
