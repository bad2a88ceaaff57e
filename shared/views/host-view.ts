import type * as Y from 'yjs';
import type { Signature, SignedKind } from '../crypto/signatures.js';
import { type SignatureCheck, verifyPayloadSignatureOnce } from '../crypto/verified-once.js';
import { readIntentEntries } from '../documents/desired.js';
import { readEnrollments, readEnrollRequests } from '../documents/fleet.js';
import { readActionResults, readCurrentStatus, readResults } from '../documents/status.js';
import { readRolloutEntries, rolloutDocName } from '../rollout/document.js';
import { findPlan } from '../rollout/judge.js';
import { deriveRolloutIntent, placeHosts } from '../rollout/plan.js';
import { planSignersForHost, verifiedPlanKeys } from '../rollout/verify.js';
import type { ActionResult, HostLock } from '../schemas/action.js';
import type { AppStatus } from '../schemas/apps.js';
import type { SignedIntent } from '../schemas/intent.js';
import type { AccessStatus } from '../schemas/logins.js';
import type { Policy } from '../schemas/policy.js';
import {
  type DownloadProgress,
  downloadProgressSchema,
  type SignedResult,
  type TrustStatus,
  type WindowWait,
} from '../schemas/report.js';
import { type CoSignProgress, contentKey, groupByContent } from '../trust/co-signatures.js';
import { enrollmentState, type HostBinding } from '../trust/enrollment.js';
import { accessMatchesPolicy } from '../trust/logins.js';
import { intentCoSigning, verifyIntentUnderPolicy } from '../trust/policy-intent.js';
import { intentDigest } from '../trust/verify-intent.js';
import type { SshSession } from '../tunnel/session-log.js';

export const MAX_VIEW_ACTION_RESULTS = 20;
export type ViewActionResult = Pick<ActionResult, 'seq' | 'at' | 'action' | 'id' | 'outcome' | 'code' | 'reason'> & {
  hasBundle: boolean;
};

// What an admin sees of one host, whoever shows it (`outpost status`, the web editor): the newest
// intent, the agent's signed status and results, and presence. Signatures are checked here: the
// coordinator is not trusted. With an authority (the policy walked from the pinned org root), a
// status or result counts only when signed by the key enrollment binds to the host; without it,
// host keys are unverified: anyone who can write the status document (a relay, the coordinator)
// could have signed what is shown with a key of their own.
export interface HostView {
  host: string;
  // False when the coordinator holds nothing for this host (no intent, status, result or binding).
  found: boolean;
  // Why this key could not read the host's documents (the coordinator refused them), else null.
  unreadable: string | null;
  desired: {
    generation: number;
    closure: string;
    action: string;
    issuer: string;
    expiresAt: string;
    signatureValid: boolean;
    trustedSigner: boolean | null;
    // With an authority, why the intent's signers do not count under the policy.
    untrustedBecause?: string;
    // With --org-root, where the host's groups need several admins: who signed (across all copies
    // of the intent), how many more are needed and who may still sign (outpost approve).
    coSigning?: CoSignProgress;
    // A rollout intent: checked as the agent checks it, against the signed plan it names
    // (docs/rollouts.md, "What status shows"). signatureValid is true only when verdict is 'valid'.
    rollout?: RolloutIntentCheck;
  } | null;
  applied: { generation: number; closure: string } | null;
  phase: string | null;
  target: { generation: number; closure: string } | null;
  // Download progress: live from the agent's awareness (unsigned, current) when it is online,
  // else the last milestone in its signed status.
  progress: (DownloadProgress & { live: boolean }) | null;
  // Why the host waits (phase waiting-for-window) and until when.
  window: WindowWait | null;
  // What the agent trusts (policy version) and whether it reports a freeze.
  trust: TrustStatus | null;
  // The intent the agent holds back until more admins co-sign it (its signed status).
  awaitingSignatures?: { generation: number; reason: string } | null;
  // The SSH login keys the agent enforces (its signed status, docs/access.md); with an authority,
  // whether their digest is what the policy version they name gives this host.
  access?: HostAccessView | null;
  // Set while an admin's `outpost action lock` holds the host (its signed status).
  lock?: HostLock | null;
  // The host's answers to remote actions that count (signed by its key), newest first, at most
  // MAX_VIEW_ACTION_RESULTS; a collect's bundle is left out (outpost action collect fetches it).
  actionResults?: ViewActionResult[];
  // The `outpost ssh` sessions the host's signed status lists, newest last.
  sshSessions?: SshSession[] | null;
  // Application services (services.outpost-apps) as the agent last saw them, from its signed
  // status; null when it reports none.
  apps?: AppStatus[] | null;
  // 'enrollment': checked against the enrolled key; 'unverified': no pinned org root.
  hostKeys: 'enrollment' | 'unverified';
  // The key enrollment binds to this host (with an authority), else null.
  enrolledKey: string | null;
  statusSignatureValid: boolean | null;
  // A status that does not count (foreign key, bad signature): its signer and why. Its content is
  // not shown as the host's.
  rejectedStatus: { signer: string; reason: string } | null;
  hostKey: string | null;
  online: boolean;
  lastSeen: string | null;
  // The newest result that counts.
  lastResult: (SignedResult['result'] & { signatureValid: boolean }) | null;
  results: (SignedResult & { signatureValid: boolean; problem: string | null })[];
  // Results that do not count, with the first reason.
  rejectedResults: { count: number; firstReason: string | null };
}

