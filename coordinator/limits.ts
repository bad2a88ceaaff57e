import type { Server } from 'node:http';
import type { Socket } from 'node:net';
import * as Y from 'yjs';
import { MAX_CANONICAL_DEPTH } from '../shared/crypto/canonical.js';
import { parseDocName } from '../shared/documents/names.js';
import type { Logger } from '../shared/log.js';
import { structsValueProblem, updateValueProblem } from './update-values.js';

// Resource limits of a coordinator or relay: what one address, one connection or one writer may
// take. Every limit is a flag (coordinator/options.ts, relay/options.ts) and shown in /healthz with
// how often it refused something, so an operator sees a limit that bites before users report it.
export interface ResourceLimits {
  // Open TCP connections from one address (websockets and HTTP alike).
  maxConnectionsPerAddress: number;
  // Connections from one address that have not finished their request headers yet.
  maxPendingUpgradesPerAddress: number;
  // A connection that has not finished its request headers by then is dropped (slowloris).
  upgradeTimeoutMs: number;
  // Documents one connection may hold open: a relay session's channels (a direct websocket holds
  // one), and the hosts a relay may report presence for.
  maxDocumentsPerConnection: number;
  // New content one update may add to a document.
  maxUpdateBytes: number;
  // New content one writer may add per hour, over all documents (a token bucket: a full hour's
  // worth at once, then refilled at that rate).
  maxWriterBytesPerHour: number;
  // A document whose state (what every reader syncs) would grow past this refuses the write.
  maxDocumentBytes: number;
  // Values (ContentAny, JSON, embeds, formats) an update writes: how deep they may nest, and how
  // many objects and arrays they may hold per KiB of update (coordinator/update-values.ts).
  maxValueDepth: number;
  maxValueObjectsPerKib: number;
}

export const DEFAULT_LIMITS: ResourceLimits = {
  maxConnectionsPerAddress: 4096,
  maxPendingUpgradesPerAddress: 128,
  upgradeTimeoutMs: 10_000,
  maxDocumentsPerConnection: 25_000,
  maxUpdateBytes: 256 * 1024,
  maxWriterBytesPerHour: 64 * 1024 * 1024,
  maxDocumentBytes: 32 * 1024 * 1024,
  maxValueDepth: MAX_CANONICAL_DEPTH,
  maxValueObjectsPerKib: 64,
};

// The flag that sets each limit, for error messages and logs that name the fix.
export const LIMIT_FLAGS: Record<keyof ResourceLimits, string> = {
  maxConnectionsPerAddress: '--max-connections-per-address',
  maxPendingUpgradesPerAddress: '--max-pending-upgrades',
  upgradeTimeoutMs: '--upgrade-timeout',
  maxDocumentsPerConnection: '--max-documents-per-connection',
  maxUpdateBytes: '--max-update-size',
  maxWriterBytesPerHour: '--max-writer-bytes-per-hour',
  maxDocumentBytes: '--max-document-size',
  maxValueDepth: '--max-value-depth',
  maxValueObjectsPerKib: '--max-value-objects-per-kib',
};

// What was refused since the start, by reason (shown in /healthz).
export interface Refusals {
  badRequests: number;
  handlerErrors: number;
  connectionsPerAddress: number;
  pendingUpgrades: number;
  upgradeTimeouts: number;
  relaySessions: number;
  relayChannels: number;
  relayDocumentNames: number;
  relayPresence: number;
  apiUnauthenticated: number;
  updateTooLarge: number;
  writerQuota: number;
  documentTooLarge: number;
  // Updates whose values nest too deep or pack too many objects and arrays (update-values.ts).
  valueShape: number;
}

export function createRefusals(): Refusals {
  return {
    badRequests: 0,
    handlerErrors: 0,
    connectionsPerAddress: 0,
    pendingUpgrades: 0,
    upgradeTimeouts: 0,
    relaySessions: 0,
    relayChannels: 0,
    relayDocumentNames: 0,
    relayPresence: 0,
    apiUnauthenticated: 0,
    updateTooLarge: 0,
    writerQuota: 0,
    documentTooLarge: 0,
    valueShape: 0,
  };
}

// Logs a warning at most once a minute per key, with how many were suppressed in between: a peer
// that keeps hitting a limit must not be able to fill the disk with our log lines.
export class ThrottledWarn {
  private readonly last = new Map<string, { at: number; suppressed: number }>();
  constructor(
    private readonly logger: Logger,
    private readonly intervalMs = 60_000,
  ) {}

