import type { WebSocket } from 'ws';
import * as syncProtocol from 'y-protocols/sync';
import * as Y from 'yjs';
import { documentGarbageCollects } from '../shared/documents/names.js';
import type { Logger } from '../shared/log.js';
import { boundPendingUpdates, MAX_PENDING_UPDATE_BYTES, type PendingUpdates } from '../shared/sync/pending-updates.js';
import { type AwarenessChanges, AwarenessTable, trackExpiry, untrackExpiry } from './awareness-table.js';
import { CATCH_UP_RETRY_MS, type LogEntry, LogRefusal, type UpdateLog } from './update-log.js';
import { awarenessMessage, closeSocket, send, syncMessage } from './wire.js';

// One in-memory copy per open document. Every sync message of a document runs through its
// queue, one at a time: an update is applied, appended to the log (fsync) and only then broadcast
// or answered to anyone, so whatever a peer has seen from the coordinator survives a crash.
export interface HostedDocument {
  name: string;
  doc: Y.Doc;
  awareness: AwarenessTable;
  // Each connection's awareness client ids (a few at most: an array costs less than a Set).
  connections: Map<WebSocket, number[]>;
  run<T>(task: () => Promise<T> | T): Promise<T>;
  broken: boolean;
  // Upper bound of the encoded state (what a new reader syncs): the log's bytes at load plus every
  // delta since; the write limits recompute it exactly when it nears --max-document-size.
  stateBytes: number;
  // The document's entry number in the log up to which every entry is applied here, and the
  // numbers above it applied already (this coordinator's own appends, which can land before the
  // other coordinators' entries ahead of them arrive through the follower). A shared log (NATS)
  // numbers each document's entries 1, 2, 3…, so a followed entry past a number neither applied
  // nor own shows that this copy missed one (see applyFollowedEntry).
  logSeq: number;
  readonly appliedAhead: Set<number>;
}

export interface DocumentHost {
  acquire(name: string, ws: WebSocket): Promise<HostedDocument>;
  release(hosted: HostedDocument, ws: WebSocket): void;
  // Applies, logs (fsync) and broadcasts one update; call inside the document's queue.
  acceptUpdate(
    hosted: HostedDocument,
    update: Uint8Array,
    principal: string,
    origin: WebSocket | null,
  ): Promise<Uint8Array | null>;
  // The coordinator's own write, made on the live document and then stored like acceptUpdate;
  // call inside the document's queue.
  acceptChange(hosted: HostedDocument, change: (doc: Y.Doc) => void, principal: string): Promise<Uint8Array | null>;
  // Keeps a document loaded for the coordinator's own use (fleet documents it reads or writes).
  // Pins are counted: each holder takes back only its own pin with one unpin (withPinned does
  // both around a use), so a rollout reading a status cannot unload one a return bundle holds.
  pin(name: string): Promise<HostedDocument>;
  // Takes back one pin; the document may unload once no pin and no connection holds it (a relay
  // pins documents only while they still have something to exchange with the upstream).
  unpin(name: string): void;
  // Hooks for relays and the relay endpoint: documents loaded, updates stored, documents unloaded.
  observe(observer: HostObserver): void;
  openDocuments(): number;
  closeAll(): Promise<void>;
}

export interface HostObserver {
  loaded?(document: HostedDocument): void;
  // After the update is on disk and broadcast.
  accepted?(document: HostedDocument, delta: Uint8Array, principal: string): void;
  // How long an append took to become durable (LevelDB: its group commit's fsync; NATS: the
  // stream's quorum), for /metrics: a slow disk or a distant quorum shows here first.
  logAppended?(seconds: number): void;
  unloaded?(name: string): void;
}

export interface PresenceChange {
  document: string;
  online: boolean;
}

// The document's state and its queue: `run` chains each task after the previous one.
class LoadedDocument implements HostedDocument {
  readonly connections = new Map<WebSocket, number[]>();
  readonly awareness: AwarenessTable;
  broken = false;
  stateBytes = 0;
  logSeq = 0;
  readonly appliedAhead = new Set<number>();
  private tail: Promise<unknown> = Promise.resolve();

  constructor(
    readonly name: string,
    readonly doc: Y.Doc,
    onPresence: ((change: PresenceChange) => void) | undefined,
  ) {
    this.awareness = new AwarenessTable((changes, origin) => relayAwareness(this, changes, origin, onPresence));
  }

