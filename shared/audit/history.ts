import type { z } from 'zod';
import { canonicalJson } from '../crypto/canonical.js';
import { verifyPayloadSignature } from '../crypto/signatures.js';
import { ACTIONS_KEY, INTENTS_KEY } from '../documents/desired.js';
import { ENROLLMENT_DOC, POLICY_DOC } from '../documents/fleet.js';
import { desiredDocName, parseDocName, statusDocName } from '../documents/names.js';
import {
  ACTION_RESULTS_KEY,
  CURRENT_KEY,
  KEPT_ACTION_RESULTS,
  KEPT_RESULTS,
  RESULTS_KEY,
  STATUS_MAP,
} from '../documents/status.js';
import { signedActionResultSchema, signedActionSchema } from '../schemas/action.js';
import { signedIntentSchema } from '../schemas/intent.js';
import {
  type Policy,
  type SignedEnrollment,
  type SignedEnrollRequest,
  type SignedPolicy,
  signedEnrollmentSchema,
  signedEnrollRequestSchema,
  signedPolicySchema,
} from '../schemas/policy.js';
import { signedResultSchema, signedStatusSchema } from '../schemas/report.js';
import { adminForKey } from '../trust/capabilities.js';
import { hostBindings, verifyEnrollment, verifyEnrollRequest } from '../trust/enrollment.js';
import { walkPolicyChain } from '../trust/policy-chain.js';
import { verifyIntentUnderPolicy } from '../trust/policy-intent.js';
import { actionDigest, verifyAction } from '../trust/verify-action.js';
import { compareRank, type IntentRank, intentDigest } from '../trust/verify-intent.js';
import { describeSessionChanges, type SshSession } from '../tunnel/session-log.js';
import { type AuditLogEntry, checkKeptHead, createChainChecker, type LogHead } from './log-chain.js';
import { type EntryChange, replayDocument } from './replay.js';

// The audit of a fleet's history: every document replayed from its log, every signed entry
// checked with the policy in force when the coordinator logged it, and the anomalies named.
// Times are the coordinator's receive times: they order events but prove nothing (docs/audit.md).

export type AnomalyCode =
  | 'equivocation'
  | 'unauthorised-signer'
  | 'revoked-signer'
  | 'result-for-unknown-intent'
  | 'action-result-for-unknown-request'
  | 'result-seq-gap'
  | 'result-seq-reuse'
  | 'result-removed'
  | 'result-dropped-undelivered'
  | 'generation-rollback'
  | 'forged-status'
  | 'stale-status'
  | 'invalid-policy'
  | 'invalid-enrollment'
  | 'undecodable-update'
  | 'log-seq-gap'
  | 'hash-chain-broken'
  | 'head-mismatch'
  | 'checkpoint-mismatch'
  | 'checkpoint-missing'
  | 'invalid-kept-checkpoint';

export interface Anomaly {
  code: AnomalyCode;
  document: string;
  // The log entry it was found in (null: found over the whole document).
  logSeq: number | null;
  receivedAt: number | null;
  host: string | null;
  detail: string;
}

export type AuditEventKind =
  | 'policy'
  | 'enrollment'
  | 'enroll-request'
  | 'intent'
  | 'cosignature'
  | 'result'
  | 'action'
  | 'action-result'
  | 'status'
  | 'removal'
  | 'malformed'
  | 'unsigned';

export interface SignerView {
  key: string;
  // Admin name under the policy in force (or the one the entry names); the host id for hosts.
  name: string | null;
  role: 'root' | 'admin' | 'host' | 'unknown';
  signatureValid: boolean;
}

export interface AuditEvent {
  document: string;
  logSeq: number;
  receivedAt: number;
  principal: string;
  kind: AuditEventKind;
  host: string | null;
  // The policy version in force when the coordinator logged the entry.
  policyVersion: number | null;
  signers: SignerView[];
  verified: boolean;
  // 'valid', or why a reader refuses it.
  outcome: string;
  summary: string;
  digest?: string;
}

export interface AuditSource {
  documents: readonly string[];
  // Entries of one document in log order; may be called once per document.
  entries(document: string): Iterable<AuditLogEntry>;
}

export interface AuditOptions {
  orgRootKeys: readonly string[];
  // Only these hosts' documents (the fleet documents are always read); default every host.
  hosts?: readonly string[];
  keptHeads?: readonly LogHead[];
  // Which events to keep in the report (all by default); anomalies are always kept.
  keepEvent?: (event: AuditEvent) => boolean;
  // Documents replayed for what they establish (policies, bindings) but whose own findings —
  // events, anomalies, heads, counts — another part of a split audit reports (mergeAuditReports).
  contextOnly?: readonly string[];
}

export interface AuditReport {
  events: AuditEvent[];
  anomalies: Anomaly[];
  policyVersions: { version: number; since: number }[];
  heads: LogHead[];
  documents: number;
  entries: number;
  signedEntries: number;
}

const short = (key: string): string => `${key.slice(0, 12)}…`;

// Policy versions in the order the coordinator logged them, with prefix chains for lookups by time.
class PolicyHistory {
  readonly versions: { policy: Policy; since: number }[] = [];
  private readonly chains: Policy[][] = [[]];
  private readonly adminKeysSince = new Map<string, number>();