  warn(key: string, fields: Record<string, unknown>, message: string, now = Date.now()): void {
    const seen = this.last.get(key);
    if (seen && now - seen.at < this.intervalMs) {
      seen.suppressed += 1;
      return;
    }
    if (this.last.size >= 10_000) this.last.clear();
    this.last.set(key, { at: now, suppressed: 0 });
    this.logger.warn({ ...fields, ...(seen?.suppressed ? { suppressed: seen.suppressed } : {}) }, message);
  }
}

// Per-address connection accounting at the TCP level, before any HTTP parsing: a connection over
// the address's limit is answered 429 and closed; one that has not sent complete request headers
// within the upgrade timeout is dropped. Pending state is kept only until the headers arrive, so
// an established websocket costs one counter per address, no timer.
export interface ConnectionGate {
  // Call from the 'request' and 'upgrade' handlers: the headers are complete.
  started(socket: Socket): void;
  stats(): { addresses: number; connections: number; pending: number };
}

interface PendingConnection {
  address: string;
  timer: NodeJS.Timeout;
  socket: Socket;
}

const socketKey = (socket: Socket): string => `${socket.remoteAddress}|${socket.remotePort}`;

export function createConnectionGate(
  server: Server,
  limits: ResourceLimits,
  refusals: Refusals,
  logger: Logger,
  options: { tls: boolean },
): ConnectionGate {
  const open = new Map<string, number>();
  const pendingByAddress = new Map<string, number>();
  // Keyed by remote address and port, which the raw TCP socket and a TLS socket over it share.
  const pending = new Map<string, PendingConnection>();
  // What each counted socket was counted under, released under the same (fuzz finding 4).
  const counted = new WeakMap<Socket, { key: string; address: string }>();
  const warnings = new ThrottledWarn(logger);

  const decrement = (table: Map<string, number>, address: string): void => {
    const left = (table.get(address) ?? 1) - 1;
    if (left <= 0) table.delete(address);
    else table.set(address, left);
  };

  const clearPending = (key: string): void => {
    const entry = pending.get(key);
    if (!entry) return;
    pending.delete(key);
    clearTimeout(entry.timer);
    decrement(pendingByAddress, entry.address);
  };

  function onTimeout(key: string): void {
    const entry = pending.get(key);
    if (!entry) return;
    refusals.upgradeTimeouts += 1;
    warnings.warn(
      `timeout:${entry.address}`,
      {
        event: 'connection-limit',
        limit: 'upgrade-timeout',
        address: entry.address,
        timeoutMs: limits.upgradeTimeoutMs,
      },
      `dropping a connection that sent no complete request within ${limits.upgradeTimeoutMs} ms (${LIMIT_FLAGS.upgradeTimeoutMs})`,
    );
    clearPending(key);
    entry.socket.destroy();
  }

  function onClose(this: Socket): void {
    const entry = counted.get(this);
    if (entry === undefined) return;
    counted.delete(this);
    clearPending(entry.key);
    decrement(open, entry.address);
  }

  function refuse(socket: Socket, address: string, limit: keyof ResourceLimits, reason: string): void {
    warnings.warn(
      `${limit}:${address}`,
      { event: 'connection-limit', limit: LIMIT_FLAGS[limit].slice(2), address, allowed: limits[limit] },
      `refusing a connection: ${reason}`,
    );
    // No request has been read yet; the HTTP parser must not read one now.
    socket.pause();
    socket.on('error', () => undefined);
    if (options.tls) socket.destroy();
    else
      socket.end(
        `HTTP/1.1 429 Too Many Requests\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\n${reason}; retry later\n`,
      );
    setTimeout(() => socket.destroy(), 1000).unref();
  }

  server.on('connection', (socket: Socket) => {
    const address = socket.remoteAddress;
    // No peer address: the client reset before the connection was accepted, so there is nobody
    // to answer. Counted under a made-up address, such sockets shared one pending key and were
    // never released (fuzz finding 4); they are dropped instead.
    if (address === undefined) {
      socket.on('error', () => undefined);
      socket.destroy();
      return;
    }
    if ((open.get(address) ?? 0) >= limits.maxConnectionsPerAddress) {
      refusals.connectionsPerAddress += 1;
      return refuse(
        socket,
        address,
        'maxConnectionsPerAddress',
        `${address} already holds ${limits.maxConnectionsPerAddress} connections (${LIMIT_FLAGS.maxConnectionsPerAddress})`,
      );
    }
    if ((pendingByAddress.get(address) ?? 0) >= limits.maxPendingUpgradesPerAddress) {
      refusals.pendingUpgrades += 1;
      return refuse(
        socket,
        address,
        'maxPendingUpgradesPerAddress',
        `${address} has ${limits.maxPendingUpgradesPerAddress} connections without a complete request (${LIMIT_FLAGS.maxPendingUpgradesPerAddress})`,
      );
    }
    const key = socketKey(socket);
    counted.set(socket, { key, address });
    open.set(address, (open.get(address) ?? 0) + 1);
    pendingByAddress.set(address, (pendingByAddress.get(address) ?? 0) + 1);
    pending.set(key, {
      address,
      socket,
      timer: setTimeout(onTimeout, limits.upgradeTimeoutMs, key).unref(),
    });
    // A shared listener, not a once() wrapper: no closure per connection (onClose runs once anyway).
    socket.on('close', onClose);
  });

  return {
    started(socket) {
      if (socket.remoteAddress === undefined) return;
      clearPending(socketKey(socket));
    },
    stats() {
      let connections = 0;
      for (const count of open.values()) connections += count;
      return { addresses: open.size, connections, pending: pending.size };
    },
  };
}

