import { z } from 'zod';
import type { SigningKey } from '../shared/crypto/keys.js';
import { type Signature, type SignedKind, verifyPayloadSignature } from '../shared/crypto/signatures.js';
import { readIntentEntries } from '../shared/documents/desired.js';
import { ENROLLMENT_DOC, POLICY_DOC, readEnrollments, readEnrollRequests } from '../shared/documents/fleet.js';
import { desiredDocName, parseDocName, statusDocName } from '../shared/documents/names.js';
import { readCurrentStatus, readResults } from '../shared/documents/status.js';
import { connectDocument, proofHeaders } from '../shared/node/connect.js';
import type { Policy } from '../shared/schemas/policy.js';
import {
  type DownloadProgress,
  downloadProgressSchema,
  type SignedResult,
  type TrustStatus,
  type WindowWait,
} from '../shared/schemas/report.js';
import { httpBaseFromWs } from '../shared/sync/reconnect.js';
import { enrollmentState, type HostBinding } from '../shared/trust/enrollment.js';
import { verifyIntentUnderPolicy } from '../shared/trust/policy-intent.js';
import { DocumentRefused, readDocuments, syncOrRefusal, walkStoredPolicies } from './policy-remote.js';
import { describeFetchFailure, fetchExplained } from './reach.js';

// What an admin sees of one host: the newest intent, the agent's signed status and results, and
// presence from awareness. Signatures are checked here too: the coordinator is not trusted. With
// the pinned org root (`--org-root`), a status or result counts only when signed by the key
// enrollment binds to the host under the policy walked from that root; without it, host keys are
// unverified: anyone who can write the status document (a relay, the coordinator) could have
// signed what is shown with a key of their own.
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
    // With --org-root, why the intent's signers do not count under the policy.
    untrustedBecause?: string;
    // A rollout intent: its signers are the plan's, which the agent checks (docs/rollouts.md).
    rollout?: { id: string; wave: number };
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
  // 'enrollment': checked against the enrolled key; 'unverified': no --org-root.
  hostKeys: 'enrollment' | 'unverified';
  // The key enrollment binds to this host (with --org-root), else null.
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

// What host keys are checked against: the policy walked from the pinned root and the bindings it
// gives, or nothing (unverified).
export interface HostKeyAuthority {
  chain: Policy[];
  bindings: Map<string, HostBinding>;
}

const presenceSchema = z.object({
  hosts: z.record(z.string(), z.object({ online: z.boolean(), lastSeen: z.string().nullable() })),
});
const documentsSchema = z.object({ documents: z.array(z.string()) });

async function getJson<S extends z.ZodType>(
  serverUrl: string,
  path: string,
  schema: S,
  timeoutMs: number,
): Promise<z.infer<S>> {
  const url = `${httpBaseFromWs(serverUrl)}${path}`;
  let headers: Record<string, string>;
  try {
    // With a key (status --key): a signed single-use challenge, as coordinators with --org-root want.
    headers = await proofHeaders(url);
  } catch (error) {
    throw new Error(describeFetchFailure(`${httpBaseFromWs(serverUrl)}/auth/challenge`, serverUrl, error));
  }
  const response = await fetchExplained(url, serverUrl, { headers, signal: AbortSignal.timeout(timeoutMs) });
  const body: unknown = await response.json().catch(() => null);
  if (!response.ok) {
    const reason = z.object({ error: z.string() }).safeParse(body);
    throw new Error(
      `${url} answered ${response.status}${reason.success ? `: ${reason.data.error}` : ''}${response.status === 401 ? '; give --key with an admin key file' : ''}`,
    );
  }
  const parsed = schema.safeParse(body);
  if (!parsed.success)
    throw new Error(
      `${url} answered something that is not an outpost coordinator's answer (${parsed.error.issues[0]?.message}); is ${serverUrl} a coordinator or relay?`,
    );
  return parsed.data;
}

export async function listHosts(serverUrl: string, timeoutMs: number): Promise<string[]> {
  const { documents } = await getJson(serverUrl, '/api/documents', documentsSchema, timeoutMs);
  const hosts = new Set<string>();
  for (const name of documents) {
    const parsed = parseDocName(name);
    if (parsed) hosts.add(parsed.host);
  }
  return [...hosts].sort();
}

// Reads fleet/policy and fleet/enrollment and walks them from the pinned org root.
export async function readHostKeyAuthority(
  serverUrl: string,
  orgRoot: string[],
  identity: SigningKey | null,
  timeoutMs: number,
): Promise<HostKeyAuthority> {
  const doc = await readDocuments(serverUrl, [POLICY_DOC, ENROLLMENT_DOC], identity, timeoutMs);
  const walk = walkStoredPolicies(doc(POLICY_DOC), orgRoot);
  if (walk.chain.length === 0)
    throw new Error(
      `${serverUrl} holds no policy signed by the pinned org root key(s)${walk.refused.length ? ` (${walk.refused.map((r) => `version ${r.version}: ${r.reason}`).join('; ')})` : ''}; check --org-root, or push the policy with 'outpost policy push'`,
    );
  const policy = walk.chain.at(-1)!;
  const enrollment = doc(ENROLLMENT_DOC);
  return {
    chain: walk.chain,
    bindings: enrollmentState(policy, readEnrollments(enrollment), readEnrollRequests(enrollment)).bindings,
  };
}

const short = (key: string): string => `${key.slice(0, 12)}…`;

