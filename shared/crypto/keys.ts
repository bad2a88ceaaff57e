import { promises as fs } from 'node:fs';
import { dirname } from 'node:path';
import nacl from 'tweetnacl';
import { z } from 'zod';
import { base64Key32Schema } from '../schemas/primitives.js';
import { fromBase64, toBase64 } from './encoding.js';

export const keyFileSchema = z.object({
  kind: z.literal('outpost-secret-key'),
  name: z.string().min(1).max(128),
  publicKey: base64Key32Schema,
  secretKey: z.string().regex(/^[A-Za-z0-9+/]{86}==$/, 'expected a base64 Ed25519 secret key (88 characters)'),
});
export type KeyFile = z.infer<typeof keyFileSchema>;

export interface SigningKey {
  name: string;
  publicKey: string;
  secretKey: Uint8Array;
}

export function generateSigningKey(name: string): SigningKey {
  const pair = nacl.sign.keyPair();
  return { name, publicKey: toBase64(pair.publicKey), secretKey: pair.secretKey };
}

export function keyFileFromSigningKey(key: SigningKey): KeyFile {
  return { kind: 'outpost-secret-key', name: key.name, publicKey: key.publicKey, secretKey: toBase64(key.secretKey) };
}

export function signingKeyFromKeyFile(file: KeyFile, where: string): SigningKey {
  const secretKey = fromBase64(file.secretKey);
  const derived = nacl.sign.keyPair.fromSecretKey(secretKey);
  if (toBase64(derived.publicKey) !== file.publicKey) {
    throw new Error(
      `${where}: publicKey does not match secretKey; the key file is corrupt — regenerate it with 'outpost keygen'`,
    );
  }
  return { name: file.name, publicKey: file.publicKey, secretKey };
}

export async function writeKeyFile(path: string, key: SigningKey): Promise<void> {
  await fs.mkdir(dirname(path), { recursive: true });
  // 'wx': never overwrite an existing key by accident; losing a host or admin key is an outage.
  const handle = await fs.open(path, 'wx', 0o600);
  try {
    await handle.writeFile(`${JSON.stringify(keyFileFromSigningKey(key), null, 2)}\n`);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

export async function readKeyFile(path: string): Promise<SigningKey> {
  let text: string;
  try {
    text = await fs.readFile(path, 'utf8');
  } catch (error) {
    throw new Error(
      `cannot read key file ${path}: ${(error as Error).message}; create one with 'outpost keygen --out ${path}'`,
    );
  }
  const stat = await fs.stat(path);
  if ((stat.mode & 0o077) !== 0) {
    throw new Error(
      `key file ${path} is readable by group or others (mode ${(stat.mode & 0o777).toString(8)}); run 'chmod 600 ${path}'`,
    );
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new Error(`key file ${path} is not JSON; create a new one with 'outpost keygen'`);
  }
  const parsed = keyFileSchema.safeParse(json);
  if (!parsed.success) {
    throw new Error(
      `key file ${path} is invalid: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`,
    );
  }
  return signingKeyFromKeyFile(parsed.data, path);
}