  add(policy: Policy, since: number): void {
    this.versions.push({ policy, since });
    this.chains.push([...this.chains.at(-1)!, policy]);
    for (const admin of policy.admins)
      for (const key of admin.keys) if (!this.adminKeysSince.has(key)) this.adminKeysSince.set(key, since);
  }

  private countAt(t: number): number {
    let lo = 0;
    let hi = this.versions.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.versions[mid]!.since <= t) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  chainAt(t: number): Policy[] {
    return this.chains[this.countAt(t)]!;
  }

  at(t: number): Policy | undefined {
    return this.chainAt(t).at(-1);
  }

  // Was this key an admin key in any version logged by t?
  wasAdminKey(key: string, t: number): boolean {
    const since = this.adminKeysSince.get(key);
    return since !== undefined && since <= t;
  }
}

// host → which key was bound when, as the coordinator's rules (hostBindings) would have said.
class BindingHistory {
  private readonly byHost = new Map<string, { since: number; key: string | null }[]>();
  private current = new Map<string, string>();

  set(host: string, key: string | null, since: number): void {
    if ((this.current.get(host) ?? null) === key) return;
    if (key === null) this.current.delete(host);
    else this.current.set(host, key);
    const list = this.byHost.get(host) ?? [];
    list.push({ since, key });
    this.byHost.set(host, list);
  }

  replaceAll(next: Map<string, string>, since: number): void {
    for (const host of new Set([...this.current.keys(), ...next.keys()])) this.set(host, next.get(host) ?? null, since);
  }

  bound(host: string): string | null {
    return this.current.get(host) ?? null;
  }

  keyAt(host: string, t: number): string | null {
    let key: string | null = null;
    for (const record of this.byHost.get(host) ?? []) {
      if (record.since > t) break;
      key = record.key;
    }
    return key;
  }
}

interface Collector {
  report: AuditReport;
  keep: (event: AuditEvent) => boolean;
  contextOnly: ReadonlySet<string>;
}

function emit(collector: Collector, event: AuditEvent): void {
  if (collector.contextOnly.has(event.document)) return;
  if (event.signers.length > 0) collector.report.signedEntries += 1;
  if (collector.keep(event)) collector.report.events.push(event);
}

function flag(
  collector: Collector,
  code: AnomalyCode,
  entry: AuditLogEntry | null,
  document: string,
  host: string | null,
  detail: string,
): void {
  if (collector.contextOnly.has(document)) return;
  collector.report.anomalies.push({
    code,
    document,
    logSeq: entry?.seq ?? null,
    receivedAt: entry?.receivedAt ?? null,
    host,
    detail,
  });
}

function base(change: EntryChange, kind: AuditEventKind, policy: Policy | undefined): AuditEvent {
  const { entry } = change;
  return {
    document: entry.document,
    logSeq: entry.seq,
    receivedAt: entry.receivedAt,
    principal: entry.principal,
    kind,
    host: parseDocName(entry.document)?.host ?? null,
    policyVersion: policy?.version ?? null,
    signers: [],
    verified: false,
    outcome: '',
    summary: '',
  };
}

function issuesOf(error: { issues: { path: PropertyKey[]; message: string }[] }): string {
  return error.issues
    .slice(0, 3)
    .map((i) => `${i.path.map(String).join('.')}: ${i.message}`)
    .join('; ');
}

// An entry's value parsed with its schema, or null after reporting it as malformed (what and why).
function parseLogged<T>(
  collector: Collector,
  change: EntryChange,
  policy: Policy | undefined,
  schema: z.ZodType<T>,
  value: unknown,
  what: string,
): T | null {
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data;
  emit(collector, {
    ...base(change, 'malformed', policy),
    outcome: issuesOf(parsed.error),
    summary: `malformed ${what}`,
  });
  return null;
}

// Structural changes every document shares: undecodable updates, removals, values nobody reads.
// Removals from the arrays in `judgedApart` are left to the caller, which judges them.
function noteStructure(
  collector: Collector,
  change: EntryChange,
  policy: Policy | undefined,
  judgedApart: readonly string[] = [],
): void {
  const { entry } = change;
  if (change.error) {
    flag(
      collector,
      'undecodable-update',
      entry,
      entry.document,
      null,
      `${entry.document} #${entry.seq}: ${change.error}`,
    );
    emit(collector, { ...base(change, 'malformed', policy), outcome: change.error, summary: 'undecodable update' });
  }
  for (const removal of change.removed) {
    if (judgedApart.includes(removal.from)) continue;
    emit(collector, {
      ...base(change, 'removal', policy),
      outcome: 'signed entries are append-only; a writer removed some',
      summary: `${removal.count} value(s) removed from ${removal.from}`,
    });
  }
}

function unsigned(collector: Collector, change: EntryChange, policy: Policy | undefined, where: string): void {
  emit(collector, {
    ...base(change, 'unsigned', policy),
    outcome: 'not a signed entry any reader uses',
    summary: `value written to ${where}`,
  });
}

