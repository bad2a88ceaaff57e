import * as Y from 'yjs';
import { signEnrollment } from '../../../../admin/enroll-entries.js';
import type { SigningKey } from '../../../../shared/crypto/keys.js';
import { signPayload } from '../../../../shared/crypto/signatures.js';
import { appendIntent } from '../../../../shared/documents/desired.js';
import { appendEnrollment } from '../../../../shared/documents/fleet.js';
import { appendResult, writeCurrentStatus } from '../../../../shared/documents/status.js';
import type { Intent, SignedIntent } from '../../../../shared/schemas/intent.js';
import type { Policy } from '../../../../shared/schemas/policy.js';
import type { Result, Status } from '../../../../shared/schemas/report.js';
import { signIntent } from '../../../../shared/trust/sign-intent.js';
import { type HostKeyAuthority, hostKeyAuthority } from '../../../../shared/views/host-view.js';
import type { TestOrg } from '../../../harness/policy-fixtures.js';

// Documents for the view tests: real Y.Docs, real keys and signatures, as agents and admins write them.

export const T0 = Date.parse('2026-12-01T12:00:00.000Z');
export const iso = (ms: number): string => new Date(ms).toISOString();
export const closure = (c: string, name: string): string => `/nix/store/${c.repeat(32)}-${name}`;

export function intent(host: string, generation: number, closurePath: string, overrides: Partial<Intent> = {}): Intent {
  return {
    kind: 'intent',
    host,
    generation,
    closure: closurePath,
    action: 'switch',
    issuedAt: iso(T0),
    expiresAt: iso(T0 + 3_600_000),
    issuer: 'alice',
    policyVersion: 1,
    ...overrides,
  };
}

export function desiredWith(...signed: SignedIntent[]): Y.Doc {
  const doc = new Y.Doc();
  for (const s of signed) appendIntent(doc, s);
  return doc;
}

export const signed = (content: Intent, ...keys: SigningKey[]): SignedIntent => ({
  intent: signIntent(content, keys[0]!).intent,
  signatures: keys.map((k) => signIntent(content, k).signatures[0]!),
});

export function result(
  host: string,
  seq: number,
  generation: number,
  closurePath: string,
  overrides: Partial<Result> = {},
): Result {
  return {
    kind: 'result',
    host,
    seq,
    at: iso(T0 + seq * 60_000),
    outcome: 'applied',
    generation,
    closure: closurePath,
    action: 'switch',
    intentDigest: 'a'.repeat(64),
    reason: '',
    outputTail: '',
    ...overrides,
  };
}

export function status(
  host: string,
  phase: Status['phase'],
  applied: { generation: number; closure: string } | null,
  overrides: Partial<Status> = {},
): Status {
  return {
    kind: 'status',
    host,
    phase,
    applied,
    target: null,
    lastResultSeq: null,
    agentVersion: '0.1.0',
    seq: 1,
    updatedAt: iso(T0),
    ...overrides,
  };
}

export function statusDoc(
  current: { status: Status; key: SigningKey } | null,
  results: { result: Result; key: SigningKey }[] = [],
): Y.Doc {
  const doc = new Y.Doc();
  if (current)
    writeCurrentStatus(doc, { status: current.status, signature: signPayload('status', current.status, current.key) });
  for (const r of results) appendResult(doc, { result: r.result, signature: signPayload('result', r.result, r.key) });
  return doc;
}

// The policy chain and the enrollment of `hosts` (host → key), approved by alice.
export function authorityFor(org: TestOrg, policy: Policy, hosts: Record<string, SigningKey>): HostKeyAuthority {
  const enrollment = new Y.Doc();
  for (const [host, key] of Object.entries(hosts))
    appendEnrollment(
      enrollment,
      signEnrollment(org.alice, { host, hostKey: key.publicKey, policyVersion: policy.version }, new Date(T0)),
    );
  return hostKeyAuthority([policy], enrollment)!;
}
