import type { Logger } from '../../shared/log.js';
import { openUpdateLog, type UpdateLog } from '../update-log.js';
import type { LogBackend } from './backend-option.js';
import { openNatsLog } from './nats-log.js';

// The update log the --backend option names: LevelDB in the data directory unless told otherwise.
export function openLogBackend(backend: LogBackend | undefined, dataDir: string, logger: Logger): Promise<UpdateLog> {
  return backend?.kind === 'nats' ? openNatsLog({ ...backend, logger }) : openUpdateLog(dataDir);
}
