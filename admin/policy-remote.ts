import type * as Y from 'yjs';
import { z } from 'zod';
import type { SigningKey } from '../shared/crypto/keys.js';
import { readPolicies } from '../shared/documents/fleet.js';
import { connectDocument, type DocumentConnection, waitForSync } from '../shared/node/connect.js';
import { httpBaseFromWs } from '../shared/sync/reconnect.js';
import { type PolicyWalk, walkPolicyChain } from '../shared/trust/policy-chain.js';
import { fetchExplained } from './reach.js';

// Reading fleet documents and posting fleet entries for the policy and enroll commands. The
// coordinator is not trusted: policies are walked from the pinned org root here, and every entry
// the coordinator stored is checked again by whoever reads it.

// Close codes the coordinator uses to refuse a connection (coordinator/server.ts).
const REFUSALS: Record<number, string> = { 4401: 'no valid key proof', 4403: 'this key may not open the document' };

function refusalHint(code: number, identity: SigningKey | null): string {
  if (code === 4401 && !identity) return 'this coordinator requires authentication: give --key with an admin key file';
  if (code === 4403)
    return `key ${identity?.publicKey ?? '?'} is not an admin (or enrolled host) under the policy the coordinator holds, has no capability on that host (read, deploy…), or no policy was pushed yet ('outpost policy push')`;
  return 'try again; if it persists, check the coordinator log for connection-refused';
}

// The coordinator (or relay) refused this key the document: 4401 or 4403.
export class DocumentRefused extends Error {}

// Waits for the first sync of a connection; fails fast with the coordinator's reason when it
// refuses the key, and, when nothing syncs in time, says whether the server is reachable at all.
export function syncOrRefusal(
  connection: DocumentConnection,
  identity: SigningKey | null,
  timeoutMs: number,
): Promise<void> {
  let onClose: (event: { code: number; reason?: string } | null) => void = () => undefined;
  const refused = new Promise<never>((_, reject) => {
    onClose = (event) => {
      if (!event || !(event.code in REFUSALS)) return;
      reject(
        new DocumentRefused(
          `${connection.provider.serverUrl} refused ${connection.name} (${event.code} ${event.reason || REFUSALS[event.code]}): ${refusalHint(event.code, identity)}`,
        ),
      );
    };
    connection.provider.on('connection-close', onClose);
  });
  const synced = waitForSync(connection, timeoutMs).catch(async (error: Error) => {
    const url = connection.provider.serverUrl;
    // Throws the reason the server cannot be reached, if it cannot.
    await fetchExplained(`${httpBaseFromWs(url)}/healthz`, url, { signal: AbortSignal.timeout(5_000) });
    throw error;
  });
  return Promise.race([synced, refused]).finally(() => connection.provider.off('connection-close', onClose));
}

// A snapshot of each document as `identity` (null: unauthenticated, for open coordinators) may
// read it: connects, waits for the first sync, disconnects. Fails fast with the coordinator's
// reason when it refuses the key. The commands read once and exit, so a snapshot is all they need.
export async function readDocuments(
  url: string,
  names: string[],
  identity: SigningKey | null,
  timeoutMs: number,
): Promise<(name: string) => Y.Doc> {
  const connections = names.map((name) => connectDocument(url, name, { identity, maxBackoffMs: 1000, readOnly: true }));
  try {
    await Promise.all(connections.map((c) => syncOrRefusal(c, identity, timeoutMs)));
  } finally {
    // Closing the provider leaves its Y.Doc with everything synced.
    for (const c of connections) c.close();
  }
  return (name) => {
    const connection = connections.find((c) => c.name === name);
    if (!connection) throw new Error(`internal: ${name} was not read`);
    return connection.doc;
  };
}

export function walkStoredPolicies(policyDoc: Y.Doc, orgRoot: string[]): PolicyWalk {
  return walkPolicyChain([], new Set(orgRoot), readPolicies(policyDoc));
}

// The coordinator stores only policies it walked to, so the highest stored version is the one it
// holds. Used to label new entries; readers check the entry itself, never this number.
export function highestStoredVersion(policyDoc: Y.Doc): number | undefined {
  const versions = readPolicies(policyDoc).map((p) => p.policy.version);
  return versions.length ? Math.max(...versions) : undefined;
}

const answerSchema = z.object({
  ok: z.boolean().optional(),
  error: z.string().optional(),
  version: z.number().optional(),
  enrolled: z.boolean().optional(),
  pending: z.boolean().optional(),
  conflict: z.string().optional(),
  cleared: z.number().optional(),
  notPermitted: z.number().optional(),
});
export type FleetAnswer = z.infer<typeof answerSchema>;

// POSTs a signed entry; a refusal becomes an error carrying the coordinator's reason (the reason
// every reader would give), e.g. "…refused the approval of h1: admin bob lacks 'enroll' for host h1".
export async function postFleetEntry(
  url: string,
  path: '/api/policy' | '/api/enroll' | '/api/enroll/approve' | '/api/enroll/clear',
  body: unknown,
  timeoutMs: number,
  what: string,
): Promise<FleetAnswer> {
  const target = `${httpBaseFromWs(url)}${path}`;
  const response = await fetchExplained(target, url, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(timeoutMs),
  });
  const text = await response.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new Error(`${target} answered ${response.status} with something that is not JSON: ${text.slice(0, 200)}`);
  }
  const parsed = answerSchema.safeParse(json);
  if (!parsed.success)
    throw new Error(`${target} answered ${response.status} with an unexpected body: ${text.slice(0, 200)}`);
  if (response.status !== 200 || parsed.data.ok !== true)
    throw new Error(`${url} refused ${what}: ${parsed.data.error ?? `status ${response.status}`}`);
  return parsed.data;
}
