import type { Logger } from '../log.js';
import type { ConnectionRetry } from './connect.js';

// Logs why document connections end, without filling a journal during an outage of weeks: a new
// reason for a document is logged at once, the same one again at most every `repeatMs` with how
// many were not logged. A close code of 4000 or more is the server refusing something (4403 not
// authorised, 4413/4429 write limits) and is a warning; anything else is the link and is info.
export interface RetryLogState {
  byDocument: Map<string, { reason: string; loggedAt: number; unlogged: number }>;
}

export function createRetryLogState(): RetryLogState {
  return { byDocument: new Map() };
}

export function logConnectionRetry(
  state: RetryLogState,
  logger: Logger,
  retry: ConnectionRetry,
  now: number,
  repeatMs = 600_000,
): boolean {
  const last = state.byDocument.get(retry.document);
  if (last && last.reason === retry.reason && now - last.loggedAt < repeatMs) {
    last.unlogged += 1;
    return false;
  }
  const refused = retry.code !== null && retry.code >= 4000;
  const fields = {
    event: refused ? 'connection-refused' : 'connection-lost',
    document: retry.document,
    url: retry.url,
    code: retry.code,
    reason: retry.reason,
    retryInMs: Math.round(retry.delayMs),
    ...(last && last.reason === retry.reason ? { notLoggedSince: last.unlogged } : {}),
  };
  const message = `${retry.document} via ${retry.url}: ${retry.reason}; retrying in ${Math.round(retry.delayMs / 1000)} s`;
  if (refused) logger.warn(fields, message);
  else logger.info(fields, message);
  state.byDocument.set(retry.document, { reason: retry.reason, loggedAt: now, unlogged: 0 });
  return true;
}

// The ConnectOptions.onRetry for one process's connections.
export function retryLogger(logger: Logger, now: () => number = Date.now): (retry: ConnectionRetry) => void {
  const state = createRetryLogState();
  return (retry) => {
    logConnectionRetry(state, logger, retry, now());
  };
}
