import { promises as fs } from 'node:fs';
import { dirname } from 'node:path';
import { keyFileFromSigningKey, keyFileSchema, type SigningKey, signingKeyFromKeyFile } from '../crypto/keys.js';

// Key files on disk (mode 0600, never overwritten); the key material itself is core (crypto/keys.ts).
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
