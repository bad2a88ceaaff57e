import { createHash } from 'node:crypto';

export function toBase64(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64');
}

// Strict: Buffer.from(…, 'base64') silently skips bad characters, which would let a
// malformed key decode to something "valid".
export function fromBase64(text: string): Uint8Array {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 !== 0) {
    throw new Error(`not valid base64: ${JSON.stringify(text.slice(0, 24))}`);
  }
  return new Uint8Array(Buffer.from(text, 'base64'));
}

export function sha256Hex(bytes: Uint8Array | string): string {
  return createHash('sha256').update(bytes).digest('hex');
}