// Key checks every admin-signed entry gets, with the policy in force when it was logged.
function checkAdminSigners(
  collector: Collector,
  change: EntryChange,
  keys: readonly string[],
  policies: PolicyHistory,
  host: string | null,
  what: string,
): void {
  const { entry } = change;
  const policy = policies.at(entry.receivedAt);
  for (const key of new Set(keys)) {
    if (policy?.revokedKeys.includes(key))
      flag(
        collector,
        'revoked-signer',
        entry,
        entry.document,
        host,
        `${what} is signed by ${short(key)}, revoked in policy version ${policy.version} in force when it was logged`,
      );
    else if (!policies.wasAdminKey(key, entry.receivedAt))
      flag(
        collector,
        'unauthorised-signer',
        entry,
        entry.document,
        host,
        `${what} is signed by ${short(key)}, which no policy version logged by then names as an admin key`,
      );
  }
}

function adminSigner(policy: Policy | undefined, key: string, valid: boolean): SignerView {
  const admin = policy ? adminForKey(policy, key) : null;
  return { key, name: admin?.name ?? null, role: admin ? 'admin' : 'unknown', signatureValid: valid };
}

function auditPolicies(collector: Collector, source: AuditSource, pinned: ReadonlySet<string>): PolicyHistory {
  const history = new PolicyHistory();
  if (!source.documents.includes(POLICY_DOC)) return history;
  let chain: Policy[] = [];
  const candidates: SignedPolicy[] = [];
  replayDocument(source.entries(POLICY_DOC), { arrays: ['policies'], maps: [] }, (change) => {
    noteStructure(collector, change, chain.at(-1));
    for (const { array, values } of change.inserted)
      for (const value of values) {
        if (array !== 'policies') continue;
        const parsed = signedPolicySchema.safeParse(value);
        if (!parsed.success) {
          emit(collector, {
            ...base(change, 'malformed', chain.at(-1)),
            outcome: issuesOf(parsed.error),
            summary: 'malformed policy entry',
          });
          flag(
            collector,
            'invalid-policy',
            change.entry,
            POLICY_DOC,
            null,
            `malformed policy entry: ${issuesOf(parsed.error)}`,
          );
          continue;
        }
        const signed = parsed.data;
        candidates.push(signed);
        const walk = walkPolicyChain(chain, pinned, candidates);
        const previous = chain.at(-1);
        for (const policy of walk.chain.slice(chain.length)) history.add(policy, change.entry.receivedAt);
        chain = walk.chain;
        const content = canonicalJson(signed.policy);
        const accepted = chain.some((p) => canonicalJson(p) === content);
        const reasons = walk.refused.filter((r) => r.version === signed.policy.version).map((r) => r.reason);
        const rootKeys = new Set([...(previous?.root.keys ?? []), ...signed.policy.root.keys]);
        emit(collector, {
          ...base(change, 'policy', chain.at(-1)),
          signers: signed.signatures.map((s) => ({
            key: s.publicKey,
            name: null,
            role: rootKeys.has(s.publicKey) ? 'root' : 'unknown',
            signatureValid: verifyPayloadSignature('policy', signed.policy, s),
          })),
          verified: accepted,
          outcome: accepted ? 'valid' : reasons.join('; ') || 'not part of the chain from the pinned root',
          summary: `policy version ${signed.policy.version} (epoch ${signed.policy.epoch})`,
        });
        if (!accepted)
          flag(
            collector,
            reasons.some((r) => r.includes('equivocation')) ? 'equivocation' : 'invalid-policy',
            change.entry,
            POLICY_DOC,
            null,
            `policy version ${signed.policy.version} logged but refused by readers: ${reasons.join('; ') || 'it does not follow the chain'}`,
          );
      }
    for (const { map, key } of change.set) unsigned(collector, change, chain.at(-1), `${map}.${key}`);
  });
  return history;
}

