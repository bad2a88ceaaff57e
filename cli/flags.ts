import { parseArgs } from 'node:util';
import { z } from 'zod';
import { UsageError } from './options.js';

export { UsageError };

// Each command declares its flags once: the table drives parsing, --help, and the NixOS module
// test that checks every daemon flag is reachable from a module option.
export interface FlagSpec {
  name: string;
  kind: 'string' | 'boolean';
  multiple?: boolean;
  description: string;
  placeholder?: string;
  defaultText?: string;
}

export interface CommandSpec {
  name: string;
  summary: string;
  usage: string;
  flags: FlagSpec[];
  examples?: string[];
}

export function renderHelp(spec: CommandSpec): string {
  const lines = [`outpost ${spec.name} — ${spec.summary}`, '', `Usage: ${spec.usage}`, '', 'Options:'];
  const all = [...spec.flags, { name: 'help', kind: 'boolean', description: 'show this help' } satisfies FlagSpec];
  const left = all.map((f) => `  --${f.name}${f.kind === 'string' ? ` ${f.placeholder ?? 'VALUE'}` : ''}`);
  const width = Math.max(...left.map((l) => l.length)) + 2;
  all.forEach((f, i) => {
    const extra = [f.multiple ? 'repeatable' : '', f.defaultText ? `default: ${f.defaultText}` : '']
      .filter(Boolean)
      .join('; ');
    lines.push(`${left[i]!.padEnd(width)}${f.description}${extra ? ` (${extra})` : ''}`);
  });
  if (spec.examples?.length) lines.push('', 'Examples:', ...spec.examples.map((e) => `  ${e}`));
  return lines.join('\n');
}

export type RawFlags = Record<string, string | boolean | string[] | undefined>;

// Parses argv against the table, then validates with the command's zod schema. Errors name the
// flag and say how to fix it, and point at --help.
export function parseFlags<S extends z.ZodType>(
  spec: CommandSpec,
  argv: string[],
  schema: S,
): { help: true } | { help: false; value: z.infer<S> } {
  const options: Record<string, { type: 'string' | 'boolean'; multiple?: boolean }> = { help: { type: 'boolean' } };
  for (const f of spec.flags) options[f.name] = { type: f.kind, ...(f.multiple ? { multiple: true } : {}) };
  let values: RawFlags;
  try {
    ({ values } = parseArgs({ args: argv, options, strict: true, allowPositionals: false }) as { values: RawFlags });
  } catch (error) {
    throw new UsageError(
      `outpost ${spec.name}: ${(error as Error).message}. Run 'outpost ${spec.name} --help' for the options.`,
    );
  }
  if (values.help) return { help: true };
  const camel: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(values))
    if (k !== 'help' && v !== undefined) camel[k.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase())] = v;
  const parsed = schema.safeParse(camel);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => {
      const key = String(issue.path[0] ?? '');
      const flag = key ? `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}` : 'arguments';
      return `${flag}: ${issue.message}`;
    });
    throw new UsageError(
      `outpost ${spec.name}: ${problems.join('; ')}. Run 'outpost ${spec.name} --help' for the options.`,
    );
  }
  return { help: false, value: parsed.data };
}

// Flag values arrive as strings; these coerce and bound them with a readable message.
export const secondsFlag = (fallback: number, max = 30 * 24 * 3600) =>
  z.coerce.number({ message: 'expected a number of seconds' }).positive().max(max).default(fallback);
export const bytesFlag = (fallback: number) =>
  z.coerce.number({ message: 'expected a number of bytes' }).int().positive().default(fallback);
export const listFlag = <T extends z.ZodType>(item: T) => z.array(item).default([]);
