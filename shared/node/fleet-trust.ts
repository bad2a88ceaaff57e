import { promises as fs } from 'node:fs';
import { join } from 'node:path';
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

// One signed checkpoint an hour, the newest 2,000 (about 83 days, ~0.8 MB): what an auditor
// checks the coordinator's history against with 'outpost audit verify --head FILE'.
export const KEEP_CHECKPOINT_EVERY_MS = 3_600_000;
const KEEP_CHECKPOINTS = 2_000;

export function checkpointKeeper(path: string, logger: Logger): (signed: SignedCheckpoint) => void {
  let lastKeptAt: number | null = null;
  let lines: number | null = null;
  let writing: Promise<void> = Promise.resolve();
  const keep = async (signed: SignedCheckpoint): Promise<void> => {
    if (lastKeptAt === null || lines === null) {
      const kept = (await fs.readFile(path, 'utf8').catch(() => '')).split('\n').filter(Boolean);
      lines = kept.length;
      const last = kept.at(-1);
      lastKeptAt = 0;
      try {
        if (last) lastKeptAt = Date.parse((JSON.parse(last) as SignedCheckpoint).checkpoint.at) || 0;
      } catch {
        // A torn last line (a crash mid-append): keep the next one.
      }
    }
    const at = Date.parse(signed.checkpoint.at);
    if (at < lastKeptAt + KEEP_CHECKPOINT_EVERY_MS) return;
    await fs.appendFile(path, `${JSON.stringify(signed)}\n`);
    lastKeptAt = at;
    lines += 1;
    if (lines > KEEP_CHECKPOINTS * 1.2) {
      const kept = (await fs.readFile(path, 'utf8')).split('\n').filter(Boolean).slice(-KEEP_CHECKPOINTS);
      await writeFileDurably(path, `${kept.join('\n')}\n`);
      lines = kept.length;
    }
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
    follow: (name) => connectDocument(options.endpoints, name, { identity: options.identity, ...options.backoff }),
    freezeAfterMs: options.freezeAfterMs,
    ...(options.deliveryWindowMs === undefined ? {} : { deliveryWindowMs: options.deliveryWindowMs }),
    logger: options.logger,
    keepCheckpoint: checkpointKeeper(keptCheckpointsFile(options.stateDir), options.logger),
  });
}
