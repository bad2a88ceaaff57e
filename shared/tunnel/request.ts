import { z } from 'zod';
import type { SigningKey } from '../crypto/keys.js';
import { signatureSchema, signPayload, verifyPayloadSignature } from '../crypto/signatures.js';
import type { Policy } from '../schemas/policy.js';
import { hostIdSchema, isoTimeSchema } from '../schemas/primitives.js';
import { adminForKey, capabilitiesFor } from '../trust/capabilities.js';
import { tunnelNonceSchema } from './session-log.js';

// `outpost ssh HOST`: the admin signs one fresh request per session; the host's agent alone
// decides on it (docs/access.md, `outpost ssh`). Coordinators and relays only route it.

// A request lives at most this long (expiresAt - issuedAt): long enough for a slow satellite
// round trip, short enough that a captured one is soon worthless even without the nonce check.
export const TUNNEL_MAX_LIFETIME_MS = 5 * 60_000;
// How far the agent's clock may be from the admin's: an issuedAt this far in the future still
// counts, and an expiresAt this far in the past still counts. Nonces are kept until
// expiresAt + skew, so a replay is refused for as long as the request itself could be accepted.
export const TUNNEL_CLOCK_SKEW_MS = 2 * 60_000;

export const tunnelRequestSchema = z.object({
  kind: z.literal('ssh-tunnel'),
  host: hostIdSchema,
  nonce: tunnelNonceSchema,
  issuedAt: isoTimeSchema,
  expiresAt: isoTimeSchema,
});
export type TunnelRequest = z.infer<typeof tunnelRequestSchema>;

export const signedTunnelRequestSchema = z.object({ request: tunnelRequestSchema, signature: signatureSchema });
export type SignedTunnelRequest = z.infer<typeof signedTunnelRequestSchema>;

export function signTunnelRequest(request: TunnelRequest, key: SigningKey): SignedTunnelRequest {
  return { request, signature: signPayload('ssh-tunnel', request, key) };
}

// The signature alone (a hub's cheap admission check: a stranger gets no slot). Says nothing about
// whether the signer may open this tunnel; only verifyTunnelRequest does.
export function tunnelSignatureValid(signed: SignedTunnelRequest): boolean {
  return verifyPayloadSignature('ssh-tunnel', signed.request, signed.signature);
}

export type TunnelVerdict =
  | { ok: true; admin: string; key: string; expiresAtMs: number }
  | { ok: false; reason: string };

export interface TunnelCheckContext {
  // The newest policy the agent walked from its pinned org root; null without one.
  policy: Policy | null;
  // The host the checking agent is.
  host: string;
  now: number;
}

// Everything but the nonce (the agent's persisted store decides that): signature, host, time,
// lifetime, the signer's admin entry, revocation, and the `ssh` capability on this host.
export function verifyTunnelRequest(signed: SignedTunnelRequest, context: TunnelCheckContext): TunnelVerdict {
  const { request, signature } = signed;
  if (!context.policy)
    return {
      ok: false,
      reason: `${context.host} holds no signed policy, so no admin may open a tunnel; run the agent with --org-root and publish a policy whose role grants ssh`,
    };
  if (request.host !== context.host)
    return {
      ok: false,
      reason: `the request names host ${request.host}, but this is ${context.host}; it was misrouted (or replayed to another host) — sign a request for ${context.host}`,
    };
  if (!verifyPayloadSignature('ssh-tunnel', request, signature))
    return { ok: false, reason: 'the request signature does not verify; sign it again with outpost ssh' };
  const issuedAt = Date.parse(request.issuedAt);
  const expiresAt = Date.parse(request.expiresAt);
  if (!(expiresAt > issuedAt) || expiresAt - issuedAt > TUNNEL_MAX_LIFETIME_MS)
    return {
      ok: false,
      reason: `the request must expire after it is issued and live at most ${TUNNEL_MAX_LIFETIME_MS / 1000} s (it says ${request.issuedAt} to ${request.expiresAt})`,
    };
  if (issuedAt > context.now + TUNNEL_CLOCK_SKEW_MS)
    return {
      ok: false,
      reason: `the request is issued in the future (${request.issuedAt}; the host's clock says ${new Date(context.now).toISOString()}); check the clocks`,
    };
  if (expiresAt + TUNNEL_CLOCK_SKEW_MS < context.now)
    return {
      ok: false,
      reason: `the request expired at ${request.expiresAt} (the host's clock says ${new Date(context.now).toISOString()}); run outpost ssh again for a fresh one`,
    };
  const policy = context.policy;
  if (policy.revokedKeys.includes(signature.publicKey))
    return { ok: false, reason: `the signing key ${signature.publicKey} is revoked in policy v${policy.version}` };
  const admin = adminForKey(policy, signature.publicKey);
  if (!admin)
    return {
      ok: false,
      reason: `the signing key ${signature.publicKey} belongs to no admin of policy v${policy.version}`,
    };
  if (!capabilitiesFor(policy, admin, context.host).has('ssh'))
    return {
      ok: false,
      reason: `admin ${admin.name} has no role granting ssh on ${context.host} in policy v${policy.version}; add ssh to a role that covers this host`,
    };
  return { ok: true, admin: admin.name, key: signature.publicKey, expiresAtMs: expiresAt };
}