  run<T>(task: () => Promise<T> | T): Promise<T> {
    const result = this.tail.then(task);
    this.tail = result.catch(() => undefined);
    return result;
  }
}

// Log entries are replayed in transactions of up to this many bytes. Garbage is collected as a
// transaction ends, so one transaction for the whole log would keep every entry the log ever
// deleted decoded until the load ends; and Yjs' cost per update grows with its transaction's
// size, so 64 KiB ones also load faster than one (measured: test/bench/replay-history.ts).
export const REPLAY_TRANSACTION_BYTES = 64 * 1024;

// A function of its own so that the log entries replayed stay out of any closure that lives as
// long as the document (they would keep every update's bytes in memory). Exported for the bench
// that compares transaction sizes (test/bench/replay-history.ts).
export function replayLog(
  doc: Y.Doc,
  entries: Pick<LogEntry, 'update' | 'seq'>[],
  transactionBytes = REPLAY_TRANSACTION_BYTES,
): { entries: number; bytes: number; lastSeq: number } {
  let bytes = 0;
  let next = 0;
  while (next < entries.length) {
    Y.transact(doc, () => {
      let batch = 0;
      while (next < entries.length && (batch === 0 || batch + entries[next]!.update.length <= transactionBytes)) {
        const { update } = entries[next]!;
        Y.applyUpdate(doc, update, 'log');
        batch += update.length;
        next += 1;
      }
      bytes += batch;
    });
  }
  return { entries: entries.length, bytes, lastSeq: entries.at(-1)?.seq ?? 0 };
}

// Awareness carries liveness: remember which client ids each connection announced, so they are
// removed when it closes, and forward every change to all peers of the document.
function relayAwareness(
  document: HostedDocument,
  { added, updated, removed }: AwarenessChanges,
  origin: unknown,
  onPresence: ((change: PresenceChange) => void) | undefined,
): void {
  const { awareness, connections } = document;
  const owned = connections.get(origin as WebSocket);
  if (owned) {
    for (const id of added) if (!owned.includes(id)) owned.push(id);
    for (const id of removed) if (owned.includes(id)) owned.splice(owned.indexOf(id), 1);
  }
  const message = awarenessMessage(awareness.encode([...added, ...updated, ...removed]));
  for (const peer of connections.keys()) send(peer, message);
  onPresence?.({ document: document.name, online: awareness.size > 0 });
}

// Everything the host knows, as one record the functions below take (the yjs style): unit tests
// build one over a stand-in log (test/unit/coordinator/hosted-documents.test.ts).
export interface DocumentHostState {
  readonly log: Pick<UpdateLog, 'read' | 'append' | 'head'>;
  readonly logger: Logger;
  // A document nobody holds (no connection, not pinned) is unloaded after this long.
  readonly idleUnloadMs: number;
  readonly onPresence: ((change: PresenceChange) => void) | undefined;
  // Loading or loaded documents; a failed load is removed so the next use tries again.
  readonly hosted: Map<string, Promise<HostedDocument>>;
  readonly unloadTimers: Map<string, ReturnType<typeof setTimeout>>;
  // How many holders pin each document: the fleet documents for good, a rollout's delivery, a
  // status read or a return bundle for as long as they work on it; each unpins only its own pin.
  readonly pinned: Map<string, number>;
  readonly observers: HostObserver[];
  // A pass of catchUpLoadedDocuments is running (one at a time); another was asked for meanwhile.
  catchingUp: boolean;
  catchUpAgain: boolean;
}

export function createDocumentHostState(
  log: Pick<UpdateLog, 'read' | 'append' | 'head'>,
  logger: Logger,
  idleUnloadMs: number,
  onPresence?: (change: PresenceChange) => void,
): DocumentHostState {
  return {
    log,
    logger,
    idleUnloadMs,
    onPresence,
    hosted: new Map(),
    unloadTimers: new Map(),
    pinned: new Map(),
    observers: [],
    catchingUp: false,
    catchUpAgain: false,
  };
}

