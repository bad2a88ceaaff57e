// Nix's own base-32 ("nix32"), used in store path names and narinfo hashes. It is not RFC 4648:
// the alphabet drops e, o, t and u (to avoid accidental words), and the string is written from
// the last 5-bit group of the hash first (src/libutil/hash.cc printHash32 / base-nix-32.cc).
export const NIX_BASE32_ALPHABET = '0123456789abcdfghijklmnpqrsvwxyz';

const digitOf = new Map<string, number>([...NIX_BASE32_ALPHABET].map((char, index) => [char, index]));

export function nixBase32Length(byteLength: number): number {
  return byteLength === 0 ? 0 : Math.floor((byteLength * 8 - 1) / 5) + 1;
}

export function encodeNixBase32(bytes: Uint8Array): string {
  let text = '';
  for (let n = nixBase32Length(bytes.length) - 1; n >= 0; n--) {
    const bit = n * 5;
    const index = Math.floor(bit / 8);
    const shift = bit % 8;
    const low = bytes[index]! >> shift;
    const high = index + 1 < bytes.length ? bytes[index + 1]! << (8 - shift) : 0;
    text += NIX_BASE32_ALPHABET[(low | high) & 0x1f];
  }
  return text;
}

// Byte length for a nix32 string, or undefined when no byte length encodes to that many
// characters (e.g. 51 characters: a truncated SHA-256).
function byteLengthFor(textLength: number): number | undefined {
  const bytes = Math.floor((textLength * 5) / 8);
  return nixBase32Length(bytes) === textLength ? bytes : undefined;
}

// expectedBytes pins the length (32 for SHA-256, 20 for a store path hash) so a string that is
// valid nix32 but the wrong size is refused here rather than compared against the wrong thing.
export function decodeNixBase32(text: string, expectedBytes?: number): Uint8Array {
  const byteLength = byteLengthFor(text.length);
  if (byteLength === undefined) {
    throw new Error(`not nix-base32: ${text.length} characters is not the length of any whole number of bytes`);
  }
  if (expectedBytes !== undefined && byteLength !== expectedBytes) {
    throw new Error(
      `not a ${expectedBytes}-byte nix-base32 value: got ${text.length} characters (${byteLength} bytes), expected ${nixBase32Length(expectedBytes)}`,
    );
  }
  const bytes = new Uint8Array(byteLength);
  for (let n = 0; n < text.length; n++) {
    const char = text[text.length - n - 1]!;
    const digit = digitOf.get(char);
    if (digit === undefined) {
      throw new Error(
        `not nix-base32: character ${JSON.stringify(char)} at position ${text.length - n - 1} (allowed: ${NIX_BASE32_ALPHABET})`,
      );
    }
    const bit = n * 5;
    const index = Math.floor(bit / 8);
    const shift = bit % 8;
    bytes[index] |= (digit << shift) & 0xff;
    const carry = digit >> (8 - shift);
    if (index + 1 < byteLength) {
      bytes[index + 1] |= carry;
    } else if (carry !== 0) {
      // The first character carries more bits than the value has; Nix refuses these too, and
      // accepting them would give two spellings of one hash.
      throw new Error(
        `not nix-base32: first character ${JSON.stringify(text[0])} sets bits beyond ${byteLength} bytes`,
      );
    }
  }
  return bytes;
}
