import { z } from 'zod';
import { fromBase64 } from '../crypto/encoding.js';
import { hostIdSchema, policyNameSchema } from './primitives.js';

// Login access in the signed policy (docs/access.md): which person may log in as which local
// account on which hosts, with their OpenSSH public keys. Agents write these keys into the files
// sshd reads (AuthorizedKeysFile), so every key is checked here to be exactly one key and nothing
// else: no authorized_keys options (command=, from=, restrict…), no second line, no control
// characters, and a key blob that is what its type says.

// The key types this version writes. A key of another type that is otherwise well formed (a type
// a newer outpost allows) still parses, so that an older agent does not refuse the whole policy
// and with it every revocation; such a key grants nothing here (loginsForHost skips it) and is
// named by unknownLoginFields. Authoring commands refuse it.
export const SSH_KEY_TYPES = [
  'ssh-ed25519',
  'ecdsa-sha2-nistp256',
  'ecdsa-sha2-nistp384',
  'ecdsa-sha2-nistp521',
  'sk-ssh-ed25519@openssh.com',
  'sk-ecdsa-sha2-nistp256@openssh.com',
  'ssh-rsa',
] as const;
export type SshKeyType = (typeof SSH_KEY_TYPES)[number];
export const isKnownSshKeyType = (type: string): type is SshKeyType =>
  (SSH_KEY_TYPES as readonly string[]).includes(type);

export const MAX_LOGINS = 1000;
export const MAX_KEYS_PER_LOGIN = 16;
// An RSA key of 16384 bits is about 2,800 base64 characters.
export const MAX_SSH_KEY_CHARS = 4096;
export const MAX_SSH_KEY_COMMENT = 256;
export const MIN_RSA_BITS = 2048;
export const MAX_RSA_BITS = 16384;

// A unix user name as useradd accepts it by default (NAME_REGEX), at most 32 characters: no dots,
// so no "." or ".." (the agent's file for an account is named after it), no slashes.
export const accountSchema = z
  .string()
  .regex(
    /^[a-z_][a-z0-9_-]{0,31}$/,
    'account names are unix user names: 1-32 lowercase letters, digits, dashes or underscores, not starting with a digit or dash',
  );

export interface SshPublicKey {
  type: string;
  // The key's type and base64 blob, as one authorized_keys line holds them (without a comment).
  key: string;
  comment: string | null;
  known: boolean;
}

export type SshKeyParse = { ok: true; key: SshPublicKey } | { ok: false; reason: string };

const KEY_HINT =
  "give the key as the .pub file holds it: '<type> <base64> [comment]', e.g. 'ssh-ed25519 AAAAC3… alice@laptop'";
// Option names of authorized_keys (sshd(8), AUTHORIZED_KEYS FILE FORMAT), to say what is wrong.
const OPTION_NAMES =
  /^(agent-forwarding|cert-authority|command|environment|expiry-time|from|no-agent-forwarding|no-port-forwarding|no-pty|no-user-rc|no-x11-forwarding|permitlisten|permitopen|port-forwarding|principals|pty|no-touch-required|verify-required|restrict|tunnel|user-rc|x11-forwarding)\b/i;
const TYPE_PATTERN = /^[a-z0-9][a-z0-9@.-]{0,63}$/;
const BASE64_PATTERN = /^[A-Za-z0-9+/]+={0,2}$/;
// Printable ASCII: a comment is a label for people; sshd ends a key line at a newline, and a
// control character or non-ASCII text has no business in a file sshd parses.
const COMMENT_PATTERN = /^[\x21-\x7e][\x20-\x7e]*$/;

// The SSH wire format's strings (RFC 4251, section 5): a 32-bit length, then the bytes.
function readStrings(blob: Uint8Array): Uint8Array[] | null {
  const out: Uint8Array[] = [];
  let at = 0;
  while (at < blob.length) {
    if (at + 4 > blob.length || out.length >= 8) return null;
    const length = ((blob[at]! << 24) | (blob[at + 1]! << 16) | (blob[at + 2]! << 8) | blob[at + 3]!) >>> 0;
    at += 4;
    if (length > blob.length - at) return null;
    out.push(blob.subarray(at, at + length));
    at += length;
  }
  return out;
}

const ascii = (bytes: Uint8Array): string => String.fromCharCode(...bytes);

