import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import * as Y from 'yjs';
import { checkpointsToKeep } from '../audit/kept-checkpoints.js';
import type { SigningKey } from '../crypto/keys.js';
import type { Logger } from '../log.js';
import type { SignedCheckpoint } from '../schemas/checkpoint.js';
import type { ReconnectOptions } from '../sync/connect.js';
import { type FleetTrust, openFleetTrust, type TrustStore } from '../trust/fleet-trust.js';
import { connectDocument } from './connect.js';
import { writeFileDurably } from './durable-file.js';

// Fleet trust on Node: the walked chain in <stateDir>/trust.json (written durably) and the policy
// and timestamp documents followed over websockets with failover between endpoints.
export interface FleetTrustOnNodeOptions {
  endpoints: string[];
  // The key the policy and timestamp connections prove (the host key; null: open-mode servers).
  identity: SigningKey | null;
  orgRootKeys: string[];
  stateDir: string;
  freezeAfterMs: number;
  deliveryWindowMs?: number;
  logger: Logger;
  // Reconnect backoff of the policy and timestamp documents (agents on satellite links: minutes).
  backoff?: ReconnectOptions;
}

export function trustFile(stateDir: string): string {
  return join(stateDir, 'trust.json');
}

export function trustFileStore(path: string): TrustStore {
  return {
    where: path,
    async load() {
      try {
        return await fs.readFile(path, 'utf8');
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') return null;
        throw new Error(`cannot read ${path}: ${(error as Error).message}`);
      }
    },
    save: (text) => writeFileDurably(path, text),
  };
}

export function keptCheckpointsFile(stateDir: string): string {
  return join(stateDir, 'kept-checkpoints.jsonl');
}

// Every signed checkpoint, thinned when the file has grown by COMPACT_AFTER lines (which ones stay:
// shared/audit/kept-checkpoints.ts): what an auditor checks the coordinator's history against with
// 'outpost audit verify --head FILE'.
const COMPACT_AFTER = 1000;

export function checkpointKeeper(path: string, logger: Logger): (signed: SignedCheckpoint) => void {
  let lastSeq: number | null = null;
  let lines = 0;
  let compactAt = 0;
  let writing: Promise<void> = Promise.resolve();
  const keep = async (signed: SignedCheckpoint): Promise<void> => {
    if (lastSeq === null) {
      const kept = (await fs.readFile(path, 'utf8').catch(() => '')).split('\n').filter(Boolean);
      lines = kept.length;
      compactAt = lines + COMPACT_AFTER;
      lastSeq = 0;
      try {
        const last = kept.at(-1);
        if (last) lastSeq = (JSON.parse(last) as SignedCheckpoint).checkpoint.seq || 0;
      } catch {
        // A torn last line (a crash mid-append): keep the next one.
      }
    }
    if (signed.checkpoint.seq <= lastSeq) return;
    await fs.appendFile(path, `${JSON.stringify(signed)}\n`);
    lastSeq = signed.checkpoint.seq;
    lines += 1;
    if (lines < compactAt) return;
    // Torn lines (a crash mid-append) are dropped here.
    const kept = (await fs.readFile(path, 'utf8')).split('\n').flatMap((line) => {
      try {
        const at = Date.parse((JSON.parse(line) as SignedCheckpoint).checkpoint.at);
        return Number.isFinite(at) ? [{ line, at }] : [];
      } catch {
        return [];
      }
    });
    const thinned = checkpointsToKeep(kept.map((k) => k.at)).map((index) => kept[index]!.line);
    await writeFileDurably(path, `${thinned.join('\n')}\n`);
    lines = thinned.length;
    compactAt = lines + COMPACT_AFTER;
  };
  return (signed) => {
    writing = writing
      .then(() => keep(signed))
      .catch((error: Error) =>
        logger.error({ event: 'checkpoint-keep-failed', err: error }, `cannot keep signed checkpoints in ${path}`),
      );
  };
}

export function openFleetTrustOnNode(options: FleetTrustOnNodeOptions): Promise<FleetTrust> {
  return openFleetTrust({
    orgRootKeys: options.orgRootKeys,
    store: trustFileStore(trustFile(options.stateDir)),
    // Copies that collect garbage: a reader needs only the entries present now (the walked chain
    // is in trust.json), while the servers keep every deleted policy entry for audits; without it
    // each entry a compromised coordinator wrote and deleted stayed decoded here (docs/fuzzing.md,
    // finding 9).
    follow: (name) =>
      connectDocument(options.endpoints, name, {
        doc: new Y.Doc({ gc: true }),
        identity: options.identity,
        ...options.backoff,
      }),
    freezeAfterMs: options.freezeAfterMs,
    ...(options.deliveryWindowMs === undefined ? {} : { deliveryWindowMs: options.deliveryWindowMs }),
    logger: options.logger,
    keepCheckpoint: checkpointKeeper(keptCheckpointsFile(options.stateDir), options.logger),
  });
}