// Replays the document's log into a fresh Y.Doc. Its guid is the document's name: Yjs otherwise
// makes a random one (lib0's uuidv4, 31 getRandomValues calls; ~1.3 s of CPU per 2,000 loads
// measured under load). A guid names a document only as a *subdocument* (ContentDoc writes it
// into its parent's updates, getSubdocGuids lists it); a top-level document's guid is never
// encoded in an update or a sync message, and Yjs keys nothing global by it. Writers are told
// apart by clientID, which stays random.
export async function loadDocument(host: DocumentHostState, name: string): Promise<HostedDocument> {
  const doc = new Y.Doc({ guid: name, gc: documentGarbageCollects(name) });
  const { entries, bytes, lastSeq } = replayLog(doc, await host.log.read(name));
  const document = new LoadedDocument(name, doc, host.onPresence);
  document.stateBytes = bytes;
  document.logSeq = lastSeq;
  trackExpiry(document.awareness);
  host.logger.debug({ event: 'document-loaded', document: name, entries }, 'document loaded');
  for (const observer of host.observers) observer.loaded?.(document);
  return document;
}

// The document, loading it once however many ask at the same time; cancels a pending unload.
function loadedDocument(host: DocumentHostState, name: string): Promise<HostedDocument> {
  const timer = host.unloadTimers.get(name);
  if (timer) {
    clearTimeout(timer);
    host.unloadTimers.delete(name);
  }
  let pending = host.hosted.get(name);
  if (!pending) {
    pending = loadDocument(host, name);
    host.hosted.set(name, pending);
    pending.catch(() => host.hosted.delete(name));
  }
  return pending;
}

export function unloadDocument(host: DocumentHostState, name: string): void {
  const pending = host.hosted.get(name);
  host.hosted.delete(name);
  host.unloadTimers.delete(name);
  void pending?.then((document) => {
    untrackExpiry(document.awareness);
    document.doc.destroy();
    host.logger.debug({ event: 'document-unloaded', document: name }, 'document unloaded');
    for (const observer of host.observers) observer.unloaded?.(name);
  });
}

// Nobody connected and not pinned: unload after the idle time, unless someone comes back.
export function scheduleUnload(host: DocumentHostState, document: HostedDocument): void {
  if (
    document.connections.size === 0 &&
    !host.pinned.has(document.name) &&
    !host.unloadTimers.has(document.name) &&
    host.hosted.has(document.name)
  ) {
    host.unloadTimers.set(
      document.name,
      setTimeout(() => unloadDocument(host, document.name), host.idleUnloadMs).unref(),
    );
  }
}

export async function acquireDocument(host: DocumentHostState, name: string, ws: WebSocket): Promise<HostedDocument> {
  const document = await loadedDocument(host, name);
  document.connections.set(ws, []);
  return document;
}

export function releaseDocument(host: DocumentHostState, document: HostedDocument, ws: WebSocket): void {
  const ids = document.connections.get(ws);
  document.connections.delete(ws);
  if (ids && ids.length > 0) document.awareness.remove(ids, null);
  scheduleUnload(host, document);
}

// Applies, logs (fsync) and broadcasts one update; call inside the document's queue. Returns the
// delta stored, or null when the update added nothing.
export async function acceptUpdate(
  host: DocumentHostState,
  document: HostedDocument,
  update: Uint8Array,
  principal: string,
  origin: WebSocket | null,
): Promise<Uint8Array | null> {
  const emitted = captureUpdates(document.doc, () => Y.applyUpdate(document.doc, update, origin));
  reportPendingDropped(host, boundPendingUpdates(document.doc, document.name), principal, origin);
  return storeDelta(host, document, emitted, principal, origin);
}

// Updates waiting past the bound for structs never sent were dropped (shared/sync/pending-updates.ts):
// say so, and close the writer's connection so an honest one syncs again and sends them in order.
function reportPendingDropped(
  host: DocumentHostState,
  dropped: PendingUpdates | null,
  principal: string,
  origin: WebSocket | null,
): void {
  if (!dropped) return;
  host.logger.warn(
    { event: 'updates-pending-dropped', ...dropped, principal, limit: MAX_PENDING_UPDATE_BYTES },
    `${dropped.document}: dropped ${dropped.bytes} bytes of updates from ${principal} (Yjs clients ${dropped.writers.join(', ')}) waiting for structs never sent (clients ${dropped.missing.map((m) => `${m.client} from clock ${m.clock}`).join(', ')}), over ${MAX_PENDING_UPDATE_BYTES}; closing the writer's connection`,
  );
  if (origin) closeSocket(origin, 4413, 'updates wait for structs never sent; sync again');
}