function auditEnrollments(collector: Collector, source: AuditSource, policies: PolicyHistory): BindingHistory {
  const bindings = new BindingHistory();
  const enrollments: SignedEnrollment[] = [];
  const requests: SignedEnrollRequest[] = [];
  const usedNonces = new Set<string>();
  let versionIndex = 0;
  // A new policy version re-decides every binding (an approver removed since no longer counts).
  const catchUpPolicies = (t: number): void => {
    while (versionIndex < policies.versions.length && policies.versions[versionIndex]!.since <= t) {
      const { policy, since } = policies.versions[versionIndex]!;
      const fresh = hostBindings(policy, enrollments, requests);
      bindings.replaceAll(new Map([...fresh].map(([host, b]) => [host, b.hostKey])), since);
      versionIndex += 1;
    }
  };
  const entries = source.documents.includes(ENROLLMENT_DOC) ? source.entries(ENROLLMENT_DOC) : [];
  replayDocument(entries, { arrays: ['enrollments', 'requests'], maps: [] }, (change) => {
    const { entry } = change;
    const t = entry.receivedAt;
    catchUpPolicies(t);
    const policy = policies.at(t);
    noteStructure(collector, change, policy);
    for (const { array, values } of change.inserted)
      for (const value of values) {
        if (array === 'enrollments') {
          const signed = parseLogged(collector, change, policy, signedEnrollmentSchema, value, 'enrollment');
          if (!signed) continue;
          const { host, hostKey } = signed.enrollment;
          enrollments.push(signed);
          const verdict = policy
            ? verifyEnrollment(signed, policy)
            : { ok: false as const, reason: 'no policy in force' };
          emit(collector, {
            ...base(change, 'enrollment', policy),
            host,
            signers: signed.signatures.map((s) =>
              adminSigner(policy, s.publicKey, verifyPayloadSignature('enrollment', signed.enrollment, s)),
            ),
            verified: verdict.ok,
            outcome: verdict.ok ? 'valid' : verdict.reason,
            summary: `host ${host} bound to key ${short(hostKey)}`,
          });
          checkAdminSigners(
            collector,
            change,
            signed.signatures.map((s) => s.publicKey),
            policies,
            host,
            `enrollment of ${host}`,
          );
          if (verdict.ok) bindings.set(host, hostKey, t);
          else
            flag(
              collector,
              'invalid-enrollment',
              entry,
              ENROLLMENT_DOC,
              host,
              `enrollment of ${host} logged but invalid: ${verdict.reason}`,
            );
        } else if (array === 'requests') {
          const signed = parseLogged(collector, change, policy, signedEnrollRequestSchema, value, 'enrollment request');
          if (!signed) continue;
          const { host, hostKey, token } = signed.request;
          requests.push(signed);
          const verdict = verifyEnrollRequest(signed, policy ?? null);
          const binds =
            verdict.ok && verdict.viaToken === true && !usedNonces.has(token!.token.nonce) && !bindings.bound(host);
          if (verdict.ok && token) usedNonces.add(token.token.nonce);
          emit(collector, {
            ...base(change, 'enroll-request', policy),
            host,
            signers: [
              {
                key: signed.signature.publicKey,
                name: host,
                role: 'host',
                signatureValid: verifyPayloadSignature('enroll-request', signed.request, signed.signature),
              },
            ],
            verified: verdict.ok,
            outcome: verdict.ok
              ? binds
                ? 'valid; the token binds the key'
                : 'valid; waits for approval'
              : verdict.reason,
            summary: `host ${host} asks to bind key ${short(hostKey)}${token ? ' with a token' : ''}`,
          });
          if (binds) bindings.set(host, hostKey, t);
        }
      }
    for (const { map, key } of change.set) unsigned(collector, change, policy, `${map}.${key}`);
  });
  catchUpPolicies(Number.POSITIVE_INFINITY);
  return bindings;
}

interface ValidIntent {
  rank: IntentRank;
  content: string;
  generation: number;
}

// A host's numbered results, per signing key: the content each number was first seen with (to
// tell a replay from a second result claiming it), and the numbers in order (to count how many
// newer results a removed one had).
class ResultNumbers {
  private readonly contentBySeq = new Map<string, Map<number, string>>();
  private readonly ordered = new Map<string, number[]>();

  // Records a result; says how a number seen before came back (null: first time).
  note(key: string, seq: number, content: string): string | null {
    const seqs = this.contentBySeq.get(key) ?? new Map<number, string>();
    this.contentBySeq.set(key, seqs);
    const earlier = seqs.get(seq);
    if (earlier !== undefined)
      return earlier === content ? 'appears again (replayed)' : 'is claimed by two different results';
    seqs.set(seq, content);
    const order = this.ordered.get(key) ?? [];
    this.ordered.set(key, order);
    // Results arrive in order almost always: appending is the common case.
    if (!order.length || order.at(-1)! < seq) order.push(seq);
    else order.splice(this.firstAbove(order, seq), 0, seq);
    return null;
  }

  // Each key with the numbers its results used.
  keys(): IterableIterator<[string, Map<number, string>]> {
    return this.contentBySeq.entries();
  }

  private firstAbove(seqs: number[], seq: number): number {
    let lo = 0;
    let hi = seqs.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (seqs[mid]! <= seq) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  countAbove(key: string, seq: number): number {
    const seqs = this.ordered.get(key) ?? [];
    return seqs.length - this.firstAbove(seqs, seq);
  }
}

// "#1–#36, #40" for a list of numbers.
function seqRanges(seqs: number[]): string {
  const sorted = [...new Set(seqs)].sort((a, b) => a - b);
  const parts: string[] = [];
  for (let i = 0; i < sorted.length; ) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j]! + 1) j += 1;
    parts.push(j === i ? `#${sorted[i]}` : `#${sorted[i]}–#${sorted[j]}`);
    i = j + 1;
  }
  return parts.join(', ');
}

