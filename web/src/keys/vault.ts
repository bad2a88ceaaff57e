import { z } from 'zod';
import { canonicalJson } from '../../../shared/crypto/canonical.js';
import { fromBase64, toBase64, utf8Bytes } from '../../../shared/crypto/encoding.js';
import {
  generateSigningKey,
  keyFileFromSigningKey,
  keyFileSchema,
  type SigningKey,
  signingKeyFromKeyFile,
} from '../../../shared/crypto/keys.js';
import { idbDelete, idbGet, idbPut, idbValues } from '../storage/idb.js';

// Admin keys stay in this browser: stored in IndexedDB encrypted under a passphrase (PBKDF2-SHA256
// → AES-256-GCM), decrypted into this tab's memory when unlocked, never written anywhere in the
// clear and never sent (the server only ever sees signatures). AES-GCM's tag makes a wrong
// passphrase fail to decrypt: nothing is unlocked, nothing half-decrypted is used.
export const PBKDF2_ITERATIONS = 600_000;
export const MIN_PASSPHRASE_LENGTH = 10;

const storedKeySchema = z.object({
  version: z.literal(1),
  name: z.string(),
  publicKey: z.string(),
  kdf: z.object({
    name: z.literal('PBKDF2'),
    hash: z.literal('SHA-256'),
    iterations: z.number().int(),
    salt: z.string(),
  }),
  cipher: z.object({ name: z.literal('AES-GCM'), iv: z.string() }),
  ciphertext: z.string(),
  storedAt: z.string(),
});
export type StoredKey = z.infer<typeof storedKeySchema>;
export type KeySummary = Pick<StoredKey, 'name' | 'publicKey' | 'storedAt'>;

export class VaultError extends Error {
  override name = 'VaultError';
}

function requireWebCrypto(): SubtleCrypto {
  if (!globalThis.crypto?.subtle)
    throw new VaultError(
      'this page has no WebCrypto (browsers offer it only on https:// or localhost): open the editor over https (coordinator --tls-cert) or on 127.0.0.1',
    );
  return globalThis.crypto.subtle;
}

// The additional data binds the ciphertext to the key it claims to hold.
const additionalData = (publicKey: string): Uint8Array<ArrayBuffer> =>
  new Uint8Array(utf8Bytes(`outpost-web-key-v1\n${publicKey}`));
const buffer = (bytes: Uint8Array): Uint8Array<ArrayBuffer> => new Uint8Array(bytes);

async function deriveKey(passphrase: string, salt: Uint8Array, iterations: number): Promise<CryptoKey> {
  const subtle = requireWebCrypto();
  const material = await subtle.importKey('raw', buffer(utf8Bytes(passphrase)), 'PBKDF2', false, ['deriveKey']);
  return subtle.deriveKey(
    { name: 'PBKDF2', hash: 'SHA-256', salt: buffer(salt), iterations },
    material,
    { name: 'AES-GCM', length: 256 },
    false,
    ['encrypt', 'decrypt'],
  );
}

export async function storeKey(key: SigningKey, passphrase: string): Promise<KeySummary> {
  if (passphrase.length < MIN_PASSPHRASE_LENGTH)
    throw new VaultError(`choose a passphrase of at least ${MIN_PASSPHRASE_LENGTH} characters`);
  const subtle = requireWebCrypto();
  const salt = crypto.getRandomValues(new Uint8Array(16));
  const iv = crypto.getRandomValues(new Uint8Array(12));
  const aes = await deriveKey(passphrase, salt, PBKDF2_ITERATIONS);
  const plaintext = utf8Bytes(canonicalJson(keyFileFromSigningKey(key)));
  const ciphertext = new Uint8Array(
    await subtle.encrypt(
      { name: 'AES-GCM', iv, additionalData: additionalData(key.publicKey) },
      aes,
      buffer(plaintext),
    ),
  );
  plaintext.fill(0);
  const stored: StoredKey = {
    version: 1,
    name: key.name,
    publicKey: key.publicKey,
    kdf: { name: 'PBKDF2', hash: 'SHA-256', iterations: PBKDF2_ITERATIONS, salt: toBase64(salt) },
    cipher: { name: 'AES-GCM', iv: toBase64(iv) },
    ciphertext: toBase64(ciphertext),
    storedAt: new Date().toISOString(),
  };
  await idbPut('keys', key.publicKey, stored);
  return { name: stored.name, publicKey: stored.publicKey, storedAt: stored.storedAt };
}

// A key file's text (as `outpost keygen` writes it), checked: its public key must match its secret.
export function parseKeyFileText(text: string): SigningKey {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new VaultError('that is not a key file: it is not JSON (expected what outpost keygen writes)');
  }
  const parsed = keyFileSchema.safeParse(json);
  if (!parsed.success)
    throw new VaultError(
      `that is not an outpost key file: ${parsed.error.issues[0]?.path.join('.') || 'file'}: ${parsed.error.issues[0]?.message}`,
    );
  try {
    return signingKeyFromKeyFile(parsed.data, 'the key file');
  } catch (error) {
    throw new VaultError((error as Error).message);
  }
}

export function createKey(name: string): SigningKey {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(name))
    throw new VaultError('name the key with 1-64 letters, digits, dots, dashes or underscores (your admin name)');
  return generateSigningKey(name);
}

export async function listKeys(): Promise<KeySummary[]> {
  const values = await idbValues('keys');
  return values
    .map((v) => storedKeySchema.safeParse(v))
    .filter((p) => p.success)
    .map(({ data }) => ({ name: data.name, publicKey: data.publicKey, storedAt: data.storedAt }));
}

export async function unlockKey(publicKey: string, passphrase: string): Promise<SigningKey> {
  const parsed = storedKeySchema.safeParse(await idbGet('keys', publicKey));
  if (!parsed.success) throw new VaultError('no such key in this browser; import it again');
  const stored = parsed.data;
  const aes = await deriveKey(passphrase, fromBase64(stored.kdf.salt), stored.kdf.iterations);
  let plaintext: Uint8Array;
  try {
    plaintext = new Uint8Array(
      await requireWebCrypto().decrypt(
        { name: 'AES-GCM', iv: buffer(fromBase64(stored.cipher.iv)), additionalData: additionalData(stored.publicKey) },
        aes,
        buffer(fromBase64(stored.ciphertext)),
      ),
    );
  } catch {
    throw new VaultError('wrong passphrase: nothing was unlocked');
  }
  const key = parseKeyFileText(new TextDecoder().decode(plaintext));
  plaintext.fill(0);
  if (key.publicKey !== stored.publicKey) throw new VaultError('the stored key is corrupt; import it again');
  return key;
}

export const forgetKey = (publicKey: string): Promise<void> => idbDelete('keys', publicKey);

// The key file to save elsewhere (created keys exist nowhere else).
export function keyFileText(key: SigningKey): string {
  return `${JSON.stringify(keyFileFromSigningKey(key), null, 2)}\n`;
}
