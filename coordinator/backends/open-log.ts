import type { Logger } from '../../shared/log.js';
import type { PresenceTable } from '../presence.js';
import { openUpdateLog, type UpdateLog } from '../update-log.js';
import type { LogBackend } from './backend-option.js';
import { openNatsLog } from './nats-log.js';
import type { PresenceShare } from './nats-presence.js';

export interface OpenedLog {
  log: UpdateLog;
  // Coordinators sharing a log share presence too; a LevelDB coordinator has nobody to tell.
  sharePresence: ((table: PresenceTable) => PresenceShare) | null;
}

// The update log the --backend option names: LevelDB in the data directory unless told otherwise.
export async function openLogBackend(
  backend: LogBackend | undefined,
  dataDir: string,
  logger: Logger,
): Promise<OpenedLog> {
  if (backend?.kind !== 'nats') {
    const log = await openUpdateLog(dataDir, {
      onReplay: (replay) =>
        logger.warn(
          { event: 'log-wal-replayed', ...replay },
          `update log: put ${replay.entries} entries (${replay.records} write-ahead records, up to the ${replay.stoppedBy} record) from ${replay.path} into LevelDB again; the previous process stopped without closing the log`,
        ),
    });
    return { log, sharePresence: null };
  }
  const log = await openNatsLog({ ...backend, logger });
  return { log, sharePresence: (table) => log.sharePresence(table) };
}
