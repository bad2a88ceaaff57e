import * as decoding from 'lib0/decoding';
import type { WebSocket } from 'ws';
import * as syncProtocol from 'y-protocols/sync';
import * as Y from 'yjs';
import type { Logger } from '../shared/log.js';
import type { DocumentHost, HostedDocument } from './hosted-documents.js';
import type { WriteLimits } from './limits.js';
import {
  awarenessMessage,
  closeSocket,
  MESSAGE_AUTH,
  MESSAGE_AWARENESS,
  MESSAGE_QUERY_AWARENESS,
  MESSAGE_SYNC,
  send,
  syncMessage,
} from './wire.js';

const PING_INTERVAL_MS = 30_000;

export class ProtocolError extends Error {}
export class WriteRefused extends Error {
  constructor(
    message: string,
    readonly code = 1008,
  ) {
    super(message);
  }
}

function updateAddsNothing(document: HostedDocument, update: Uint8Array): boolean {
  try {
    return Y.snapshotContainsUpdate(Y.snapshot(document.doc), update);
  } catch {
    return false;
  }
}

export interface ConnectionContext {
  documentName: string;
  principal: string;
  host: DocumentHost;
  logger: Logger;
  // Asked for every update, so a policy change applies to open connections at once.
  mayWrite: () => boolean;
  onUpdateAccepted?: (document: string, bytes: number) => void;
  // Size and rate limits on what this connection writes, charged to `writer` (a principal, or for
  // a relay channel the relay and the document: a relay carries many hosts' writes).
  limits?: WriteLimits;
  writer?: string;
}

// A reader that holds nothing yet (an empty state vector: an agent opening a rollout's document,
// a new admin or relay) gets the whole document. It is encoded once per version of the document,
// not once per reader: a thousand agents opening one rollout's document within a second would
// otherwise each cost a full encoding of its plan and evidence.
// Small documents (most: a host's status, its desired intents) are not kept, so a coordinator
// with ten thousand hosts holds no second copy of each.
const EMPTY_STATE_VECTOR = Uint8Array.of(0);
const CACHED_FROM_BYTES = 64 * 1024;
const fullStates = new WeakMap<Y.Doc, Uint8Array>();

function fullStateMessage(doc: Y.Doc): Uint8Array {
  const cached = fullStates.get(doc);
  if (cached) return cached;
  const message = syncMessage((encoder) => syncProtocol.writeSyncStep2(encoder, doc, EMPTY_STATE_VECTOR));
  if (message.length >= CACHED_FROM_BYTES) {
    fullStates.set(doc, message);
    doc.once('update', () => fullStates.delete(doc));
  }
  return message;
}

const isEmptyStateVector = (stateVector: Uint8Array): boolean => stateVector.length === 1 && stateVector[0] === 0;

// Handles one sync message in the document's queue. Step 1 is answered from memory; step 2 and
// updates are applied, logged and broadcast by the document host.
async function handleSync(
  ws: WebSocket,
  document: HostedDocument,
  decoder: decoding.Decoder,
  context: ConnectionContext,
): Promise<void> {
  // A copy dropped after a failed append (its sockets are closing, a new copy loads from the log):
  // messages still arriving are not handled. Its reply could show an update the log lacks, and an
  // update stored through it would reach neither the new copy (this coordinator's follower skips
  // its own entries) nor the writer's acknowledgement honestly.
  if (document.broken) return;
  const subtype = decoding.readVarUint(decoder);
  if (subtype === syncProtocol.messageYjsSyncStep1) {
    const stateVector = decoding.readVarUint8Array(decoder);
    send(
      ws,
      isEmptyStateVector(stateVector)
        ? fullStateMessage(document.doc)
        : syncMessage((encoder) => syncProtocol.writeSyncStep2(encoder, document.doc, stateVector)),
    );
    return;
  }
  if (subtype !== syncProtocol.messageYjsSyncStep2 && subtype !== syncProtocol.messageYjsUpdate) {
    throw new ProtocolError(`unknown sync message type ${subtype}`);
  }
  const update = decoding.readVarUint8Array(decoder);
  if (!context.mayWrite()) {
    // A reader's step 2 carries what it holds; when that adds nothing it is not a write.
    if (updateAddsNothing(document, update)) return;
    context.logger.warn(
      { event: 'write-refused', document: document.name, principal: context.principal, bytes: update.length },
      'refusing a write to a document this connection may only read',
    );
    throw new WriteRefused('write not permitted on this document');
  }
  const writer = context.writer ?? context.principal;
  const refusal = context.limits?.check(document, update, writer);
  if (refusal) {
    context.limits!.report(refusal, { document: document.name, principal: context.principal, writer });
    throw new WriteRefused(refusal.reason, refusal.code);
  }
  let delta: Uint8Array | null;
  try {
    delta = await context.host.acceptUpdate(document, update, context.principal, ws);
  } catch (error) {
    if (document.broken) return;
    throw new ProtocolError(`malformed update: ${(error as Error).message}`);
  }
  if (delta) {
    context.limits?.charge(writer, delta.length);
    context.onUpdateAccepted?.(document.name, delta.length);
  }
}

function closeForProtocolError(ws: WebSocket, context: ConnectionContext, reason: string): void {
  context.logger.warn(
    { event: 'connection-refused-message', document: context.documentName, principal: context.principal, reason },
    'closing connection: bad message',
  );
  closeSocket(ws, 1007, reason);
}

// One connection's state. The socket's listeners are shared functions that find it through the
// socket, and one timer pings every connection: per-connection closures, contexts and interval
// timers cost ~1 KB a host at thousands of hosts.
interface Connection {
  ws: WebSocket;
  context: ConnectionContext;
  document: HostedDocument | null;
  closed: boolean;
  alive: boolean;
  // Messages that arrive while the document loads; null once loaded (or while none waited).
  backlog: Uint8Array[] | null;
}

