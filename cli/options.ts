import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { z } from 'zod';
import { base64Key32Schema } from '../shared/schemas/primitives.js';
import { durationSchema } from './duration.js';

// One declaration per option: a command's options are one zod object whose fields carry their
// help text in `optionRegistry`. Parsing, --help, `--help --json` (read by the NixOS module test)
// and every default the agent or a module needs come from that object; nothing else restates them.

export interface OptionMeta {
  description: string;
  // The value's name in --help (FILE, SECONDS, URL); boolean flags have none.
  placeholder?: string;
  // A default that is not one value ("the host's", "one above the highest issued"); a default
  // declared in the schema (.default / .prefault) is shown without this.
  defaultText?: string;
  // An environment variable read when the flag is not given (the flag wins).
  env?: string;
  // A setting every admin command shares (the coordinator, your admin key…): taken from the
  // flag, else its environment variable, else the admin config file. Opt-in per option, because
  // the same flag name can mean another thing elsewhere (`enroll request --key` is a host key).
  common?: CommonSetting;
}

// The settings an admin repeats on every call, declared once: the environment variable and the
// config file field (the setting's name) each stands for, and what the file may hold there.
export const commonSettings = {
  coordinator: {
    env: 'OUTPOST_COORDINATOR',
    // One URL, or several coordinators of one fleet (the first that answers is used).
    file: z.union([
      z.string().regex(/^wss?:\/\//, 'expected a ws:// or wss:// URL'),
      z
        .array(z.string().regex(/^wss?:\/\//, 'expected a ws:// or wss:// URL'))
        .min(1, 'expected at least one URL')
        .max(8, 'at most 8 URLs'),
    ]),
  },
  key: {
    env: 'OUTPOST_KEY',
    file: z.string().min(1, 'expected the path of your admin key file'),
  },
  orgRoot: {
    env: 'OUTPOST_ORG_ROOT',
    file: z
      .array(z.string().min(1, 'expected a base64 public key or a key file'), {
        error: 'expected a list of pinned org root keys (base64, or key files)',
      })
      .max(64, 'at most 64 keys'),
  },
  timeout: {
    env: 'OUTPOST_TIMEOUT',
    file: z.union(
      [
        z
          .number()
          .positive('must be more than 0 seconds')
          .max(30 * 86_400, 'must be at most 30 days'),
        durationSchema,
      ],
      {
        error: 'expected a duration such as 15, "90s" or "2m"',
      },
    ),
  },
} as const;
export type CommonSetting = keyof typeof commonSettings;

export const CONFIG_ENV = 'OUTPOST_CONFIG';
const CONFIG_MAX_BYTES = 64 * 1024;

// Unknown fields are refused: a typo ("coordinater") would otherwise be ignored in silence.
const adminConfigSchema = z.strictObject(
  Object.fromEntries(Object.entries(commonSettings).map(([name, s]) => [name, s.file.optional()])) as {
    [K in CommonSetting]: z.ZodOptional<(typeof commonSettings)[K]['file']>;
  },
);

// Where the admin config file is: $OUTPOST_CONFIG, else $XDG_CONFIG_HOME/outpost/config.json,
// else ~/.config/outpost/config.json; none without a home (a bare test environment).
export function adminConfigPath(env: Record<string, string | undefined>): { path: string; explicit: boolean } | null {
  if (env[CONFIG_ENV]) return { path: resolve(env[CONFIG_ENV]), explicit: true };
  if (env.XDG_CONFIG_HOME && isAbsolute(env.XDG_CONFIG_HOME))
    return { path: join(env.XDG_CONFIG_HOME, 'outpost', 'config.json'), explicit: false };
  if (env.HOME) return { path: join(env.HOME, '.config', 'outpost', 'config.json'), explicit: false };
  return null;
}

export interface AdminConfig {
  path: string;
  // As the command line would give them: strings, and lists for repeatable options.
  values: Partial<Record<CommonSetting, string | string[]>>;
}

// Reads and checks the admin config file. A missing default file is no config; a missing file
// named by $OUTPOST_CONFIG, unreadable or invalid JSON, or a wrong field is an error naming the
// file and the field. Paths in it (key, org root key files) are relative to the file's folder.
export function readAdminConfig(env: Record<string, string | undefined>): AdminConfig | null {
  const where = adminConfigPath(env);
  if (!where) return null;
  const { path } = where;
  const fix = `fix it, or point $${CONFIG_ENV} at another file`;
  let text: string;
  try {
    const bytes = readFileSync(path);
    if (bytes.length > CONFIG_MAX_BYTES)
      throw new UsageError(`config file ${path}: ${bytes.length} bytes, more than ${CONFIG_MAX_BYTES}; ${fix}`);
    text = bytes.toString('utf8');
  } catch (error) {
    if (error instanceof UsageError) throw error;
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' && !where.explicit) return null;
    const why = code === 'ENOENT' ? 'does not exist' : `cannot be read (${(error as Error).message})`;
    throw new UsageError(`config file ${path}${where.explicit ? ` (from $${CONFIG_ENV})` : ''} ${why}`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (error) {
    throw new UsageError(`config file ${path}: not JSON (${(error as Error).message}); ${fix}`);
  }
  const parsed = adminConfigSchema.safeParse(raw, {
    error: (issue) =>
      issue.code === 'unrecognized_keys'
        ? `unknown field${issue.keys.length > 1 ? 's' : ''} ${issue.keys.join(', ')}; the known fields are ${Object.keys(commonSettings).join(', ')}`
        : issue.code === 'invalid_type' && (issue.path ?? []).length === 0
          ? `expected a JSON object such as {"coordinator": "wss://…", "key": "admin.key"}`
          : undefined,
  });
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => {
      const field = issue.path
        .map((p, i) => (typeof p === 'number' ? `[${p}]` : `${i ? '.' : ''}${String(p)}`))
        .join('');
      return `${field ? `field ${field}: ` : ''}${issue.message}`;
    });
    throw new UsageError(`config file ${path}: ${problems.join('; ')}; ${fix}`);
  }
  const folder = dirname(path);
  const home = env.HOME;
  const asPath = (file: string): string =>
    file.startsWith('~/') && home ? join(home, file.slice(2)) : resolve(folder, file);
  const values: AdminConfig['values'] = {};
  const c = parsed.data;
  if (c.coordinator !== undefined) values.coordinator = c.coordinator;
  if (c.key !== undefined) values.key = asPath(c.key);
  if (c.orgRoot !== undefined)
    values.orgRoot = c.orgRoot.map((k) => (base64Key32Schema.safeParse(k).success ? k : asPath(k)));
  // The command's own schema parses the duration again: hand it the text as typed.
  const rawTimeout = (raw as { timeout?: string | number }).timeout;
  if (rawTimeout !== undefined) values.timeout = String(rawTimeout);
  return { path, values };
}

export const optionRegistry = z.registry<OptionMeta>();

// Declares one option. The schema is cloned first, so a schema shared by several commands (a
// URL check, a timeout) can carry a different description in each.
export function option<T extends z.ZodType>(schema: T, meta: OptionMeta): T {
  const clone = schema.clone();
  optionRegistry.add(clone, meta);
  return clone;
}

export interface Command<S extends z.ZodObject = z.ZodObject> {
  // "agent", or "policy sign" for a subcommand: every message names the command in full.
  name: string;
  summary: string;
  usage: string;
  // Field names are the flags in camelCase (orgRoot is --org-root); cross-flag rules are
  // refinements whose path names the flag to blame.
  options: S;
  examples?: string[];
}

export class UsageError extends Error {}

export function defineCommand<S extends z.ZodObject>(command: Command<S>): Command<S> {
  for (const [key, schema] of Object.entries(command.options.shape))
    if (!optionRegistry.has(schema as z.ZodType))
      throw new Error(`outpost ${command.name}: option ${key} has no description; declare it with option()`);
  return command;
}

export const flagName = (key: string): string => key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);

export type OptionType = 'string' | 'number' | 'integer' | 'boolean' | 'enum';

// One option as --help and `--help --json` show it, derived from its schema and metadata.
export interface OptionInfo {
  key: string;
  name: string;
  type: OptionType;
  values?: string[];
  repeatable: boolean;
  required: boolean;
  // As given on the command line (so "64G", not bytes); absent when the option has none.
  default?: unknown;
  defaultText?: string;
  env?: string;
  // The admin config file's field that fills it when neither the flag nor `env` is given.
  configField?: CommonSetting;
  placeholder?: string;
  description: string;
}

type Schema = z.core.$ZodType;

// Wrappers that do not change what the flag takes on the command line.
function unwrap(schema: Schema): Schema | undefined {
  const def = schema._zod.def;
  switch (def.type) {
    case 'default':
    case 'prefault':
    case 'optional':
    case 'nullable':
    case 'nonoptional':
    case 'readonly':
    case 'catch':
      return (def as z.core.$ZodDefaultDef).innerType;
    case 'pipe':
      return (def as z.core.$ZodPipeDef).in;
    default:
      return undefined;
  }
}

function innermost(schema: Schema): Schema {
  let current = schema;
  for (let next = unwrap(current); next; next = unwrap(current)) current = next;
  return current;
}

function declaredDefault(schema: Schema): { value: unknown } | undefined {
  for (let current: Schema | undefined = schema; current; current = unwrap(current)) {
    const def = current._zod.def;
    if (def.type === 'default' || def.type === 'prefault')
      return { value: (def as z.core.$ZodDefaultDef).defaultValue };
  }
  return undefined;
}

function valueType(schema: Schema): Pick<OptionInfo, 'type' | 'values'> {
  const def = schema._zod.def;
  if (def.type === 'boolean') return { type: 'boolean' };
  if (def.type === 'enum')
    return { type: 'enum', values: Object.values((def as z.core.$ZodEnumDef).entries).map(String) };
  if (def.type === 'number') {
    const integer = (def.checks ?? []).some((check) => {
      const checkDef = check._zod.def as { check: string; format?: string };
      return checkDef.check === 'number_format' && checkDef.format?.includes('int');
    });
    return { type: integer ? 'integer' : 'number' };
  }
  return { type: 'string' };
}

export function describeOptions(command: Command): OptionInfo[] {
  return Object.entries(command.options.shape).map(([key, field]) => {
    const schema = field as z.ZodType;
    const meta = optionRegistry.get(schema);
    if (!meta) throw new Error(`outpost ${command.name}: option ${key} has no description`);
    const core = innermost(schema);
    const repeatable = core._zod.def.type === 'array';
    const required = !schema.safeParse(undefined).success;
    // A default that the option's own checks refuse (a list that must not be empty) is none.
    const declared = required ? undefined : declaredDefault(schema);
    return {
      key,
      name: flagName(key),
      ...valueType(repeatable ? innermost((core._zod.def as z.core.$ZodArrayDef).element) : core),
      repeatable,
      required,
      ...(declared ? { default: declared.value } : {}),
      ...(meta.defaultText ? { defaultText: meta.defaultText } : {}),
      ...(meta.env || meta.common ? { env: meta.env ?? commonSettings[meta.common!].env } : {}),
      ...(meta.common ? { configField: meta.common } : {}),
      ...(meta.placeholder ? { placeholder: meta.placeholder } : {}),
      description: meta.description,
    };
  });
}

// The machine-readable form of --help: `outpost <command> --help --json`.
export function commandJson(
  command: Command,
  env: Record<string, string | undefined> = process.env,
): {
  command: string;
  summary: string;
  usage: string;
  options: Omit<OptionInfo, 'key'>[];
  configFile?: { path: string | null; precedence: string[] };
} {
  const options = describeOptions(command).map(({ key: _key, ...shown }) => shown);
  const configFile = options.some((o) => o.configField)
    ? { configFile: { path: adminConfigPath(env)?.path ?? null, precedence: ['flag', 'environment', 'config file'] } }
    : {};
  return { command: command.name, summary: command.summary, usage: command.usage, options, ...configFile };
}

// The footer of --help for commands with common settings: where the file is and who wins.
function configFileHelp(env: Record<string, string | undefined>): string[] {
  const where = adminConfigPath(env);
  return [
    '',
    `Settings marked "config" may also come from the admin config file, ${where ? where.path : '(none: no $HOME)'}`,
    `(JSON; $${CONFIG_ENV} names another). A flag wins over its environment variable, which wins over the file.`,
  ];
}

const usageOf = (o: Pick<OptionInfo, 'name' | 'type' | 'placeholder'>): string =>
  `--${o.name}${o.type === 'boolean' ? '' : ` ${o.placeholder ?? 'VALUE'}`}`;

function defaultForHelp(o: OptionInfo): string | undefined {
  if (o.defaultText) return o.defaultText;
  const value = o.default;
  if (value === undefined || value === false || value === '' || (Array.isArray(value) && value.length === 0))
    return undefined;
  return Array.isArray(value) ? value.join(', ') : String(value);
}

export function renderHelp(command: Command, env: Record<string, string | undefined> = process.env): string {
  const lines = [`outpost ${command.name} — ${command.summary}`, '', `Usage: ${command.usage}`, '', 'Options:'];
  const help: OptionInfo = {
    key: 'help',
    name: 'help',
    type: 'boolean',
    repeatable: false,
    required: false,
    description: 'show this help (with --json: the options as JSON)',
  };
  const all = [...describeOptions(command), help];
  const left = all.map((o) => `  ${usageOf(o)}`);
  const width = Math.max(...left.map((l) => l.length)) + 2;
  all.forEach((o, i) => {
    const shown = defaultForHelp(o);
    const extra = [
      o.repeatable ? 'repeatable' : '',
      o.env ? `env: ${o.env}` : '',
      o.configField ? `config: ${o.configField}` : '',
      shown ? `default: ${shown}` : '',
    ]
      .filter(Boolean)
      .join('; ');
    lines.push(`${left[i]!.padEnd(width)}${o.description}${extra ? ` (${extra})` : ''}`);
  });
  if (all.some((o) => o.configField)) lines.push(...configFileHelp(env));
  if (command.examples?.length) lines.push('', 'Examples:', ...command.examples.map((e) => `  ${e}`));
  return lines.join('\n');
}

type RawValue = string | boolean | string[] | undefined;

const quote = (value: unknown): string => (typeof value === 'string' ? JSON.stringify(value) : String(value));
const times = (n: number): string => (n === 1 ? 'once' : `${n} times`);

// Our wording for every zod issue whose schema did not bring its own message: each names what
// is wrong and what to give instead, never zod's generic "Invalid input".
function explainIssue(issue: z.core.$ZodRawIssue, info: OptionInfo | undefined, raw: RawValue): string | undefined {
  const given = typeof raw === 'string' ? quote(raw) : quote(issue.input);
  const what = info ? `${info.description}` : 'see --help';
  switch (issue.code) {
    case 'invalid_type':
      if (raw === undefined && issue.input === undefined)
        return info ? `missing: give ${usageOf(info)} — ${what}` : 'missing';
      if (issue.expected === 'number') return `expected a number, got ${given}`;
      return `expected a ${issue.expected}, got ${given}`;
    case 'invalid_value':
      return `expected one of ${issue.values.map(String).join(', ')}; got ${given}`;
    case 'too_small':
      if (issue.origin === 'array')
        return `give ${info ? `--${info.name}` : 'it'} at least ${times(Number(issue.minimum))}`;
      if (issue.origin === 'string')
        return Number(issue.minimum) <= 1 ? 'must not be empty' : `must be at least ${issue.minimum} characters`;
      return `must be ${issue.inclusive ? 'at least' : 'more than'} ${issue.minimum}, got ${given}`;
    case 'too_big':
      if (issue.origin === 'array')
        return `give ${info ? `--${info.name}` : 'it'} at most ${times(Number(issue.maximum))}`;
      if (issue.origin === 'string') return `must be at most ${issue.maximum} characters`;
      return `must be ${issue.inclusive ? 'at most' : 'less than'} ${issue.maximum}, got ${given}`;
    case 'not_multiple_of':
      return `must be a multiple of ${issue.divisor}, got ${given}`;
    default:
      return `${given} is not accepted: ${what}`;
  }
}

// One problem on one line; several as a list, one flag a line.
function formatProblems(command: Command, problems: string[]): string {
  const hint = `Run 'outpost ${command.name} --help' for the options.`;
  if (problems.length === 1) return `outpost ${command.name}: ${problems[0]}. ${hint}`;
  return [`outpost ${command.name}: ${problems.length} problems:`, ...problems.map((p) => `  ${p}`), hint].join('\n');
}

export type Parsed<S extends z.ZodObject> = { help: true; json: boolean } | { help: false; value: z.output<S> };

// argv → options. Errors are UsageErrors that name every flag at fault, what to give instead, and
// point at --help. `--help` wins over everything else; `--help --json` asks for the JSON form.
export function parseOptions<S extends z.ZodObject>(
  command: Command<S>,
  argv: string[],
  env: Record<string, string | undefined> = process.env,
): Parsed<S> {
  const infos = describeOptions(command);
  const byKey = new Map(infos.map((o) => [o.key, o]));
  const spec: Record<string, { type: 'string' | 'boolean'; multiple?: boolean }> = {
    help: { type: 'boolean' },
    json: { type: 'boolean' },
  };
  for (const o of infos)
    spec[o.name] = { type: o.type === 'boolean' ? 'boolean' : 'string', ...(o.repeatable ? { multiple: true } : {}) };
  const hint = `Run 'outpost ${command.name} --help' for the options.`;
  let values: Record<string, RawValue>;
  try {
    ({ values } = parseArgs({ args: argv, options: spec, strict: true, allowPositionals: false }) as {
      values: Record<string, RawValue>;
    });
  } catch (error) {
    const message = (error as Error).message;
    const valueless = /^Option '--([\w-]+)(?: <value>)?' argument missing/.exec(message)?.[1];
    const info = infos.find((o) => o.name === valueless);
    const problem = info
      ? `--${info.name}: needs a value: give ${usageOf(info)} — ${info.description}`
      : message.replace(/\. To specify a positional argument.*$/s, '').replace(/\s*\n\s*/g, ' ');
    throw new UsageError(`outpost ${command.name}: ${problem.replace(/\.$/, '')}. ${hint}`);
  }
  if (values.help) return { help: true, json: values.json === true };
  if (values.json !== undefined && !byKey.has('json'))
    throw new UsageError(`outpost ${command.name}: --json goes with --help here (--help --json). ${hint}`);
  const input: Record<string, RawValue> = {};
  // Where a value came from when no flag gave it, to name in an error: "$OUTPOST_KEY", "config file …".
  const source = new Map<string, string>();
  // Read only when a common setting is given by neither flag nor environment: a daemon never
  // reads an admin's file, and a broken file does not stop a call that names everything.
  let config: AdminConfig | null | undefined;
  for (const o of infos) {
    const envValue = o.env && o.type !== 'boolean' ? env[o.env] : undefined;
    if (values[o.name] === undefined && !envValue && o.configField && config === undefined)
      try {
        config = readAdminConfig(env);
      } catch (error) {
        throw error instanceof UsageError ? new UsageError(`outpost ${command.name}: ${error.message}`) : error;
      }
    const fileValue = o.configField ? config?.values[o.configField] : undefined;
    if (values[o.name] !== undefined) input[o.key] = values[o.name];
    else if (envValue) {
      // A list in one variable: keys never hold commas or spaces.
      input[o.key] = o.repeatable ? envValue.split(/[\s,]+/).filter(Boolean) : envValue;
      source.set(o.key, `$${o.env}`);
    } else if (fileValue !== undefined && config) {
      input[o.key] = o.repeatable ? [fileValue].flat() : [fileValue].flat().join(' ');
      source.set(o.key, `config file ${config.path}, field ${o.configField}`);
    }
  }
  const parsed = command.options.safeParse(input, {
    error: (issue) => {
      const key = String(issue.path?.[0] ?? '');
      const raw = input[key];
      const index = issue.path?.[1];
      return explainIssue(issue, byKey.get(key), Array.isArray(raw) && typeof index === 'number' ? raw[index] : raw);
    },
  });
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => {
      const key = String(issue.path[0] ?? '');
      const from = source.has(key) ? ` (from ${source.get(key)})` : '';
      return `${key ? `--${flagName(key)}${from}` : 'arguments'}: ${issue.message}`;
    });
    throw new UsageError(formatProblems(command, [...new Set(problems)]));
  }
  return { help: false, value: parsed.data };
}