export type HostAccessView = AccessStatus & { check?: ReturnType<typeof accessMatchesPolicy> };

// A rollout intent carries no admin signature over itself (its envelope holds the plan's issuer
// signature, over the plan): it is what the plan says only if the plan is at hand. 'valid': a plan
// with the digest it names, signed by its issuer, gives this host exactly this intent (wave,
// closure, generation, action, times); 'invalid': the plan gives something else or nothing;
// 'unverified': the plan is not available here (not read, withheld or never written).
export interface RolloutIntentCheck {
  id: string;
  wave: number;
  plan: string;
  verdict: 'valid' | 'invalid' | 'unverified';
  // Why not valid, naming what differs or what is missing.
  reason: string | null;
  // With an authority and a valid verdict: the admins whose signatures over the plan count for
  // this host under the policy.
  signers?: string[];
}

// What host keys are checked against: the policy walked from the pinned root and the bindings it
// gives, or nothing (unverified).
export interface HostKeyAuthority {
  chain: Policy[];
  bindings: Map<string, HostBinding>;
}

export interface HostPresence {
  online: boolean;
  lastSeen: string | null;
}

// The authority from a walked chain and the fleet/enrollment document; null before any policy.
export function hostKeyAuthority(chain: Policy[], enrollment: Y.Doc): HostKeyAuthority | null {
  const policy = chain.at(-1);
  if (!policy) return null;
  return {
    chain,
    bindings: enrollmentState(policy, readEnrollments(enrollment), readEnrollRequests(enrollment)).bindings,
  };
}

const short = (key: string): string => `${key.slice(0, 12)}…`;

// Null when a signed report counts as the host's; else why not.
export function reportProblem(
  kind: SignedKind,
  payload: unknown,
  signature: Signature,
  host: string,
  expectedKey: string | null,
  authority: HostKeyAuthority | null,
): string | null {
  if (!verifyPayloadSignatureOnce(kind, payload, signature)) return 'its signature does not verify';
  if (authority && expectedKey === null)
    return `signed by key ${short(signature.publicKey)}, but ${host} has no enrolled key under policy ${authority.chain.at(-1)!.version}`;
  if (expectedKey !== null && signature.publicKey !== expectedKey)
    return `signed by key ${short(signature.publicKey)}, not ${host}'s ${authority ? 'enrolled ' : ''}key ${short(expectedKey)}${authority ? ': forged (a relay or the coordinator can write this document), or from an earlier key of the host' : ''}`;
  return null;
}

export function unreadableView(host: string, reason: string, authority: HostKeyAuthority | null): HostView {
  return {
    host,
    found: true,
    unreadable: reason,
    desired: null,
    applied: null,
    phase: null,
    target: null,
    progress: null,
    window: null,
    trust: null,
    awaitingSignatures: null,
    access: null,
    lock: null,
    actionResults: [],
    apps: null,
    hostKeys: authority ? 'enrollment' : 'unverified',
    enrolledKey: authority?.bindings.get(host)?.hostKey ?? null,
    statusSignatureValid: null,
    rejectedStatus: null,
    hostKey: null,
    online: false,
    lastSeen: null,
    lastResult: null,
    results: [],
    rejectedResults: { count: 0, firstReason: null },
  };
}