// Bits of an SSH mpint (two's complement, big-endian; a positive one may start with a zero byte).
function mpintBits(bytes: Uint8Array): number {
  let i = 0;
  while (i < bytes.length && bytes[i] === 0) i += 1;
  if (i === bytes.length) return 0;
  return (bytes.length - i - 1) * 8 + (32 - Math.clz32(bytes[i]!));
}

const ECDSA_POINT_BYTES: Record<string, number> = { nistp256: 65, nistp384: 97, nistp521: 133 };

// Null when the blob (the base64's bytes) is a well-formed public key of `type`; else what is wrong.
function blobProblem(type: SshKeyType, fields: Uint8Array[]): string | null {
  const count = (n: number): string | null =>
    fields.length === n ? null : `a ${type} key has ${n} fields, this one ${fields.length}`;
  const point = (curve: Uint8Array, q: Uint8Array, expected: string): string | null => {
    if (ascii(curve) !== expected) return `the key names curve ${JSON.stringify(ascii(curve))}, its type ${expected}`;
    if (q.length !== ECDSA_POINT_BYTES[expected] || q[0] !== 4) return `its ${expected} point is malformed`;
    return null;
  };
  switch (type) {
    case 'ssh-ed25519':
      return count(2) ?? (fields[1]!.length === 32 ? null : 'its Ed25519 key is not 32 bytes');
    case 'sk-ssh-ed25519@openssh.com':
      return count(3) ?? (fields[1]!.length === 32 ? null : 'its Ed25519 key is not 32 bytes');
    case 'ecdsa-sha2-nistp256':
    case 'ecdsa-sha2-nistp384':
    case 'ecdsa-sha2-nistp521':
      return count(3) ?? point(fields[1]!, fields[2]!, type.slice('ecdsa-sha2-'.length));
    case 'sk-ecdsa-sha2-nistp256@openssh.com':
      return count(4) ?? point(fields[1]!, fields[2]!, 'nistp256');
    case 'ssh-rsa': {
      const problem = count(3);
      if (problem) return problem;
      const bits = mpintBits(fields[2]!);
      if (bits < MIN_RSA_BITS) return `its RSA modulus has ${bits} bits, at least ${MIN_RSA_BITS} are required`;
      if (bits > MAX_RSA_BITS) return `its RSA modulus has ${bits} bits, at most ${MAX_RSA_BITS}`;
      return mpintBits(fields[1]!) > 0 ? null : 'its RSA exponent is zero';
    }
  }
}

