import { type HostId, hostIdSchema } from '../schemas/primitives.js';

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

// Documents whose values are overwritten often collect garbage; their history lives in the
// coordinator's update log. Desired documents and the policy keep full history for snapshots.
// fleet/enrollment collects too: pending requests that expire or are cleared must not stay in
// memory for ever.
export function documentGarbageCollects(name: string): boolean {
  return parseDocName(name)?.role === 'status' || name === 'fleet/timestamp' || name === 'fleet/enrollment';
}