// Whether an intent's signers count under the policy. Only the signers matter here: an intent the
// host applied stays trusted after it expires, so the verdict does not depend on the time and is
// kept per intent and policy chain (bounded, oldest first).
const signerVerdicts = new Map<string, { trusted: boolean; reason: string | undefined }>();
const SIGNER_VERDICTS_LIMIT = 20_000;

export function intentSignersCount(
  signed: SignedIntent,
  host: string,
  authority: HostKeyAuthority,
  now: number,
): { trusted: boolean; reason: string | undefined } {
  const chainKey = authority.chain.map((p) => `${p.version}@${p.issuedAt}`).join(',');
  const key = `${host} ${intentDigest(signed)} ${chainKey}`;
  const known = signerVerdicts.get(key);
  if (known) return known;
  const verdict = verifyIntentUnderPolicy(signed, {
    host,
    chain: authority.chain,
    now,
  });
  const trusted = verdict.ok || verdict.code === 'expired' || verdict.code === 'not-yet-valid';
  const result = { trusted, reason: !verdict.ok && !trusted ? verdict.reason : undefined };
  if (signerVerdicts.size >= SIGNER_VERDICTS_LIMIT) signerVerdicts.delete(signerVerdicts.keys().next().value!);
  signerVerdicts.set(key, result);
  return result;
}

export interface RolloutIntentVerdict {
  check: RolloutIntentCheck;
  // As for other intents: with an authority, whether the plan's signers meet this host's
  // threshold under the policy; without one, whether an admin key (adminKeys) signed the plan.
  trustedSigner: boolean | null;
  untrustedBecause?: string;
}

const ROLLOUT_PLAN_ARRAYS = new Set(['plans', 'cosignatures'] as const);

// Checks a rollout intent as the agent does (shared/rollout/judge.ts decideForHost), up to the
// gate: the view says whether the intent is what admins signed, not whether its wave may start.
export function checkRolloutIntent(
  signed: SignedIntent,
  host: string,
  rolloutDoc: Y.Doc | null,
  authority: HostKeyAuthority | null,
  adminKeys?: ReadonlySet<string>,
): RolloutIntentVerdict {
  const rollout = signed.intent.rollout!;
  const base = { id: rollout.id, wave: rollout.wave, plan: rollout.plan };
  const unverified = (reason: string): RolloutIntentVerdict => ({
    check: { ...base, verdict: 'unverified', reason },
    trustedSigner: null,
  });
  const invalid = (reason: string): RolloutIntentVerdict => ({
    check: { ...base, verdict: 'invalid', reason },
    trustedSigner: null,
  });
  const document = rolloutDocName(rollout.id);
  if (!rolloutDoc) return unverified(`plan not available: ${document} was not read`);
  const entries = readRolloutEntries(rolloutDoc, { arrays: ROLLOUT_PLAN_ARRAYS });
  const plan = findPlan(entries, rollout.plan);
  if (!plan)
    return unverified(
      `plan not available: ${document} holds no plan with digest ${rollout.plan.slice(0, 12)}… signed by its issuer (not synced yet, withheld, or the intent names a plan nobody signed)`,
    );
  const placed = placeHosts(plan.plan).get(host);
  if (!placed) return invalid(`rollout ${plan.plan.id}'s signed plan has no wave for ${host}`);
  const derived = deriveRolloutIntent(plan, rollout.plan, placed).intent;
  if (derived.rollout!.wave !== rollout.wave)
    return invalid(`the signed plan puts ${host} in wave ${derived.rollout!.wave}, not ${rollout.wave}`);
  if (derived.closure !== signed.intent.closure || derived.generation !== signed.intent.generation)
    return invalid(
      `the signed plan gives ${host} generation ${derived.generation} of ${derived.closure}, not generation ${signed.intent.generation} of ${signed.intent.closure}`,
    );
  if (contentKey(derived) !== contentKey(signed.intent)) {
    const differing = Object.keys({ ...derived, ...signed.intent }).filter(
      (field) =>
        contentKey((derived as Record<string, unknown>)[field] ?? null) !==
        contentKey((signed.intent as Record<string, unknown>)[field] ?? null),
    );
    return invalid(`differs from the intent the signed plan gives ${host} (${differing.join(', ')})`);
  }
  const keys = verifiedPlanKeys(plan, rollout.plan, entries.cosignatures);
  if (!authority)
    return {
      check: { ...base, verdict: 'valid', reason: null },
      trustedSigner: adminKeys ? keys.some((k) => adminKeys.has(k)) : null,
    };
  const signers = planSignersForHost(plan.plan, keys, authority.chain, host);
  return {
    check: { ...base, verdict: 'valid', reason: null, signers: signers.admins },
    trustedSigner: signers.ok,
    ...(signers.ok ? {} : { untrustedBecause: signers.reason }),
  };
}

