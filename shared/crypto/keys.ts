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
