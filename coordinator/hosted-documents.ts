import type { WebSocket } from 'ws';
import * as syncProtocol from 'y-protocols/sync';
import * as Y from 'yjs';
import { documentGarbageCollects } from '../shared/documents/names.js';
import type { Logger } from '../shared/log.js';
import { type AwarenessChanges, AwarenessTable, trackExpiry, untrackExpiry } from './awareness-table.js';
import type { LogEntry, UpdateLog } from './update-log.js';
import { awarenessMessage, send, syncMessage } from './wire.js';

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
  // Keeps a document loaded for the coordinator's own use (fleet documents it reads or writes).
  pin(name: string): Promise<HostedDocument>;
  // Lets a pinned document unload again once nobody is connected (a relay pins documents only
  // while they still have something to exchange with the upstream).
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

// A function of its own so that the log entries replayed stay out of any closure that lives as
// long as the document (they would keep every update's bytes in memory).
function replay(doc: Y.Doc, entries: LogEntry[]): { entries: number; bytes: number } {
  let bytes = 0;
  // One transaction: replaying tens of thousands of updates stays in the hundreds of ms.
  Y.transact(doc, () => {
    for (const entry of entries) {
      Y.applyUpdate(doc, entry.update, 'log');
      bytes += entry.update.length;
    }
  });
  return { entries: entries.length, bytes };
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

export function createDocumentHost(
  log: UpdateLog,
  logger: Logger,
  idleUnloadMs: number,
  onPresence?: (change: PresenceChange) => void,
): DocumentHost {
  const hosted = new Map<string, Promise<HostedDocument>>();
  const unloadTimers = new Map<string, NodeJS.Timeout>();
  const pinned = new Set<string>();
  const observers: HostObserver[] = [];

  async function load(name: string): Promise<HostedDocument> {
    const doc = new Y.Doc({ gc: documentGarbageCollects(name) });
    const { entries, bytes } = replay(doc, await log.read(name));
    const document = new LoadedDocument(name, doc, onPresence);
    document.stateBytes = bytes;
    trackExpiry(document.awareness);
    logger.debug({ event: 'document-loaded', document: name, entries }, 'document loaded');
    for (const observer of observers) observer.loaded?.(document);
    return document;
  }

  function unload(name: string): void {
    const pending = hosted.get(name);
    hosted.delete(name);
    unloadTimers.delete(name);
    void pending?.then((document) => {
      untrackExpiry(document.awareness);
      document.doc.destroy();
      logger.debug({ event: 'document-unloaded', document: name }, 'document unloaded');
      for (const observer of observers) observer.unloaded?.(name);
    });
  }

  function scheduleUnload(document: HostedDocument): void {
    if (
      document.connections.size === 0 &&
      !pinned.has(document.name) &&
      !unloadTimers.has(document.name) &&
      hosted.has(document.name)
    ) {
      unloadTimers.set(document.name, setTimeout(() => unload(document.name), idleUnloadMs).unref());
    }
  }

  return {
    async acquire(name, ws) {
      const timer = unloadTimers.get(name);
      if (timer) {
        clearTimeout(timer);
        unloadTimers.delete(name);
      }
      let pending = hosted.get(name);
      if (!pending) {
        pending = load(name);
        hosted.set(name, pending);
        pending.catch(() => hosted.delete(name));
      }
      const document = await pending;
      document.connections.set(ws, []);
      return document;
    },

    release(document, ws) {
      const ids = document.connections.get(ws);
      document.connections.delete(ws);
      if (ids && ids.length > 0) document.awareness.remove(ids, null);
      scheduleUnload(document);
    },

    async acceptUpdate(document, update, principal, origin) {
      const emitted: Uint8Array[] = [];
      const capture = (u: Uint8Array): void => {
        emitted.push(u);
      };
      document.doc.on('update', capture);
      try {
        Y.applyUpdate(document.doc, update, origin);
      } finally {
        document.doc.off('update', capture);
      }
      // Nothing new (a duplicate, or an update still waiting for missing dependencies): nothing to store.
      if (emitted.length === 0) return null;
      const delta = emitted.length === 1 ? emitted[0]! : Y.mergeUpdates(emitted);
      try {
        await log.append(document.name, principal, delta);
      } catch (error) {
        // Memory now holds something the log does not: drop this copy so the next connection
        // reloads from the log, and close everyone so clients resend what they have.
        document.broken = true;
        logger.error(
          { event: 'log-append-failed', document: document.name, err: error },
          'update log append failed; reloading document',
        );
        hosted.delete(document.name);
        untrackExpiry(document.awareness);
        for (const ws of document.connections.keys()) ws.close(1011, 'coordinator storage error');
        for (const observer of observers) observer.unloaded?.(document.name);
        throw error;
      }
      document.stateBytes += delta.length;
      const message = syncMessage((encoder) => syncProtocol.writeUpdate(encoder, delta));
      for (const peer of document.connections.keys()) if (peer !== origin) send(peer, message);
      for (const observer of observers) observer.accepted?.(document, delta, principal);
      return delta;
    },

    async pin(name) {
      pinned.add(name);
      const timer = unloadTimers.get(name);
      if (timer) {
        clearTimeout(timer);
        unloadTimers.delete(name);
      }
      let pending = hosted.get(name);
      if (!pending) {
        pending = load(name);
        hosted.set(name, pending);
        pending.catch(() => hosted.delete(name));
      }
      return pending;
    },

    unpin(name) {
      if (!pinned.delete(name)) return;
      void hosted.get(name)?.then(
        (document) => {
          if (hosted.get(name) && !pinned.has(name)) scheduleUnload(document);
        },
        () => undefined,
      );
    },

    observe(observer) {
      observers.push(observer);
    },

    openDocuments() {
      return hosted.size;
    },

    async closeAll() {
      for (const timer of unloadTimers.values()) clearTimeout(timer);
      for (const name of [...hosted.keys()]) unload(name);
    },
  };
}
