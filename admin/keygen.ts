import { z } from 'zod';
import { type CommandSpec, parseFlags, renderHelp } from '../cli/flags.js';
import { generateSigningKey } from '../shared/crypto/keys.js';
import { writeKeyFile } from '../shared/node/key-file.js';

export const keygenCommand: CommandSpec = {
  name: 'keygen',
  summary: 'create an Ed25519 key file (mode 0600) for an admin or a host and print its public key',
  usage: 'outpost keygen --out FILE [--name NAME] [--json]',
  flags: [
    {
      name: 'out',
      kind: 'string',
      placeholder: 'FILE',
      description: 'where to write the key file; an existing file is never overwritten',
    },
    {
      name: 'name',
      kind: 'string',
      placeholder: 'NAME',
      description: 'a label stored with the key (admin name or host id)',
      defaultText: 'the file name',
    },
    { name: 'json', kind: 'boolean', description: 'print {name, publicKey, file} as JSON' },
  ],
  examples: [
    'outpost keygen --out ~/.config/outpost/alice.key --name alice',
    'outpost keygen --out /var/lib/outpost-agent/host.key --name clinic-1',
  ],
};

const keygenOptionsSchema = z.object({
  out: z.string().min(1, 'give the key file to write'),
  name: z.string().min(1).max(128).optional(),
  json: z.boolean().default(false),
});

export async function runKeygenCommand(argv: string[]): Promise<number> {
  const parsed = parseFlags(keygenCommand, argv, keygenOptionsSchema);
  if (parsed.help) {
    console.log(renderHelp(keygenCommand));
    return 0;
  }
  const { out, json } = parsed.value;
  const name =
    parsed.value.name ??
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
