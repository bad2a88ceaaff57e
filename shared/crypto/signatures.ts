import nacl from 'tweetnacl';
import { z } from 'zod';
import { base64Key32Schema, base64Sig64Schema } from '../schemas/primitives.js';
import { canonicalJson } from './canonical.js';
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
  | 'checkpoint'
  | 'auth'
  | 'rollout-plan'
  | 'rollout-action'
  | 'action'
  | 'action-result'
  | 'ssh-tunnel'
  | 'return-bundle';

// The exact bytes a signature covers: the domain prefix and the canonical JSON. Exported for
// signers other than tweetnacl (Node's Ed25519, the web editor's WebCrypto), which must sign the same bytes.
// (The prefix is ASCII, so encoding prefix and text together gives the same bytes as apart.)
const utf8 = new TextEncoder();
export function signedBytes(kind: SignedKind, payload: unknown): Uint8Array {
  return utf8.encode(`outpost-${kind}-v1\n${canonicalJson(payload)}`);
}

// Ed25519 signing: tweetnacl (pure JS, runs everywhere: the portable reference) unless a platform
// plugs in its own that signs the same bytes (Node's, shared/node/ed25519.ts: tweetnacl's JS
// SHA-512 takes ~150 ms over a 1,000-host rollout plan, and milliseconds per auth proof on a busy
// machine). Ed25519 is deterministic: every signer gives the same signature (unit-tested).
export type DetachedSign = (message: Uint8Array, key: SigningKey) => Uint8Array;
const naclSign: DetachedSign = (message, key) => nacl.sign.detached(message, key.secretKey);
let detachedSign: DetachedSign = naclSign;

export function useEd25519Signer(sign: DetachedSign | null): void {
  detachedSign = sign ?? naclSign;
}

export function signPayload(kind: SignedKind, payload: unknown, key: SigningKey): Signature {
  return { publicKey: key.publicKey, signature: toBase64(detachedSign(signedBytes(kind, payload), key)) };
}

// The Ed25519 check every verifier uses: tweetnacl (pure JS, runs everywhere) unless a platform
// plugs in its own (Node's, shared/node/ed25519.ts: an auditor replaying a million entries).
export type DetachedVerify = (message: Uint8Array, signature: Uint8Array, publicKey: Uint8Array) => boolean;
let detachedVerify: DetachedVerify = nacl.sign.detached.verify;

export function useEd25519Verifier(verify: DetachedVerify | null): void {
  detachedVerify = verify ?? nacl.sign.detached.verify;
}

// The group order L = 2^252 + 27742317777372353535851937790883648493, little-endian.
const GROUP_ORDER = Uint8Array.from([
  0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0, 0, 0, 0, 0, 0,
  0, 0, 0, 0, 0, 0, 0, 0, 0x10,
]);

// S < L (RFC 8032 §5.1.7). tweetnacl does not check it and Node's OpenSSL does, so S + L verified
// under one and not the other: a second, different signature for the same signed content.
function canonicalScalar(s: Uint8Array): boolean {
  for (let i = 31; i >= 0; i -= 1) {
    if (s[i]! < GROUP_ORDER[i]!) return true;
    if (s[i]! > GROUP_ORDER[i]!) return false;
  }
  return false;
}

// Every Ed25519 check goes through here, whatever the backend: the same inputs are refused by
// all of them before the backend runs (lengths, a non-canonical S).
export function verifyDetached(message: Uint8Array, signature: Uint8Array, publicKey: Uint8Array): boolean {
  if (publicKey.length !== nacl.sign.publicKeyLength || signature.length !== nacl.sign.signatureLength) return false;
  if (!canonicalScalar(signature.subarray(32))) return false;
  return detachedVerify(message, signature, publicKey);
}

export function verifyPayloadSignature(kind: SignedKind, payload: unknown, signature: Signature): boolean {
  let bytes: Uint8Array;
  try {
    bytes = signedBytes(kind, payload);
  } catch {
    return false;
  }
  return verifySignedBytes(bytes, signature);
}

// `bytes` as signedBytes gives them (for callers that already have them).
export function verifySignedBytes(bytes: Uint8Array, signature: Signature): boolean {
  try {
    return verifyDetached(bytes, fromBase64(signature.signature), fromBase64(signature.publicKey));
  } catch {
    return false;
  }
}

// Identifies one signed envelope (payload and signatures) so results can name the intent they answer.
export function envelopeDigest(kind: SignedKind, envelope: unknown): string {
  return sha256Hex(signedBytes(kind, envelope));
}
