import type { SigningKey } from '../shared/crypto/keys.js';
import { signPayload } from '../shared/crypto/signatures.js';
import { readTimestamp, TIMESTAMP_DOC, writeTimestamp } from '../shared/documents/fleet.js';
import type { Logger } from '../shared/log.js';
import type { Timestamp } from '../shared/schemas/policy.js';
import { writeFleetDocument } from './fleet-writes.js';
import type { DocumentHost } from './hosted-documents.js';
import type { TrustState } from './trust-state.js';

// Freshness: the coordinator signs "now" with an online key whose only capability is timestamps.
// Agents that see no fresh timestamp for too long report a freeze (relays withholding data).
export function startTimestamps(
  host: DocumentHost,
  trust: TrustState,
  key: SigningKey,
  intervalMs: number,
  logger: Logger,
): () => void {
  let stopped = false;
  const tick = async (): Promise<void> => {
    const policy = trust.policy();
    if (!policy || stopped) return;
    if (!policy.timestampKeys.includes(key.publicKey)) {
      logger.warn(
        { event: 'timestamp-key-not-in-policy', document: TIMESTAMP_DOC },
        'the timestamp key is not listed in the policy; agents will ignore its timestamps',
      );
    }
    const previous = readTimestamp((await host.pin(TIMESTAMP_DOC)).doc);
    const timestamp: Timestamp = {
      kind: 'timestamp',
      at: new Date().toISOString(),
      seq: (previous?.timestamp.seq ?? 0) + 1,
      policyVersion: policy.version,
    };
    await writeFleetDocument(host, TIMESTAMP_DOC, 'timestamp', (doc) =>
      writeTimestamp(doc, { timestamp, signature: signPayload('timestamp', timestamp, key) }),
    );
  };
  const run = (): void =>
    void tick().catch((error: Error) =>
      logger.error({ event: 'timestamp-failed', err: error }, 'could not write timestamp'),
    );
  run();
  const timer = setInterval(run, intervalMs);
  return () => {
    stopped = true;
    clearInterval(timer);
  };
}
