import { signEnrollment } from '../../admin/enroll-entries.js';
import { generateSigningKey, type SigningKey } from '../../shared/crypto/keys.js';
import { signPayload } from '../../shared/crypto/signatures.js';
import { appendPolicy, POLICY_DOC, TIMESTAMP_DOC, writeTimestamp } from '../../shared/documents/fleet.js';
import type { Intent } from '../../shared/schemas/intent.js';
import { type Policy, policySchema, type SignedPolicy, type Timestamp } from '../../shared/schemas/policy.js';
import { httpBaseFromWs } from '../../shared/sync/reconnect.js';
import { type HostilePeer, startHostilePeer } from './hostile-peer.js';

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

// The org's root-signed base policy pushed, and `hosts` enrolled by alice (each with a fresh key),
// as admins would with `outpost policy push` and `outpost enroll approve`.
export async function pushPolicyAndEnroll(
  serverUrl: string,
  org: TestOrg,
  policy: Policy,
  hosts: string[],
): Promise<void> {
  const pushed = await pushPolicy(serverUrl, signPolicy(policy, org.root));
  if (pushed.status !== 200) throw new Error(`policy push refused (${pushed.status}): ${pushed.body.error}`);
  for (const host of hosts) {
    const enrollment = { host, hostKey: generateSigningKey(host).publicKey, policyVersion: policy.version };
    const approved = await postJson(
      serverUrl,
      '/api/enroll/approve',
      signEnrollment(org.alice, enrollment, new Date()),
    );
    if (approved.status !== 200)
      throw new Error(`enrolling ${host} refused (${approved.status}): ${approved.body.error}`);
  }
}

// A switch intent issued a second ago and valid for an hour; `policyVersion` is left out for
// agents that trust a static --admin-key list.
export function switchIntent(
  host: string,
  generation: number,
  closure: string,
  issuer: string,
  policyVersion?: number,
): Intent {
  const now = Date.now();
  return {
    kind: 'intent',
    host,
    generation,
    closure,
    action: 'switch',
    issuedAt: new Date(now - 1000).toISOString(),
    expiresAt: new Date(now + 3_600_000).toISOString(),
    issuer,
    ...(policyVersion === undefined ? {} : { policyVersion }),
  };
}

// Timestamps as the coordinator signs them (the org's timestamp key), written into the peer's
// copy of fleet/timestamp now and every `intervalMs`, naming the policy version `policyVersion`
// gives at each. Returns the function that stops them.
export function stampTimestamps(
  peer: HostilePeer,
  org: TestOrg,
  policyVersion: () => number,
  intervalMs = 300,
): () => void {
  let seq = 0;
  const stamp = (): void => {
    seq += 1;
    const timestamp: Timestamp = {
      kind: 'timestamp',
      at: new Date().toISOString(),
      seq,
      policyVersion: policyVersion(),
    };
    writeTimestamp(peer.doc(TIMESTAMP_DOC), {
      timestamp,
      signature: signPayload('timestamp', timestamp, org.timestamp),
    });
  };
  stamp();
  const timer = setInterval(stamp, intervalMs);
  return () => clearInterval(timer);
}

// A peer (test/harness/hostile-peer.ts) that passes the fleet's genuine policies on, with fresh
// timestamps naming the last of them every `intervalMs`: what a coordinator or relay serves.
// `stop` ends the timestamps and closes the peer.
export async function startServingPeer(
  org: TestOrg,
  policies: SignedPolicy[],
  intervalMs = 500,
): Promise<{ peer: HostilePeer; stop: () => Promise<void> }> {
  const peer = await startHostilePeer();
  for (const signed of policies) appendPolicy(peer.doc(POLICY_DOC), signed);
  const version = policies.at(-1)?.policy.version ?? 1;
  const stopStamping = stampTimestamps(peer, org, () => version, intervalMs);
  return {
    peer,
    stop: async () => {
      stopStamping();
      await peer.close();
    },
  };
}