// An admin's remote-action request (shared/schemas/action.ts), judged as the agent would when it
// was logged: a request logged after it expired shows as expired, which is what the agent said.
function auditActionRequest(
  collector: Collector,
  change: EntryChange,
  host: string,
  chain: Policy[],
  policies: PolicyHistory,
  value: unknown,
  knownActions: Set<string>,
): void {
  const policy = chain.at(-1);
  const signed = parseLogged(collector, change, policy, signedActionSchema, value, 'action request');
  if (!signed) return;
  const { request } = signed;
  knownActions.add(actionDigest(signed));
  const verdict = verifyAction(signed, { host, now: change.entry.receivedAt, chain, mode: 'policy' });
  const named = chain.find((p) => p.version === request.policyVersion) ?? policy;
  emit(collector, {
    ...base(change, 'action', policy),
    signers: signed.signatures.map((s) =>
      adminSigner(named, s.publicKey, verifyPayloadSignature('action', request, s)),
    ),
    verified: verdict.ok,
    outcome: verdict.ok ? 'valid' : `${verdict.code}: ${verdict.reason}`,
    summary: `${request.action}${request.force ? ' (forced)' : ''} on ${host} by ${request.issuer}, expires ${request.expiresAt}${request.reason ? `: ${request.reason.slice(0, 200)}` : ''}`,
    digest: actionDigest(signed),
  });
  checkAdminSigners(
    collector,
    change,
    signed.signatures.map((s) => s.publicKey),
    policies,
    host,
    `${request.action} request for ${host}`,
  );
}

