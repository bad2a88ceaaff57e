import type { SigningKey } from '../shared/crypto/keys.js';
import { connectDocument, waitForSync } from '../shared/node/connect.js';

// Proof that the host still reaches the fleet after an activation: a brand-new connection (new
// TCP connection, websocket upgrade, key proof, sync round trip) to any of the sync endpoints, not
// the long-lived one, which may sit on a socket that has not noticed the network is gone.
export async function probeSyncPeer(
  endpoints: readonly string[],
  document: string,
  timeoutMs: number,
  identity: SigningKey,
): Promise<string | null> {
  const connection = connectDocument([...endpoints], document, { identity, maxBackoffMs: 2000, baseBackoffMs: 200 });
  try {
    await waitForSync(connection, timeoutMs);
    return null;
  } catch (error) {
    return (error as Error).message;
  } finally {
    connection.close();
  }
}
