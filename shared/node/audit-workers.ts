import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { type AuditReport, type AuditSource, auditHistory, hostsIn, mergeAuditReports } from '../audit/history.js';
import type { AuditLogEntry, LogHead } from '../audit/log-chain.js';
import { useEd25519Verifier } from '../crypto/signatures.js';
import { ENROLLMENT_DOC, POLICY_DOC } from '../documents/fleet.js';
import { desiredDocName, parseDocName, statusDocName } from '../documents/names.js';
import { nodeEd25519Verify } from './ed25519.js';

// The audit spread over worker threads (Node only; the core in shared/audit stays one pass over
// plain data). Hosts are independent once the policy chain and the bindings are known, so each
// worker replays the two fleet documents for context and audits a contiguous run of hosts —
// replay, hash chain and every signature — with Node's Ed25519; the first worker also reports
// the fleet documents. Merged in host order, the report is the one a single pass gives.

export interface ParallelAuditOptions {
  orgRootKeys: readonly string[];
  hosts?: readonly string[];
  keptHeads?: readonly LogHead[];
  // Keep every event (a timeline) or none (verify: anomalies and counts only).
  keepEvents: boolean;
  // Worker threads; default: the machine's available parallelism. 1 audits in this thread.
  workers?: number;
  // Fewer host log entries than this per worker and the threads cost more than they save.
  minEntriesPerWorker?: number;
}

// One document's entries in a form postMessage can move without copying: the updates end to end
// in one buffer, the rest in parallel arrays.
export interface PackedDocument {
  name: string;
  seqs: Float64Array;
  receivedAt: Float64Array;
  principals: string[];
  prevHashes: (string | null)[];
  hashes: (string | null)[];
  offsets: Uint32Array;
  updates: Uint8Array;
}

export interface WorkerTask {
  orgRootKeys: readonly string[];
  hosts: string[];
  keptHeads: LogHead[];
  contextOnly: string[];
  keepEvents: boolean;
  documents: PackedDocument[];
}

export type WorkerAnswer = { ok: true; report: AuditReport } | { ok: false; error: string };

export function packDocument(name: string, entries: readonly AuditLogEntry[]): PackedDocument {
  const offsets = new Uint32Array(entries.length + 1);
  let size = 0;
  for (const [i, entry] of entries.entries()) {
    offsets[i] = size;
    size += entry.update.length;
  }
  offsets[entries.length] = size;
  const updates = new Uint8Array(size);
  for (const [i, entry] of entries.entries()) updates.set(entry.update, offsets[i]);
  return {
    name,
    seqs: Float64Array.from(entries, (e) => e.seq),
    receivedAt: Float64Array.from(entries, (e) => e.receivedAt),
    principals: entries.map((e) => e.principal),
    prevHashes: entries.map((e) => e.prevHash ?? null),
    hashes: entries.map((e) => e.hash ?? null),
    offsets,
    updates,
  };
}

export function unpackDocument(packed: PackedDocument): AuditLogEntry[] {
  return Array.from(packed.seqs, (seq, i) => {
    const entry: AuditLogEntry = {
      document: packed.name,
      seq,
      receivedAt: packed.receivedAt[i]!,
      principal: packed.principals[i]!,
      update: packed.updates.subarray(packed.offsets[i]!, packed.offsets[i + 1]!),
    };
    if (packed.prevHashes[i] !== null) entry.prevHash = packed.prevHashes[i]!;
    if (packed.hashes[i] !== null) entry.hash = packed.hashes[i]!;
    return entry;
  });
}

// Contiguous runs of hosts with about the same number of log entries each.
export function splitHosts(hosts: readonly string[], weight: (host: string) => number, parts: number): string[][] {
  const total = hosts.reduce((n, h) => n + weight(h), 0);
  const runs: string[][] = [[]];
  let filled = 0;
  for (const host of hosts) {
    const target = (total * runs.length) / parts;
    if (runs.at(-1)!.length > 0 && runs.length < parts && filled + weight(host) / 2 > target) runs.push([]);
    runs.at(-1)!.push(host);
    filled += weight(host);
  }
  return runs;
}

