import { promises as fs } from 'node:fs';
import { z } from 'zod';
import { durationSchema } from '../cli/duration.js';
import { type CommandSpec, type FlagSpec, parseFlags, renderHelp, UsageError } from '../cli/flags.js';
import { readKeyFile } from '../shared/node/key-file.js';
import { base64Key32Schema } from '../shared/schemas/primitives.js';

// Commands with subcommands (`outpost policy sign`, `outpost enroll approve`): each subcommand is a
// CommandSpec named "<group> <sub>", so parseFlags and renderHelp name it fully in every message.
export interface Subcommand {
  spec: CommandSpec;
  run(argv: string[]): Promise<number>;
}

export interface CommandGroup {
  name: string;
  summary: string;
  subcommands: Subcommand[];
  notes?: string[];
}

export function subcommand<S extends z.ZodType>(
  spec: CommandSpec,
  schema: S,
  action: (options: z.infer<S>) => Promise<number>,
): Subcommand {
  return {
    spec,
    async run(argv) {
      const parsed = parseFlags(spec, argv, schema);
      if (parsed.help) {
        console.log(renderHelp(spec));
        return 0;
      }
      return action(parsed.value);
    },
  };
}

const subName = (group: CommandGroup, sub: Subcommand): string => sub.spec.name.slice(group.name.length + 1);

export function renderGroupHelp(group: CommandGroup): string {
  const names = group.subcommands.map((s) => subName(group, s));
  const width = Math.max(...names.map((n) => n.length)) + 2;
  return [
    `outpost ${group.name} — ${group.summary}`,
    '',
    `Usage: outpost ${group.name} <subcommand> [options]     (outpost ${group.name} <subcommand> --help for its options)`,
    '',
    'Subcommands:',
    ...group.subcommands.map((s, i) => `  ${names[i]!.padEnd(width)}${s.spec.summary}`),
    ...(group.notes?.length ? ['', ...group.notes] : []),
  ].join('\n');
}

export async function runGroup(group: CommandGroup, argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === '--help' || name === '-h' || name === 'help') {
    console.log(renderGroupHelp(group));
    return 0;
  }
  if (!name) {
    console.error(renderGroupHelp(group));
    return 2;
  }
  const found = group.subcommands.find((s) => subName(group, s) === name);
  if (!found) {
    const known = group.subcommands.map((s) => subName(group, s)).join(', ');
    throw new UsageError(
      `outpost ${group.name}: unknown subcommand '${name}'; expected one of ${known}. Run 'outpost ${group.name} --help'.`,
    );
  }
  return found.run(rest);
}

export function usageError(spec: CommandSpec, flag: string, message: string): UsageError {
  return new UsageError(
    `outpost ${spec.name}: --${flag}: ${message}. Run 'outpost ${spec.name} --help' for the options.`,
  );
}

// Public keys arrive as the base64 key itself or as the path of a key file holding it: operators
// pin the key they were sent, or point at the key file they just made with `outpost keygen`.
export async function resolvePublicKey(spec: CommandSpec, flag: string, value: string): Promise<string> {
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

export async function resolvePublicKeys(spec: CommandSpec, flag: string, values: string[]): Promise<string[]> {
  const keys: string[] = [];
  for (const value of values) keys.push(await resolvePublicKey(spec, flag, value));
  return [...new Set(keys)];
}

export function printResult(json: boolean, value: unknown, human: string[]): void {
  console.log(json ? JSON.stringify(value, null, 2) : human.join('\n'));
}

// Flags and option schemas every policy and enroll subcommand spells the same way.
export const jsonFlag: FlagSpec = { name: 'json', kind: 'boolean', description: 'print the outcome as JSON' };
export const timeoutFlag: FlagSpec = {
  name: 'timeout',
  kind: 'string',
  placeholder: 'DURATION',
  description: 'how long to wait for the coordinator',
  defaultText: '15s',
};
export const jsonOption = z.boolean().default(false);
export const timeoutOption = durationSchema.prefault('15s');
export const coordinatorUrlSchema = z
  .string({ error: 'give the coordinator URL, ws:// or wss://' })
  .regex(/^wss?:\/\//, 'expected a ws:// or wss:// URL');
export const fileSchema = (what: string) => z.string({ error: `give ${what}` }).min(1, `give ${what}`);
export const keyListSchema = z.array(z.string().min(1)).default([]);
export const thresholdSchema = z.coerce
  .number({ error: 'expected a whole number' })
  .int('expected a whole number')
  .positive('expected 1 or more');
export const versionSchema = z.coerce
  .number({ error: 'expected a policy version number' })
  .int('expected a whole number')
  .positive('policy versions start at 1');
export const requiredListSchema = (what: string) =>
  z.array(z.string().min(1), { error: `give ${what}` }).min(1, `give ${what}`);
