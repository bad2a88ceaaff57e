import { z } from 'zod';
import { fromBase64, toBase64 } from '../crypto/encoding.js';
import type { AuditLogEntry, LogHead } from './log-chain.js';

// The wire and file form of log entries: the coordinator's audit endpoint streams them one JSON
// line each, and `outpost audit export` writes them into a self-contained bundle (the fleet
// documents carry the policy chain and enrollment records) that verifies with no network.
const hashSchema = z.string().regex(/^[0-9a-f]{64}$/, 'expected a 64-digit hex sha256');
export const documentNameSchema = z
  .string()
  .regex(/^(hosts\/[a-z0-9][a-z0-9-]{0,62}\/(desired|status)|fleet\/[a-z0-9-]{1,63})$/);

export const wireEntrySchema = z.object({
  seq: z.number().int().positive(),
  receivedAt: z.number().finite(),
  principal: z.string().max(512),
  update: z.string().max(16 * 1024 * 1024),
  prevHash: hashSchema.optional(),
  hash: hashSchema.optional(),
});
export type WireEntry = z.infer<typeof wireEntrySchema>;

export const logHeadSchema = z.object({
  document: documentNameSchema,
  seq: z.number().int().positive(),
  hash: hashSchema,
});

// The heads behind one signed checkpoint (shared/audit/checkpoint.ts), as served and exported.
export const checkpointHeadsSchema = z.object({
  seq: z.number().int().positive(),
  at: z.string().max(64),
  changed: z.array(logHeadSchema).max(1_000_000),
});

export const auditBundleSchema = z.object({
  kind: z.literal('outpost-audit-bundle'),
  version: z.literal(1),
  exportedAt: z.iso.datetime(),
  source: z.string().max(2048),
  documents: z.array(z.object({ name: documentNameSchema, entries: z.array(wireEntrySchema) })).max(1_000_000),
  // Absent from bundles of callers who may not audit every document (and from older bundles).
  checkpoints: z.array(checkpointHeadsSchema).max(10_000_000).optional(),
});
export type AuditBundle = z.infer<typeof auditBundleSchema>;

export function toWireEntry(entry: AuditLogEntry): WireEntry {
  return {
    seq: entry.seq,
    receivedAt: entry.receivedAt,
    principal: entry.principal,
    update: toBase64(entry.update),
    ...(entry.prevHash ? { prevHash: entry.prevHash } : {}),
    ...(entry.hash ? { hash: entry.hash } : {}),
  };
}

export function fromWireEntry(document: string, wire: WireEntry): AuditLogEntry {
  return {
    document,
    seq: wire.seq,
    receivedAt: wire.receivedAt,
    principal: wire.principal,
    update: fromBase64(wire.update),
    ...(wire.prevHash ? { prevHash: wire.prevHash } : {}),
    ...(wire.hash ? { hash: wire.hash } : {}),
  };
}

// "hosts/a/status@12:<hash>" — how a kept head is written on a command line.
export function parseHead(text: string): LogHead | null {
  const match = /^(.+)@(\d+):([0-9a-f]{64})$/.exec(text);
  if (!match) return null;
  const parsed = logHeadSchema.safeParse({ document: match[1], seq: Number(match[2]), hash: match[3] });
  return parsed.success ? parsed.data : null;
}

export const formatHead = (head: LogHead): string => `${head.document}@${head.seq}:${head.hash}`;

// The coordinator's audit endpoints and what a caller's key proof is bound to.
export const AUDIT_LOG_PATH = '/api/audit/log';
export const AUDIT_HEADS_PATH = '/api/audit/heads';
export const AUDIT_CHECKPOINTS_PATH = '/api/audit/checkpoints';
export const auditProofDocument = (document: string | null): string => `audit:${document ?? 'heads'}`;
export const AUDIT_CHECKPOINTS_PROOF = 'audit:checkpoints';
