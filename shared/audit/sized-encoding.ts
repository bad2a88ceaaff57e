// Writers into a buffer sized beforehand, for the two encodings every appended log entry goes
// through (its hash input in log-chain.ts, its stored form in coordinator/update-log.ts). Both are
// stored or chained, so they must write exactly what lib0's encoding wrote (varuint, UTF-8 with a
// varuint length, big-endian float64; test/harness/log-entry-reference.ts keeps that code), without
// its growing chunks, per-byte capacity checks and closing copy, which cost more than the sha256.
const utf8Encoder = new TextEncoder();

// lib0's writeVarUint, operation for operation (so even a fractional or negative number encodes
// the same).
export function varUintSize(num: number): number {
  let size = 1;
  for (; num > 0x7f; size++) num = Math.floor(num / 128);
  return size;
}

// A field of `size` bytes written after its varuint length (a string or a byte array).
export function prefixedSize(size: number): number {
  return varUintSize(size) + size;
}

export function putVarUint(bytes: Uint8Array, pos: number, num: number): number {
  while (num > 0x7f) {
    bytes[pos++] = 0x80 | (0x7f & num);
    num = Math.floor(num / 128);
  }
  bytes[pos++] = 0x7f & num;
  return pos;
}

// Bytes of the string in UTF-8 as TextEncoder writes it: a lone surrogate becomes U+FFFD (3 bytes).
export function utf8Size(text: string): number {
  let size = text.length;
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    if (unit < 0x80) continue;
    if (unit < 0x800) size += 1;
    else if (unit >= 0xd800 && unit <= 0xdbff && i + 1 < text.length && (text.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      size += 2; // a pair: 2 units, 4 bytes
      i++;
    } else size += 2;
  }
  return size;
}

// `size` is utf8Size(text); equal to text.length only when every character is ASCII.
export function putVarString(bytes: Uint8Array, pos: number, text: string, size: number): number {
  pos = putVarUint(bytes, pos, size);
  if (size === text.length) for (let i = 0; i < size; i++) bytes[pos + i] = text.charCodeAt(i);
  else utf8Encoder.encodeInto(text, bytes.subarray(pos, pos + size));
  return pos + size;
}

export function putFloat64(bytes: Uint8Array, pos: number, num: number): number {
  new DataView(bytes.buffer, bytes.byteOffset + pos, 8).setFloat64(0, num, false);
  return pos + 8;
}