// A per-writer token bucket of bytes: a writer may add maxWriterBytesPerHour at once, then that
// much per hour. Full buckets are forgotten, so the table holds only recent writers.
export class WriterQuota {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();
  constructor(
    private readonly perHour: number,
    private readonly now: () => number = Date.now,
  ) {}

  available(writer: string): number {
    const bucket = this.buckets.get(writer);
    if (!bucket) return this.perHour;
    const now = this.now();
    const refilled = Math.min(this.perHour, bucket.tokens + ((now - bucket.at) * this.perHour) / 3_600_000);
    return refilled;
  }

  charge(writer: string, bytes: number): void {
    if (bytes <= 0) return;
    const tokens = this.available(writer) - bytes;
    if (this.buckets.size >= 100_000) this.sweep();
    this.buckets.set(writer, { tokens, at: this.now() });
  }

  writers(): number {
    return this.buckets.size;
  }

  private sweep(): void {
    for (const writer of [...this.buckets.keys()])
      if (this.available(writer) >= this.perHour) this.buckets.delete(writer);
  }
}

// How many bytes of new content an update would add to a document, before applying it: the
// update minus what the document already has (by state vector), not counting the delete set, which
// a peer resends whole in every sync step 2 and which adds next to nothing.
export function newContentBytes(doc: Y.Doc, update: Uint8Array): number {
  return newContent(doc, update).bytes;
}

// The part of the update the document does not have yet, and its size as above.
function newContent(doc: Y.Doc, update: Uint8Array): { missing: Uint8Array; bytes: number } {
  const missing = Y.diffUpdate(update, Y.encodeStateVector(doc));
  const deletesOnly = Y.diffUpdate(update, Y.encodeStateVector(Y.parseUpdateMeta(update).to));
  return { missing, bytes: Math.max(0, missing.length - deletesOnly.length) };
}

// An update with no structs and no deletes, as Yjs encodes it (2 bytes): the delete-set-only diff
// of an update that deletes nothing.
const EMPTY_UPDATE_BYTES = Y.encodeStateAsUpdate(new Y.Doc()).length;

// newContent's answer for the common write with half the decoding: when every struct starts at or
// past what the document holds of its client (a writer's fresh write, such as an intent appended)
// and it deletes nothing, nothing is cut from the update and the delete-set part is empty, so the
// meta parse and the second diff are not needed, and the value check reuses the structs decoded
// here. The size is still that of the diff, Yjs' own re-encoding, never the update's raw length: a
// crafted update can re-encode 4 times larger (legacy JSON content `1e20` stores as 21 digits),
// and the limits bound what is stored. Anything else (a resend or a sync step 2 that
// overlaps the document, an update with deletes) returns null and takes newContent.
export function newContentIfAllNew(
  doc: Y.Doc,
  update: Uint8Array,
): { structs: (Y.Item | Y.GC | Y.Skip)[]; missing: Uint8Array; bytes: number } | null {
  const { structs, ds } = Y.decodeUpdate(update);
  if (ds.clients.size > 0) return null;
  for (const struct of structs) if (struct.id.clock < Y.getState(doc.store, struct.id.client)) return null;
  const missing = Y.diffUpdate(update, Y.encodeStateVector(doc));
  return { structs, missing, bytes: Math.max(0, missing.length - EMPTY_UPDATE_BYTES) };
}

