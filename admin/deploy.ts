import { z } from 'zod';
import { durationSchema } from '../cli/duration.js';
import { type CommandSpec, parseFlags, renderHelp } from '../cli/flags.js';
import { useIdentity } from '../shared/node/connect.js';
import { readKeyFile } from '../shared/node/key-file.js';
import {
  activationActionSchema,
  generationSchema,
  hostIdSchema,
  storePathSchema,
} from '../shared/schemas/primitives.js';
import { submitIntent } from './submit-intent.js';

export const deployCommand: CommandSpec = {
  name: 'deploy',
  summary: 'sign an intent "host H runs closure C as generation G" and submit it',
  usage: 'outpost deploy --coordinator URL --key FILE --host ID --closure /nix/store/… [options]',
  flags: [
    { name: 'coordinator', kind: 'string', placeholder: 'URL', description: 'coordinator or relay, ws:// or wss://' },
    { name: 'key', kind: 'string', placeholder: 'FILE', description: 'your admin key file (outpost keygen)' },
    { name: 'host', kind: 'string', placeholder: 'ID', description: 'host to deploy to' },
    {
      name: 'closure',
      kind: 'string',
      placeholder: 'PATH',
      description: 'system closure already pushed to the signed binary cache',
    },
    {
      name: 'generation',
      kind: 'string',
      placeholder: 'N',
      description: 'generation number',
      defaultText: 'one above the highest issued',
    },
    {
      name: 'action',
      kind: 'string',
      placeholder: 'ACTION',
      description: 'switch, boot or test',
      defaultText: 'switch',
    },
    {
      name: 'expires',
      kind: 'string',
      placeholder: 'DURATION',
      description: 'how long the intent stays valid (90m, 12h, 7d)',
      defaultText: '7d',
    },
    {
      name: 'timeout',
      kind: 'string',
      placeholder: 'DURATION',
      description: 'how long to wait for the coordinator',
      defaultText: '30s',
    },
    {
      name: 'policy-version',
      kind: 'string',
      placeholder: 'N',
      description: 'fleet policy version to sign under',
      defaultText: 'the newest in fleet/policy',
    },
    {
      name: 'force',
      kind: 'boolean',
      description: 'record a generation not above the highest issued (agents will refuse it)',
    },
    { name: 'json', kind: 'boolean', description: 'print the signed intent as JSON' },
  ],
  examples: [
    'outpost deploy --coordinator wss://fleet.example.org --key ~/.config/outpost/alice.key --host clinic-1 --closure /nix/store/…-nixos-system-clinic-1',
  ],
};

const deployOptionsSchema = z.object({
  coordinator: z.string().regex(/^wss?:\/\//, 'expected a ws:// or wss:// URL'),
  key: z.string().min(1, 'give your admin key file'),
  host: hostIdSchema,
  closure: storePathSchema,
  generation: z.coerce.number().pipe(generationSchema).optional(),
  action: activationActionSchema.default('switch'),
  expires: durationSchema.prefault('7d'),
  timeout: durationSchema.prefault('30s'),
  policyVersion: z.coerce.number().int().positive().optional(),
  force: z.boolean().default(false),
  json: z.boolean().default(false),
});

export async function runDeployCommand(argv: string[]): Promise<number> {
  const parsed = parseFlags(deployCommand, argv, deployOptionsSchema);
  if (parsed.help) {
    console.log(renderHelp(deployCommand));
    return 0;
  }
  const options = parsed.value;
  const key = await readKeyFile(options.key);
  // The same key signs the intent and proves who connects (coordinators with --org-root require it).
  useIdentity(key);
  const { signed, digest } = await submitIntent(
    options.coordinator,
    {
      host: options.host,
      closure: options.closure,
      action: options.action,
      generation: options.generation,
      validForSeconds: options.expires,
      allowLowerGeneration: options.force,
      policyVersion: options.policyVersion,
    },
    key,
    options.timeout * 1000,
  );
  if (options.json) {
    console.log(JSON.stringify({ ...signed, digest }));
  } else {
    const { intent } = signed;
    console.log(`stored: ${intent.host} → generation ${intent.generation} (${intent.action}) ${intent.closure}`);
    console.log(
      `signed by ${key.name}, valid until ${intent.expiresAt}; follow it with 'outpost status --coordinator ${options.coordinator}'`,
    );
  }
  return 0;
}
