import * as decoding from 'lib0/decoding';
import * as encoding from 'lib0/encoding';
import * as syncProtocol from 'y-protocols/sync';
import { messageSync, WebsocketProvider } from 'y-websocket';
import * as Y from 'yjs';
import type { SigningKey } from '../crypto/keys.js';
import { documentGarbageCollects } from '../documents/names.js';
import { type DeepValue, type DefusedCounts, defuseDeepValues } from './deep-values.js';
import { boundPendingUpdates, describePendingUpdates, type PendingUpdates } from './pending-updates.js';
import {
  connectionFailed,
  connectionSucceeded,
  connectNow,
  createReconnectState,
  fetchAuthProof,
  stopReconnecting,
} from './reconnect.js';

export interface DocumentConnection {
  name: string;
  doc: Y.Doc;
  provider: WebsocketProvider;
  close(): void;
}

export interface ConnectOptions {
  doc?: Y.Doc;
  // Reconnect backoff (reconnect.ts): base × 2^attempt, capped, with jitter.
  maxBackoffMs?: number;
  baseBackoffMs?: number;
  // The key this connection proves at every upgrade; null: connect without one (open mode).
  // Required, so no caller forgets it: a connection without a key is refused by --org-root servers.
  identity: SigningKey | null;
  // Called with the endpoint now in use after a failover.
  onEndpoint?: (url: string) => void;
  // Called when a connection ended or could not be made, before the next attempt: the reason
  // carries the server's close code and words (4403 not authorised, 4413/4429 write limits…).
  onRetry?: (retry: ConnectionRetry) => void;
  // The WebSocket class: the platform's by default (browsers); Node passes `ws` (node/connect.ts).
  WebSocketPolyfill?: typeof WebSocket;
  // A copy that is only read (a command's snapshot): changes made to it locally are not sent.
  // Yjs encodes every update a document receives again for its 'update' listeners, and the
  // provider's send handler is one even though it drops received updates: without it, reading
  // fleet/enrollment of 1,000 hosts costs ~170 ms of CPU less.
  readOnly?: boolean;
  // Called when an incoming update held values nested past canonical JSON's depth, or packed
  // more objects and arrays than the servers allow, replaced by null before it was applied
  // (deep-values.ts): a writer of the document (a compromised coordinator or relay) sent what
  // would have overflowed the stack or cost gigabytes decoded. Also when an update could not be
  // walked at all (malformed) and was dropped.
  onDeepValues?: (event: DeepValuesEvent) => void;
  // Called when updates wait for structs a writer never sent (pending-updates.ts): once when they
  // still wait PENDING_NOTICE_MS after they began to, and whenever they pass the bound and are
  // dropped.
  onPendingUpdates?: (event: PendingUpdatesEvent) => void;
}

export interface PendingUpdatesEvent extends PendingUpdates {
  dropped: boolean;
}

// Honest peers' out-of-order updates are resolved within a message or two.
export const PENDING_NOTICE_MS = 30_000;

export interface DeepValuesEvent {
  document: string;
  // The first values defused (at most 64), and how many were for each bound.
  values: DeepValue[];
  counts: DefusedCounts;
  // The update could not be walked (malformed as Yjs would read it) and was not applied.
  unreadable: boolean;
}

// How a long-lived link reconnects, as daemons configure it once for all their documents.
export type ReconnectOptions = Required<Pick<ConnectOptions, 'baseBackoffMs' | 'maxBackoffMs'>> &
  Pick<ConnectOptions, 'onRetry' | 'onDeepValues' | 'onPendingUpdates'>;

export interface ConnectionRetry {
  document: string;
  url: string;
  delayMs: number;
  // The websocket close code, when the server closed the connection.
  code: number | null;
  reason: string;
}

const PROOF_TIMEOUT_MS = 15_000;

// What a close event says, in one line: `closed with 4429: writer quota …`.
export function describeClose(code: number, reason: string): string {
  return reason ? `closed with ${code}: ${reason}` : `closed with ${code}`;
}

