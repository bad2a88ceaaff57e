import { digest } from 'lib0/hash/sha256';

// Byte helpers on Web APIs only (atob/btoa, TextEncoder), so the core runs unchanged in Node and
// in the browser. lib0's sha256 resolves to Node's crypto under Node and to a JS implementation
// in the browser bundle.

export function toBase64(bytes: Uint8Array): string {
  let binary = '';
  // Chunks keep String.fromCharCode's argument list short.
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

// Strict: decoders that skip bad characters would let a malformed key decode to something "valid".
// Canonical too: atob ignores the unused bits of the last character before the padding, so "AB=="
// and "AA==" would both be the byte 0, and one key or signature would have several spellings that
// string comparisons (policy key lists, envelope digests) tell apart. Those bits are checked
// directly (a character before "==" carries 4 unused bits, before "=" 2), not by encoding again:
// every signature check decodes a key and a signature.
const BASE64_ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';

export function fromBase64(text: string): Uint8Array {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 !== 0) {
    throw new Error(`not valid base64: ${JSON.stringify(text.slice(0, 24))}`);
  }
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i += 1) bytes[i] = binary.charCodeAt(i);
  const padding = text.endsWith('==') ? 2 : text.endsWith('=') ? 1 : 0;
  const unusedBits = padding === 2 ? 0x0f : padding === 1 ? 0x03 : 0;
  if (unusedBits && BASE64_ALPHABET.indexOf(text[text.length - padding - 1]!) & unusedBits)
    throw new Error(
      `not valid base64: ${JSON.stringify(text.slice(-24))} sets bits past its last byte (the canonical spelling ends ${JSON.stringify(toBase64(bytes).slice(-4))})`,
    );
  return bytes;
}

const HEX_BYTES = Array.from({ length: 256 }, (_, byte) => byte.toString(16).padStart(2, '0'));

export function toHex(bytes: Uint8Array): string {
  let out = '';
  for (let i = 0; i < bytes.length; i += 1) out += HEX_BYTES[bytes[i]!]!;
  return out;
}

export function fromHex(text: string): Uint8Array {
  if (!/^(?:[0-9a-fA-F]{2})*$/.test(text)) throw new Error(`not valid hex: ${JSON.stringify(text.slice(0, 24))}`);
  const bytes = new Uint8Array(text.length / 2);
  for (let i = 0; i < bytes.length; i += 1) bytes[i] = Number.parseInt(text.slice(2 * i, 2 * i + 2), 16);
  return bytes;
}

export function utf8Bytes(text: string): Uint8Array {
  return new TextEncoder().encode(text);
}

export function concatBytes(chunks: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((sum, c) => sum + c.length, 0));
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i += 1) if (a[i] !== b[i]) return false;
  return true;
}

export function sha256Hex(bytes: Uint8Array | string): string {
  return toHex(digest(typeof bytes === 'string' ? utf8Bytes(bytes) : bytes));
}
