import { canonicalJson } from './canonical.js';
import { sha256Hex } from './encoding.js';
import { type Signature, type SignedKind, verifyPayloadSignature } from './signatures.js';

// Views that re-read the same signed entries again and again (the web editor rebuilds a host's
// view at each change, 1,000 hosts at each policy change) check each signature once: Ed25519 in
// JS costs about a millisecond, a digest of the payload microseconds. The key covers the payload's
// digest too, so a valid signature copied onto other content never hits. Bounded: the oldest
// entry goes first.
const LIMIT = 50_000;
const verdicts = new Map<string, boolean>();

export function verifyPayloadSignatureOnce(kind: SignedKind, payload: unknown, signature: Signature): boolean {
  let key: string;
  try {
    key = `${kind} ${signature.publicKey} ${signature.signature} ${sha256Hex(canonicalJson(payload))}`;
  } catch {
    // Not canonical JSON: it cannot verify (verifyPayloadSignature says false without throwing).
    return verifyPayloadSignature(kind, payload, signature);
  }
  const known = verdicts.get(key);
  if (known !== undefined) return known;
  const valid = verifyPayloadSignature(kind, payload, signature);
  if (verdicts.size >= LIMIT) verdicts.delete(verdicts.keys().next().value!);
  verdicts.set(key, valid);
  return valid;
}