// The value an option takes when its flag is not given (after parsing: seconds, bytes). For code
// that runs without the CLI (tests, library use) and must agree with it.
export function defaultOf<T extends z.ZodType>(schema: T): z.output<T> {
  const parsed = schema.safeParse(undefined);
  if (!parsed.success || parsed.data === undefined) throw new Error('this option has no default');
  return parsed.data;
}

// Flag values arrive as strings: a number flag says what it expected when the text is no number,
// and leaves bounds (too small, too big, not whole) to the kit's wording.
export const numberSchema = (what: string) =>
  z.coerce.number({ error: (issue) => (issue.code === 'invalid_type' ? `expected ${what}` : undefined) });
export const secondsSchema = (max = 30 * 24 * 3600) => numberSchema('a number of seconds').positive().max(max);
export const bytesSchema = () => numberSchema('a number of bytes').int().positive();
export const portSchema = numberSchema('a port number').int().min(0).max(65535);
export const logLevelSchema = z.enum(['trace', 'debug', 'info', 'warn', 'error'], {
  message: 'expected trace, debug, info, warn or error',
});

// --log-level of every daemon, declared once.
export const logLevelOption = option(logLevelSchema.default('info'), {
  placeholder: 'LEVEL',
  description: 'trace, debug, info, warn or error',
  env: 'OUTPOST_LOG_LEVEL',
});

export const urlSchema = (protocols: string[]) =>
  z.string().refine(
    (value) => {
      try {
        return protocols.includes(new URL(value).protocol);
      } catch {
        return false;
      }
    },
    `expected a URL starting with ${protocols.map((p) => `${p}//`).join(' or ')}`,
  );