function auditHost(
  collector: Collector,
  source: AuditSource,
  host: string,
  policies: PolicyHistory,
  bindings: BindingHistory,
): void {
  const desired = desiredDocName(host);
  const knownDigests = new Set<string>();
  const epochByDigest = new Map<string, number>();
  const valid: ValidIntent[] = [];
  const seenContent = new Set<string>();
  const entries = source.documents.includes(desired) ? source.entries(desired) : [];
  const knownActions = new Set<string>();
  replayDocument(entries, { arrays: [INTENTS_KEY, ACTIONS_KEY], maps: [] }, (change) => {
    const { entry } = change;
    const t = entry.receivedAt;
    const chain = policies.chainAt(t);
    const policy = chain.at(-1);
    noteStructure(collector, change, policy);
    for (const { array, values } of change.inserted)
      for (const value of values) {
        if (array === ACTIONS_KEY) {
          auditActionRequest(collector, change, host, chain, policies, value, knownActions);
          continue;
        }
        const signed = parseLogged(collector, change, policy, signedIntentSchema, value, 'intent entry');
        if (!signed) continue;
        const { intent } = signed;
        const digest = intentDigest(signed);
        knownDigests.add(digest);
        const content = canonicalJson(intent);
        const kind = seenContent.has(content) ? 'cosignature' : 'intent';
        seenContent.add(content);
        const verdict = verifyIntentUnderPolicy(signed, { host, chain, now: t });
        const named = chain.find((p) => p.version === intent.policyVersion) ?? policy;
        emit(collector, {
          ...base(change, kind, policy),
          signers: signed.signatures.map((s) =>
            adminSigner(named, s.publicKey, verifyPayloadSignature('intent', intent, s)),
          ),
          verified: verdict.ok,
          outcome: verdict.ok ? 'valid' : `${verdict.code}: ${verdict.reason}`,
          summary: `${host} → generation ${intent.generation} (${intent.action}) ${intent.closure} under policy ${intent.policyVersion ?? 'none'}`,
          digest,
        });
        checkAdminSigners(
          collector,
          change,
          signed.signatures.map((s) => s.publicKey),
          policies,
          host,
          `intent for ${host} generation ${intent.generation}`,
        );
        if (!verdict.ok) continue;
        const rank = { epoch: named?.epoch ?? 0, generation: intent.generation };
        epochByDigest.set(digest, rank.epoch);
        const same = valid.find((v) => compareRank(v.rank, rank) === 0 && v.content !== content);
        const above = valid.find((v) => compareRank(v.rank, rank) > 0 && v.content !== content);
        if (same)
          flag(
            collector,
            'equivocation',
            entry,
            desired,
            host,
            `two different valid intents claim ${host} generation ${intent.generation}`,
          );
        else if (above)
          flag(
            collector,
            'generation-rollback',
            entry,
            desired,
            host,
            `valid intent for ${host} generation ${intent.generation} logged after generation ${above.generation} (agents refuse it as a rollback)`,
          );
        if (!valid.some((v) => v.content === content)) valid.push({ rank, content, generation: intent.generation });
      }
    for (const { map, key } of change.set) unsigned(collector, change, policy, `${map}.${key}`);
  });

  const status = statusDocName(host);
  const resultNumbers = new ResultNumbers();
  const actionResultNumbers = new ResultNumbers();
  // Per signing key: numbers the host itself said it deleted before any upstream that keeps
  // history held them (a signed result's droppedUndelivered, agent/status-prune.ts), and by which.
  const droppedByKey = new Map<string, Map<number, number>>();
  const statusSeqByKey = new Map<string, number>();
  // The session log of the last valid status, so each status names only the sessions it opened or closed.
  let lastSessions: SshSession[] | undefined;
  let lastApplied: IntentRank | null = null;
  const statusEntries = source.documents.includes(status) ? source.entries(status) : [];
  // Is this report signed by the key enrolled for the host when it was logged?
  const hostSigner = (
    change: EntryChange,
    kind: 'status' | 'result' | 'action-result',
    payload: unknown,
    signature: { publicKey: string; signature: string },
    claimedHost: string,
    label: string,
  ): { signer: SignerView; problem: string | null } => {
    const bound = bindings.keyAt(host, change.entry.receivedAt);
    const valid = verifyPayloadSignature(kind, payload, signature);
    const signer: SignerView = {
      key: signature.publicKey,
      name: bound === signature.publicKey ? host : null,
      role: bound === signature.publicKey ? 'host' : 'unknown',
      signatureValid: valid,
    };
    const problem =
      bound === null
        ? `${label} is signed by ${short(signature.publicKey)}, but no key was enrolled for ${host} when it was logged`
        : bound !== signature.publicKey
          ? `${label} is signed by ${short(signature.publicKey)}, not ${host}'s enrolled key ${short(bound)}`
          : !valid
            ? `${label}: the host's signature does not verify (altered or forged)`
            : claimedHost !== host
              ? `${label} claims host ${claimedHost} but sits in ${host}'s status`
              : null;
    return { signer, problem };
  };
  // The agent deletes its own old results from the live document (KEPT_RESULTS, docs/agent.md):
  // a removal is judged against that rule, over this history, which keeps every result. Values that
  // are not the host's own (junk, forgeries, another key's) may go too (the agent purges them).
  const judgeRemoval = (change: EntryChange, removal: EntryChange['removed'][number]): void => {
    const isResults = removal.from === RESULTS_KEY;
    const order = isResults ? resultNumbers : actionResultNumbers;
    const kept = isResults ? KEPT_RESULTS : KEPT_ACTION_RESULTS;
    const what = isResults ? 'result' : 'action result';
    const own: number[] = [];
    const early: string[] = [];
    let others = 0;
    for (const value of removal.values ?? []) {
      const parsed = (isResults ? signedResultSchema : signedActionResultSchema).safeParse(value);
      const r = parsed.success ? parsed.data.result : null;
      const signature = parsed.success ? parsed.data.signature : null;
      const ownEntry =
        r !== null &&
        signature !== null &&
        hostSigner(change, isResults ? 'result' : 'action-result', r, signature, r.host, '').problem === null;
      if (!ownEntry) {
        others += 1;
        continue;
      }
      own.push(r.seq);
      const newer = order.countAbove(signature.publicKey, r.seq);
      if (newer < kept) early.push(`#${r.seq} (${newer} newer)`);
    }
    const parts = [
      ...(own.length ? [`${what}s ${seqRanges(own)} of ${host}`] : []),
      ...(others ? [`${others} value(s) that are not ${host}'s own signed ${what}s`] : []),
    ];
    if (early.length)
      flag(
        collector,
        'result-removed',
        change.entry,
        status,
        host,
        `${what}s ${early.join(', ')} of ${host} removed from the live document while fewer than ${kept} newer ones existed (the agent keeps its newest ${kept}): hidden from live readers by a writer; this history still has them`,
      );
    emit(collector, {
      ...base(change, 'removal', policies.at(change.entry.receivedAt)),
      verified: early.length === 0,
      outcome: early.length
        ? `removes ${what}s ${early.join(', ')} while fewer than ${kept} newer ones existed: not the agent's pruning (it keeps its newest ${kept}); a writer hid them from live readers, this history still has them`
        : 'valid',
      summary: `removed from the live document: ${parts.join(' and ') || `${removal.count} value(s)`} (pruned; this history keeps them)`,
    });
  };
  replayDocument(statusEntries, { arrays: [RESULTS_KEY, ACTION_RESULTS_KEY], maps: [STATUS_MAP] }, (change) => {
    const { entry } = change;
    const policy = policies.at(entry.receivedAt);
    noteStructure(collector, change, policy, [RESULTS_KEY, ACTION_RESULTS_KEY]);
    // Results before the status: an agent reports the result, then the status that follows it.
    for (const { array, values } of change.inserted)
      for (const value of values) {
        if (array === ACTION_RESULTS_KEY) {
          const parsed = parseLogged(collector, change, policy, signedActionResultSchema, value, 'action result');
          if (!parsed) continue;
          const { result: r, signature } = parsed;
          const label = `action result #${r.seq} of ${host}`;
          const { signer, problem } = hostSigner(change, 'action-result', r, signature, r.host, label);
          const problems: string[] = [];
          if (problem) {
            flag(collector, 'forged-status', entry, status, host, problem);
            problems.push(problem);
          } else {
            const reuse = actionResultNumbers.note(signature.publicKey, r.seq, canonicalJson(r));
            if (reuse) {
              flag(collector, 'result-seq-reuse', entry, status, host, `${label} ${reuse}`);
              problems.push(`seq #${r.seq} ${reuse}`);
            }
            if (!knownActions.has(r.requestDigest)) {
              flag(
                collector,
                'action-result-for-unknown-request',
                entry,
                status,
                host,
                `${label} answers action request ${r.requestDigest.slice(0, 16)}…, which is nowhere in ${desired}`,
              );
              problems.push('answers an action request that does not exist');
            }
          }
          emit(collector, {
            ...base(change, 'action-result', policy),
            signers: [signer],
            verified: problems.length === 0,
            outcome: problems.length ? problems.join('; ') : 'valid',
            summary: `#${r.seq} ${r.action} ${r.outcome}${r.code ? ` (${r.code})` : ''}${r.reason ? `: ${r.reason.slice(0, 200)}` : ''}`,
          });
          continue;
        }
        if (array !== RESULTS_KEY) continue;
        const parsed = parseLogged(collector, change, policy, signedResultSchema, value, 'result');
        if (!parsed) continue;
        const { result: r, signature } = parsed;
        const label = `result #${r.seq} of ${host}`;
        const { signer, problem } = hostSigner(change, 'result', r, signature, r.host, label);
        const problems: string[] = [];
        if (problem) {
          flag(collector, 'forged-status', entry, status, host, problem);
          problems.push(problem);
        } else {
          const reuse = resultNumbers.note(signature.publicKey, r.seq, canonicalJson(r));
          const dropped = droppedByKey.get(signature.publicKey) ?? new Map<number, number>();
          droppedByKey.set(signature.publicKey, dropped);
          // Only numbers below the noting result's own: a host cannot excuse numbers ahead of it.
          for (const [first, last] of r.droppedUndelivered ?? [])
            for (let seq = first; seq <= Math.min(last, r.seq - 1); seq += 1)
              if (!dropped.has(seq)) dropped.set(seq, r.seq);
          if (reuse) {
            flag(collector, 'result-seq-reuse', entry, status, host, `${label} ${reuse}`);
            problems.push(`seq #${r.seq} ${reuse}`);
          }
          if (r.outcome !== 'refused' && !knownDigests.has(r.intentDigest)) {
            flag(
              collector,
              'result-for-unknown-intent',
              entry,
              status,
              host,
              `${label} answers intent ${r.intentDigest.slice(0, 16)}…, which is nowhere in ${desired}`,
            );
            problems.push('answers an intent that does not exist');
          }
          if (r.outcome === 'applied') {
            const rank = { epoch: epochByDigest.get(r.intentDigest) ?? 0, generation: r.generation };
            if (lastApplied && compareRank(rank, lastApplied) < 0) {
              flag(
                collector,
                'generation-rollback',
                entry,
                status,
                host,
                `${label} reports generation ${r.generation} applied after generation ${lastApplied.generation}`,
              );
              problems.push(`applied generation went back from ${lastApplied.generation}`);
            } else lastApplied = rank;
          }
        }
        emit(collector, {
          ...base(change, 'result', policy),
          signers: [signer],
          verified: problems.length === 0,
          outcome: problems.length ? problems.join('; ') : 'valid',
          summary: `#${r.seq} ${r.outcome} generation ${r.generation} ${r.closure}${r.reason ? `: ${r.reason.slice(0, 200)}` : ''}`,
        });
      }
    // After the insertions: an update (a sync after a long disconnection) may bring new results
    // and delete old ones at once.
    for (const removal of change.removed)
      if (removal.from === RESULTS_KEY || removal.from === ACTION_RESULTS_KEY) judgeRemoval(change, removal);
    for (const { map, key, value } of change.set) {
      if (map !== STATUS_MAP || key !== CURRENT_KEY) {
        unsigned(collector, change, policy, `${map}.${key}`);
        continue;
      }
      const parsed = parseLogged(collector, change, policy, signedStatusSchema, value, 'status');
      if (!parsed) continue;
      const { status: s, signature } = parsed;
      const label = `status #${s.seq} of ${host}`;
      const { signer, problem } = hostSigner(change, 'status', s, signature, s.host, label);
      let outcome = problem ?? 'valid';
      if (problem) flag(collector, 'forged-status', entry, status, host, problem);
      else {
        const previous = statusSeqByKey.get(signature.publicKey);
        if (previous !== undefined && s.seq <= previous) {
          outcome = `stale: status #${s.seq} after #${previous}`;
          flag(
            collector,
            'stale-status',
            entry,
            status,
            host,
            `${label} logged after status #${previous} (an old status replayed)`,
          );
        } else statusSeqByKey.set(signature.publicKey, s.seq);
      }
      const sessions = outcome === 'valid' ? describeSessionChanges(lastSessions, s.sshSessions) : null;
      if (outcome === 'valid') lastSessions = s.sshSessions;
      emit(collector, {
        ...base(change, 'status', policy),
        signers: [signer],
        verified: outcome === 'valid',
        outcome,
        summary: `phase ${s.phase}, applied ${s.applied ? `generation ${s.applied.generation}` : 'none'}, target ${s.target ? `generation ${s.target.generation}` : 'none'}, trusts policy ${s.trust?.policyVersion ?? '-'}${s.access ? `, login keys of policy ${s.access.policyVersion} (${Object.values(s.access.accounts).reduce((n, k) => n + k, 0)} keys, digest ${s.access.digest.slice(0, 12)}…)${s.access.error ? ', last write failed' : ''}` : ''}${sessions ? `; ${sessions}` : ''}`,
      });
    }
  });
  for (const [key, seqs] of resultNumbers.keys()) {
    const max = Math.max(...seqs.keys());
    const dropped = droppedByKey.get(key) ?? new Map<number, number>();
    const missing: number[] = [];
    const noted: number[] = [];
    for (let seq = 1; seq <= max && missing.length < 20; seq += 1) {
      if (seqs.has(seq)) continue;
      if (dropped.has(seq)) noted.push(seq);
      else missing.push(seq);
    }
    if (missing.length)
      flag(
        collector,
        'result-seq-gap',
        null,
        status,
        host,
        `results of ${host} signed by ${short(key)} skip #${missing.join(', #')} below #${max}`,
      );
    if (noted.length) {
      const by = [...new Set(noted.map((seq) => dropped.get(seq)!))].sort((a, b) => a - b);
      flag(
        collector,
        'result-dropped-undelivered',
        null,
        status,
        host,
        `results ${seqRanges(noted)} of ${host} (signed by ${short(key)}) never reached this history: the host deleted them before any upstream that keeps history held them, as its signed result${by.length > 1 ? 's' : ''} #${by.join(', #')} say${by.length > 1 ? '' : 's'} (it keeps its newest undelivered results only up to a bound, cut off from every upstream for that long); lost history, not a gap a writer made`,
      );
    }
  }
}

