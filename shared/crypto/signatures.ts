import nacl from 'tweetnacl';
import { z } from 'zod';
import { base64Key32Schema, base64Sig64Schema } from '../schemas/primitives.js';
import { canonicalBytes } from './canonical.js';
import { fromBase64, sha256Hex, toBase64 } from './encoding.js';
import type { SigningKey } from './keys.js';

export const signatureSchema = z.object({ publicKey: base64Key32Schema, signature: base64Sig64Schema });
export type Signature = z.infer<typeof signatureSchema>;

// Domain separation: a signature over an intent can never be replayed as a result or status.
export type SignedKind =
  | 'intent'
  | 'result'
  | 'status'
  | 'policy'
  | 'enrollment'
  | 'enroll-request'
  | 'enroll-token'
  | 'enroll-token-proof'
  | 'enroll-clear'
  | 'timestamp'
  | 'auth'
  | 'rollout-plan'
  | 'rollout-action';

function signedBytes(kind: SignedKind, payload: unknown): Uint8Array {
  const body = canonicalBytes(payload);
  const prefix = new TextEncoder().encode(`outpost-${kind}-v1\n`);
  const bytes = new Uint8Array(prefix.length + body.length);
  bytes.set(prefix, 0);
  bytes.set(body, prefix.length);
  return bytes;
}

export function signPayload(kind: SignedKind, payload: unknown, key: SigningKey): Signature {
  const signature = nacl.sign.detached(signedBytes(kind, payload), key.secretKey);
  return { publicKey: key.publicKey, signature: toBase64(signature) };
}

// Verifies one Ed25519 signature over `message`. tweetnacl (pure JS) by default, everywhere; Node
// processes install node:crypto's (shared/node/ed25519.ts), about 100× faster, so an agent can
// check hundreds of hosts' signed results in milliseconds. Both implement RFC 8032.
export type Ed25519Verify = (message: Uint8Array, signature: Uint8Array, publicKey: Uint8Array) => boolean;
const naclVerify: Ed25519Verify = (message, signature, publicKey) =>
  nacl.sign.detached.verify(message, signature, publicKey);
let ed25519Verify: Ed25519Verify = naclVerify;

export function useEd25519Verifier(verify: Ed25519Verify | null): void {
  ed25519Verify = verify ?? naclVerify;
}

export function verifyPayloadSignature(kind: SignedKind, payload: unknown, signature: Signature): boolean {
  try {
    const publicKey = fromBase64(signature.publicKey);
    const sig = fromBase64(signature.signature);
    if (publicKey.length !== nacl.sign.publicKeyLength || sig.length !== nacl.sign.signatureLength) return false;
    return ed25519Verify(signedBytes(kind, payload), sig, publicKey);
  } catch {
    return false;
  }
}

// Identifies one signed envelope (payload and signatures) so results can name the intent they answer.
export function envelopeDigest(kind: SignedKind, envelope: unknown): string {
  return sha256Hex(signedBytes(kind, envelope));
}
