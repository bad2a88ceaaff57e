import type { SigningKey } from '../../../shared/crypto/keys.js';
import { createSigner, type PayloadSigner } from '../../../shared/crypto/payload-signer.js';
import { ApiOutbox } from '../sync/api-outbox.js';
import { FleetSync } from '../sync/fleet-sync.js';
import { Outbox } from '../sync/outbox.js';

// One unlocked session: the key in this tab's memory, its signer, the synced fleet and the
// outboxes (intents, which wait in their documents; rollout actions and enrollment approvals,
// which wait for the server's API).
// Locking (or closing the tab) drops all of it; the key stays only encrypted in IndexedDB.
export interface Session {
  key: SigningKey;
  signer: PayloadSigner;
  sync: FleetSync;
  outbox: Outbox;
  apiOutbox: ApiOutbox;
}

export function serverUrlOfPage(): string {
  return `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}`;
}

export async function openSession(key: SigningKey, orgRootKeys: string[]): Promise<Session> {
  const signer = await createSigner(key);
  const sync = new FleetSync({ serverUrl: serverUrlOfPage(), key, orgRootKeys });
  await sync.start();
  const outbox = new Outbox(sync);
  await outbox.start();
  const apiOutbox = new ApiOutbox(sync.serverUrl);
  await apiOutbox.start();
  return { key, signer, sync, outbox, apiOutbox };
}

export async function closeSession(session: Session): Promise<void> {
  session.outbox.close();
  session.apiOutbox.close();
  await session.sync.close();
  session.key.secretKey.fill(0);
}
