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
  if (backend?.kind !== 'nats') return { log: await openUpdateLog(dataDir), sharePresence: null };
  const log = await openNatsLog({ ...backend, logger });
  return { log, sharePresence: (table) => log.sharePresence(table) };
}