// The coordinator's own write (entries it verified) made on the live document, then stored as a
// peer's update is: logged (fsync), broadcast, observed. Building the update on a copy of the
// document instead cost a copy of the whole document per write (a 1,000-host rollout's document
// for every batch of evidence). Call inside the document's queue. A change that throws after it
// changed something leaves memory ahead of the log: that copy is dropped and reloads from the log.
export async function acceptChange(
  host: DocumentHostState,
  document: HostedDocument,
  change: (doc: Y.Doc) => void,
  principal: string,
): Promise<Uint8Array | null> {
  const emitted: Uint8Array[] = [];
  try {
    captureUpdates(document.doc, () => Y.transact(document.doc, () => change(document.doc)), emitted);
  } catch (error) {
    if (emitted.length > 0) dropDocument(host, document, 'coordinator write failed');
    throw error;
  }
  return storeDelta(host, document, emitted, principal, null);
}

// The updates the document emitted while `apply` ran (what it integrated), into `emitted`.
function captureUpdates(doc: Y.Doc, apply: () => void, emitted: Uint8Array[] = []): Uint8Array[] {
  const capture = (u: Uint8Array): void => {
    emitted.push(u);
  };
  doc.on('update', capture);
  try {
    apply();
  } finally {
    doc.off('update', capture);
  }
  return emitted;
}

// What a document gained, passed on: to its peers (but the one it came from) and the observers.
function passOn(
  host: DocumentHostState,
  document: HostedDocument,
  delta: Uint8Array,
  message: Uint8Array,
  principal: string,
  origin: WebSocket | null,
): void {
  document.stateBytes += delta.length;
  for (const peer of document.connections.keys()) if (peer !== origin) send(peer, message);
  for (const observer of host.observers) observer.accepted?.(document, delta, principal);
}

// Logs what an update or change added, then broadcasts it: what a peer has seen is on disk.
async function storeDelta(
  host: DocumentHostState,
  document: HostedDocument,
  emitted: Uint8Array[],
  principal: string,
  origin: WebSocket | null,
): Promise<Uint8Array | null> {
  // Nothing new (a duplicate, or an update still waiting for missing dependencies): nothing to store.
  if (emitted.length === 0) return null;
  const delta = emitted.length === 1 ? emitted[0]! : Y.mergeUpdates(emitted);
  // Encoded before the append so that the CPU overlaps the fsync; sent only once it is durable.
  const message = syncMessage((encoder) => syncProtocol.writeUpdate(encoder, delta));
  let stored: LogEntry;
  const appendStarted = performance.now();
  try {
    stored = await host.log.append(document.name, principal, delta);
  } catch (error) {
    host.logger.error(
      { event: 'log-append-failed', document: document.name, err: error },
      'update log append failed; reloading document',
    );
    // A backend's refusal says why in words fit for peers (the NATS cluster has no quorum);
    // anything else stays in the operator's log.
    dropDocument(host, document, error instanceof LogRefusal ? error.peerReason : 'coordinator storage error');
    throw error;
  }
  const appendSeconds = (performance.now() - appendStarted) / 1000;
  for (const observer of host.observers) observer.logAppended?.(appendSeconds);
  passOn(host, document, delta, message, principal, origin);
  // Other coordinators' entries numbered below it may still be on their way through the follower.
  noteApplied(document, stored.seq);
  return delta;
}

function noteApplied(document: HostedDocument, seq: number): void {
  if (seq <= document.logSeq) return;
  document.appliedAhead.add(seq);
  while (document.appliedAhead.delete(document.logSeq + 1)) document.logSeq += 1;
}

// Whether an entry numbered below `seq` is neither applied here nor this coordinator's own: the
// follower delivers each document's entries in order, so it passed that one without delivering it.
function missesEntryBefore(document: HostedDocument, seq: number): boolean {
  for (let n = document.logSeq + 1; n < seq; n += 1) if (!document.appliedAhead.has(n)) return true;
  return false;
}

