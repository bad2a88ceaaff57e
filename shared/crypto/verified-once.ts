import { fromBase64, sha256Hex } from './encoding.js';
import { type Signature, type SignedKind, signedBytes, verifySignedBytes } from './signatures.js';

// Views that re-read the same signed entries again and again (the web editor rebuilds a host's
// view at each change, 1,000 hosts at each policy change) check each signature once: Ed25519 in
// JS costs about a millisecond, a digest of the payload microseconds. The key covers the payload's
// digest too, so a valid signature copied onto other content never hits. Bounded: the oldest
// entry goes first.
const LIMIT = 50_000;
const verdicts = new Map<string, boolean>();

// The verdict is keyed by the signature and the digest of the exact bytes it covers (domain prefix
// and canonical JSON), which are encoded once: the digest and the check use the same bytes.
export function verifyPayloadSignatureOnce(kind: SignedKind, payload: unknown, signature: Signature): boolean {
  let bytes: Uint8Array;
  try {
    bytes = signedBytes(kind, payload);
  } catch {
    // Not canonical JSON: it cannot verify (verifyPayloadSignature says false without throwing).
    return false;
  }
  return verifySignedBytesOnce(kind, bytes, sha256Hex(bytes), signature);
}

// For a caller that keeps a large payload's signed bytes and their digest (a 250 KB rollout plan,
// shared/rollout/plan.ts): `bytes` must be signedBytes(kind, payload) and `digest` their SHA-256.
export function verifySignedBytesOnce(
  kind: SignedKind,
  bytes: Uint8Array,
  digest: string,
  signature: Signature,
): boolean {
  const key = `${kind} ${signature.publicKey} ${signature.signature} ${digest}`;
  const known = verdicts.get(key);
  if (known !== undefined) return known;
  const valid = verifySignedBytes(bytes, signature);
  if (verdicts.size >= LIMIT) verdicts.delete(verdicts.keys().next().value!);
  verdicts.set(key, valid);
  return valid;
}

// For benchmarks that time a reader's first check.
export function forgetVerifiedSignatures(): void {
  verdicts.clear();
}

export interface SignatureCheck {
  kind: SignedKind;
  payload: unknown;
  signature: Signature;
}

// Public keys imported into WebCrypto, per key (bounded like the verdicts).
const importedKeys = new Map<string, Promise<CryptoKey | null>>();

function importVerifyKey(subtle: SubtleCrypto, publicKey: string): Promise<CryptoKey | null> {
  let imported = importedKeys.get(publicKey);
  if (!imported) {
    let raw: Uint8Array;
    try {
      raw = fromBase64(publicKey);
    } catch {
      return Promise.resolve(null);
    }
    imported = subtle.importKey('raw', new Uint8Array(raw), { name: 'Ed25519' }, false, ['verify']).catch(() => null);
    if (importedKeys.size >= LIMIT) importedKeys.delete(importedKeys.keys().next().value!);
    importedKeys.set(publicKey, imported);
  }
  return imported;
}

// Checks signatures ahead with the platform's native Ed25519 (WebCrypto: browsers, Node), whose
// verdicts then answer verifyPayloadSignatureOnce without tweetnacl's JS arithmetic (about 1 ms a
// signature on an idle machine, 60 ms on a loaded one; native is ~100× faster). Where WebCrypto
// has no Ed25519, or a key or signature does not parse, nothing is recorded and the synchronous
// check decides as before. Returns how many verdicts it recorded.
export async function preverifySignatures(checks: readonly SignatureCheck[]): Promise<number> {
  const subtle = globalThis.crypto?.subtle;
  if (!subtle) return 0;
  const pending = new Map<string, { check: SignatureCheck; bytes: Uint8Array }>();
  for (const check of checks) {
    try {
      const bytes = signedBytes(check.kind, check.payload);
      const key = `${check.kind} ${check.signature.publicKey} ${check.signature.signature} ${sha256Hex(bytes)}`;
      if (!verdicts.has(key)) pending.set(key, { check, bytes });
    } catch {
      // Not canonical JSON: the synchronous check refuses it.
    }
  }
  const outcomes = await Promise.all(
    [...pending].map(async ([key, { check, bytes }]) => {
      const cryptoKey = await importVerifyKey(subtle, check.signature.publicKey);
      if (!cryptoKey) return false;
      let signature: Uint8Array;
      try {
        signature = fromBase64(check.signature.signature);
      } catch {
        return false;
      }
      if (signature.length !== 64) return false;
      try {
        const valid = await subtle.verify(
          { name: 'Ed25519' },
          cryptoKey,
          new Uint8Array(signature),
          new Uint8Array(bytes),
        );
        if (verdicts.size >= LIMIT) verdicts.delete(verdicts.keys().next().value!);
        verdicts.set(key, valid);
        return true;
      } catch {
        return false;
      }
    }),
  );
  return outcomes.filter(Boolean).length;
}