// Wraps a document's entries so the hash chain is checked in the same pass as the replay.
function chainedSource(source: AuditSource, collector: Collector, keptHeads: readonly LogHead[]): AuditSource {
  return {
    documents: source.documents,
    *entries(document) {
      if (collector.contextOnly.has(document)) {
        yield* source.entries(document);
        return;
      }
      const kept = keptHeads.filter((h) => h.document === document);
      const checker = createChainChecker(document, new Set(kept.map((h) => h.seq)));
      for (const entry of source.entries(document)) {
        checker.add(entry);
        collector.report.entries += 1;
        yield entry;
      }
      const check = checker.finish();
      for (const problem of check.problems) {
        const anomaly: Anomaly = {
          code: problem.code,
          document,
          logSeq: problem.seq,
          receivedAt: null,
          host: parseDocName(document)?.host ?? null,
          detail: problem.detail,
        };
        collector.report.anomalies.push(anomaly);
      }
      for (const head of kept) {
        const verdict = checkKeptHead(check, head);
        if (!verdict.ok)
          collector.report.anomalies.push({
            code: 'head-mismatch',
            document,
            logSeq: head.seq,
            receivedAt: null,
            host: parseDocName(document)?.host ?? null,
            detail: verdict.detail,
          });
      }
      if (check.head) collector.report.heads.push(check.head);
    },
  };
}

