import { z } from 'zod';
import { runCommand } from '../cli/command.js';
import { defineCommand, option } from '../cli/options.js';
import { generateSigningKey } from '../shared/crypto/keys.js';
import { writeKeyFile } from '../shared/node/key-file.js';

export const keygenCommand = defineCommand({
  name: 'keygen',
  summary: 'create an Ed25519 key file (mode 0600) for an admin or a host and print its public key',
  usage: 'outpost keygen --out FILE [--name NAME] [--json]',
  options: z.object({
    out: option(z.string().min(1, 'give the key file to write'), {
      placeholder: 'FILE',
      description: 'where to write the key file; an existing file is never overwritten',
    }),
    name: option(z.string().min(1).max(128).optional(), {
      placeholder: 'NAME',
      description: 'a label stored with the key (admin name or host id)',
      defaultText: 'the file name',
    }),
    json: option(z.boolean().default(false), { description: 'print {name, publicKey, file} as JSON' }),
  }),
  examples: [
    'outpost keygen --out ~/.config/outpost/alice.key --name alice',
    'outpost keygen --out /var/lib/outpost-agent/host.key --name clinic-1',
  ],
});

export function runKeygenCommand(argv: string[]): Promise<number> {
  return runCommand(keygenCommand, argv, keygen);
}

async function keygen(options: z.output<typeof keygenCommand.options>): Promise<number> {
  const { out, json } = options;
  const name =
    options.name ??
    out
      .split('/')
      .pop()!
      .replace(/\.key$/, '');
  const key = generateSigningKey(name);
  try {
    await writeKeyFile(out, key);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') {
      throw new Error(
        `${out} already exists; keys are never overwritten. Choose another --out or remove the old key deliberately`,
      );
    }
    throw error;
  }
  if (json) console.log(JSON.stringify({ name, publicKey: key.publicKey, file: out }));
  else console.log(`wrote ${out} (mode 0600)\npublic key of ${name}: ${key.publicKey}`);
  return 0;
}
