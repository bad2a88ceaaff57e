import { type CheckpointHeads, checkpointedDocument, headsRoot } from '../shared/audit/checkpoint.js';
import type { LogHead } from '../shared/audit/log-chain.js';
import type { SigningKey } from '../shared/crypto/keys.js';
import { signPayload } from '../shared/crypto/signatures.js';
import { readTimestamp, TIMESTAMP_DOC, writeCheckpoint, writeTimestamp } from '../shared/documents/fleet.js';
import type { Logger } from '../shared/log.js';
import type { Checkpoint } from '../shared/schemas/checkpoint.js';
import type { Timestamp } from '../shared/schemas/policy.js';
import { writeFleetDocument } from './fleet-writes.js';
import { type DocumentHost, withPinned } from './hosted-documents.js';
import type { TrustState } from './trust-state.js';
import type { UpdateLog } from './update-log.js';

// Freshness: the coordinator signs "now" with an online key whose only capability is timestamps.
// Agents that see no fresh timestamp for too long report a freeze (relays withholding data).
// Next to each timestamp it signs a checkpoint of every document's log head (docs/audit.md,
// "Signed checkpoints"); the heads behind it are stored, fsync'ed, before it is published, so no
// checkpoint anyone holds lacks them.
export function startTimestamps(
  host: DocumentHost,
  trust: TrustState,
  log: UpdateLog,
  key: SigningKey,
  intervalMs: number,
  logger: Logger,
): () => void {
  let stopped = false;
  // The heads of the last checkpoint published (loaded from the stored ones at the first tick).
  let published: Map<string, LogHead> | null = null;
  const loadPublished = async (): Promise<Map<string, LogHead>> => {
    const heads = new Map<string, LogHead>();
    for await (const checkpoint of log.checkpoints())
      for (const head of checkpoint.changed) heads.set(head.document, head);
    return heads;
  };
  const tick = async (): Promise<void> => {
    const policy = trust.policy();
    if (!policy || stopped) return;
    // Coordinators sharing a NATS log sign in turn, never two at once: the lease holder signs.
    if (!(await log.claim('timestamps', Math.max(3 * intervalMs, 10_000)))) {
      // Another coordinator signs meanwhile: read its checkpoints again if this one takes over.
      published = null;
      return;
    }
    if (!policy.timestampKeys.includes(key.publicKey)) {
      logger.warn(
        { event: 'timestamp-key-not-in-policy', document: TIMESTAMP_DOC },
        'the timestamp key is not listed in the policy; agents will ignore its timestamps',
      );
    }
    published ??= await loadPublished();
    const previous = await withPinned(host, TIMESTAMP_DOC, (document) => readTimestamp(document.doc));
    const at = new Date().toISOString();
    const seq = (previous?.timestamp.seq ?? 0) + 1;
    const timestamp: Timestamp = { kind: 'timestamp', at, seq, policyVersion: policy.version };
    const heads = (await log.heads()).filter((h) => checkpointedDocument(h.document));
    const changed = heads.filter((h) => {
      const before = published!.get(h.document);
      return !before || before.seq !== h.seq || before.hash !== h.hash;
    });
    const stored: CheckpointHeads = { seq, at, changed };
    await log.putCheckpoint(stored);
    const checkpoint: Checkpoint = {
      kind: 'checkpoint',
      seq,
      at,
      policyVersion: policy.version,
      heads: { count: heads.length, root: headsRoot(heads) },
    };
    await writeFleetDocument(host, TIMESTAMP_DOC, 'timestamp', (doc) =>
      doc.transact(() => {
        writeTimestamp(doc, { timestamp, signature: signPayload('timestamp', timestamp, key) });
        writeCheckpoint(doc, { checkpoint, signature: signPayload('checkpoint', checkpoint, key) });
      }),
    );
    for (const head of changed) published.set(head.document, head);
  };
  // One tick at a time: one still running (a large log) makes the next one skip, not queue.
  let busy = false;
  const run = (): void => {
    if (busy) return;
    busy = true;
    void tick()
      .catch((error: Error) => logger.error({ event: 'timestamp-failed', err: error }, 'could not write timestamp'))
      .finally(() => {
        busy = false;
      });
  };
  run();
  const timer = setInterval(run, intervalMs);
  return () => {
    stopped = true;
    clearInterval(timer);
  };
}
