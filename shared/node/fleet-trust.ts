import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import type { SigningKey } from '../crypto/keys.js';
import type { Logger } from '../log.js';
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

export function openFleetTrustOnNode(options: FleetTrustOnNodeOptions): Promise<FleetTrust> {
  return openFleetTrust({
    orgRootKeys: options.orgRootKeys,
    store: trustFileStore(trustFile(options.stateDir)),
    follow: (name) => connectDocument(options.endpoints, name, { identity: options.identity, ...options.backoff }),
    freezeAfterMs: options.freezeAfterMs,
    ...(options.deliveryWindowMs === undefined ? {} : { deliveryWindowMs: options.deliveryWindowMs }),
    logger: options.logger,
  });
}
