import type * as Y from 'yjs';
import { z } from 'zod';
import type { SigningKey } from '../shared/crypto/keys.js';
import { ENROLLMENT_DOC, POLICY_DOC } from '../shared/documents/fleet.js';
import { desiredDocName, parseDocName, statusDocName } from '../shared/documents/names.js';
import { connectDocument, proofHeaders } from '../shared/node/connect.js';
import { httpBaseFromWs } from '../shared/sync/reconnect.js';
import {
  type HostKeyAuthority,
  type HostView,
  hostKeyAuthority,
  hostViewFromDocuments,
  rolloutDocumentsNeeded,
  unreadableView,
} from '../shared/views/host-view.js';
import { DocumentRefused, readDocuments, syncOrRefusal, walkStoredPolicies } from './policy-remote.js';
import { describeFetchFailure, fetchExplained } from './reach.js';

// The view of one host and what host keys are checked against are shared with the web editor
// (shared/views/host-view.ts); this module reads them from a coordinator.
export type { HostKeyAuthority, HostView } from '../shared/views/host-view.js';

const presenceSchema = z.object({
  hosts: z.record(z.string(), z.object({ online: z.boolean(), lastSeen: z.string().nullable() })),
});
const documentsSchema = z.object({ documents: z.array(z.string()) });

async function getJson<S extends z.ZodType>(
  serverUrl: string,
  path: string,
  schema: S,
  timeoutMs: number,
  identity: SigningKey | null,
): Promise<z.infer<S>> {
  const url = `${httpBaseFromWs(serverUrl)}${path}`;
  let headers: Record<string, string>;
  try {
    // With a key (status --key): a signed single-use challenge, as coordinators with --org-root want.
    headers = await proofHeaders(url, identity);
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

export async function listHosts(serverUrl: string, timeoutMs: number, identity: SigningKey | null): Promise<string[]> {
  const { documents } = await getJson(serverUrl, '/api/documents', documentsSchema, timeoutMs, identity);
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
  return hostKeyAuthority(walk.chain, doc(ENROLLMENT_DOC))!;
}

// Rollout documents read for views, by name (null: could not be read), shared by the views of
// one fleet read: every host of a rollout names the same document.
export type RolloutDocuments = Map<string, Promise<Y.Doc | null>>;

function readRolloutDocument(
  serverUrl: string,
  name: string,
  identity: SigningKey | null,
  timeoutMs: number,
  cache: RolloutDocuments,
): Promise<Y.Doc | null> {
  let read = cache.get(name);
  if (!read) {
    // Refused or not synced in time: the view says the plan is not available, never valid.
    read = readDocuments(serverUrl, [name], identity, timeoutMs).then(
      (doc) => doc(name),
      () => null,
    );
    cache.set(name, read);
  }
  return read;
}

export async function readHostView(
  serverUrl: string,
  host: string,
  options: {
    timeoutMs: number;
    adminKeys?: ReadonlySet<string>;
    presence?: Map<string, { online: boolean; lastSeen: string | null }>;
    authority?: HostKeyAuthority | null;
    // The key proved on both connections (null: open-mode servers).
    identity: SigningKey | null;
    rolloutDocuments?: RolloutDocuments;
  },
): Promise<HostView> {
  const authority = options.authority ?? null;
  const { identity } = options;
  const desired = connectDocument(serverUrl, desiredDocName(host), { identity });
  const status = connectDocument(serverUrl, statusDocName(host), { identity });
  try {
    await Promise.all([
      syncOrRefusal(desired, identity, options.timeoutMs),
      syncOrRefusal(status, identity, options.timeoutMs),
    ]);
    const presence = options.presence?.get(host);
    // A rollout intent is checked against the plan it names, read from its rollout document.
    const rolloutCache = options.rolloutDocuments ?? new Map();
    const rolloutDocs = new Map<string, Y.Doc | null>();
    for (const name of rolloutDocumentsNeeded(host, desired.doc))
      rolloutDocs.set(name, await readRolloutDocument(serverUrl, name, identity, options.timeoutMs, rolloutCache));
    return hostViewFromDocuments(host, {
      desired: desired.doc,
      status: status.doc,
      awarenessStates: status.provider.awareness.getStates().values(),
      authority,
      ...(options.adminKeys ? { adminKeys: options.adminKeys } : {}),
      ...(presence ? { presence } : {}),
      rolloutDocument: (name) => rolloutDocs.get(name) ?? null,
      now: Date.now(),
    });
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
    // The key proved to the coordinator (admin; null: open-mode servers).
    identity: SigningKey | null;
  },
): Promise<HostView[]> {
  const { identity } = options;
  const authority = options.orgRoot?.length
    ? await readHostKeyAuthority(serverUrl, options.orgRoot, identity, options.timeoutMs)
    : null;
  const hosts = options.hosts?.length ? options.hosts : await listHosts(serverUrl, options.timeoutMs, identity);
  const { hosts: presenceRecord } = await getJson(
    serverUrl,
    '/api/presence',
    presenceSchema,
    options.timeoutMs,
    identity,
  );
  const presence = new Map(Object.entries(presenceRecord));
  const rolloutDocuments: RolloutDocuments = new Map();
  const views: HostView[] = new Array(hosts.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < hosts.length) {
      const index = next++;
      views[index] = await readHostView(serverUrl, hosts[index]!, {
        ...options,
        presence,
        authority,
        rolloutDocuments,
      });
    }
  };
  await Promise.all(Array.from({ length: Math.min(options.concurrency ?? 16, hosts.length) }, worker));
  return views;
}