// The host's newest intent entry (highest generation) in its desired document.
function newestIntentEntry(host: string, desired: Y.Doc) {
  const entries = readIntentEntries(desired).entries.filter((e) => e.signed.intent.host === host);
  const newest = entries.reduce<(typeof entries)[number] | null>(
    (best, e) => (!best || e.signed.intent.generation > best.signed.intent.generation ? e : best),
    null,
  );
  return { entries, newest };
}

// The rollout documents hostViewFromDocuments needs to check the host's newest intent (its
// `rolloutDocument` input): none, or the one its rollout intent names.
export function rolloutDocumentsNeeded(host: string, desired: Y.Doc): string[] {
  const id = newestIntentEntry(host, desired).newest?.signed.intent.rollout?.id;
  return id ? [rolloutDocName(id)] : [];
}

export interface HostViewInputs {
  // hosts/<id>/desired and hosts/<id>/status as synced (or as persisted, offline).
  desired: Y.Doc;
  status: Y.Doc;
  // Awareness states of the status document's peers: the agent's (role 'agent') carries live progress.
  awarenessStates: Iterable<unknown>;
  authority: HostKeyAuthority | null;
  adminKeys?: ReadonlySet<string>;
  presence?: HostPresence;
  // fleet/rollout-<id> documents by name, as synced (rolloutDocumentsNeeded says which); null or
  // absent: not available, and a rollout intent shows as unverified.
  rolloutDocument?: (name: string) => Y.Doc | null;
  now: number;
}

// Every signature hostViewFromDocuments may check for this host, for preverifySignatures to check
// ahead natively (the web editor does, before building views).
export function hostSignatureChecks(host: string, desired: Y.Doc, status: Y.Doc): SignatureCheck[] {
  const checks: SignatureCheck[] = [];
  for (const { signed } of readIntentEntries(desired).entries)
    if (signed.intent.host === host)
      for (const signature of signed.signatures) checks.push({ kind: 'intent', payload: signed.intent, signature });
  const current = readCurrentStatus(status);
  if (current) checks.push({ kind: 'status', payload: current.status, signature: current.signature });
  for (const r of readResults(status).results)
    checks.push({ kind: 'result', payload: r.result, signature: r.signature });
  return checks;
}

