import * as Y from 'yjs';
import type { SigningKey } from '../shared/crypto/keys.js';
import { connectDocument, waitForSync } from '../shared/node/connect.js';

// Proof that the host still reaches the fleet after an activation: a brand-new connection (new
// TCP connection, websocket upgrade, key proof, sync round trip) to any of the sync endpoints, not
// the long-lived one, which may sit on a socket that has not noticed the network is gone.
//
// The probe starts from a copy of what the agent already holds (`known`, its copy of the
// document, which collects garbage: live entries only), so its sync step 1 carries the agent's
// state vector and the peer answers with what the agent has not seen. The servers keep a desired
// document's whole history (~1.8 KiB per entry ever written): a probe starting empty was sent all
// of it, which in the fuzzer's long run did not arrive in time and rolled back an admin's valid
// intent (docs/fuzzing.md, "The long run"). The round trip is the same, and what it proves.
export async function probeSyncPeer(
  endpoints: readonly string[],
  document: string,
  known: Y.Doc,
  timeoutMs: number,
  identity: SigningKey,
): Promise<string | null> {
  const doc = new Y.Doc({ gc: true });
  // A copy, not a document with the same state vector and no content: the probe answers the
  // peer's step 1 like any client, and an empty stand-in would send its gaps as deletions.
  Y.applyUpdate(doc, Y.encodeStateAsUpdate(known));
  const connection = connectDocument([...endpoints], document, {
    doc,
    identity,
    maxBackoffMs: 2000,
    baseBackoffMs: 200,
    readOnly: true,
  });
  try {
    await waitForSync(connection, timeoutMs);
    return null;
  } catch (error) {
    return (error as Error).message;
  } finally {
    connection.close();
    doc.destroy();
  }
}