export type WriteRefusal = {
  limit: 'max-update-size' | 'max-writer-bytes-per-hour' | 'max-document-size' | 'value-shape';
  // Close code: 4413 too large (permanent for this content), 4429 quota (retry later).
  code: number;
  reason: string;
  allowed: number;
  bytes: number;
};

export interface SizedDocument {
  name: string;
  doc: Y.Doc;
  // Upper bound of the document's encoded state; recomputed exactly when it nears the limit.
  stateBytes: number;
}

// Write limits of one server: checked for every update a peer sends (not for what the coordinator
// writes itself, nor for what a relay receives from its upstream, which limited it already).
export class WriteLimits {
  readonly quota: WriterQuota;
  private readonly warnings: ThrottledWarn;
  constructor(
    readonly limits: ResourceLimits,
    private readonly refusals: Refusals,
    logger: Logger,
    now: () => number = Date.now,
  ) {
    this.quota = new WriterQuota(limits.maxWriterBytesPerHour, now);
    this.warnings = new ThrottledWarn(logger);
  }

  // The alert: one warning per writer and limit a minute (the rest are counted in /healthz).
  report(refusal: WriteRefusal, where: { document: string; principal: string; writer: string }): void {
    this.warnings.warn(
      `${where.writer}|${refusal.limit}`,
      {
        event: 'write-limit',
        limit: refusal.limit,
        document: where.document,
        host: parseDocName(where.document)?.host ?? null,
        principal: where.principal,
        writer: where.writer,
        bytes: refusal.bytes,
        allowed: refusal.allowed,
      },
      `refusing a write: ${refusal.reason}`,
    );
  }

  check(document: SizedDocument, update: Uint8Array, writer: string): WriteRefusal | null {
    // Small updates cannot break a size limit by themselves: skip the diff for the common case
    // (their values are still checked, against the diff only when they look wrong, so resending
    // what the document already holds is never refused).
    let shapeProblem: string | null = null;
    let bytes: number;
    if (update.length <= 64) {
      bytes = update.length;
      shapeProblem = updateValueProblem(update, this.limits);
      if (shapeProblem) {
        const added = newContent(document.doc, update);
        bytes = added.bytes;
        shapeProblem = bytes === 0 ? null : updateValueProblem(added.missing, this.limits);
      }
    } else {
      const fresh = newContentIfAllNew(document.doc, update);
      if (fresh) {
        bytes = fresh.bytes;
        if (bytes > 0) shapeProblem = structsValueProblem(fresh.structs, fresh.missing.length, this.limits);
      } else {
        const added = newContent(document.doc, update);
        bytes = added.bytes;
        if (bytes > 0) shapeProblem = updateValueProblem(added.missing, this.limits);
      }
    }
    if (bytes === 0) return null;
    if (shapeProblem) {
      this.refusals.valueShape += 1;
      return { limit: 'value-shape', code: 4413, bytes, allowed: this.limits.maxValueDepth, reason: shapeProblem };
    }
    const { maxUpdateBytes, maxWriterBytesPerHour, maxDocumentBytes } = this.limits;
    if (bytes > maxUpdateBytes) {
      this.refusals.updateTooLarge += 1;
      return {
        limit: 'max-update-size',
        code: 4413,
        bytes,
        allowed: maxUpdateBytes,
        reason: `update adds ${bytes} bytes, over ${maxUpdateBytes} (${LIMIT_FLAGS.maxUpdateBytes})`,
      };
    }
    const available = this.quota.available(writer);
    if (bytes > available) {
      this.refusals.writerQuota += 1;
      return {
        limit: 'max-writer-bytes-per-hour',
        code: 4429,
        bytes,
        allowed: maxWriterBytesPerHour,
        reason: `write quota: ${maxWriterBytesPerHour} bytes/hour used up (${LIMIT_FLAGS.maxWriterBytesPerHour}); retry later`,
      };
    }
    if (document.stateBytes + bytes > maxDocumentBytes) {
      document.stateBytes = Y.encodeStateAsUpdate(document.doc).length;
      if (document.stateBytes + bytes > maxDocumentBytes) {
        this.refusals.documentTooLarge += 1;
        return {
          limit: 'max-document-size',
          code: 4413,
          bytes,
          allowed: maxDocumentBytes,
          reason: `document would exceed ${maxDocumentBytes} bytes (${LIMIT_FLAGS.maxDocumentBytes})`,
        };
      }
    }
    return null;
  }

  // After the update is stored: what it really added.
  charge(writer: string, bytes: number): void {
    this.quota.charge(writer, bytes);
  }
}
