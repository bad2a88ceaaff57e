import { promises as fs } from 'node:fs';
import { z } from 'zod';
import { durationSchema } from '../cli/duration.js';
import { type Command, option, UsageError } from '../cli/options.js';
import { readKeyFile } from '../shared/node/key-file.js';
import { MAX_KEYS_PER_LOGIN, parseSshPublicKey } from '../shared/schemas/logins.js';
import { base64Key32Schema } from '../shared/schemas/primitives.js';

// Shared by `outpost policy` and `outpost enroll`: the subcommand machinery itself is the CLI's
// (cli/command.ts); what is here is how both spell keys, files, versions and timeouts.
export { type CommandGroup, runGroup, type Subcommand, subcommand } from '../cli/command.js';

export function usageError(spec: Pick<Command, 'name'>, flag: string, message: string): UsageError {
  return new UsageError(
    `outpost ${spec.name}: --${flag}: ${message}. Run 'outpost ${spec.name} --help' for the options.`,
  );
}

// Public keys arrive as the base64 key itself or as the path of a key file holding it: operators
// pin the key they were sent, or point at the key file they just made with `outpost keygen`.
export async function resolvePublicKey(spec: Pick<Command, 'name'>, flag: string, value: string): Promise<string> {
  if (base64Key32Schema.safeParse(value).success) return value;
  const isFile = await fs.stat(value).then(
    (s) => s.isFile(),
    () => false,
  );
  if (!isFile)
    throw usageError(
      spec,
      flag,
      `${JSON.stringify(value)} is neither a base64 Ed25519 public key (44 characters) nor an existing key file`,
    );
  try {
    return (await readKeyFile(value)).publicKey;
  } catch (error) {
    throw new Error(`--${flag}: ${(error as Error).message}`);
  }
}

export async function resolvePublicKeys(
  spec: Pick<Command, 'name'>,
  flag: string,
  values: string[],
): Promise<string[]> {
  const keys: string[] = [];
  for (const value of values) keys.push(await resolvePublicKey(spec, flag, value));
  return [...new Set(keys)];
}

// SSH public keys arrive as the key text itself ('ssh-ed25519 AAAA… alice@laptop') or as a file:
// a .pub file, or an authorized_keys-style list (blank and # lines skipped). Every key is checked
// as the policy checks it, and a bad one is reported with its file and line.
const MAX_SSH_KEY_FILE_BYTES = 256 * 1024;

export async function resolveSshPublicKeys(
  spec: Pick<Command, 'name'>,
  flag: string,
  values: string[],
): Promise<string[]> {
  const keys: string[] = [];
  for (const value of values) {
    const direct = parseSshPublicKey(value);
    if (direct.ok) {
      keys.push(value);
      continue;
    }
    const stat = await fs.stat(value).catch(() => null);
    if (!stat?.isFile()) {
      if (value.includes(' ')) throw usageError(spec, flag, direct.reason);
      throw usageError(
        spec,
        flag,
        `${JSON.stringify(value.slice(0, 80))} is neither an SSH public key nor an existing file`,
      );
    }
    if (stat.size > MAX_SSH_KEY_FILE_BYTES)
      throw usageError(
        spec,
        flag,
        `${value} has ${stat.size} bytes; a file of SSH public keys is at most ${MAX_SSH_KEY_FILE_BYTES}`,
      );
    const lines = (await fs.readFile(value, 'utf8')).split('\n');
    let found = 0;
    for (const [i, raw] of lines.entries()) {
      const line = raw.replace(/\r$/, '');
      if (line.trim() === '' || line.startsWith('#')) continue;
      const parsed = parseSshPublicKey(line);
      if (!parsed.ok) throw usageError(spec, flag, `${value}:${i + 1}: ${parsed.reason}`);
      keys.push(line);
      found += 1;
    }
    if (found === 0) throw usageError(spec, flag, `${value} holds no SSH public key`);
  }
  const unique = [...new Set(keys)];
  if (unique.length > MAX_KEYS_PER_LOGIN)
    throw usageError(spec, flag, `${unique.length} keys given; a login holds at most ${MAX_KEYS_PER_LOGIN}`);
  return unique;
}

export function printResult(json: boolean, value: unknown, human: string[]): void {
  console.log(json ? JSON.stringify(value, null, 2) : human.join('\n'));
}

// Options and schemas every policy and enroll subcommand spells the same way.
export const jsonOption = option(z.boolean().default(false), { description: 'print the outcome as JSON' });
export const timeoutOption = option(durationSchema.prefault('15s'), {
  placeholder: 'DURATION',
  description: 'how long to wait for the coordinator',
  common: 'timeout',
});
export const coordinatorUrlSchema = z
  .string({ error: 'give the coordinator URL, ws:// or wss://' })
  .regex(/^wss?:\/\//, 'expected a ws:// or wss:// URL');
export const fileSchema = (what: string) => z.string({ error: `give ${what}` }).min(1, `give ${what}`);
export const keyListSchema = z.array(z.string().min(1)).default([]);
// An intent, a rollout plan and a policy each carry at most 16 signatures (their schemas), so a
// higher threshold could never be met: refused when the policy is written, not found out later.
export const MAX_THRESHOLD = 16;
export const thresholdSchema = z.coerce
  .number({ error: 'expected a whole number' })
  .int('expected a whole number')
  .positive('expected 1 or more')
  .max(
    MAX_THRESHOLD,
    `at most ${MAX_THRESHOLD}: an intent, plan or policy carries at most ${MAX_THRESHOLD} signatures`,
  );
export const versionSchema = z.coerce
  .number({ error: 'expected a policy version number' })
  .int('expected a whole number')
  .positive('policy versions start at 1');
export const requiredListSchema = (what: string) =>
  z.array(z.string().min(1), { error: `give ${what}` }).min(1, `give ${what}`);
