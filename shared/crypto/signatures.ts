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
  | 'auth';

// Exported for platform signers (Node's Ed25519 in benchmarks); every signature covers exactly these bytes.
export function signedBytes(kind: SignedKind, payload: unknown): Uint8Array {
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

// The Ed25519 check every verifier uses: tweetnacl (pure JS, runs everywhere) unless a platform
// plugs in its own (Node's, shared/node/ed25519.ts: an auditor replaying a million entries).
export type DetachedVerify = (message: Uint8Array, signature: Uint8Array, publicKey: Uint8Array) => boolean;
let detachedVerify: DetachedVerify = nacl.sign.detached.verify;

export function useEd25519Verifier(verify: DetachedVerify | null): void {
  detachedVerify = verify ?? nacl.sign.detached.verify;
}

export function verifyPayloadSignature(kind: SignedKind, payload: unknown, signature: Signature): boolean {
  try {
    const publicKey = fromBase64(signature.publicKey);
    const sig = fromBase64(signature.signature);
    if (publicKey.length !== nacl.sign.publicKeyLength || sig.length !== nacl.sign.signatureLength) return false;
    return detachedVerify(signedBytes(kind, payload), sig, publicKey);
  } catch {
    return false;
  }
}

// Identifies one signed envelope (payload and signatures) so results can name the intent they answer.
export function envelopeDigest(kind: SignedKind, envelope: unknown): string {
  return sha256Hex(signedBytes(kind, envelope));
}