const connections = new WeakMap<object, Connection>();
const live = new Set<Connection>();
let pingTimer: NodeJS.Timeout | null = null;

// Every 30 s: a connection that has not answered the previous ping (or sent anything since) is
// terminated; every other one is pinged. A connection always has a full interval to answer.
function pingAll(): void {
  for (const connection of live) {
    const { ws, context } = connection;
    if (!connection.alive) {
      context.logger.info(
        { event: 'connection-timeout', document: context.documentName, principal: context.principal },
        'no pong: terminating',
      );
      ws.terminate();
      continue;
    }
    connection.alive = false;
    ws.ping();
  }
}

function handle(connection: Connection, message: Uint8Array): void {
  const { ws, context, document: current } = connection;
  if (!current || connection.closed) return;
  let decoder: decoding.Decoder;
  let type: number;
  try {
    decoder = decoding.createDecoder(message);
    type = decoding.readVarUint(decoder);
  } catch {
    closeForProtocolError(ws, context, 'undecodable message');
    return;
  }
  switch (type) {
    case MESSAGE_SYNC:
      current
        .run(() => (connection.closed ? undefined : handleSync(ws, current, decoder, context)))
        .catch((error: Error) => {
          if (error instanceof WriteRefused) closeSocket(ws, error.code, error.message);
          else
            closeForProtocolError(
              ws,
              context,
              error instanceof ProtocolError ? error.message : `bad sync message: ${error.message}`,
            );
        });
      return;
    case MESSAGE_AWARENESS:
      try {
        current.awareness.apply(decoding.readVarUint8Array(decoder), ws);
      } catch (error) {
        closeForProtocolError(ws, context, `bad awareness message: ${(error as Error).message}`);
      }
      return;
    case MESSAGE_QUERY_AWARENESS:
      send(ws, awarenessMessage(current.awareness.encode(current.awareness.ids())));
      return;
    case MESSAGE_AUTH:
      return;
    default:
      closeForProtocolError(ws, context, `unknown message type ${type}`);
  }
}

// Socket listeners: `this` is the socket (ws and the relay mux's channel sockets are EventEmitters).
function onPong(this: WebSocket): void {
  const connection = connections.get(this);
  if (connection) connection.alive = true;
}

function onMessage(this: WebSocket, data: Buffer, isBinary: boolean): void {
  const connection = connections.get(this);
  if (!connection) return;
  connection.alive = true;
  if (!isBinary) {
    closeForProtocolError(this, connection.context, 'text frames are not part of the protocol');
    return;
  }
  const message = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (!connection.document) {
    // Bounded by what a peer can send before the document loads; one document's worth at most.
    connection.backlog ??= [];
    if (connection.backlog.length >= 1024) {
      closeForProtocolError(this, connection.context, 'too many messages before the document loaded');
      return;
    }
    connection.backlog.push(message);
    return;
  }
  try {
    handle(connection, message);
  } catch (error) {
    // Nothing a peer sends may throw out of the socket's handler (it would end the process).
    closeForProtocolError(this, connection.context, `bad message: ${(error as Error).message}`);
  }
}

function onError(this: WebSocket, error: Error): void {
  const context = connections.get(this)?.context;
  context?.logger.warn(
    { event: 'connection-error', document: context.documentName, principal: context.principal, reason: error.message },
    'connection error',
  );
}

function onClose(this: WebSocket, code: number, reason: Buffer): void {
  const connection = connections.get(this);
  if (!connection) return;
  const { context } = connection;
  connection.closed = true;
  connection.backlog = null;
  live.delete(connection);
  if (live.size === 0 && pingTimer) {
    clearInterval(pingTimer);
    pingTimer = null;
  }
  if (connection.document) context.host.release(connection.document, this);
  context.logger.debug(
    {
      event: 'connection-closed',
      document: context.documentName,
      principal: context.principal,
      code,
      reason: reason.toString(),
    },
    'connection closed',
  );
}

function attach(connection: Connection, loaded: HostedDocument): void {
  const { ws } = connection;
  if (connection.closed) {
    connection.context.host.release(loaded, ws);
    return;
  }
  connection.document = loaded;
  // Our state vector first, so the client sends what we lack; then everyone's presence.
  void loaded.run(() =>
    send(
      ws,
      syncMessage((encoder) => syncProtocol.writeSyncStep1(encoder, loaded.doc)),
    ),
  );
  if (loaded.awareness.size > 0) send(ws, awarenessMessage(loaded.awareness.encode(loaded.awareness.ids())));
  const backlog = connection.backlog;
  connection.backlog = null;
  if (backlog) for (const message of backlog) handle(connection, message);
}

function attachSafely(connection: Connection, loaded: HostedDocument): void {
  try {
    attach(connection, loaded);
  } catch (error) {
    closeForProtocolError(connection.ws, connection.context, `bad message: ${(error as Error).message}`);
  }
}

export function serveConnection(ws: WebSocket, context: ConnectionContext): void {
  const connection: Connection = { ws, context, document: null, closed: false, alive: true, backlog: null };
  connections.set(ws, connection);
  live.add(connection);
  pingTimer ??= setInterval(pingAll, PING_INTERVAL_MS);
  ws.on('pong', onPong);
  ws.on('message', onMessage);
  ws.on('error', onError);
  ws.on('close', onClose);

  context.host.acquire(context.documentName, ws).then(
    (loaded) => attachSafely(connection, loaded),
    (error: Error) => {
      context.logger.error(
        { event: 'document-load-failed', document: context.documentName, err: error },
        'cannot load document',
      );
      closeSocket(ws, 1011, 'document could not be loaded');
    },
  );
}
