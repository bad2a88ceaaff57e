import { z } from 'zod';
import { verifyPayloadSignature } from '../shared/crypto/signatures.js';
import { readIntentEntries } from '../shared/documents/desired.js';
import { desiredDocName, parseDocName, statusDocName } from '../shared/documents/names.js';
import { readCurrentStatus, readResults } from '../shared/documents/status.js';
import { connectDocument, proofHeaders, waitForSync } from '../shared/node/connect.js';
import {
  type DownloadProgress,
  downloadProgressSchema,
  type SignedResult,
  type TrustStatus,
  type WindowWait,
} from '../shared/schemas/report.js';
import { httpBaseFromWs } from '../shared/sync/reconnect.js';

// What an admin sees of one host: the newest intent, the agent's signed status and results, and
// presence from awareness. Signatures are checked here too: the coordinator is not trusted.
export interface HostView {
  host: string;
  desired: {
    generation: number;
    closure: string;
    action: string;
    issuer: string;
    expiresAt: string;
    signatureValid: boolean;
    trustedSigner: boolean | null;
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
  statusSignatureValid: boolean | null;
  hostKey: string | null;
  online: boolean;
  lastSeen: string | null;
  lastResult: (SignedResult['result'] & { signatureValid: boolean }) | null;
  results: (SignedResult & { signatureValid: boolean })[];
}

const presenceSchema = z.object({
  hosts: z.record(z.string(), z.object({ online: z.boolean(), lastSeen: z.string().nullable() })),
});
const documentsSchema = z.object({ documents: z.array(z.string()) });

async function getJson<S extends z.ZodType>(url: string, schema: S, timeoutMs: number): Promise<z.infer<S>> {
  const response = await fetch(url, { headers: await proofHeaders(url), signal: AbortSignal.timeout(timeoutMs) });
  if (!response.ok) throw new Error(`${url} answered ${response.status}`);
  const parsed = schema.safeParse(await response.json());
  if (!parsed.success) throw new Error(`${url} answered something unexpected: ${parsed.error.issues[0]?.message}`);
  return parsed.data;
}

export async function listHosts(serverUrl: string, timeoutMs: number): Promise<string[]> {
  const { documents } = await getJson(`${httpBaseFromWs(serverUrl)}/api/documents`, documentsSchema, timeoutMs);
  const hosts = new Set<string>();
  for (const name of documents) {
    const parsed = parseDocName(name);
    if (parsed) hosts.add(parsed.host);
  }
  return [...hosts].sort();
}

export async function readHostView(
  serverUrl: string,
  host: string,
  options: {
    timeoutMs: number;
    adminKeys?: ReadonlySet<string>;
    presence?: Map<string, { online: boolean; lastSeen: string | null }>;
  },
): Promise<HostView> {
  const desired = connectDocument(serverUrl, desiredDocName(host));
  const status = connectDocument(serverUrl, statusDocName(host));
  try {
    await Promise.all([waitForSync(desired, options.timeoutMs), waitForSync(status, options.timeoutMs)]);
    const entries = readIntentEntries(desired.doc).entries.filter((e) => e.signed.intent.host === host);
    const newest = entries.reduce<(typeof entries)[number] | null>(
      (best, e) => (!best || e.signed.intent.generation > best.signed.intent.generation ? e : best),
      null,
    );
    const current = readCurrentStatus(status.doc);
    const hostKey = current?.signature.publicKey ?? null;
    const results = readResults(status.doc).results.map((r) => ({
      ...r,
      signatureValid:
        verifyPayloadSignature('result', r.result, r.signature) &&
        (hostKey === null || r.signature.publicKey === hostKey),
    }));
    const last = results.reduce<(typeof results)[number] | null>(
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
    return {
      host,
      desired: newest && {
        generation: newest.signed.intent.generation,
        closure: newest.signed.intent.closure,
        action: newest.signed.intent.action,
        issuer: newest.signed.intent.issuer,
        expiresAt: newest.signed.intent.expiresAt,
        signatureValid: newest.signed.signatures.some((s) => verifyPayloadSignature('intent', newest.signed.intent, s)),
        trustedSigner: options.adminKeys
          ? newest.signed.signatures.some((s) => options.adminKeys!.has(s.publicKey))
          : null,
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
      statusSignatureValid: current ? verifyPayloadSignature('status', current.status, current.signature) : null,
      hostKey,
      online: agentOnline || (presence?.online ?? false),
      lastSeen: presence?.lastSeen ?? null,
      lastResult: last && { ...last.result, signatureValid: last.signatureValid },
      results,
    };
  } finally {
    desired.close();
    status.close();
  }
}

export async function readFleetView(
  serverUrl: string,
  options: { timeoutMs: number; hosts?: string[]; adminKeys?: ReadonlySet<string>; concurrency?: number },
): Promise<HostView[]> {
  const hosts = options.hosts?.length ? options.hosts : await listHosts(serverUrl, options.timeoutMs);
  const { hosts: presenceRecord } = await getJson(
    `${httpBaseFromWs(serverUrl)}/api/presence`,
    presenceSchema,
    options.timeoutMs,
  );
  const presence = new Map(Object.entries(presenceRecord));
  const views: HostView[] = new Array(hosts.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < hosts.length) {
      const index = next++;
      views[index] = await readHostView(serverUrl, hosts[index]!, { ...options, presence });
    }
  };
  await Promise.all(Array.from({ length: Math.min(options.concurrency ?? 16, hosts.length) }, worker));
  return views;
}
