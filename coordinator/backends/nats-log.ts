import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import {
  type ConsumerMessages,
  DeliverPolicy,
  DiscardPolicy,
  JetStreamApiError,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
  jetstream,
  jetstreamManager,
  RetentionPolicy,
  StorageType,
} from '@nats-io/jetstream';
import { type KV, Kvm } from '@nats-io/kv';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import type { CheckpointHeads } from '../../shared/audit/checkpoint.js';
import { GENESIS_HASH, type LogHead, logEntryHash } from '../../shared/audit/log-chain.js';
import type { Logger } from '../../shared/log.js';
import type { PresenceTable } from '../presence.js';
import { decodeLogEntry, encodeLogEntry, type LogEntry, LogRefusal, type UpdateLog } from '../update-log.js';
import { type NatsBackend, natsBackendText } from './backend-option.js';
import { natsAccessOptions, natsConnectHint } from './nats-connect.js';
import { type PresenceShare, sharePresence } from './nats-presence.js';

// The update log on a NATS JetStream stream, shared by every coordinator connected to it.
//
// One stream (default OUTPOST) holds every document's entries, each on its own subject
// <prefix>.log.<document as one subject token>, and the checkpoints on <prefix>.checkpoint. The
// stream keeps everything (limits retention without limits; deletes and purges are denied), so it
// is the same append-only log as the LevelDB one: same entry encoding, same hash chain.
//
// Writes: an entry is acknowledged (the promise resolves) only after the stream stored it on a
// quorum of its replicas (JetStream's publish ack). Several coordinators may write one document:
// each publish expects the subject's last stream sequence it knows; when another coordinator got
// there first the server refuses ("wrong last sequence"), this one reads the new last entry and
// chains after it, so per-document numbers and hashes stay one unbroken chain.
//
// Reads: an ordered consumer filtered to the document's subject, up to its last message.
// Following: one ordered consumer on every document subject, from the moment the log is opened,
// hands other coordinators' entries to `follow` (the document host applies those of documents it
// has loaded). JetStream delivers only stored messages, so nobody is shown an update that a
// failure could still take back.

const LOG_TOKEN = 'log';
// When, after a reconnect, the followers are told they may have missed entries: soon, and again
// once the window has passed in which the NATS soak saw losses (2–6 s after a reconnect), so an
// entry lost after the first comparison is found too (docs/scale-out.md).
const MISSED_REPORT_DELAYS_MS = [2000, 10_000];
const CHECKPOINT_TOKEN = 'checkpoint';
// The follower's consumer sends an entry or a heartbeat at least this often while it is alive...
const FOLLOW_HEARTBEAT_MS = 2000;
// ...and is replaced after this long without either (four heartbeats).
const FOLLOW_SILENCE_MS = 8000;
// CAS retries when other coordinators write the same document at the same moment.
const MAX_CHAIN_RETRIES = 20;
// Publish attempts on "no responders" or a timeout (a stream leader being re-elected takes a few
// seconds); the msgID (the entry's hash) makes a retried publish that had in fact landed a duplicate
// the stream drops.
const PUBLISH_ATTEMPTS = 4;
const STARTUP_ATTEMPTS = 30;
const HEADS_IN_FLIGHT = 32;

