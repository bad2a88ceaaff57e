import { promises as fs } from 'node:fs';
import { z } from 'zod';
import { durationSchema } from '../cli/duration.js';
import { type Command, option, UsageError } from '../cli/options.js';
import { readKeyFile } from '../shared/node/key-file.js';
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