// Null when a signed report counts as the host's; else why not.
function reportProblem(
  kind: SignedKind,
  payload: unknown,
  signature: Signature,
  host: string,
  expectedKey: string | null,
  authority: HostKeyAuthority | null,
): string | null {
  if (!verifyPayloadSignature(kind, payload, signature)) return 'its signature does not verify';
  if (authority && expectedKey === null)
    return `signed by key ${short(signature.publicKey)}, but ${host} has no enrolled key under policy ${authority.chain.at(-1)!.version}`;
  if (expectedKey !== null && signature.publicKey !== expectedKey)
    return `signed by key ${short(signature.publicKey)}, not ${host}'s ${authority ? 'enrolled ' : ''}key ${short(expectedKey)}${authority ? ': forged (a relay or the coordinator can write this document), or from an earlier key of the host' : ''}`;
  return null;
}

function unreadableView(host: string, reason: string, authority: HostKeyAuthority | null): HostView {
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

export async function readHostView(
  serverUrl: string,
  host: string,
  options: {
    timeoutMs: number;
    adminKeys?: ReadonlySet<string>;
    presence?: Map<string, { online: boolean; lastSeen: string | null }>;
    authority?: HostKeyAuthority | null;
    identity?: SigningKey | null;
  },
): Promise<HostView> {
  const authority = options.authority ?? null;
  // Undefined: the process identity (useIdentity), as connectDocument takes it.
  const connect = options.identity === undefined ? {} : { identity: options.identity };
  const identity = options.identity ?? null;
  const desired = connectDocument(serverUrl, desiredDocName(host), connect);
  const status = connectDocument(serverUrl, statusDocName(host), connect);
  try {
    await Promise.all([
      syncOrRefusal(desired, identity, options.timeoutMs),
      syncOrRefusal(status, identity, options.timeoutMs),
    ]);
    const entries = readIntentEntries(desired.doc).entries.filter((e) => e.signed.intent.host === host);
    const newest = entries.reduce<(typeof entries)[number] | null>(
      (best, e) => (!best || e.signed.intent.generation > best.signed.intent.generation ? e : best),
      null,
    );
    const signedStatus = readCurrentStatus(status.doc);
    const enrolledKey = authority?.bindings.get(host)?.hostKey ?? null;
    // Unverified: the status's own signer is all there is to compare results with.
    const expectedKey = authority ? enrolledKey : (signedStatus?.signature.publicKey ?? null);
    const statusProblem = signedStatus
      ? reportProblem('status', signedStatus.status, signedStatus.signature, host, expectedKey, authority)
      : null;
    // With --org-root a status that does not count shows nothing of what it claims.
    const current = signedStatus && !(authority && statusProblem) ? signedStatus : null;
    const results = readResults(status.doc).results.map((r) => {
      const problem = reportProblem('result', r.result, r.signature, host, expectedKey, authority);
      return { ...r, signatureValid: problem === null, problem };
    });
    const counted = results.filter((r) => r.signatureValid);
    const rejected = results.filter((r) => !r.signatureValid);
    const last = counted.reduce<(typeof results)[number] | null>(
      (best, r) => (!best || r.result.seq > best.result.seq ? r : best),
      null,
    );
    const agentStates = [...status.provider.awareness.getStates().values()].filter(
      (s) => (s as { role?: string }).role === 'agent',
    );
    const agentOnline = agentStates.length > 0;
    const live = agentStates
      .map((s) => downloadProgressSchema.safeParse((s as { progress?: unknown }).progress))
      .find((p) => p.success)?.data;
    const milestone = current?.status.progress;
    const presence = options.presence?.get(host);
    let trustedSigner: boolean | null = options.adminKeys
      ? (newest?.signed.signatures.some((s) => options.adminKeys!.has(s.publicKey)) ?? null)
      : null;
    let untrustedBecause: string | undefined;
    const rollout = newest?.signed.intent.rollout;
    if (rollout) trustedSigner = null;
    else if (authority && newest) {
      // Only the signers matter here: an intent the host applied stays trusted after it expires.
      const verdict = verifyIntentUnderPolicy(newest.signed, { host, chain: authority.chain, now: Date.now() });
      trustedSigner = verdict.ok || verdict.code === 'expired' || verdict.code === 'not-yet-valid';
      if (!verdict.ok && !trustedSigner) untrustedBecause = verdict.reason;
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
        // A rollout intent carries the plan's signature, over the plan: the plan is what counts.
        signatureValid:
          rollout !== undefined ||
          newest.signed.signatures.some((s) => verifyPayloadSignature('intent', newest.signed.intent, s)),
        trustedSigner,
        ...(untrustedBecause ? { untrustedBecause } : {}),
        ...(rollout ? { rollout: { id: rollout.id, wave: rollout.wave } } : {}),
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
  } catch (error) {
    if (error instanceof DocumentRefused) return unreadableView(host, error.message, authority);
    throw error;
  } finally {
    desired.close();
    status.close();
  }
}

export async function readFleetView(
  serverUrl: string,
  options: {
    timeoutMs: number;
    hosts?: string[];
    adminKeys?: ReadonlySet<string>;
    concurrency?: number;
    // Pinned org root keys: check host keys against enrollment under the policy walked from them.
    orgRoot?: string[];
    identity?: SigningKey | null;
  },
): Promise<HostView[]> {
  const authority = options.orgRoot?.length
    ? await readHostKeyAuthority(serverUrl, options.orgRoot, options.identity ?? null, options.timeoutMs)
    : null;
  const hosts = options.hosts?.length ? options.hosts : await listHosts(serverUrl, options.timeoutMs);
  const { hosts: presenceRecord } = await getJson(serverUrl, '/api/presence', presenceSchema, options.timeoutMs);
  const presence = new Map(Object.entries(presenceRecord));
  const views: HostView[] = new Array(hosts.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < hosts.length) {
      const index = next++;
      views[index] = await readHostView(serverUrl, hosts[index]!, { ...options, presence, authority });
    }
  };
  await Promise.all(Array.from({ length: Math.min(options.concurrency ?? 16, hosts.length) }, worker));
  return views;
}
