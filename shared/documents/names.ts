import { type HostId, hostIdSchema } from '../schemas/primitives.js';
import { ENROLLMENT_DOC, POLICY_DOC, TIMESTAMP_DOC } from './fleet.js';

// Writers of different trust never share a document: admins write desired, the host's agent writes status.
export type DocumentRole = 'desired' | 'status';

export function desiredDocName(host: HostId): string {
  return `hosts/${host}/desired`;
}

export function statusDocName(host: HostId): string {
  return `hosts/${host}/status`;
}

export interface ParsedDocName {
  host: HostId;
  role: DocumentRole;
}

export function parseDocName(name: string): ParsedDocName | null {
  const match = /^hosts\/([^/]+)\/(desired|status)$/.exec(name);
  if (!match) return null;
  const host = hostIdSchema.safeParse(match[1]);
  if (!host.success) return null;
  return { host: host.data, role: match[2] as DocumentRole };
}

// Documents whose copies collect garbage: a deleted entry keeps only its length in memory, so a
// writer that writes and deletes entries without end costs the servers' heaps nothing once they
// are deleted (fuzz issue 11, docs/fuzzing.md). Their history lives in the servers' update logs,
// which the audit replays (shared/audit/replay.ts), and every path from one server's log to
// another's passes deleted content on items first (shared/documents/history-forward.ts).
// Rollout documents keep their history in memory: the coordinator alone writes them.
export function documentGarbageCollects(name: string): boolean {
  return parseDocName(name) !== null || name === POLICY_DOC || name === TIMESTAMP_DOC || name === ENROLLMENT_DOC;
}
