import { createPrivateKey, createPublicKey, type KeyObject, sign, verify } from 'node:crypto';
import nacl from 'tweetnacl';
import type { SigningKey } from '../crypto/keys.js';
import {
  type DetachedSign,
  type DetachedVerify,
  type Signature,
  type SignedKind,
  signedBytes,
  useEd25519Signer,
  useEd25519Verifier,
} from '../crypto/signatures.js';

// Node's own Ed25519 (OpenSSL) behind the core's verifier hook. The raw 32-byte public key is
// imported as a JWK (RFC 8037 OKP, `x` the raw key): Node hands those bytes straight to OpenSSL,
// where SPKI DER goes through OpenSSL 3's generic decoder, ~10× the cost (0.15 ms a key: an agent
// checking a 300-host wave's evidence meets 300 new keys). Parsed keys are cached, bounded, since
// an audit checks many signatures by few keys.
const MAX_CACHED_KEYS = 10_000;
const keys = new Map<string, KeyObject>();

function publicKeyObject(raw: Uint8Array): KeyObject {
  const id = Buffer.from(raw).toString('base64url');
  let key = keys.get(id);
  if (!key) {
    if (keys.size >= MAX_CACHED_KEYS) keys.clear();
    key = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: id }, format: 'jwk' });
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
// Every signature this process makes (signPayload) by node:crypto too: the same bytes signed, and
// Ed25519 is deterministic, so the same signature tweetnacl gives (test/unit/shared/crypto/node-ed25519.test.ts).
export function installNodeEd25519(): void {
  useEd25519Verifier(nodeEd25519Verify);
  useEd25519Signer(nodeEd25519Sign);
}

// The tweetnacl secret key is the 32-byte seed and the public key. The parsed private key is kept
// per secret key (a benchmark signs a million entries with a few keys); a secret key whose second
// half is not its seed's public key (a damaged key) is left to tweetnacl, which signs with that
// half as tweetnacl always did.
const PKCS8_ED25519_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');
const privateKeys = new WeakMap<Uint8Array, KeyObject | null>();

function privateKeyObject(secretKey: Uint8Array): KeyObject | null {
  let privateKey = privateKeys.get(secretKey);
  if (privateKey === undefined) {
    privateKey = null;
    if (secretKey.length === 64) {
      const parsed = createPrivateKey({
        key: Buffer.concat([PKCS8_ED25519_PREFIX, Buffer.from(secretKey.subarray(0, 32))]),
        format: 'der',
        type: 'pkcs8',
      });
      const derived = createPublicKey(parsed).export({ format: 'der', type: 'spki' }).subarray(-32);
      if (Buffer.from(secretKey.subarray(32)).equals(derived)) privateKey = parsed;
    }
    privateKeys.set(secretKey, privateKey);
  }
  return privateKey;
}

export const nodeEd25519Sign: DetachedSign = (message, key) => {
  const privateKey = privateKeyObject(key.secretKey);
  if (!privateKey) return nacl.sign.detached(message, key.secretKey);
  return sign(null, message, privateKey);
};

// Signs like signPayload, with Node's Ed25519 whatever signer is installed.
export function nodeSignPayload(kind: SignedKind, payload: unknown, key: SigningKey): Signature {
  return {
    publicKey: key.publicKey,
    signature: Buffer.from(nodeEd25519Sign(signedBytes(kind, payload), key)).toString('base64'),
  };
}