// Document names become one subject token: [A-Za-z0-9-] stay, every other UTF-8 byte (including
// '.', '*', '>', '/', '_' and whitespace, which NATS gives meaning to or which would be ambiguous)
// becomes _XX. Reversible, so the stream's subjects list the documents.
export function documentToken(document: string): string {
  let token = '';
  for (const byte of new TextEncoder().encode(document)) {
    const char = String.fromCharCode(byte);
    token += /[A-Za-z0-9-]/.test(char) ? char : `_${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return token;
}

export function documentFromToken(token: string): string | null {
  const bytes: number[] = [];
  for (let i = 0; i < token.length; i += 1) {
    const char = token[i]!;
    if (char === '_') {
      const hex = token.slice(i + 1, i + 3);
      if (!/^[0-9A-F]{2}$/.test(hex)) return null;
      bytes.push(Number.parseInt(hex, 16));
      i += 2;
    } else if (/[A-Za-z0-9-]/.test(char)) bytes.push(char.charCodeAt(0));
    else return null;
  }
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(new Uint8Array(bytes));
  } catch {
    return null;
  }
}

// What the stream says about a document's end: the last entry's number and hash, and where it is.
interface ChainEnd {
  seq: number;
  hash: string;
  streamSeq: number;
}

const EMPTY_CHAIN: ChainEnd = { seq: 0, hash: GENESIS_HASH, streamSeq: 0 };

export interface NatsUpdateLog extends UpdateLog {
  // Copies an entry as it is (number, time, principal, hashes): `outpost coordinator migrate`.
  importEntry(entry: LogEntry): Promise<void>;
  // Tells the other coordinators on this cluster which hosts this one sees, and hears theirs.
  sharePresence(table: PresenceTable): PresenceShare;
}

export interface NatsLogOptions extends NatsBackend {
  logger: Logger;
  // How long one publish waits for the stream's ack before it is retried.
  publishTimeoutMs?: number;
}

function isWrongLastSequence(error: unknown): boolean {
  return error instanceof JetStreamApiError && error.code === 10071;
}

// Why a write did not land, with what to do: the coordinator logs it and closes the writers'
// sockets with it, and the writers resend once the cluster is back.
function refusal(backend: string, error: unknown): LogRefusal {
  const why = (error as Error).message;
  const noQuorum = /not enabled|temporarily unavailable|no responders|timeout|503/i.test(why);
  return noQuorum
    ? new LogRefusal(
        `NATS JetStream did not store the update (${why}): the cluster ${backend} has no quorum or is unreachable; writes are refused until it is back`,
        'update not stored: the update log (NATS) has no quorum or is unreachable; resend later',
        { cause: error },
      )
    : new LogRefusal(`NATS JetStream refused the update (${why})`, 'update not stored: the update log refused it', {
        cause: error,
      });
}

export async function openNatsLog(options: NatsLogOptions): Promise<NatsUpdateLog> {
  const { logger, stream } = options;
  const backend = natsBackendText(options);
  const prefix = stream.toLowerCase();
  const logSubjects = `${prefix}.${LOG_TOKEN}.*`;
  const checkpointSubject = `${prefix}.${CHECKPOINT_TOKEN}`;
  const subjectOf = (document: string): string => `${prefix}.${LOG_TOKEN}.${documentToken(document)}`;
  const publishTimeoutMs = options.publishTimeoutMs ?? 2000;

  const access = await natsAccessOptions(options.access);
  let nc: NatsConnection;
  try {
    nc = await connect({
      servers: options.servers,
      name: 'outpost-coordinator',
      maxReconnectAttempts: -1,
      reconnectTimeWait: 500,
      timeout: 5000,
      ...access,
    });
  } catch (error) {
    const message = (error as Error).message;
    throw new Error(`cannot connect to NATS at ${backend}: ${message}; ${natsConnectHint(message)}`);
  }
  let jsm: JetStreamManager;
  let js: JetStreamClient;
  try {
    jsm = await jetstreamManager(nc, { timeout: 5000 });
    js = jetstream(nc, { timeout: publishTimeoutMs });
    // A cluster that is starting too has no JetStream leader for a few seconds: wait for it.
    for (let attempt = 1; ; attempt += 1) {
      try {
        await ensureStream(jsm);
        break;
      } catch (error) {
        if (
          attempt >= STARTUP_ATTEMPTS ||
          !/temporarily unavailable|not enabled|timeout/i.test((error as Error).message)
        )
          throw error;
        logger.warn({ event: 'nats-waiting', attempt, reason: (error as Error).message }, 'waiting for JetStream');
        await new Promise((resolve) => setTimeout(resolve, 1000));
      }
    }
  } catch (error) {
    await nc.close();
    throw error;
  }
  nc.closed().then((error) => {
    if (error) logger.error({ event: 'nats-closed', err: error }, 'NATS connection closed');
  });
  // Entries the follower may have lost: seen in the NATS soak, a reconnect to another server lost
  // some without the ordered consumer noticing. Whoever follows is told (after a reconnect, a
  // follower restart or a consumer reset, at the delays above) and compares what it holds with
  // the stream.
  const missedListeners = new Set<() => void>();
  const missedTimers = new Map<number, ReturnType<typeof setTimeout>>();
  const reportMissed = (): void => {
    for (const delay of MISSED_REPORT_DELAYS_MS)
      if (!missedTimers.has(delay))
        missedTimers.set(
          delay,
          setTimeout(() => {
            missedTimers.delete(delay);
            for (const missed of missedListeners) missed();
          }, delay),
        );
  };
  void (async () => {
    for await (const status of nc.status()) {
      if (status.type === 'disconnect' || status.type === 'reconnect')
        logger.warn({ event: `nats-${status.type}`, server: status.server }, `NATS ${status.type}`);
      if (status.type === 'reconnect') reportMissed();
    }
  })();

  async function ensureStream(manager: JetStreamManager): Promise<void> {
    const existing = await manager.streams.info(stream).catch((error: unknown) => {
      if (error instanceof JetStreamApiError && error.code === 10059) return null;
      throw new Error(`cannot read stream ${stream} on ${backend}: ${(error as Error).message}`);
    });
    if (existing) {
      if (existing.config.num_replicas !== options.replicas)
        logger.warn(
          { event: 'nats-stream-replicas', stream, replicas: existing.config.num_replicas, wanted: options.replicas },
          `stream ${stream} has ${existing.config.num_replicas} replicas, not the ${options.replicas} asked for; change it with nats stream edit`,
        );
      return;
    }
    try {
      await manager.streams.add({
        name: stream,
        subjects: [logSubjects, checkpointSubject],
        num_replicas: options.replicas,
        storage: StorageType.File,
        retention: RetentionPolicy.Limits,
        discard: DiscardPolicy.New,
        // The log is append-only: nobody trims or rewrites it through the API.
        deny_delete: true,
        deny_purge: true,
        allow_direct: true,
      });
    } catch (error) {
      const why = (error as Error).message;
      throw new Error(
        /replicas/i.test(why)
          ? `cannot create stream ${stream} with ${options.replicas} replicas on ${backend}: ${why}; a cluster needs at least that many JetStream servers (give --nats-replicas 1 for a single nats-server)`
          : `cannot create stream ${stream} on ${backend}: ${why}`,
      );
    }
  }

  const ends = new Map<string, ChainEnd>();
  // Appends to one document run one after the other: each needs the end the previous one made.
  const appendQueues = new Map<string, Promise<unknown>>();
  // Hashes of entries this log published, so the follower does not hand them back.
  const own = new Set<string>();
  const followers = new Set<(entry: LogEntry) => void>();
  let closed = false;

  async function chainEnd(document: string): Promise<ChainEnd> {
    const last = await jsm.streams.getMessage(stream, { last_by_subj: subjectOf(document) });
    if (!last) return EMPTY_CHAIN;
    const entry = decodeLogEntry(document, last.data);
    return { seq: entry.seq, hash: entry.hash ?? GENESIS_HASH, streamSeq: last.seq };
  }

  function learnEnd(document: string, end: ChainEnd): void {
    const known = ends.get(document);
    if (!known || known.streamSeq < end.streamSeq) ends.set(document, end);
  }

  async function publishEntry(document: string, entry: LogEntry, after: number): Promise<number> {
    const ack = await js.publish(subjectOf(document), encodeLogEntry(entry), {
      msgID: entry.hash,
      expect: { lastSubjectSequence: after },
      timeout: publishTimeoutMs,
      retries: PUBLISH_ATTEMPTS,
    });
    return ack.seq;
  }

  async function knownEnd(document: string): Promise<ChainEnd> {
    try {
      return await chainEnd(document);
    } catch (error) {
      throw refusal(backend, error);
    }
  }

  async function appendNow(document: string, principal: string, update: Uint8Array): Promise<LogEntry> {
    let end: ChainEnd = ends.get(document) ?? (await knownEnd(document));
    for (let attempt = 0; ; attempt += 1) {
      const partial = { document, seq: end.seq + 1, receivedAt: Date.now(), principal, update };
      const entry: LogEntry = { ...partial, prevHash: end.hash, hash: logEntryHash(end.hash, partial) };
      own.add(entry.hash);
      try {
        const streamSeq = await publishEntry(document, entry, end.streamSeq);
        learnEnd(document, { seq: entry.seq, hash: entry.hash, streamSeq });
        return entry;
      } catch (error) {
        own.delete(entry.hash);
        ends.delete(document);
        if (isWrongLastSequence(error) && attempt < MAX_CHAIN_RETRIES) {
          end = await knownEnd(document);
          continue;
        }
        throw refusal(backend, error);
      }
    }
  }

  // Reads one subject from its first message to the last one there when the read began.
  async function* readSubject(subject: string): AsyncGenerator<{ data: Uint8Array; seq: number }> {
    const last = await jsm.streams.getMessage(stream, { last_by_subj: subject });
    if (!last) return;
    const consumer = await js.consumers.get(stream, { filter_subjects: subject, deliver_policy: DeliverPolicy.All });
    const messages = await consumer.consume({ max_messages: 256 });
    try {
      for await (const message of messages) {
        yield { data: message.data, seq: message.seq };
        if (message.seq >= last.seq) break;
      }
    } finally {
      await messages.close();
    }
  }

  async function* iterate(document: string): AsyncGenerator<LogEntry> {
    let prev = GENESIS_HASH;
    let end: ChainEnd | null = null;
    for await (const { data, seq } of readSubject(subjectOf(document))) {
      const stored = decodeLogEntry(document, data);
      const prevHash = stored.prevHash ?? prev;
      const hash = stored.hash ?? logEntryHash(prevHash, stored);
      prev = hash;
      end = { seq: stored.seq, hash, streamSeq: seq };
      yield { ...stored, prevHash, hash };
    }
    if (end) learnEnd(document, end);
  }

  async function head(document: string): Promise<LogHead | null> {
    const end = await chainEnd(document);
    return end.seq === 0 ? null : { document, seq: end.seq, hash: end.hash };
  }

  // Entries per document, and the stream's bytes (on each replica; checkpoints included).
  async function subjectCounts(): Promise<{ counts: Map<string, number>; bytes: number }> {
    const info = await jsm.streams.info(stream, { subjects_filter: logSubjects });
    const counts = new Map<string, number>();
    const tokenStart = `${prefix}.${LOG_TOKEN}.`.length;
    for (const [subject, count] of Object.entries(info.state.subjects ?? {})) {
      const document = documentFromToken(subject.slice(tokenStart));
      if (document !== null) counts.set(document, count);
    }
    return { counts, bytes: info.state.bytes };
  }

  // Hands one followed stream message to the followers, unless it is this log's own entry.
  function handleFollowed(message: JsMsg): void {
    const document = documentFromToken(message.subject.slice(prefix.length + LOG_TOKEN.length + 2));
    if (document === null) return;
    let entry: LogEntry;
    try {
      const stored = decodeLogEntry(document, message.data);
      if (stored.prevHash === undefined || stored.hash === undefined) return;
      entry = stored as LogEntry;
    } catch (error) {
      logger.error({ event: 'nats-entry-unreadable', document, err: error }, 'unreadable entry in the stream');
      return;
    }
    // Only ends this coordinator already keeps (documents it read or appended to): learning
    // every document of the fleet would hold one end per document per coordinator, whether it
    // serves it or not. A document read later learns its end from the read; one whose end is
    // not known or is stale costs one CAS retry on its next append, never a forked chain.
    if (ends.has(document)) learnEnd(document, { seq: entry.seq, hash: entry.hash, streamSeq: message.seq });
    if (own.delete(entry.hash)) return;
    for (const deliver of followers) deliver(entry);
  }

  // Every other coordinator's entry, in stream order, for as long as the log is open. It starts
  // right after what the stream holds now: a document loaded later reads everything up to its own
  // last entry and takes the rest from here (the host buffers them while it loads), so there is no
  // gap between the two. An ordered consumer recreates itself when it sees a gap in its delivery
  // numbers and resumes where it was; when it falls silent or fails, a new one starts after the
  // last entry seen.
  let lastFollowed = (await jsm.streams.info(stream)).state.last_seq;
  let following: ConsumerMessages | null = null;
  async function follow(): Promise<void> {
    // Failed starts in a row: while the cluster has no quorum every attempt fails, once a second.
    let failures = 0;
    while (!closed) {
      try {
        const consumer = await js.consumers.get(stream, {
          filter_subjects: logSubjects,
          deliver_policy: DeliverPolicy.StartSequence,
          opt_start_seq: lastFollowed + 1,
        });
        failures = 0;
        const messages = await consumer.consume({ idle_heartbeat: FOLLOW_HEARTBEAT_MS, expires: 10_000 });
        following = messages;
        if (closed) await messages.close();
        // An ordered consumer is an R1 consumer on one server. When the connection drops the
        // client stops its heartbeat check, and after the reconnect asks for the consumer's info
        // until it answers (every `expires`) before it checks again: while that server stays down
        // nothing arrives, nothing is reported (no 'heartbeats_missed', no 'reset'), for as long
        // as the server is down (docs/scale-out.md). So this watches on its own: every live
        // consumer sends an entry or a heartbeat every 2 s, and 8 s of neither (a busy server
        // misses one or two) ends this one; the loop starts a new one after the last entry seen.
        let lastSign = Date.now();
        const watchdog = setInterval(() => {
          if (Date.now() - lastSign < FOLLOW_SILENCE_MS) return;
          clearInterval(watchdog);
          logger.warn(
            { event: 'nats-follow-stalled', after: lastFollowed, silentMs: Date.now() - lastSign },
            'update stream follower stalled; restarting it',
          );
          void messages.close().catch(() => undefined);
          reportMissed();
        }, FOLLOW_HEARTBEAT_MS);
        void (async () => {
          for await (const status of messages.status()) {
            if (status.type === 'heartbeat') lastSign = Date.now();
            // The client saw a gap in the delivery numbers or found its consumer gone, and starts a
            // new one after the last message it received. Nothing is shown to be lost, but this
            // is the one sign it gives that delivery restarted: the followers compare anyway.
            if (status.type === 'reset') {
              logger.warn(
                { event: 'nats-follow-reset', consumer: status.name, after: lastFollowed },
                'update stream follower consumer is being recreated',
              );
              reportMissed();
            }
          }
        })();
        try {
          for await (const message of messages) {
            lastSign = Date.now();
            lastFollowed = message.seq;
            handleFollowed(message);
          }
        } finally {
          clearInterval(watchdog);
        }
      } catch (error) {
        if (closed) return;
        failures += 1;
        // Said once per outage, not every second of it.
        const fields = { event: 'nats-follow-retry', err: error, failures };
        const message = 'following the update stream failed; retrying every second';
        if (failures === 1) logger.warn(fields, message);
        else logger.debug(fields, message);
        reportMissed();
      }
      if (!closed) await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }
  const followLoop = follow();

  // Leases for work exactly one coordinator does (signing timestamps): a JetStream KV bucket per
  // task whose max age is the lease, one key naming the holder. The holder renews by revision
  // (compare-and-set); once it stops, the bucket drops the key after the lease and the next
  // claimant creates it. Per-message TTLs would be simpler but 2.9 ignores them in silence.
  const holder = `${hostname()}/${process.pid}/${randomBytes(4).toString('hex')}`;
  const leases = new Map<string, { kv: Promise<KV>; revision: number | null }>();
  async function claim(task: string, leaseMs: number): Promise<boolean> {
    let lease = leases.get(task);
    if (!lease) {
      lease = {
        kv: new Kvm(js).create(`${stream}_lease_${task}`, { history: 1, ttl: leaseMs, replicas: options.replicas }),
        revision: null,
      };
      leases.set(task, lease);
    }
    try {
      const kv = await lease.kv;
      if (lease.revision !== null) {
        try {
          lease.revision = await kv.update('holder', holder, lease.revision);
          return true;
        } catch {
          // Our lease lapsed and another took it, or the cluster is unreachable: not ours now.
          lease.revision = null;
        }
      }
      lease.revision = await kv.create('holder', holder);
      logger.info({ event: 'lease-acquired', task, holder }, `this coordinator now does ${task}`);
      return true;
    } catch (error) {
      if (!/wrong last sequence|key exists/i.test((error as Error).message)) {
        logger.warn({ event: 'lease-unavailable', task, reason: (error as Error).message }, `cannot claim ${task}`);
        if ((await lease.kv.then(() => true).catch(() => false)) === false) leases.delete(task);
      }
      return false;
    }
  }

  return {
    append(document, principal, update) {
      const previous = appendQueues.get(document) ?? Promise.resolve();
      const result = previous.then(() => appendNow(document, principal, update));
      const settled = result.catch(() => undefined);
      appendQueues.set(document, settled);
      void settled.then(() => {
        if (appendQueues.get(document) === settled) appendQueues.delete(document);
      });
      return result;
    },
    async importEntry(entry) {
      // The end this log last wrote (a copy runs each document's entries in order), else the
      // stream's; a stale one fails the publish's expectation instead of forking the chain.
      const end = ends.get(entry.document) ?? (await knownEnd(entry.document));
      // Copied before (a migration that is run again): the stream has it already.
      if (end.seq >= entry.seq) return;
      if (end.seq !== entry.seq - 1 || end.hash !== entry.prevHash)
        throw new Error(
          `cannot copy ${entry.document} #${entry.seq}: the stream's copy ends at #${end.seq}, which it does not follow; copy into an empty stream`,
        );
      let streamSeq: number;
      try {
        streamSeq = await publishEntry(entry.document, entry, end.streamSeq);
      } catch (error) {
        ends.delete(entry.document);
        throw refusal(backend, error);
      }
      learnEnd(entry.document, { seq: entry.seq, hash: entry.hash, streamSeq });
    },
    async read(document, readOptions = {}) {
      const entries: LogEntry[] = [];
      for await (const entry of iterate(document)) {
        if (readOptions.untilSeq !== undefined && entry.seq > readOptions.untilSeq) break;
        if (readOptions.untilTime !== undefined && entry.receivedAt > readOptions.untilTime) break;
        entries.push(entry);
      }
      return entries;
    },
    iterate,
    head,
    async documents() {
      return [...(await subjectCounts()).counts.keys()];
    },
    async heads() {
      // One last-message read per document (every timestamp tick): a few dozen in flight at once.
      const documents = [...(await subjectCounts()).counts.keys()];
      const heads: LogHead[] = [];
      for (let i = 0; i < documents.length; i += HEADS_IN_FLIGHT) {
        const batch = await Promise.all(documents.slice(i, i + HEADS_IN_FLIGHT).map(head));
        for (const last of batch) if (last) heads.push(last);
      }
      return heads;
    },
    async putCheckpoint(checkpoint: CheckpointHeads) {
      await js
        .publish(checkpointSubject, new TextEncoder().encode(JSON.stringify(checkpoint)), {
          timeout: publishTimeoutMs,
          retries: PUBLISH_ATTEMPTS,
        })
        .catch((error) => Promise.reject(refusal(backend, error)));
    },
    async *checkpoints() {
      for await (const { data } of readSubject(checkpointSubject))
        yield JSON.parse(new TextDecoder().decode(data)) as CheckpointHeads;
    },
    async size() {
      const { counts, bytes } = await subjectCounts();
      let entries = 0;
      for (const count of counts.values()) entries += count;
      return { documents: counts.size, entries, bytes };
    },
    follow(deliver, missed) {
      followers.add(deliver);
      if (missed) missedListeners.add(missed);
      return () => {
        followers.delete(deliver);
        if (missed) missedListeners.delete(missed);
      };
    },
    describe: () => backend,
    claim,
    sharePresence: (table) => sharePresence(nc, `${prefix}.presence`, holder, table, logger),
    async close() {
      if (closed) return;
      closed = true;
      for (const timer of missedTimers.values()) clearTimeout(timer);
      missedListeners.clear();
      await Promise.allSettled([...appendQueues.values()]);
      // A lease given back lets another coordinator take over at once, not after the lease.
      for (const lease of leases.values())
        if (lease.revision !== null)
          await (await lease.kv).delete('holder', { previousSeq: lease.revision }).catch(() => undefined);
      await following?.close().catch(() => undefined);
      await nc.close();
      await followLoop;
    },
  };
}