// Applies what another coordinator stored (or what this copy missed) and passes what was new to
// this coordinator's peers and observers. Call inside the document's queue.
function applyStoredUpdate(host: DocumentHostState, document: HostedDocument, entry: LogEntry): void {
  const emitted = captureUpdates(document.doc, () => Y.applyUpdate(document.doc, entry.update, 'log'));
  if (emitted.length === 0) return;
  const delta = emitted.length === 1 ? emitted[0]! : Y.mergeUpdates(emitted);
  const message = syncMessage((encoder) => syncProtocol.writeUpdate(encoder, delta));
  passOn(host, document, delta, message, entry.principal, null);
}

// A shared log hands this coordinator other coordinators' entries from one stream follower, and a
// document loaded here reads the log once: an entry the follower passed before the document was
// loaded, and that the load's read did not return (a NATS soak saw two coordinators miss entries
// a third and a fresh one had, for good: every later write of those writers then waited in
// Yjs' pending structs), would be missing until the document unloads. Entry numbers tell: read
// the log again up to the entry before the one in hand and apply what this copy lacks. If the
// read still ends short (the server that answered lags), the next entry tries again.
async function fillLogGap(host: DocumentHostState, document: HostedDocument, upTo: number): Promise<void> {
  const from = document.logSeq;
  let entries: LogEntry[];
  try {
    entries = await host.log.read(document.name, { untilSeq: upTo });
  } catch (error) {
    host.logger.warn(
      { event: 'log-gap', document: document.name, from, upTo, err: error },
      'entries of this document are missing here and the log could not be read; the next entry retries',
    );
    return;
  }
  if (document.broken) return;
  let applied = 0;
  for (const entry of entries) {
    if (entry.seq <= document.logSeq || document.appliedAhead.has(entry.seq)) continue;
    applyStoredUpdate(host, document, entry);
    noteApplied(document, entry.seq);
    applied += 1;
  }
  const event = document.logSeq >= upTo ? 'log-gap-filled' : 'log-gap';
  host.logger.warn(
    { event, document: document.name, from, upTo, applied, now: document.logSeq },
    event === 'log-gap-filled'
      ? 'entries of this document another coordinator stored were missing here; read them from the log'
      : 'entries of this document are missing here and the log read ended short; the next entry retries',
  );
}

// Memory holds something the log does not: drop this copy so the next connection reloads from
// the log, and close everyone so clients resend what they have.
function dropDocument(host: DocumentHostState, document: HostedDocument, reason: string): void {
  document.broken = true;
  host.hosted.delete(document.name);
  untrackExpiry(document.awareness);
  for (const ws of document.connections.keys()) closeSocket(ws, 1011, reason);
  for (const observer of host.observers) observer.unloaded?.(document.name);
}

// An entry another coordinator appended to a shared log (coordinator/backends/nats-log.ts): if
// the document is loaded here (or loading: the entry then waits for the load), apply it in the
// document's queue and pass on what was new to this coordinator's peers. It is stored already;
// an entry the load read too adds nothing the second time (Yjs applies an update once).
export function applyFollowedEntry(host: DocumentHostState, entry: LogEntry): void {
  const pending = host.hosted.get(entry.document);
  if (!pending) return;
  pending
    .then(
      (document) =>
        document.run(async () => {
          if (document.broken || host.hosted.get(entry.document) !== pending) return;
          if (missesEntryBefore(document, entry.seq)) await fillLogGap(host, document, entry.seq - 1);
          if (document.broken) return;
          applyStoredUpdate(host, document, entry);
          noteApplied(document, entry.seq);
        }),
      // A load that failed is retried by the next connection, which reads this entry then.
      () => undefined,
    )
    .catch((error: Error) =>
      host.logger.error(
        { event: 'followed-entry-failed', document: entry.document, seq: entry.seq, err: error },
        'could not apply an entry another coordinator stored',
      ),
    );
}