// The view of one host from its two documents, every signature checked.
export function hostViewFromDocuments(host: string, inputs: HostViewInputs): HostView {
  const { authority } = inputs;
  const { entries, newest: newestEntry } = newestIntentEntry(host, inputs.desired);
  // Copies of the newest intent (co-signatures written in envelopes of their own) count together.
  const newest = newestEntry && {
    signed: {
      intent: newestEntry.signed.intent,
      signatures:
        groupByContent(
          entries.map((e) => e.signed),
          (signed) => ({ content: signed.intent, signatures: signed.signatures }),
        ).find((g) => g.key === contentKey(newestEntry.signed.intent))?.signatures ?? newestEntry.signed.signatures,
    },
  };
  const signedStatus = readCurrentStatus(inputs.status);
  const enrolledKey = authority?.bindings.get(host)?.hostKey ?? null;
  // Unverified: the status's own signer is all there is to compare results with.
  const expectedKey = authority ? enrolledKey : (signedStatus?.signature.publicKey ?? null);
  const statusProblem = signedStatus
    ? reportProblem('status', signedStatus.status, signedStatus.signature, host, expectedKey, authority)
    : null;
  // With an authority a status that does not count shows nothing of what it claims.
  const current = signedStatus && !(authority && statusProblem) ? signedStatus : null;
  const results = readResults(inputs.status).results.map((r) => {
    const problem = reportProblem('result', r.result, r.signature, host, expectedKey, authority);
    return { ...r, signatureValid: problem === null, problem };
  });
  const counted = results.filter((r) => r.signatureValid);
  const rejected = results.filter((r) => !r.signatureValid);
  const last = counted.reduce<(typeof results)[number] | null>(
    (best, r) => (!best || r.result.seq > best.result.seq ? r : best),
    null,
  );
  const agentStates = [...inputs.awarenessStates].filter(
    (s) => typeof s === 'object' && s !== null && (s as { role?: unknown }).role === 'agent',
  );
  const agentOnline = agentStates.length > 0;
  const live = agentStates
    .map((s) => downloadProgressSchema.safeParse((s as { progress?: unknown }).progress))
    .find((p) => p.success)?.data;
  const milestone = current?.status.progress;
  const presence = inputs.presence;
  let trustedSigner: boolean | null = inputs.adminKeys
    ? (newest?.signed.signatures.some((s) => inputs.adminKeys!.has(s.publicKey)) ?? null)
    : null;
  let untrustedBecause: string | undefined;
  let coSigning: CoSignProgress | undefined;
  const rollout =
    newest?.signed.intent.rollout &&
    checkRolloutIntent(
      newest.signed,
      host,
      inputs.rolloutDocument?.(rolloutDocName(newest.signed.intent.rollout.id)) ?? null,
      authority,
      inputs.adminKeys,
    );
  if (rollout) {
    trustedSigner = rollout.trustedSigner;
    untrustedBecause = rollout.untrustedBecause;
  } else if (authority && newest) {
    const verdict = intentSignersCount(newest.signed, host, authority, inputs.now);
    trustedSigner = verdict.trusted;
    untrustedBecause = verdict.reason;
    const signing = intentCoSigning(newest.signed.intent, newest.signed.signatures, authority.chain);
    if (!('error' in signing) && (signing.threshold > 1 || signing.progress.missing > 0)) coSigning = signing.progress;
  }
  return {
    host,
    found: entries.length > 0 || signedStatus !== null || results.length > 0 || enrolledKey !== null,
    unreadable: null,
    desired: newest && {
      generation: newest.signed.intent.generation,
      closure: newest.signed.intent.closure,
      action: newest.signed.intent.action,
      issuer: newest.signed.intent.issuer,
      expiresAt: newest.signed.intent.expiresAt,
      // A rollout intent carries the plan's signature, over the plan: it counts only as the plan
      // gives it (checkRolloutIntent).
      signatureValid: rollout
        ? rollout.check.verdict === 'valid'
        : newest.signed.signatures.some((s) => verifyPayloadSignatureOnce('intent', newest.signed.intent, s)),
      trustedSigner,
      ...(untrustedBecause ? { untrustedBecause } : {}),
      ...(coSigning ? { coSigning } : {}),
      ...(rollout ? { rollout: rollout.check } : {}),
    },
    applied: current?.status.applied ?? null,
    phase: current?.status.phase ?? null,
    target: current?.status.target ?? null,
    progress:
      live && current?.status.phase === 'downloading'
        ? { ...live, live: true }
        : milestone
          ? { ...milestone, live: false }
          : null,
    window: current?.status.window ?? null,
    trust: current?.status.trust ?? null,
    awaitingSignatures: current?.status.awaitingSignatures ?? null,
    access: current?.status.access
      ? {
          ...current.status.access,
          ...(authority ? { check: accessMatchesPolicy(current.status.access, authority.chain, host) } : {}),
        }
      : null,
    lock: current?.status.lock ?? null,
    actionResults: readActionResults(inputs.status)
      .results.filter(
        (r) => reportProblem('action-result', r.result, r.signature, host, expectedKey, authority) === null,
      )
      .sort((a, b) => b.result.seq - a.result.seq)
      .slice(0, MAX_VIEW_ACTION_RESULTS)
      .map(({ result }) => ({
        seq: result.seq,
        at: result.at,
        action: result.action,
        id: result.id,
        outcome: result.outcome,
        ...(result.code ? { code: result.code } : {}),
        reason: result.reason,
        hasBundle: result.bundleDigest !== undefined,
      })),
    sshSessions: current?.status.sshSessions ?? null,
    // From the status that counts only: a status signed by another key shows no apps.
    apps: current?.status.apps ?? null,
    hostKeys: authority ? 'enrollment' : 'unverified',
    enrolledKey,
    statusSignatureValid: signedStatus ? statusProblem === null : null,
    rejectedStatus:
      signedStatus && statusProblem ? { signer: signedStatus.signature.publicKey, reason: statusProblem } : null,
    hostKey: expectedKey,
    online: agentOnline || (presence?.online ?? false),
    lastSeen: presence?.lastSeen ?? null,
    lastResult: last && { ...last.result, signatureValid: true },
    results,
    rejectedResults: { count: rejected.length, firstReason: rejected[0]?.problem ?? null },
  };
}
