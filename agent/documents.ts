import * as Y from 'yjs';
import { readOwnCurrentStatus, readResults } from '../shared/documents/status.js';
import { connectDocument } from '../shared/node/connect.js';
import { backoffDelay } from '../shared/sync/reconnect.js';
import { findResultAnomalies } from '../shared/trust/result-replays.js';
import { scheduleActionCheck } from './actions.js';
import { type AgentRuntime, MAX_ENTRY_REPORTS, poke } from './runtime.js';
import { selectNow } from './select.js';
import { purgeForeignEntries } from './status-store.js';

// The agent's two documents as peers change them: the desired document opened, bounded and
// dropped when flooded; the status document bounded, saved and checked for entries not its own.

// What peers may make the agent hold of its documents (threat 11, an endless document stream):
// a relay or coordinator that sends more is cut off. The desired document (about 1 KiB an
// intent; peers send its whole history, deleted entries too) is dropped and synced afresh after a backoff; from the status document,
// whose results the agent cannot drop, everything its key did not sign is deleted (it collects
// garbage, so that frees the memory). Honest documents stay far below: 64 MiB is ~60,000 intents.
export const MAX_DESIRED_DOCUMENT_BYTES = 64 * 2 ** 20;
export const MAX_STATUS_REMOTE_BYTES = 64 * 2 ** 20;

// The agent's copy of its desired document collects garbage, unlike the servers' copies (which
// keep every deleted entry for snapshots and audits): the agent reads only the entries present
// now, never writes the document (peers refuse its writes there) and does not keep it on disk, so
// an entry deleted by a peer needs no room in its memory. Without it every entry a relay or
// coordinator ever wrote and deleted stayed decoded in the agent for good: the fuzzer's agent
// grew by gigabytes (docs/fuzzing.md, finding 9).
export function newDesiredDoc(): Y.Doc {
  return new Y.Doc({ gc: true });
}

export function openDesired(agent: AgentRuntime): void {
  const { config, desiredName } = agent;
  const doc = newDesiredDoc();
  agent.desiredDoc = doc;
  agent.desiredBytes = 0;
  agent.reportedMalformed = new Set();
  doc.on('update', (update: Uint8Array) => {
    if (doc !== agent.desiredDoc) return;
    agent.desiredBytes += update.length;
    if (agent.desiredBytes > MAX_DESIRED_DOCUMENT_BYTES) {
      dropDesired(agent);
      return;
    }
    poke(agent);
    schedulePreemptionCheck(agent);
    scheduleActionCheck(agent);
  });
  agent.desired = connectDocument(config.coordinators, desiredName, {
    doc,
    identity: config.key,
    ...config.reconnect,
  });
}

export function dropDesired(agent: AgentRuntime): void {
  const { logger, desiredName, backoff } = agent;
  const connection = agent.desired;
  agent.desired = null;
  agent.desiredDrops += 1;
  const delayMs = backoffDelay(agent.desiredDrops, backoff.baseBackoffMs, backoff.maxBackoffMs);
  logger.error(
    {
      event: 'document-too-large',
      document: desiredName,
      bytes: agent.desiredBytes,
      limit: MAX_DESIRED_DOCUMENT_BYTES,
      retryInMs: Math.round(delayMs),
    },
    `peers sent more than ${MAX_DESIRED_DOCUMENT_BYTES} bytes for ${desiredName}: dropped it, syncing it afresh in ${Math.round(delayMs / 1000)} s (a relay or coordinator may be flooding it)`,
  );
  // Closed outside the update handler that noticed it; an empty document stands in meanwhile.
  setImmediate(() => connection?.close());
  agent.desiredDoc = newDesiredDoc();
  agent.desiredReopen = setTimeout(() => {
    agent.desiredReopen = null;
    if (!agent.stopped) openDesired(agent);
  }, delayMs);
  poke(agent);
}

// A newer intent replaces one still downloading (days on a slow link); checked at most every
// 250 ms however fast the document changes.
export function schedulePreemptionCheck(agent: AgentRuntime): void {
  const { config } = agent;
  if (agent.preemptionCheck || !agent.state.target || agent.state.phase !== 'downloading') return;
  agent.preemptionCheck = setTimeout(() => {
    agent.preemptionCheck = null;
    if (!agent.state.target || agent.state.phase !== 'downloading' || config.trust.freshness().frozen) return;
    const chosen = selectNow(agent).chosen;
    if (chosen && !agent.state.handledDigests.includes(chosen.digest)) agent.downloadAbort.abort();
  }, 250);
}

// A change of the status document from a peer: counted against the bound, saved, and checked.
export function statusDocumentChanged(agent: AgentRuntime, update: Uint8Array, origin: unknown): void {
  const { config, logger, statusDoc, statusName } = agent;
  if (origin === 'local') return;
  agent.statusRemoteBytes += update.length;
  if (agent.statusRemoteBytes > MAX_STATUS_REMOTE_BYTES && !agent.statusPurge)
    agent.statusPurge = setImmediate(() => {
      agent.statusPurge = null;
      const bytes = agent.statusRemoteBytes;
      agent.statusRemoteBytes = 0;
      const removed = purgeForeignEntries(statusDoc, config.key.publicKey);
      logger.error(
        { event: 'document-too-large', document: statusName, bytes, limit: MAX_STATUS_REMOTE_BYTES, removed },
        `peers sent more than ${MAX_STATUS_REMOTE_BYTES} bytes for ${statusName}: deleted the ${removed} entries this host did not sign (a relay or coordinator may be flooding it)`,
      );
      agent.statusSaver.request();
      poke(agent);
    });
  agent.statusSaver.request();
  if (!agent.statusCheck)
    agent.statusCheck = setTimeout(() => {
      agent.statusCheck = null;
      checkStatusDocument(agent);
    }, 500);
}

// Entries in the status document this agent did not write, or replayed copies of its own: the
// agent's counters never read them (only its own validly signed entries count); they are
// reported once each, and a current status that is not the agent's newest is written again.
export function checkStatusDocument(agent: AgentRuntime): void {
  const { config, logger, statusDoc, statusName, reportedAnomalies } = agent;
  if (agent.stopped) return;
  const { results, malformedEntries } = readResults(statusDoc);
  const problems = [
    ...malformedEntries.map((m) => ({
      key: `malformed:${m.index}`,
      problem: 'malformed',
      seq: null,
      detail: `results[${m.index}]: ${m.error}`,
    })),
    ...findResultAnomalies(results, config.key.publicKey).map((a) => ({
      key: `${a.problem}:${a.seq}:${a.detail}`,
      problem: a.problem,
      seq: a.seq,
      detail: a.detail,
    })),
  ];
  for (const p of problems) {
    if (reportedAnomalies.has(p.key) || reportedAnomalies.size >= MAX_ENTRY_REPORTS) continue;
    reportedAnomalies.add(p.key);
    logger.warn(
      { event: 'status-document-anomaly', document: statusName, problem: p.problem, seq: p.seq, detail: p.detail },
      `${statusName}: ${p.detail}; not written by this agent as it stands (a relay or coordinator?), ignored: this host counts only its own signed entries`,
    );
  }
  const own = readOwnCurrentStatus(statusDoc, config.key.publicKey);
  if (!own || own.status.seq < agent.state.statusSeq) poke(agent);
}
