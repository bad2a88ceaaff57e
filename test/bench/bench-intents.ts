import type { SigningKey } from '../../shared/crypto/keys.js';
import type { SignedIntent } from '../../shared/schemas/intent.js';
import { signIntent } from '../../shared/trust/sign-intent.js';

// Signed intents for the benches (test/bench/dispatch.ts, write-path.ts), signed before any timing.

export interface PreSigned {
  host: string;
  signed: SignedIntent;
}

const NIX_BASE32 = '0123456789abcdfghijklmnpqrsvwxyz';
export function fakeStorePath(host: string, generation: number): string {
  let hash = '';
  let seed = 0;
  for (const c of `${host}/${generation}`) seed = (seed * 31 + c.charCodeAt(0)) >>> 0;
  for (let i = 0; i < 32; i++) {
    seed = (seed * 1103515245 + 12345) >>> 0;
    hash += NIX_BASE32[seed % 32];
  }
  return `/nix/store/${hash}-nixos-system-${host}-24.11`;
}

export function preSign(host: string, generation: number, key: SigningKey): PreSigned {
  const now = Date.now();
  return {
    host,
    signed: signIntent(
      {
        kind: 'intent',
        host,
        generation,
        closure: fakeStorePath(host, generation),
        action: 'switch',
        issuedAt: new Date(now).toISOString(),
        expiresAt: new Date(now + 24 * 3_600_000).toISOString(),
        issuer: key.name,
      },
      key,
    ),
  };
}

// The host a text names in a fakeStorePath (frame-trace.ts finds intents in frames by it).
export function hostOfStorePath(text: string): string | null {
  return /-nixos-system-(.+?)-24\.11/.exec(text)?.[1] ?? null;
}
