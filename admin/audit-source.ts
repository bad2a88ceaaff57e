import { promises as fs } from 'node:fs';
import { z } from 'zod';
import {
  AUDIT_CHECKPOINTS_PATH,
  AUDIT_CHECKPOINTS_PROOF,
  AUDIT_HEADS_PATH,
  AUDIT_LOG_PATH,
  type AuditBundle,
  auditBundleSchema,
  auditProofDocument,
  checkpointHeadsSchema,
  fromWireEntry,
  logHeadSchema,
  toWireEntry,
  wireEntrySchema,
} from '../shared/audit/bundle.js';
import type { CheckpointHeads } from '../shared/audit/checkpoint.js';
import type { AuditSource } from '../shared/audit/history.js';
import type { AuditLogEntry, LogHead } from '../shared/audit/log-chain.js';
import type { SigningKey } from '../shared/crypto/keys.js';
import { ENROLLMENT_DOC, POLICY_DOC } from '../shared/documents/fleet.js';
import { desiredDocName, parseDocName, statusDocName } from '../shared/documents/names.js';
import { type SignedCheckpoint, signedCheckpointSchema } from '../shared/schemas/checkpoint.js';
import { authHeaders } from '../shared/sync/auth-proof.js';
import { fetchAuthProof, httpBaseFromWs } from '../shared/sync/reconnect.js';

// Where an audit's evidence comes from: the coordinator's audit endpoint (live) or an exported
// bundle (offline). Either way it is only evidence: everything is verified by shared/audit.
export const MAX_BUNDLE_BYTES = 512 * 1024 * 1024;

export interface LoadedHistory {
  source: AuditSource;
  byDocument: Map<string, AuditLogEntry[]>;
  // From a bundle: the heads behind each signed checkpoint, when the bundle has them.
  checkpoints?: CheckpointHeads[] | undefined;
}

export function historyOf(byDocument: Map<string, AuditLogEntry[]>, checkpoints?: CheckpointHeads[]): LoadedHistory {
  return {
    byDocument,
    source: { documents: [...byDocument.keys()], entries: (name) => byDocument.get(name) ?? [] },
    checkpoints,
  };
}

// A line of a coordinator's NDJSON answer; a line that is not JSON fails the schema after.
function jsonOrNull(line: string): unknown {
  try {
    return JSON.parse(line);
  } catch {
    return null;
  }
}

async function get(url: string, timeoutMs: number, headers: Record<string, string> = {}): Promise<Response> {
  let response: Response;
  try {
    response = await fetch(url, { headers, signal: AbortSignal.timeout(timeoutMs) });
  } catch (error) {
    throw new Error(`cannot reach ${url.replace(/\?.*$/, '')}: ${(error as Error).message}`);
  }
  if (!response.ok) {
    const body = (await response.json().catch(() => ({}))) as { error?: string };
    throw new Error(`${url.replace(/\?.*$/, '')} answered ${response.status}: ${body.error ?? response.statusText}`);
  }
  return response;
}

// A fresh single-use proof for one audit read, as request headers (none without a key: open mode).
async function proofHeaders(
  serverUrl: string,
  document: string | null,
  key: SigningKey | null,
  timeoutMs: number,
): Promise<Record<string, string>> {
  if (!key) return {};
  const proof = await fetchAuthProof(serverUrl, auditProofDocument(document), key, timeoutMs);
  return authHeaders({ principal: proof.principal!, challenge: proof.challenge!, signature: proof.signature! });
}

export async function fetchDocumentLog(
  serverUrl: string,
  document: string,
  key: SigningKey | null,
  timeoutMs: number,
): Promise<AuditLogEntry[]> {
  const url = `${httpBaseFromWs(serverUrl)}${AUDIT_LOG_PATH}?doc=${encodeURIComponent(document)}`;
  const text = await (await get(url, timeoutMs, await proofHeaders(serverUrl, document, key, timeoutMs))).text();
  const entries: AuditLogEntry[] = [];
  for (const [i, line] of text.split('\n').entries()) {
    if (!line) continue;
    const parsed = wireEntrySchema.safeParse(jsonOrNull(line));
    if (!parsed.success)
      throw new Error(
        `${document}: line ${i + 1} of the coordinator's answer is not a log entry: ${parsed.error.issues[0]?.message}`,
      );
    entries.push(fromWireEntry(document, parsed.data));
  }
  return entries;
}

export async function fetchHeads(serverUrl: string, key: SigningKey | null, timeoutMs: number): Promise<LogHead[]> {
  const url = `${httpBaseFromWs(serverUrl)}${AUDIT_HEADS_PATH}`;
  const response = await get(url, timeoutMs, await proofHeaders(serverUrl, null, key, timeoutMs));
  const parsed = z.object({ heads: z.array(logHeadSchema) }).safeParse(await response.json());
  if (!parsed.success) throw new Error(`${url.replace(/\?.*$/, '')} answered something unexpected`);
  return parsed.data.heads;
}