// One OpenSSH public key, exactly '<type> <base64> [comment]' (single spaces), checked as sshd
// would read it plus what makes it safe to write into authorized_keys.
export function parseSshPublicKey(text: string): SshKeyParse {
  const fail = (reason: string): SshKeyParse => ({ ok: false, reason });
  if (text.length > MAX_SSH_KEY_CHARS)
    return fail(`an SSH public key is at most ${MAX_SSH_KEY_CHARS} characters, this one ${text.length}`);
  if (/[\r\n\u2028\u2029]/.test(text))
    return fail(`an SSH public key is one line; this one has a line break. ${KEY_HINT}`);
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what is refused
  if (/[\x00-\x1f\x7f]/.test(text))
    return fail(`an SSH public key has no control characters (tabs included). ${KEY_HINT}`);
  const parts = text.split(' ');
  const [type = '', base64 = ''] = parts;
  const comment = parts.length > 2 ? parts.slice(2).join(' ') : null;
  if (OPTION_NAMES.test(type) || /[=,"]/.test(type))
    return fail(
      `authorized_keys options (command=, from=, restrict, no-pty …) are not allowed in the policy, only the key itself. ${KEY_HINT}`,
    );
  if (!TYPE_PATTERN.test(type)) return fail(`${JSON.stringify(type.slice(0, 40))} is not an SSH key type. ${KEY_HINT}`);
  if (!BASE64_PATTERN.test(base64)) return fail(`the key after ${type} is not base64. ${KEY_HINT}`);
  if (comment !== null) {
    if (comment.length > MAX_SSH_KEY_COMMENT)
      return fail(`the key's comment is at most ${MAX_SSH_KEY_COMMENT} characters, this one ${comment.length}`);
    if (!COMMENT_PATTERN.test(comment))
      return fail("the key's comment is printable ASCII after a single space (no leading space, no other characters)");
  }
  let blob: Uint8Array;
  try {
    blob = fromBase64(base64);
  } catch (error) {
    return fail(`the key after ${type} is ${(error as Error).message}`);
  }
  const fields = readStrings(blob);
  if (!fields || fields.length === 0) return fail(`the ${type} key's bytes are not an SSH public key`);
  const embedded = ascii(fields[0]!);
  if (embedded !== type)
    return fail(
      `the line says ${type} but the key inside is ${JSON.stringify(embedded.slice(0, 64))}: a mislabelled or altered key`,
    );
  const known = isKnownSshKeyType(type);
  if (known) {
    const problem = blobProblem(type, fields);
    if (problem) return fail(`the ${type} key is malformed: ${problem}`);
  }
  return { ok: true, key: { type, key: `${type} ${base64}`, comment, known } };
}

export const sshPublicKeySchema = z
  .string()
  .max(MAX_SSH_KEY_CHARS, `an SSH public key is at most ${MAX_SSH_KEY_CHARS} characters`)
  .superRefine((text, ctx) => {
    const parsed = parseSshPublicKey(text);
    if (!parsed.ok) ctx.addIssue({ code: 'custom', message: parsed.reason });
  });

// Optional fields without defaults, like channels: a policy without logins keeps its exact content.
export const loginSchema = z.looseObject({
  // The person (or team) the keys belong to; unique among the policy's logins.
  name: policyNameSchema,
  // The local account the keys log in as.
  account: accountSchema,
  sshKeys: z.array(sshPublicKeySchema).min(1, 'a login needs at least one SSH key').max(MAX_KEYS_PER_LOGIN),
  // '*' is every host.
  hosts: z
    .array(z.union([hostIdSchema, z.literal('*')]))
    .max(10_000)
    .optional(),
  groups: z.array(policyNameSchema).max(1000).optional(),
});
export type Login = z.infer<typeof loginSchema>;
export const loginListSchema = z.array(loginSchema).max(MAX_LOGINS).optional();

export interface LoginCheckIssue {
  path: (string | number)[];
  message: string;
}

// Checks across a policy's logins (its superRefine calls this): names unique, groups defined.
export function loginIssues(logins: Login[] | undefined, groups: ReadonlySet<string>): LoginCheckIssue[] {
  const issues: LoginCheckIssue[] = [];
  const names = new Set<string>();
  for (const [i, login] of (logins ?? []).entries()) {
    if (names.has(login.name))
      issues.push({ path: ['logins', i, 'name'], message: `login ${login.name} is declared twice` });
    names.add(login.name);
    for (const group of login.groups ?? [])
      if (!groups.has(group))
        issues.push({ path: ['logins', i, 'groups'], message: `login ${login.name} names unknown group ${group}` });
  }
  return issues;
}

// Paths of what this version does not know in the logins: fields, and keys of types it does not write.
export function unknownLoginFields(logins: Login[] | undefined): string[] {
  const unknown: string[] = [];
  const known = Object.keys(loginSchema.shape);
  for (const [i, login] of (logins ?? []).entries()) {
    for (const field of Object.keys(login)) if (!known.includes(field)) unknown.push(`logins.${i}.${field}`);
    for (const [k, text] of login.sshKeys.entries()) {
      const parsed = parseSshPublicKey(text);
      if (parsed.ok && !parsed.key.known) unknown.push(`logins.${i}.sshKeys.${k} (key type ${parsed.key.type})`);
    }
  }
  return unknown;
}

// What an agent enforces, in its signed status: the policy version its authorized-keys files were
// written from, how many keys each account has, and a digest of the keys (accessDigest) that an
// admin compares with what the policy gives the host. `error`: the last write failed (the files
// still hold what the rest says).
export const MAX_REPORTED_ACCOUNTS = 1000;
export const accessStatusSchema = z.looseObject({
  policyVersion: z.number().int().positive(),
  accounts: z
    .record(
      accountSchema,
      z
        .number()
        .int()
        .nonnegative()
        .max(MAX_LOGINS * MAX_KEYS_PER_LOGIN),
    )
    .refine((accounts) => Object.keys(accounts).length <= MAX_REPORTED_ACCOUNTS, {
      message: `at most ${MAX_REPORTED_ACCOUNTS} accounts`,
    }),
  digest: z.string().regex(/^[0-9a-f]{64}$/),
  error: z.string().max(1000).optional(),
});
export type AccessStatus = z.infer<typeof accessStatusSchema>;
