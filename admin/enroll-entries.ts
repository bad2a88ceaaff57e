import { randomBytes } from 'node:crypto';
import type * as Y from 'yjs';
import { z } from 'zod';
import { toBase64 } from '../shared/crypto/encoding.js';
import { generateSigningKey, type SigningKey, signingKeyFromKeyFile } from '../shared/crypto/keys.js';
import { signPayload, verifyPayloadSignature } from '../shared/crypto/signatures.js';
import { readEnrollments, readEnrollRequests } from '../shared/documents/fleet.js';
import {
  enrollClearSchema,
  enrollmentSchema,
  enrollRequestSchema,
  enrollTokenSchema,
  type Policy,
  type SignedEnrollClear,
  type SignedEnrollment,
  type SignedEnrollRequest,
  type SignedEnrollToken,
  signedEnrollTokenSchema,
} from '../shared/schemas/policy.js';
import {
  type EnrollmentState,
  enrollmentState,
  type HostBinding,
  type TokenConflict,
  verifyEnrollRequest,
} from '../shared/trust/enrollment.js';
import type { PolicyWalk } from '../shared/trust/policy-chain.js';
import { readJsonFile } from './policy-file.js';
import { highestStoredVersion, walkStoredPolicies } from './policy-remote.js';

// The signed enrollment entries, built and checked against their schemas before signing, and the
// view of bound hosts, pending requests and token conflicts an admin approves from.

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

export function signEnrollToken(
  admin: SigningKey,
  token: { host: string; expiresAt: string; policyVersion: number },
): EnrollTokenFile {
  const proof = generateSigningKey('enroll-token-proof');
  // 16 random bytes: the coordinator and readers bind each nonce at most once.
  const checked = enrollTokenSchema.parse({
    kind: 'enroll-token',
    ...token,
    nonce: randomBytes(16).toString('hex'),
    proofKey: proof.publicKey,
  });
  return {
    token: checked,
    signatures: [signPayload('enroll-token', checked, admin)],
    proofSecret: toBase64(proof.secretKey),
  };
}

// The token's proof key, or null for a token made before proof keys (sent without a proof).
function proofKeyOf(file: EnrollTokenFile, where: string): SigningKey | null {
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
  const proofKey = token ? proofKeyOf(token, 'enrollment token') : null;
  return {
    request: checked,
    signature: signPayload('enroll-request', checked, hostKey),
    ...(proofKey ? { tokenProof: signPayload('enroll-token-proof', checked, proofKey) } : {}),
  };
}

export function signEnrollment(
  admin: SigningKey,
  binding: { host: string; hostKey: string; policyVersion: number },
  now: Date,
): SignedEnrollment {
  const checked = enrollmentSchema.parse({ kind: 'enrollment', ...binding, approvedAt: now.toISOString() });
  return { enrollment: checked, signatures: [signPayload('enrollment', checked, admin)] };
}

export function signEnrollClear(
  admin: SigningKey,
  filter: { host?: string; hostKey?: string },
  now: Date,
): SignedEnrollClear {
  const checked = enrollClearSchema.parse({ kind: 'enroll-clear', ...filter, issuedAt: now.toISOString() });
  return { clear: checked, signatures: [signPayload('enroll-clear', checked, admin)] };
}

export async function readTokenFile(path: string): Promise<EnrollTokenFile> {
  try {
    const file = await readJsonFile(
      path,
      enrollTokenFileSchema,
      'enrollment token',
      "an admin makes one with 'outpost enroll token'",
    );
    proofKeyOf(file, path);
    return file;
  } catch (error) {
    throw new Error(`--token: ${(error as Error).message}`);
  }
}

export interface PendingRequest {
  host: string;
  hostKey: string;
  requestedAt: string;
  // Why a request that carried a token did not bind by itself (expired, no proof, host already
  // bound, wrong signer).
  tokenProblem: string | null;
}

const short = (key: string): string => `${key.slice(0, 12)}…`;

// Requests that prove possession of their key (checked here: the coordinator is not trusted) and
// whose host is not bound to that key. One entry per host and key, the earliest request.
export function pendingRequests(
  requests: SignedEnrollRequest[],
  isBound: (host: string, hostKey: string) => boolean,
  policy: Policy | null,
  state: EnrollmentState | null,
): PendingRequest[] {
  const pending = new Map<string, PendingRequest>();
  for (const signed of requests) {
    const { request } = signed;
    if (
      signed.signature.publicKey !== request.hostKey ||
      !verifyPayloadSignature('enroll-request', request, signed.signature)
    )
      continue;
    if (isBound(request.host, request.hostKey)) continue;
    const id = `${request.host} ${request.hostKey}`;
    const known = pending.get(id);
    if (known && Date.parse(known.requestedAt) <= Date.parse(request.requestedAt)) continue;
    let tokenProblem: string | null = null;
    if (request.token) {
      if (!policy) tokenProblem = 'no trusted policy to check its token against';
      else {
        const verdict = verifyEnrollRequest(signed, policy);
        const bound = state?.bindings.get(request.host);
        tokenProblem = !verdict.ok
          ? verdict.reason
          : bound
            ? `${request.host} was already bound to key ${short(bound.hostKey)} (by ${bound.via}) when this key presented a token`
            : 'its token was already used by another request';
      }
    }
    pending.set(id, { host: request.host, hostKey: request.hostKey, requestedAt: request.requestedAt, tokenProblem });
  }
  return [...pending.values()].sort(
    (a, b) => a.host.localeCompare(b.host) || a.requestedAt.localeCompare(b.requestedAt),
  );
}

export interface EnrollmentView {
  // Null without pinned org root keys: nothing can then be verified against a policy.
  walk: PolicyWalk | null;
  policyVersion: number | undefined;
  bound: HostBinding[];
  pending: PendingRequest[];
  // Tokens presented, with a valid proof, for a key other than the one their host is bound to.
  conflicts: TokenConflict[];
}

// What fleet/policy and fleet/enrollment say about hosts. With the pinned org root the bindings
// are exactly what agents and the coordinator compute; without it (approve's shortcut), a host and
// key count as bound when fleet/enrollment holds an approval for them, which the coordinator
// stores only after checking it.
export function enrollmentView(policyDoc: Y.Doc, enrollmentDoc: Y.Doc, orgRoot: string[]): EnrollmentView {
  const requests = readEnrollRequests(enrollmentDoc);
  const enrollments = readEnrollments(enrollmentDoc);
  if (orgRoot.length === 0) {
    const approved = (host: string, hostKey: string): boolean =>
      enrollments.some((e) => e.enrollment.host === host && e.enrollment.hostKey === hostKey);
    return {
      walk: null,
      policyVersion: highestStoredVersion(policyDoc),
      bound: [],
      pending: pendingRequests(requests, approved, null, null),
      conflicts: [],
    };
  }
  const walk = walkStoredPolicies(policyDoc, orgRoot);
  const policy = walk.chain.at(-1) ?? null;
  const state = enrollmentState(policy, enrollments, requests);
  const isBound = (host: string, hostKey: string): boolean => state.bindings.get(host)?.hostKey === hostKey;
  return {
    walk,
    policyVersion: policy?.version,
    bound: [...state.bindings.values()].sort((a, b) => a.host.localeCompare(b.host)),
    pending: pendingRequests(requests, isBound, policy, state),
    conflicts: state.conflicts,
  };
}
