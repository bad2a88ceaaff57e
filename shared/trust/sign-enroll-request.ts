import { z } from 'zod';
import { type SigningKey, signingKeyFromKeyFile } from '../crypto/keys.js';
import { signPayload } from '../crypto/signatures.js';
import {
  enrollRequestSchema,
  type SignedEnrollRequest,
  type SignedEnrollToken,
  signedEnrollTokenSchema,
} from '../schemas/policy.js';

// The host's side of enrollment (the agent, `outpost enroll request`): the token file it may hold
// and the request it signs. Admins make the tokens (admin/enroll-entries.ts).

// A token file: the admin-signed token plus the secret half of its proof key. Only the signed
// token travels in a request; the secret signs the request, so a forwarder learns nothing it
// could present for a key of its own. Files made before proof keys have neither: they still
// parse (an agent configured with one keeps starting), and the coordinator refuses the token
// with a reason that names the fix.
export const enrollTokenFileSchema = signedEnrollTokenSchema.extend({
  proofSecret: z
    .string()
    .regex(/^[A-Za-z0-9+/]{86}==$/, 'expected the base64 secret half of the token proof key (88 characters)')
    .optional(),
});
export type EnrollTokenFile = z.infer<typeof enrollTokenFileSchema>;

// The token's proof key, or null for a token made before proof keys (sent without a proof).
export function tokenProofKey(file: EnrollTokenFile, where: string): SigningKey | null {
  if (!file.token.proofKey) return null;
  if (!file.proofSecret)
    throw new Error(
      `${where}: the token names a proof key but the file lacks its secret (proofSecret); use the file 'outpost enroll token' wrote, unchanged`,
    );
  return signingKeyFromKeyFile(
    {
      kind: 'outpost-secret-key',
      name: 'enroll-token-proof',
      publicKey: file.token.proofKey,
      secretKey: file.proofSecret,
    },
    where,
  );
}

// Signed by the host key itself (proof that whoever asks holds the key to be bound) and, with a
// token, by the token's proof key (proof that it holds the token file).
export function signEnrollRequest(
  hostKey: SigningKey,
  host: string,
  token: EnrollTokenFile | undefined,
  now: Date,
): SignedEnrollRequest {
  const carried: SignedEnrollToken | undefined = token && { token: token.token, signatures: token.signatures };
  const checked = enrollRequestSchema.parse({
    kind: 'enroll-request',
    host,
    hostKey: hostKey.publicKey,
    requestedAt: now.toISOString(),
    ...(carried ? { token: carried } : {}),
  });
  const proofKey = token ? tokenProofKey(token, 'enrollment token') : null;
  return {
    request: checked,
    signature: signPayload('enroll-request', checked, hostKey),
    ...(proofKey ? { tokenProof: signPayload('enroll-token-proof', checked, proofKey) } : {}),
  };
}
