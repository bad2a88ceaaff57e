import nacl from 'tweetnacl';
import { concatBytes, fromBase64, toBase64 } from './encoding.js';
import type { SigningKey } from './keys.js';
import { type Signature, type SignedKind, signedBytes, verifyPayloadSignature } from './signatures.js';

// Signs the same bytes as the CLI (shared/crypto/signatures.ts: domain prefix + canonical JSON)
// with WebCrypto's Ed25519 where the browser has it (the secret then sits in a non-extractable
// CryptoKey), else with tweetnacl as the CLI does. Ed25519 is deterministic, so both give the
// same signature; the WebCrypto signer is checked against tweetnacl once before it is used.
export type SignerEngine = 'webcrypto' | 'tweetnacl';

export interface PayloadSigner {
  readonly name: string;
  readonly publicKey: string;
  readonly engine: SignerEngine;
  sign(kind: SignedKind, payload: unknown): Promise<Signature>;
}

// PKCS#8 wrapping of a 32-byte Ed25519 seed (RFC 8410).
const PKCS8_ED25519_PREFIX = fromBase64('MC4CAQAwBQYDK2VwBCIEIA==');

function naclSigner(key: SigningKey): PayloadSigner {
  return {
    name: key.name,
    publicKey: key.publicKey,
    engine: 'tweetnacl',
    sign: async (kind, payload) => ({
      publicKey: key.publicKey,
      signature: toBase64(nacl.sign.detached(signedBytes(kind, payload), key.secretKey)),
    }),
  };
}

async function webCryptoSigner(key: SigningKey): Promise<PayloadSigner | null> {
  const subtle = globalThis.crypto?.subtle;
  if (!subtle) return null;
  try {
    const pkcs8 = new Uint8Array(concatBytes([PKCS8_ED25519_PREFIX, key.secretKey.subarray(0, 32)]));
    const cryptoKey = await subtle.importKey('pkcs8', pkcs8, { name: 'Ed25519' }, false, ['sign']);
    pkcs8.fill(0);
    const signer: PayloadSigner = {
      name: key.name,
      publicKey: key.publicKey,
      engine: 'webcrypto',
      async sign(kind, payload) {
        const bytes = new Uint8Array(signedBytes(kind, payload));
        const signature = new Uint8Array(await subtle.sign({ name: 'Ed25519' }, cryptoKey, bytes));
        return { publicKey: key.publicKey, signature: toBase64(signature) };
      },
    };
    // Once, before trusting it: the same signature as tweetnacl, and one the shared verifier accepts.
    const probe = { probe: 'outpost-web-signer', at: 1 };
    const [ours, reference] = await Promise.all([signer.sign('auth', probe), naclSigner(key).sign('auth', probe)]);
    if (ours.signature !== reference.signature || !verifyPayloadSignature('auth', probe, ours)) return null;
    return signer;
  } catch {
    // No Ed25519 in this browser's WebCrypto.
    return null;
  }
}

export async function createSigner(key: SigningKey, prefer: SignerEngine = 'webcrypto'): Promise<PayloadSigner> {
  if (prefer === 'webcrypto') {
    const signer = await webCryptoSigner(key);
    if (signer) return signer;
  }
  return naclSigner(key);
}
