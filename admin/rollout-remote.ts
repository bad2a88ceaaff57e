import { z } from 'zod';
import type { SigningKey } from '../shared/crypto/keys.js';
import { desiredDocName } from '../shared/documents/names.js';
import { connectDocument, type DocumentConnection, proofHeaders } from '../shared/node/connect.js';
import {
  ROLLOUT_DOC_PREFIX,
  type RolloutEntries,
  readRolloutEntries,
  rolloutDocName,
} from '../shared/rollout/document.js';
import { findPlan } from '../shared/rollout/judge.js';
import { planDigest } from '../shared/rollout/plan.js';
import type { SignedPlan } from '../shared/rollout/schemas.js';
import { httpBaseFromWs } from '../shared/sync/reconnect.js';
import { sleep } from '../shared/time/sleep.js';
import { highestGeneration } from '../shared/views/intent-draft.js';
import { type HostKeyAuthority, type HostView, type RolloutDocuments, readHostView } from './fleet-view.js';
import { readDocuments, syncOrRefusal } from './policy-remote.js';
import { fetchExplained } from './reach.js';

// What the rollout commands read from and send to the coordinator. It is not trusted: every plan,
// action and result read here is judged again (shared/rollout/judge.ts) under the policy walked
// from the pinned org root.

export interface RolloutSnapshot {
  entries: RolloutEntries;
  signed: SignedPlan;
}

export function snapshotOf(id: string, entries: RolloutEntries): RolloutSnapshot {
  const first = entries.plans[0];
  const signed = first ? findPlan(entries, planDigest(first.plan)) : null;
  if (!signed)
    throw new Error(
      `no rollout ${id} here (no plan signed by its issuer in ${rolloutDocName(id)}); 'outpost rollout list' shows the rollouts`,
    );
  return { entries, signed };
}

export async function readRollout(
  url: string,
  id: string,
  identity: SigningKey,
  timeoutMs: number,
): Promise<RolloutSnapshot> {
  const doc = (await readDocuments(url, [rolloutDocName(id)], identity, timeoutMs))(rolloutDocName(id));
  return snapshotOf(id, readRolloutEntries(doc));
}

// A live copy of the rollout document, for --watch and wait.
export async function followRollout(
  url: string,
  id: string,
  identity: SigningKey,
  timeoutMs: number,
): Promise<DocumentConnection> {
  const connection = connectDocument(url, rolloutDocName(id), { identity, maxBackoffMs: 2000, readOnly: true });
  try {
    await syncOrRefusal(connection, identity, timeoutMs);
  } catch (error) {
    connection.close();
    throw error;
  }
  return connection;
}

const documentsSchema = z.object({ documents: z.array(z.string()) });

// fetch, tried twice when the connection fails: a pooled keep-alive connection the server closed
// at the moment it was reused fails without an answer (undici retries no such request itself).
// Every request here may be repeated: GETs, and submissions the coordinator stores once.
async function fetchTwice(
  target: string,
  url: string,
  init: () => Promise<RequestInit & { signal: AbortSignal }>,
): Promise<Response> {
  try {
    return await fetchExplained(target, url, await init());
  } catch {
    await sleep(200);
    return fetchExplained(target, url, await init());
  }
}

export async function listRolloutIds(url: string, identity: SigningKey, timeoutMs: number): Promise<string[]> {
  const target = `${httpBaseFromWs(url)}/api/documents`;
  const response = await fetchTwice(target, url, async () => ({
    headers: await proofHeaders(target, identity),
    signal: AbortSignal.timeout(timeoutMs),
  }));
  const body: unknown = await response.json().catch(() => null);
  const parsed = documentsSchema.safeParse(body);
  if (!response.ok || !parsed.success)
    throw new Error(
      `${target} answered ${response.status}${(body as { error?: string } | null)?.error ? `: ${(body as { error: string }).error}` : ''}`,
    );
  return parsed.data.documents
    .filter((d) => d.startsWith(ROLLOUT_DOC_PREFIX))
    .map((d) => d.slice(ROLLOUT_DOC_PREFIX.length))
    .sort();
}

