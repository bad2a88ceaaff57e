import { z } from 'zod';
import { runCommand } from '../cli/command.js';
import { durationSchema } from '../cli/duration.js';
import { defineCommand, option } from '../cli/options.js';
import { useIdentity } from '../shared/node/connect.js';
import { readKeyFile } from '../shared/node/key-file.js';
import {
  activationActionSchema,
  generationSchema,
  hostIdSchema,
  storePathSchema,
} from '../shared/schemas/primitives.js';
import { submitIntent } from './submit-intent.js';

export const deployCommand = defineCommand({
  name: 'deploy',
  summary: 'sign an intent "host H runs closure C as generation G" and submit it',
  usage: 'outpost deploy --coordinator URL --key FILE --host ID --closure /nix/store/… [options]',
  options: z.object({
    coordinator: option(z.string().regex(/^wss?:\/\//, 'expected a ws:// or wss:// URL'), {
      placeholder: 'URL',
      description: 'coordinator or relay, ws:// or wss://',
      common: 'coordinator',
    }),
    key: option(z.string().min(1, 'give your admin key file'), {
      placeholder: 'FILE',
      description: 'your admin key file (outpost keygen)',
      common: 'key',
    }),
    host: option(hostIdSchema, { placeholder: 'ID', description: 'host to deploy to' }),
    closure: option(storePathSchema, {
      placeholder: 'PATH',
      description: 'system closure already pushed to the signed binary cache',
    }),
    generation: option(z.coerce.number().pipe(generationSchema).optional(), {
      placeholder: 'N',
      description: 'generation number',
      defaultText: 'one above the highest issued',
    }),
    action: option(activationActionSchema.default('switch'), {
      placeholder: 'ACTION',
      description: 'switch, boot or test',
    }),
    // Long enough for a site offline for 60 days: a host in contact still refuses an intent that
    // reaches it later than its --delivery-window (docs/trust.md, "Expiry and hosts offline").
    expires: option(durationSchema.prefault('90d'), {
      placeholder: 'DURATION',
      description:
        'how long the intent may still be applied, by a host offline meanwhile too (90m, 12h, 7d, 13w); hosts in contact take it only within their --delivery-window',
    }),
    timeout: option(durationSchema.prefault('30s'), {
      placeholder: 'DURATION',
      description: 'how long to wait for the coordinator',
      common: 'timeout',
    }),
    policyVersion: option(z.coerce.number().int().positive().optional(), {
      placeholder: 'N',
      description: 'fleet policy version to sign under',
      defaultText: 'the newest in fleet/policy',
    }),
    force: option(z.boolean().default(false), {
      description: 'record a generation not above the highest issued (agents will refuse it)',
    }),
    json: option(z.boolean().default(false), { description: 'print the signed intent as JSON' }),
  }),
  examples: [
    'outpost deploy --coordinator wss://fleet.example.org --key ~/.config/outpost/alice.key --host clinic-1 --closure /nix/store/…-nixos-system-clinic-1',
  ],
});

export function runDeployCommand(argv: string[]): Promise<number> {
  return runCommand(deployCommand, argv, deploy);
}

async function deploy(options: z.output<typeof deployCommand.options>): Promise<number> {
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