// The shared log's follower may have lost entries (coordinator/backends/nats-log.ts reports a
// reconnect): a gap shows at a document's next entry (applyFollowedEntry), but a document that gets
// none would stay behind until it unloads. Compare every loaded one with the log's head, one at a
// time (a reconnect is rare; a fleet's loaded documents are many), and read what is missing.
// The report comes 2 s after a reconnect, often while the cluster still has no quorum: a head that
// cannot be read, or a document whose read ended short, is compared again `retryMs` later (nothing
// else would report once the cluster is back), and a report during a pass runs another after it.
export async function catchUpLoadedDocuments(host: DocumentHostState, retryMs = CATCH_UP_RETRY_MS): Promise<void> {
  if (host.catchingUp) {
    host.catchUpAgain = true;
    return;
  }
  host.catchingUp = true;
  try {
    do {
      host.catchUpAgain = false;
      let behind = 0;
      let unfinished = 0;
      for (const [name, pending] of [...host.hosted]) {
        const document = await pending.catch(() => null);
        if (!document || document.broken) continue;
        let head: Awaited<ReturnType<UpdateLog['head']>>;
        try {
          head = await host.log.head(name);
        } catch {
          // The log cannot answer (no quorum; each read waits for its timeout): the rest of this
          // pass would only wait too, so the next pass starts over.
          unfinished += 1;
          break;
        }
        if (!head || head.seq <= document.logSeq) continue;
        behind += 1;
        await document.run(() => (document.broken ? undefined : fillLogGap(host, document, head.seq)));
        if (!document.broken && document.logSeq < head.seq) unfinished += 1;
      }
      host.logger[unfinished > 0 ? 'warn' : 'info'](
        { event: 'log-caught-up', documents: host.hosted.size, behind, unfinished },
        unfinished > 0
          ? `loaded documents compared with the log; unfinished (${unfinished}: the log could not answer or a read ended short), again in ${retryMs / 1000} s`
          : 'loaded documents compared with the log',
      );
      if (unfinished > 0) {
        // Awaited, unlike followed-changes.ts's timer: this promise ends once every loaded document caught up.
        await new Promise((resolve) => setTimeout(resolve, retryMs).unref());
        host.catchUpAgain = true;
      }
    } while (host.catchUpAgain);
  } finally {
    host.catchingUp = false;
  }
}

export function pinDocument(host: DocumentHostState, name: string): Promise<HostedDocument> {
  host.pinned.set(name, (host.pinned.get(name) ?? 0) + 1);
  return loadedDocument(host, name);
}

// Takes back one pin; an unpin without a pin changes nothing.
export function unpinDocument(host: DocumentHostState, name: string): void {
  const pins = host.pinned.get(name);
  if (pins === undefined) return;
  if (pins > 1) {
    host.pinned.set(name, pins - 1);
    return;
  }
  host.pinned.delete(name);
  void host.hosted.get(name)?.then(
    (document) => {
      if (host.hosted.get(name) && !host.pinned.has(name)) scheduleUnload(host, document);
    },
    () => undefined,
  );
}

// The document, pinned while `use` runs and unpinned after, however `use` ends.
export async function withPinned<T>(
  host: Pick<DocumentHost, 'pin' | 'unpin'>,
  name: string,
  use: (document: HostedDocument) => T | Promise<T>,
): Promise<T> {
  const document = await host.pin(name);
  try {
    return await use(document);
  } finally {
    host.unpin(name);
  }
}

export function closeAllDocuments(host: DocumentHostState): void {
  for (const timer of host.unloadTimers.values()) clearTimeout(timer);
  for (const name of [...host.hosted.keys()]) unloadDocument(host, name);
}

// Wires a host state to the DocumentHost interface the coordinator, relays and fleet writers use.
export function createDocumentHost(
  log: UpdateLog,
  logger: Logger,
  idleUnloadMs: number,
  onPresence?: (change: PresenceChange) => void,
): DocumentHost {
  const host = createDocumentHostState(log, logger, idleUnloadMs, onPresence);
  const stopFollowing = log.follow(
    (entry) => applyFollowedEntry(host, entry),
    () =>
      void catchUpLoadedDocuments(host).catch((error: Error) =>
        logger.error({ event: 'log-catch-up-failed', err: error }, 'cannot compare loaded documents with the log'),
      ),
  );
  return {
    acquire: (name, ws) => acquireDocument(host, name, ws),
    release: (document, ws) => releaseDocument(host, document, ws),
    acceptUpdate: (document, update, principal, origin) => acceptUpdate(host, document, update, principal, origin),
    acceptChange: (document, change, principal) => acceptChange(host, document, change, principal),
    pin: (name) => pinDocument(host, name),
    unpin: (name) => unpinDocument(host, name),
    observe: (observer) => void host.observers.push(observer),
    openDocuments: () => host.hosted.size,
    closeAll: async () => {
      stopFollowing();
      closeAllDocuments(host);
    },
  };
}
