import { generateSigningKey, type SigningKey } from '../../shared/crypto/keys.js';
import { signPayload } from '../../shared/crypto/signatures.js';
import { type Policy, policySchema, type SignedPolicy } from '../../shared/schemas/policy.js';
import { httpBaseFromWs } from '../../shared/sync/reconnect.js';

// Keys and policies for trust tests: real Ed25519 keys, real signatures, policies validated by
// the same zod schema every reader uses.
export interface TestOrg {
  root: SigningKey;
  alice: SigningKey; // deploy everywhere, enroll
  bob: SigningKey; // deploy on production only
  carol: SigningKey; // read only
  timestamp: SigningKey;
}

export function makeTestOrg(): TestOrg {
  return {
    root: generateSigningKey('root'),
    alice: generateSigningKey('alice'),
    bob: generateSigningKey('bob'),
    carol: generateSigningKey('carol'),
    timestamp: generateSigningKey('timestamp'),
  };
}

export function basePolicy(org: TestOrg, overrides: Partial<Policy> = {}): Policy {
  return policySchema.parse({
    kind: 'policy',
    version: 1,
    issuedAt: new Date().toISOString(),
    root: { keys: [org.root.publicKey], threshold: 1 },
    admins: [
      { name: 'alice', keys: [org.alice.publicKey], roles: ['ops', 'enroller'] },
      { name: 'bob', keys: [org.bob.publicKey], roles: ['prod-ops'] },
      { name: 'carol', keys: [org.carol.publicKey], roles: ['viewer'] },
    ],
    roles: [
      { name: 'ops', capabilities: ['deploy', 'rollback', 'read'], hosts: ['*'] },
      { name: 'enroller', capabilities: ['enroll'], hosts: ['*'] },
      { name: 'prod-ops', capabilities: ['deploy', 'read'], groups: ['production'] },
      { name: 'viewer', capabilities: ['read'], hosts: ['*'] },
    ],
    groups: [{ name: 'production', hosts: ['prod-1'], threshold: 2 }],
    relays: [],
    timestampKeys: [org.timestamp.publicKey],
    revokedKeys: [],
    ...overrides,
  });
}

export function signPolicy(policy: Policy, ...keys: SigningKey[]): SignedPolicy {
  return { policy, signatures: keys.map((key) => signPayload('policy', policy, key)) };
}

export async function pushPolicy(
  serverUrl: string,
  signed: SignedPolicy,
): Promise<{ status: number; body: { ok?: boolean; error?: string } }> {
  const response = await fetch(`${httpBaseFromWs(serverUrl)}/api/policy`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(signed),
  });
  return { status: response.status, body: (await response.json()) as { ok?: boolean; error?: string } };
}

export async function postJson(
  serverUrl: string,
  path: string,
  body: unknown,
): Promise<{ status: number; body: { ok?: boolean; error?: string; enrolled?: boolean } }> {
  const response = await fetch(`${httpBaseFromWs(serverUrl)}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return {
    status: response.status,
    body: (await response.json()) as { ok?: boolean; error?: string; enrolled?: boolean },
  };
}