export function hostsIn(documents: readonly string[]): string[] {
  const hosts = new Set<string>();
  for (const name of documents) {
    const parsed = parseDocName(name);
    if (parsed) hosts.add(parsed.host);
  }
  return [...hosts].sort();
}

export function auditHistory(source: AuditSource, options: AuditOptions): AuditReport {
  const report: AuditReport = {
    events: [],
    anomalies: [],
    policyVersions: [],
    heads: [],
    documents: 0,
    entries: 0,
    signedEntries: 0,
  };
  const collector: Collector = {
    report,
    keep: options.keepEvent ?? (() => true),
    contextOnly: new Set(options.contextOnly ?? []),
  };
  const keptHeads = options.keptHeads ?? [];
  const chained = chainedSource(source, collector, keptHeads);
  for (const head of keptHeads)
    if (!source.documents.includes(head.document) && !collector.contextOnly.has(head.document))
      report.anomalies.push({
        code: 'head-mismatch',
        document: head.document,
        logSeq: head.seq,
        receivedAt: null,
        host: null,
        detail: `${head.document}: a kept head names entry #${head.seq}, but the history has no such document (withheld)`,
      });
  const policies = auditPolicies(collector, chained, new Set(options.orgRootKeys));
  report.policyVersions = policies.versions.map((v) => ({ version: v.policy.version, since: v.since }));
  const bindings = auditEnrollments(collector, chained, policies);
  const hosts = options.hosts?.length ? [...options.hosts] : hostsIn(source.documents);
  for (const host of hosts) auditHost(collector, chained, host, policies, bindings);
  report.documents = report.heads.length;
  report.events.sort((a, b) => a.receivedAt - b.receivedAt);
  return report;
}

// One report from the parts of a split audit (each part: the fleet documents for context, its own
// hosts reported; the first part also reports the fleet documents). Given the parts in host
// order, the result equals the audit done in one piece.
export function mergeAuditReports(parts: readonly AuditReport[]): AuditReport {
  const merged: AuditReport = {
    events: parts.flatMap((p) => p.events),
    anomalies: parts.flatMap((p) => p.anomalies),
    policyVersions: parts[0]?.policyVersions ?? [],
    heads: parts.flatMap((p) => p.heads),
    documents: 0,
    entries: parts.reduce((n, p) => n + p.entries, 0),
    signedEntries: parts.reduce((n, p) => n + p.signedEntries, 0),
  };
  merged.documents = merged.heads.length;
  // Stable: events of one moment keep the order the parts (in host order) gave them.
  merged.events.sort((a, b) => a.receivedAt - b.receivedAt);
  return merged;
}

// One host's timeline: its own documents' events, its enrollment events and every policy version.
export function hostTimeline(report: AuditReport, host: string, from?: number, to?: number): AuditEvent[] {
  return report.events.filter(
    (e) =>
      (e.host === host || e.document === POLICY_DOC) &&
      (from === undefined || e.receivedAt >= from) &&
      (to === undefined || e.receivedAt <= to),
  );
}