// The heads behind every signed checkpoint; a caller who may not audit every host is refused
// (an Error naming the fix).
export async function fetchCheckpoints(
  serverUrl: string,
  key: SigningKey | null,
  timeoutMs: number,
): Promise<CheckpointHeads[]> {
  const url = `${httpBaseFromWs(serverUrl)}${AUDIT_CHECKPOINTS_PATH}`;
  const headers: Record<string, string> = {};
  if (key) {
    const proof = await fetchAuthProof(serverUrl, AUDIT_CHECKPOINTS_PROOF, key, timeoutMs);
    Object.assign(
      headers,
      authHeaders({ principal: proof.principal!, challenge: proof.challenge!, signature: proof.signature! }),
    );
  }
  const text = await (await get(url, timeoutMs, headers)).text();
  const checkpoints: CheckpointHeads[] = [];
  for (const [i, line] of text.split('\n').entries()) {
    if (!line) continue;
    const parsed = checkpointHeadsSchema.safeParse(jsonOrNull(line));
    if (!parsed.success)
      throw new Error(`${url}: line ${i + 1} of the coordinator's answer is not a checkpoint's heads`);
    checkpoints.push(parsed.data);
  }
  return checkpoints;
}

// Signed checkpoints a reader kept (an agent's <state-dir>/kept-checkpoints.jsonl): one JSON
// signed checkpoint a line.
export async function readKeptCheckpoints(path: string): Promise<SignedCheckpoint[]> {
  let text: string;
  try {
    text = await fs.readFile(path, 'utf8');
  } catch (error) {
    throw new Error(
      `--head ${path}: neither DOC@SEQ:HASH nor a readable file of kept checkpoints (${(error as Error).message}); agents keep them in <state-dir>/kept-checkpoints.jsonl`,
    );
  }
  const kept: SignedCheckpoint[] = [];
  for (const [i, line] of text.split('\n').entries()) {
    if (!line.trim()) continue;
    let json: unknown;
    try {
      json = JSON.parse(line);
    } catch {
      throw new Error(`${path}: line ${i + 1} is not JSON; expected one signed checkpoint a line`);
    }
    const parsed = signedCheckpointSchema.safeParse(json);
    if (!parsed.success)
      throw new Error(
        `${path}: line ${i + 1} is not a signed checkpoint (${parsed.error.issues[0]?.path.join('.')}: ${parsed.error.issues[0]?.message})`,
      );
    kept.push(parsed.data);
  }
  return kept;
}

// The documents an audit of these hosts needs (all hosts when none are named), listed from the
// heads the caller may audit (an auditor with only `audit` sees no live document list); the
// timestamp document is left out: the audit does not use it and it grows by one entry a minute.
export async function documentsToAudit(
  serverUrl: string,
  hosts: readonly string[],
  key: SigningKey | null,
  timeoutMs: number,
): Promise<string[]> {
  const listed = (await fetchHeads(serverUrl, key, timeoutMs)).map((head) => head.document);
  const fleet = [POLICY_DOC, ENROLLMENT_DOC].filter((d) => listed.includes(d));
  // Named hosts are asked for whether listed or not: a host the caller may not audit is refused
  // (403) instead of silently missing from a verify that then passes.
  if (hosts.length) return [...fleet, ...hosts.flatMap((h) => [desiredDocName(h), statusDocName(h)])];
  return [...fleet, ...listed.filter((d) => parseDocName(d) !== null).sort()];
}

export async function fetchHistory(
  serverUrl: string,
  hosts: readonly string[],
  key: SigningKey | null,
  timeoutMs: number,
): Promise<LoadedHistory> {
  const byDocument = new Map<string, AuditLogEntry[]>();
  for (const document of await documentsToAudit(serverUrl, hosts, key, timeoutMs))
    byDocument.set(document, await fetchDocumentLog(serverUrl, document, key, timeoutMs));
  return historyOf(byDocument);
}

export function bundleOf(history: LoadedHistory, source: string): AuditBundle {
  return {
    kind: 'outpost-audit-bundle',
    version: 1,
    exportedAt: new Date().toISOString(),
    source,
    documents: [...history.byDocument].map(([name, entries]) => ({ name, entries: entries.map(toWireEntry) })),
    ...(history.checkpoints ? { checkpoints: history.checkpoints } : {}),
  };
}

export async function readBundle(path: string): Promise<LoadedHistory> {
  let size: number;
  try {
    size = (await fs.stat(path)).size;
  } catch (error) {
    throw new Error(
      `cannot read bundle ${path}: ${(error as Error).message}; create one with 'outpost audit export --out ${path}'`,
    );
  }
  if (size > MAX_BUNDLE_BYTES)
    throw new Error(
      `bundle ${path} is ${size} bytes, over the ${MAX_BUNDLE_BYTES} this command reads; export fewer hosts per bundle (--host)`,
    );
  let json: unknown;
  try {
    json = JSON.parse(await fs.readFile(path, 'utf8'));
  } catch {
    throw new Error(`bundle ${path} is not JSON; was it written by 'outpost audit export'?`);
  }
  const parsed = auditBundleSchema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new Error(`bundle ${path} is invalid at ${issue?.path.join('.')}: ${issue?.message}`);
  }
  const byDocument = new Map<string, AuditLogEntry[]>();
  for (const { name, entries } of parsed.data.documents) {
    if (byDocument.has(name)) throw new Error(`bundle ${path} holds ${name} twice`);
    try {
      byDocument.set(
        name,
        entries.map((e) => fromWireEntry(name, e)),
      );
    } catch (error) {
      throw new Error(`bundle ${path}: ${name}: ${(error as Error).message}`);
    }
  }
  return historyOf(byDocument, parsed.data.checkpoints);
}
