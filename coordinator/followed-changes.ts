import type { Logger } from '../shared/log.js';
import { CATCH_UP_RETRY_MS, type UpdateLog } from './update-log.js';

// For followers of a shared log that act on *which* documents another coordinator changed, not on
// the entries themselves: the relay change feed (relay-sessions.ts) and the rollout driver
// (rollouts.ts). A shared log's delivery can lose entries and says so through `missed`
// (backends/nats-log.ts, after a reconnect or a follower restart); a document whose entries were
// lost must still reach `changed`, or nobody acts on it until its next entry.
//
// Each document's highest entry number seen is kept: from the log's heads read when following
// starts, then from every followed entry. After `missed` the log's heads are read again and every
// document whose head is past what was seen goes to `changed`, as its entries would have.
// - The log never delivers this coordinator's own appends, so a document written here since the
//   last comparison goes to `changed` too: one extra look at it, only after a reconnect.
// - A followed entry numbered past the next one expected names its document, which is all these
//   followers need; it is no sign of other losses either (own appends leave the same gaps).
// - A log with one writer (LevelDB) delivers nothing and never calls `missed`: there this costs the
//   heads read at start and the table it fills, and does nothing more.
// - One number per document of the fleet, like the change feed's own table. Followers of one log
//   share it, its reads of the heads and its comparisons.

export interface FollowedChanges {
  // One comparison with the log's heads, as after `missed` (a running one is followed by another);
  // resolves when it is done, failed or not.
  catchUp(): Promise<void>;
  // This follower's; the log is followed until its last follower stops.
  stop(): void;
}

interface ChangeFeed {
  followers: Set<{ changed: (document: string) => void }>;
  catchUp(): Promise<void>;
  stop(): void;
}

const feeds = new WeakMap<Pick<UpdateLog, 'follow' | 'heads'>, ChangeFeed>();

export function followDocumentChanges(
  log: Pick<UpdateLog, 'follow' | 'heads'>,
  changed: (document: string) => void,
  logger: Logger,
  retryMs = CATCH_UP_RETRY_MS,
): FollowedChanges {
  let feed = feeds.get(log);
  if (!feed) {
    feed = openChangeFeed(log, logger, retryMs);
    feeds.set(log, feed);
  }
  const follower = { changed };
  feed.followers.add(follower);
  const ours = feed;
  return {
    catchUp: ours.catchUp,
    stop() {
      ours.followers.delete(follower);
      if (ours.followers.size > 0 || feeds.get(log) !== ours) return;
      feeds.delete(log);
      ours.stop();
    },
  };
}

function openChangeFeed(log: Pick<UpdateLog, 'follow' | 'heads'>, logger: Logger, retryMs: number): ChangeFeed {
  const followers: ChangeFeed['followers'] = new Set();
  const changed = (document: string): void => {
    for (const follower of followers) follower.changed(document);
  };
  const seen = new Map<string, number>();
  const note = (document: string, seq: number): void => {
    if (seq > (seen.get(document) ?? 0)) seen.set(document, seq);
  };
  let stopped = false;
  const stopFollowing = log.follow(
    (entry) => {
      note(entry.document, entry.seq);
      changed(entry.document);
    },
    () => void catchUp(),
  );
  // Read after following started: an entry stored in between is both delivered and in a head.
  const baseline = log.heads().then(
    (heads) => {
      for (const head of heads) note(head.document, head.seq);
    },
    (error: Error) =>
      // Without it, the first comparison hands over every document not followed since (correct,
      // and costly once).
      logger.warn({ event: 'follow-baseline-failed', err: error }, 'cannot read the log heads to compare with later'),
  );

  async function compare(): Promise<void> {
    await baseline;
    const heads = await log.heads();
    let behind = 0;
    for (const head of heads) {
      if (stopped) return;
      if (head.seq <= (seen.get(head.document) ?? 0)) continue;
      seen.set(head.document, head.seq);
      behind += 1;
      changed(head.document);
    }
    logger.info(
      { event: 'follow-caught-up', followers: followers.size, documents: heads.length, behind },
      'documents compared with the log after the delivery may have lost entries',
    );
  }

  let running: Promise<void> | null = null;
  let again = false;
  // Failed comparisons in a row: the first is logged, and each is retried (the cluster that could
  // not answer may send no further `missed` once it is back).
  let failures = 0;
  let retryTimer: ReturnType<typeof setTimeout> | null = null;
  function catchUp(): Promise<void> {
    if (running) {
      again = true;
      return running;
    }
    running = (async () => {
      do {
        again = false;
        try {
          await compare();
          failures = 0;
        } catch (error) {
          failures += 1;
          if (failures === 1)
            logger.warn(
              { event: 'follow-catch-up-failed', err: error },
              `cannot compare the documents followed with the log; retrying every ${retryMs / 1000} s`,
            );
          // A timer, not hosted-documents.ts's awaited sleep: catchUp ends after one try and stop() cancels it.
          if (!stopped) retryTimer ??= setTimeout(retry, retryMs);
        }
      } while (again && !stopped);
      running = null;
    })();
    return running;
  }
  function retry(): void {
    retryTimer = null;
    if (!stopped) void catchUp();
  }

  return {
    followers,
    catchUp,
    stop() {
      stopped = true;
      if (retryTimer) clearTimeout(retryTimer);
      stopFollowing();
    },
  };
}
