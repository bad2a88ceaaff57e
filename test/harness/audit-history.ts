import * as Y from 'yjs';
import type { AuditSource } from '../../shared/audit/history.js';
import { type AuditLogEntry, GENESIS_HASH, logEntryHash } from '../../shared/audit/log-chain.js';
import type { SigningKey } from '../../shared/crypto/keys.js';
import { signPayload } from '../../shared/crypto/signatures.js';
import { appendAction, appendIntent } from '../../shared/documents/desired.js';
import { appendEnrollment, appendPolicy, ENROLLMENT_DOC, POLICY_DOC } from '../../shared/documents/fleet.js';
import { desiredDocName, documentGarbageCollects, statusDocName } from '../../shared/documents/names.js';
import { appendActionResult, appendResult, writeCurrentStatus } from '../../shared/documents/status.js';
import type { ActionKind, ActionRequest, ActionResult, SignedAction } from '../../shared/schemas/action.js';
import type { Intent, SignedIntent } from '../../shared/schemas/intent.js';
import type { Enrollment, SignedPolicy } from '../../shared/schemas/policy.js';
import type { Result, Status } from '../../shared/schemas/report.js';
import { actionDigest } from '../../shared/trust/verify-action.js';
import { intentDigest } from '../../shared/trust/verify-intent.js';

// An in-memory fleet history for unit tests and the audit benchmark: real Y.Docs written the way
// admins, agents and the coordinator write them, every change captured as a log entry with the
// coordinator's hash chain. `sign` can be swapped (the benchmark signs with Node's Ed25519).
export type Signer = typeof signPayload;

export class FleetHistory {
  readonly docs = new Map<string, { doc: Y.Doc; entries: AuditLogEntry[] }>();
  clock = Date.parse('2025-01-01T00:00:00Z');
  constructor(readonly sign: Signer = signPayload) {}

  write(name: string, principal: string, change: (doc: Y.Doc) => void): AuditLogEntry {
    let state = this.docs.get(name);
    if (!state) {
      state = { doc: new Y.Doc({ gc: documentGarbageCollects(name) }), entries: [] };
      this.docs.set(name, state);
    }
    const before = Y.encodeStateVector(state.doc);
    change(state.doc);
    return this.raw(name, principal, Y.encodeStateAsUpdate(state.doc, before));
  }

  // Appends update bytes as they are (an attacker writing straight into the log).
  raw(name: string, principal: string, update: Uint8Array): AuditLogEntry {
    let state = this.docs.get(name);
    if (!state) {
      state = { doc: new Y.Doc({ gc: documentGarbageCollects(name) }), entries: [] };
      this.docs.set(name, state);
    }
    this.clock += 1000;
    const prevHash = state.entries.at(-1)?.hash ?? GENESIS_HASH;
    const partial = { document: name, seq: state.entries.length + 1, receivedAt: this.clock, principal, update };
    const entry = { ...partial, prevHash, hash: logEntryHash(prevHash, partial) };
    state.entries.push(entry);
    return entry;
  }

  now(): string {
    return new Date(this.clock).toISOString();
  }

  policy(signed: SignedPolicy): void {
    this.write(POLICY_DOC, `policy:v${signed.policy.version}`, (doc) => appendPolicy(doc, signed));
  }

  enroll(host: string, hostKey: string, approver: SigningKey, policyVersion = 1): void {
    const enrollment: Enrollment = { kind: 'enrollment', host, hostKey, approvedAt: this.now(), policyVersion };
    const signed = { enrollment, signatures: [this.sign('enrollment', enrollment, approver)] };
    this.write(ENROLLMENT_DOC, `enrollment:${host}`, (doc) => appendEnrollment(doc, signed));
  }

  intent(
    host: string,
    generation: number,
    closure: string,
    signers: SigningKey[],
    policyVersion = 1,
    extra: Partial<Intent> = {},
  ): { signed: SignedIntent; digest: string } {
    const intent: Intent = {
      kind: 'intent',
      host,
      generation,
      closure,
      action: 'switch',
      issuedAt: this.now(),
      expiresAt: new Date(this.clock + 7 * 86_400_000).toISOString(),
      issuer: signers[0]!.name,
      policyVersion,
      ...extra,
    };
    const signed = { intent, signatures: signers.map((k) => this.sign('intent', intent, k)) };
    this.write(desiredDocName(host), `admin:${signers[0]!.name}`, (doc) => appendIntent(doc, signed));
    return { signed, digest: intentDigest(signed) };
  }

  result(
    host: string,
    key: SigningKey,
    fields: Partial<Result> & Pick<Result, 'seq' | 'generation' | 'closure' | 'intentDigest'>,
  ): void {
    const result: Result = {
      kind: 'result',
      host,
      at: this.now(),
      outcome: 'applied',
      action: 'switch',
      reason: '',
      outputTail: '',
      ...fields,
    };
    this.write(statusDocName(host), `host:${host}`, (doc) =>
      appendResult(doc, { result, signature: this.sign('result', result, key) }),
    );
  }

  // An admin's remote-action request in the host's desired document, valid for an hour.
  action(host: string, action: ActionKind, signer: SigningKey, id: string, policyVersion = 1): string {
    const issuedAt = this.now();
    const request: ActionRequest = {
      kind: 'action',
      action,
      host,
      id,
      issuedAt,
      expiresAt: new Date(Date.parse(issuedAt) + 3_600_000).toISOString(),
      issuer: signer.name,
      policyVersion,
    };
    const signed: SignedAction = { request, signatures: [this.sign('action', request, signer)] };
    this.write(desiredDocName(host), `admin:${signer.name}`, (doc) => appendAction(doc, signed));
    return actionDigest(signed);
  }

  actionResult(
    host: string,
    key: SigningKey,
    fields: Partial<ActionResult> & Pick<ActionResult, 'seq' | 'action' | 'id' | 'requestDigest'>,
  ): void {
    const result: ActionResult = {
      kind: 'action-result',
      host,
      at: this.now(),
      outcome: 'done',
      reason: '',
      ...fields,
    };
    this.write(statusDocName(host), `host:${host}`, (doc) =>
      appendActionResult(doc, { result, signature: this.sign('action-result', result, key) }),
    );
  }

  status(
    host: string,
    key: SigningKey,
    seq: number,
    applied: { generation: number; closure: string } | null,
    extra: Partial<Status> = {},
  ): void {
    const status: Status = {
      kind: 'status',
      host,
      phase: 'applied',
      applied,
      target: applied,
      lastResultSeq: null,
      agentVersion: 'test',
      seq,
      updatedAt: this.now(),
      ...extra,
    };
    this.write(statusDocName(host), `host:${host}`, (doc) =>
      writeCurrentStatus(doc, { status, signature: this.sign('status', status, key) }),
    );
  }

  source(): AuditSource {
    return { documents: [...this.docs.keys()], entries: (name) => this.docs.get(name)?.entries ?? [] };
  }
}

export const closureOf = (n: number): string =>
  `/nix/store/${'abcdfghijklmnpqrsvwxyz0123456789'.repeat(2).slice(n % 32, (n % 32) + 32)}-nixos-system-${n}`;
