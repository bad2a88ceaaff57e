import * as Y from 'yjs';
import * as decoding from 'lib0/decoding';
import * as syncProtocol from 'y-protocols/sync';
import * as awarenessProtocol from 'y-protocols/awareness';
import type { WebSocket } from 'ws';
import { MESSAGE_AUTH, MESSAGE_AWARENESS, MESSAGE_QUERY_AWARENESS, MESSAGE_SYNC, awarenessMessage, send, syncMessage } from './wire.js';
import type { Logger } from '../shared/log.js';
import type { DocumentHost, HostedDocument } from './hosted-documents.js';

const PING_INTERVAL_MS = 30_000;

export class ProtocolError extends Error {}
export class WriteRefused extends Error {}

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
}

// Handles one sync message in the document's queue. Step 1 is answered from memory; step 2 and
// updates are applied, logged and broadcast by the document host.
async function handleSync(ws: WebSocket, document: HostedDocument, decoder: decoding.Decoder, context: ConnectionContext): Promise<void> {
  const subtype = decoding.readVarUint(decoder);
  if (subtype === syncProtocol.messageYjsSyncStep1) {
    const stateVector = decoding.readVarUint8Array(decoder);
    send(ws, syncMessage((encoder) => syncProtocol.writeSyncStep2(encoder, document.doc, stateVector)));
    return;
  }
  if (subtype !== syncProtocol.messageYjsSyncStep2 && subtype !== syncProtocol.messageYjsUpdate) {
    throw new ProtocolError(`unknown sync message type ${subtype}`);
  }
  const update = decoding.readVarUint8Array(decoder);
  if (!context.mayWrite()) {
    // A reader's step 2 carries what it holds; when that adds nothing it is not a write.
    if (updateAddsNothing(document, update)) return;
    context.logger.warn({ event: 'write-refused', document: document.name, principal: context.principal, bytes: update.length }, 'refusing a write to a document this connection may only read');
    throw new WriteRefused(`${context.principal} may not write ${document.name}`);
  }
  let delta: Uint8Array | null;
  try {
    delta = await context.host.acceptUpdate(document, update, context.principal, ws);
  } catch (error) {
    if (document.broken) return;
    throw new ProtocolError(`malformed update: ${(error as Error).message}`);
  }
  if (delta) context.onUpdateAccepted?.(document.name, delta.length);
}

function closeForProtocolError(ws: WebSocket, context: ConnectionContext, reason: string): void {
  context.logger.warn({ event: 'connection-refused-message', document: context.documentName, principal: context.principal, reason }, 'closing connection: bad message');
  // Close reasons are limited to 123 bytes.
  ws.close(1007, reason.slice(0, 120));
}

export function serveConnection(ws: WebSocket, context: ConnectionContext): void {
  const { logger, documentName } = context;
  let document: HostedDocument | null = null;
  let closed = false;
  let alive = true;
  const backlog: Uint8Array[] = [];

  const ping = setInterval(() => {
    if (!alive) {
      logger.info({ event: 'connection-timeout', document: documentName, principal: context.principal }, 'no pong: terminating');
      ws.terminate();
      return;
    }
    alive = false;
    ws.ping();
  }, PING_INTERVAL_MS);
  ws.on('pong', () => {
    alive = true;
  });

  function handle(message: Uint8Array): void {
    if (!document || closed) return;
    const current = document;
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
          .run(() => (closed ? undefined : handleSync(ws, current, decoder, context)))
          .catch((error: Error) => {
            if (error instanceof WriteRefused) ws.close(1008, 'write not permitted on this document');
            else closeForProtocolError(ws, context, error instanceof ProtocolError ? error.message : `bad sync message: ${error.message}`);
          });
        return;
      case MESSAGE_AWARENESS:
        try {
          awarenessProtocol.applyAwarenessUpdate(current.awareness, decoding.readVarUint8Array(decoder), ws);
        } catch (error) {
          closeForProtocolError(ws, context, `bad awareness message: ${(error as Error).message}`);
        }
        return;
      case MESSAGE_QUERY_AWARENESS:
        send(ws, awarenessMessage(awarenessProtocol.encodeAwarenessUpdate(current.awareness, [...current.awareness.getStates().keys()])));
        return;
      case MESSAGE_AUTH:
        return;
      default:
        closeForProtocolError(ws, context, `unknown message type ${type}`);
    }
  }

  ws.on('message', (data: Buffer, isBinary: boolean) => {
    alive = true;
    if (!isBinary) {
      closeForProtocolError(ws, context, 'text frames are not part of the protocol');
      return;
    }
    const message = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    if (document) handle(message);
    else backlog.push(message);
  });

  ws.on('error', (error) => {
    logger.warn({ event: 'connection-error', document: documentName, principal: context.principal, reason: error.message }, 'connection error');
  });

  ws.on('close', (code, reason) => {
    closed = true;
    clearInterval(ping);
    if (document) context.host.release(document, ws);
    logger.debug({ event: 'connection-closed', document: documentName, principal: context.principal, code, reason: reason.toString() }, 'connection closed');
  });

  context.host.acquire(documentName, ws).then(
    (loaded) => {
      if (closed) {
        context.host.release(loaded, ws);
        return;
      }
      document = loaded;
      // Our state vector first, so the client sends what we lack; then everyone's presence.
      void loaded.run(() => send(ws, syncMessage((encoder) => syncProtocol.writeSyncStep1(encoder, loaded.doc))));
      const states = loaded.awareness.getStates();
      if (states.size > 0) send(ws, awarenessMessage(awarenessProtocol.encodeAwarenessUpdate(loaded.awareness, [...states.keys()])));
      for (const message of backlog.splice(0)) handle(message);
    },
    (error: Error) => {
      logger.error({ event: 'document-load-failed', document: documentName, err: error }, 'cannot load document');
      ws.close(1011, 'document could not be loaded');
    },
  );
}
