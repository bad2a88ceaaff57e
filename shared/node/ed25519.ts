import { createPrivateKey, createPublicKey, type KeyObject, sign, verify } from 'node:crypto';
import type { SigningKey } from '../crypto/keys.js';
import {
  type DetachedVerify,
  type Signature,
  type SignedKind,
  signedBytes,
  useEd25519Verifier,
} from '../crypto/signatures.js';

// Node's own Ed25519 (OpenSSL) behind the core's verifier hook: the raw 32-byte public key is
// wrapped as SPKI DER (RFC 8410: fixed 12-byte prefix). Parsed keys are cached, bounded, since
// an audit checks many signatures by few keys.
const SPKI_ED25519_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');
const MAX_CACHED_KEYS = 10_000;
const keys = new Map<string, KeyObject>();

function publicKeyObject(raw: Uint8Array): KeyObject {
  const id = Buffer.from(raw).toString('base64');
  let key = keys.get(id);
  if (!key) {
    if (keys.size >= MAX_CACHED_KEYS) keys.clear();
    key = createPublicKey({ key: Buffer.concat([SPKI_ED25519_PREFIX, raw]), format: 'der', type: 'spki' });
    keys.set(id, key);
  }
  return key;
}

export const nodeEd25519Verify: DetachedVerify = (message, signature, publicKey) => {
  if (publicKey.length !== 32 || signature.length !== 64) return false;
  try {
    return verify(null, message, publicKeyObject(publicKey), signature);
  } catch {
    return false;
  }
};

// Every verification in this process by node:crypto: ~0.05 ms a signature against ~2-17 ms for
// tweetnacl in JS, which lets an agent check a 300-host wave's evidence in milliseconds. The core
// still refuses wrong lengths and a non-canonical S first (verifyDetached), whatever the backend.
export function installNodeEd25519(): void {
  useEd25519Verifier(nodeEd25519Verify);
}

// Signs like signPayload, with Node's Ed25519 (the tweetnacl secret key's first 32 bytes are the seed).
// The parsed private key is kept per secret key (a benchmark signs a million entries with a few keys).
const PKCS8_ED25519_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');
const privateKeys = new WeakMap<Uint8Array, KeyObject>();
export function nodeSignPayload(kind: SignedKind, payload: unknown, key: SigningKey): Signature {
  let privateKey = privateKeys.get(key.secretKey);
  if (!privateKey) {
    privateKey = createPrivateKey({
      key: Buffer.concat([PKCS8_ED25519_PREFIX, Buffer.from(key.secretKey.subarray(0, 32))]),
      format: 'der',
      type: 'pkcs8',
    });
    privateKeys.set(key.secretKey, privateKey);
  }
  return { publicKey: key.publicKey, signature: sign(null, signedBytes(kind, payload), privateKey).toString('base64') };
}