export interface RolloutDocument {
  id: string;
  entries: RolloutEntries;
}

// Every rollout document the coordinator holds, read together (a deploy's generation must stay
// clear of the waves still to come: shared/views/deploy-generation.ts).
export async function readRolloutDocuments(
  url: string,
  identity: SigningKey,
  timeoutMs: number,
): Promise<RolloutDocument[]> {
  try {
    const ids = await listRolloutIds(url, identity, timeoutMs);
    if (!ids.length) return [];
    const doc = await readDocuments(url, ids.map(rolloutDocName), identity, timeoutMs);
    return ids.map((id) => ({ id, entries: readRolloutEntries(doc(rolloutDocName(id))) }));
  } catch (error) {
    throw new Error(
      `cannot read the rollouts at ${url} (${(error as Error).message}); nothing was signed: a new generation must stay clear of those a rollout still holds for the host`,
    );
  }
}

const answerSchema = z.looseObject({ ok: z.boolean().optional(), error: z.string().optional() });

// POSTs a plan, co-signature or action; a refusal becomes an error carrying the coordinator's reason.
export async function postRollout(
  url: string,
  body: unknown,
  timeoutMs: number,
  what: string,
): Promise<Record<string, unknown>> {
  const target = `${httpBaseFromWs(url)}/api/rollouts`;
  const text0 = JSON.stringify(body);
  const response = await fetchTwice(target, url, async () => ({
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: text0,
    signal: AbortSignal.timeout(timeoutMs),
  }));
  const text = await response.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new Error(`${target} answered ${response.status} with something that is not JSON: ${text.slice(0, 200)}`);
  }
  const parsed = answerSchema.safeParse(json);
  if (!parsed.success || response.status !== 200 || parsed.data.ok !== true)
    throw new Error(
      `${url} refused ${what}: ${parsed.success ? (parsed.data.error ?? `status ${response.status}`) : text.slice(0, 200)}`,
    );
  return parsed.data;
}

async function inBatches<T, R>(items: readonly T[], concurrency: number, work: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const index = next++;
      out[index] = await work(items[index]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker));
  return out;
}

// The highest generation issued for each host: in its desired document and in the rollouts the
// coordinator holds (a later wave's intents are not delivered yet). The plan goes one above.
export async function highestIssued(
  url: string,
  hosts: string[],
  identity: SigningKey,
  timeoutMs: number,
): Promise<Map<string, number>> {
  const highest = new Map<string, number>(hosts.map((h) => [h, 0]));
  const wanted = new Set(hosts);
  for (const id of await listRolloutIds(url, identity, timeoutMs)) {
    const snapshot = await readRollout(url, id, identity, timeoutMs).catch(() => null);
    if (!snapshot) continue;
    for (const wave of snapshot.signed.plan.waves)
      for (const entry of wave.hosts)
        if (wanted.has(entry.host)) highest.set(entry.host, Math.max(highest.get(entry.host)!, entry.generation));
  }
  await inBatches(hosts, 32, async (host) => {
    const connection = connectDocument(url, desiredDocName(host), { identity, maxBackoffMs: 1000 });
    try {
      await syncOrRefusal(connection, identity, timeoutMs);
      const inDesired = highestGeneration(connection.doc, host);
      highest.set(host, Math.max(highest.get(host)!, inDesired));
    } finally {
      connection.close();
    }
  });
  return highest;
}

// The hosts' signed status and results, read with their enrolled keys (fleet-view.ts).
export function readHostViews(
  url: string,
  hosts: string[],
  authority: HostKeyAuthority,
  identity: SigningKey,
  timeoutMs: number,
): Promise<HostView[]> {
  // Each rollout document the hosts' intents name is read once for all of them.
  const rolloutDocuments: RolloutDocuments = new Map();
  return inBatches(hosts, 16, (host) => readHostView(url, host, { timeoutMs, authority, identity, rolloutDocuments }));
}