// A stock y-websocket client, so agents use exactly what browsers use, with the reconnect loop
// taken over by reconnect.ts: y-websocket's own backoff has no jitter and knows one URL.
// BroadcastChannel is off: in one process it would let two providers of the same room sync
// behind the server's back.
export function connectDocument(
  endpoints: string | readonly string[],
  name: string,
  options: ConnectOptions,
): DocumentConnection {
  const state = createReconnectState(typeof endpoints === 'string' ? [endpoints] : endpoints, {
    baseMs: options.baseBackoffMs ?? 250,
    capMs: options.maxBackoffMs ?? 10_000,
  });
  const identity = options.identity ?? null;
  const doc = options.doc ?? new Y.Doc({ gc: documentGarbageCollects(name) });
  const provider = new WebsocketProvider(state.urls[0]!, name, doc, {
    ...(options.WebSocketPolyfill ? { WebSocketPolyfill: options.WebSocketPolyfill } : {}),
    disableBc: true,
    connect: false,
  });
  if (options.readOnly) doc.off('update', provider._updateHandler);
  const pending = watchPendingUpdates(doc, name, options.onPendingUpdates);
  defuseIncomingUpdates(provider, name, options.onDeepValues, pending.check);
  const hooks = {
    attempt: async (url: string): Promise<void> => {
      provider.serverUrl = url;
      if (identity) provider.params = await fetchAuthProof(url, name, identity, PROOF_TIMEOUT_MS);
      if (!state.closed) provider.connect();
    },
    ...(options.onEndpoint ? { onEndpoint: options.onEndpoint } : {}),
    onRetry: (url: string, delayMs: number, reason: string): void => {
      options.onRetry?.({ document: name, url, delayMs, code: lastCloseCode, reason });
      lastCloseCode = null;
    },
  };
  let lastCloseCode: number | null = null;
  provider.on('sync', (synced: boolean) => {
    if (synced) connectionSucceeded(state);
  });
  provider.on('connection-close', (event: CloseEvent | null) => {
    // Stop y-websocket's own reconnect; ours follows.
    provider.shouldConnect = false;
    lastCloseCode = event?.code ?? null;
    connectionFailed(state, hooks, event ? describeClose(event.code, event.reason) : 'closed');
  });
  connectNow(state, hooks);
  return {
    name,
    doc,
    provider,
    close() {
      stopReconnecting(state);
      pending.close();
      provider.destroy();
      // provider.destroy() leaves the awareness' own check interval running.
      provider.awareness.destroy();
    },
  };
}

type MessageHandler = WebsocketProvider['messageHandlers'][number];

// Wraps the provider's sync message handler: a sync step 2 or update message has its update
// walked (without recursion) and values nested too deep or packed too dense replaced before
// y-protocols applies it.
// Everything else (sync step 1) goes through untouched.
function defuseIncomingUpdates(
  provider: WebsocketProvider,
  name: string,
  onDeepValues: ConnectOptions['onDeepValues'],
  afterApply: () => void,
): void {
  const applyMessage: MessageHandler | undefined = provider.messageHandlers[messageSync];
  if (!applyMessage) return;
  const applySync: MessageHandler = (...args) => {
    applyMessage(...args);
    afterApply();
  };
  provider.messageHandlers[messageSync] = (encoder, decoder, handlerProvider, emitSynced, messageType) => {
    const start = decoder.pos;
    let syncType: number;
    let scan: ReturnType<typeof defuseDeepValues>;
    try {
      syncType = decoding.readVarUint(decoder);
      if (syncType !== syncProtocol.messageYjsSyncStep2 && syncType !== syncProtocol.messageYjsUpdate)
        throw new Error('not an update');
      scan = defuseDeepValues(decoding.readVarUint8Array(decoder));
    } catch {
      // Sync step 1, or a message the walk cannot read: y-protocols handles it as it would have
      // (a throw here would escape the websocket's message listener).
      decoder.pos = start;
      applySync(encoder, decoder, handlerProvider, emitSynced, messageType);
      return;
    }
    if (scan.replaced.length === 0 && !scan.malformed) {
      // Nothing replaced: the message goes on as it came, not copied into a new one.
      decoder.pos = start;
      applySync(encoder, decoder, handlerProvider, emitSynced, messageType);
      return;
    }
    onDeepValues?.({ document: name, values: scan.replaced, counts: scan.counts, unreadable: scan.malformed });
    const rewritten = encoding.createEncoder();
    encoding.writeVarUint(rewritten, syncType);
    encoding.writeVarUint8Array(rewritten, scan.update);
    applySync(
      encoder,
      decoding.createDecoder(encoding.toUint8Array(rewritten)),
      handlerProvider,
      emitSynced,
      messageType,
    );
  };
}

// Bounds what waits in `doc` after each incoming sync message, and says so when something still
// waits PENDING_NOTICE_MS after it began to (once per episode: until nothing waits).
function watchPendingUpdates(
  doc: Y.Doc,
  name: string,
  report: ConnectOptions['onPendingUpdates'],
): { check: () => void; close: () => void } {
  let timer: ReturnType<typeof setTimeout> | null = null;
  let noticed = false;
  const stopTimer = (): void => {
    if (timer) clearTimeout(timer);
    timer = null;
  };
  return {
    check() {
      const dropped = boundPendingUpdates(doc, name);
      if (dropped) report?.({ ...dropped, dropped: true });
      if (doc.store.pendingStructs === null && doc.store.pendingDs === null) {
        stopTimer();
        noticed = false;
        return;
      }
      if (timer || noticed) return;
      timer = setTimeout(() => {
        timer = null;
        const waiting = describePendingUpdates(doc, name);
        if (!waiting) return;
        noticed = true;
        report?.({ ...waiting, dropped: false });
      }, PENDING_NOTICE_MS);
    },
    close: stopTimer,
  };
}

export function waitForSync(connection: DocumentConnection, timeoutMs: number): Promise<void> {
  if (connection.provider.synced) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      connection.provider.off('sync', onSync);
      reject(
        new Error(
          `no sync with ${connection.provider.serverUrl} for ${connection.name} within ${timeoutMs} ms; is the coordinator running and reachable, and may this key open the document?`,
        ),
      );
    }, timeoutMs);
    const onSync = (synced: boolean): void => {
      if (!synced) return;
      clearTimeout(timer);
      connection.provider.off('sync', onSync);
      resolve();
    };
    connection.provider.on('sync', onSync);
  });
}