function runWorker(task: WorkerTask): Promise<AuditReport> {
  return new Promise((resolve, reject) => {
    const worker = new Worker(new URL('./audit-worker.js', import.meta.url));
    let settled = false;
    const settle = (outcome: () => void): void => {
      if (settled) return;
      settled = true;
      void worker.terminate();
      outcome();
    };
    worker.once('message', (answer: WorkerAnswer) =>
      settle(() => (answer.ok ? resolve(answer.report) : reject(new Error(`audit worker: ${answer.error}`)))),
    );
    worker.once('error', (error) => settle(() => reject(new Error(`audit worker failed: ${error.message}`))));
    worker.once('exit', (code) =>
      settle(() => reject(new Error(`audit worker exited (code ${code}) without a report`))),
    );
    const transfer = task.documents
      .filter((d) => d.name !== POLICY_DOC && d.name !== ENROLLMENT_DOC)
      .flatMap((d) => [d.seqs.buffer, d.receivedAt.buffer, d.offsets.buffer, d.updates.buffer]);
    worker.postMessage(task, transfer as ArrayBuffer[]);
  });
}

export async function auditInParallel(source: AuditSource, options: ParallelAuditOptions): Promise<AuditReport> {
  const entries = new Map<string, AuditLogEntry[]>(source.documents.map((d) => [d, [...source.entries(d)]]));
  const materialised: AuditSource = { documents: source.documents, entries: (d) => entries.get(d) ?? [] };
  const hosts = options.hosts?.length ? [...options.hosts] : hostsIn(source.documents);
  const weight = (host: string): number =>
    (entries.get(desiredDocName(host))?.length ?? 0) + (entries.get(statusDocName(host))?.length ?? 0);
  const total = hosts.reduce((n, h) => n + weight(h), 0);
  const workers = Math.max(
    1,
    Math.min(
      options.workers ?? availableParallelism(),
      hosts.length,
      Math.floor(total / (options.minEntriesPerWorker ?? 2_000)),
    ),
  );
  const keepEvent = options.keepEvents ? () => true : () => false;
  // Kept heads of the documents this audit covers: the fleet documents and the audited hosts'
  // (a kept checkpoint names every document; an audit of some hosts checks theirs).
  const audited = new Set(hosts);
  const keptHeads = (options.keptHeads ?? []).filter((head) => {
    const parsed = parseDocName(head.document);
    return parsed === null || audited.has(parsed.host) || !options.hosts?.length;
  });
  if (workers === 1) {
    useEd25519Verifier(nodeEd25519Verify);
    return auditHistory(materialised, {
      orgRootKeys: options.orgRootKeys,
      hosts,
      keptHeads,
      keepEvent,
    });
  }
  const fleet = [POLICY_DOC, ENROLLMENT_DOC].filter((d) => entries.has(d));
  const fleetPacked = fleet.map((d) => packDocument(d, entries.get(d)!));
  const runs = splitHosts(hosts, weight, workers);
  const tasks = runs.map((run, index): WorkerTask => {
    const own = new Set(run.flatMap((h) => [desiredDocName(h), statusDocName(h)]));
    const reportsFleet = index === 0;
    return {
      orgRootKeys: options.orgRootKeys,
      hosts: run,
      // The first part also answers for kept heads of documents nobody holds (withheld).
      keptHeads: keptHeads.filter(
        (h) => own.has(h.document) || (reportsFleet && (fleet.includes(h.document) || !entries.has(h.document))),
      ),
      contextOnly: reportsFleet ? [] : fleet,
      keepEvents: options.keepEvents,
      documents: [
        ...fleetPacked,
        ...[...own].filter((d) => entries.has(d)).map((d) => packDocument(d, entries.get(d)!)),
      ],
    };
  });
  return mergeAuditReports(await Promise.all(tasks.map(runWorker)));
}
