import { z } from 'zod';
import type { SigningKey } from '../crypto/keys.js';
import { signPayload, verifyPayloadSignature } from '../crypto/signatures.js';
import { base64Key32Schema, base64Sig64Schema } from '../schemas/primitives.js';

// Challenge–response at the websocket upgrade: the coordinator hands out a random single-use
// challenge over HTTP; the peer signs {challenge, document, principal} with its Ed25519 key and
// sends it as URL parameters (the only channel a stock y-websocket client has at connect time).
export const challengeResponseSchema = z.object({
  challenge: z.string().regex(/^[0-9a-f]{64}$/),
  expiresAt: z.number(),
});

export const authParamsSchema = z.object({
  principal: base64Key32Schema,
  challenge: z.string().regex(/^[0-9a-f]{64}$/),
  signature: base64Sig64Schema,
});
export type AuthParams = z.infer<typeof authParamsSchema>;

export function signAuthProof(key: SigningKey, challenge: string, document: string): AuthParams {
  const signature = signPayload('auth', { challenge, document, principal: key.publicKey }, key);
  return { principal: key.publicKey, challenge, signature: signature.signature };
}

export function verifyAuthProof(params: AuthParams, document: string): boolean {
  return verifyPayloadSignature(
    'auth',
    { challenge: params.challenge, document, principal: params.principal },
    { publicKey: params.principal, signature: params.signature },
  );
}

// The read-only HTTP APIs (/api/documents, /api/presence) take the same proof in headers, signed
// for the request path instead of a document name (paths start with '/', document names never do).
export const AUTH_HEADERS = {
  principal: 'x-outpost-principal',
  challenge: 'x-outpost-challenge',
  signature: 'x-outpost-signature',
} as const;

export function authHeaders(params: AuthParams): Record<string, string> {
  return {
    [AUTH_HEADERS.principal]: params.principal,
    [AUTH_HEADERS.challenge]: params.challenge,
    [AUTH_HEADERS.signature]: params.signature,
  };
}

// A relay that passes a fleet POST on (/api/enroll, /api/policy) names the client source it came
// from, so the coordinator can rate limit each client of a site apart instead of the whole site as
// the relay's one address. The name counts only with a proof from a relay of the policy signed for
// the path and that source together: a stranger's header, or a relay's proof reused for another
// source, is ignored.
export const FORWARDED_FOR_HEADER = 'x-outpost-forwarded-for';

export function forwardedProofTarget(path: string, source: string): string {
  return `${path}#forwarded-for=${source}`;
}

// What a relay may name: an IPv4 address, an IPv6 /64 or 'unknown' (coordinator's sourceOf).
export const forwardedSourceSchema = z
  .string()
  .max(64)
  .regex(/^[0-9A-Za-z:./]+$/, 'an address');
