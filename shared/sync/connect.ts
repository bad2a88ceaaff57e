import * as Y from 'yjs';
import { WebsocketProvider } from 'y-websocket';
import WebSocket from 'ws';
import { parseDocName } from '../documents/names.js';

export interface DocumentConnection {
  name: string;
  doc: Y.Doc;
  provider: WebsocketProvider;
  close(): void;
}

export interface ConnectOptions {
  doc?: Y.Doc;
  maxBackoffMs?: number;
}

// A stock y-websocket client, so agents use exactly what browsers use. BroadcastChannel is off:
// in one Node process it would let two providers of the same room sync behind the server's back.
export function connectDocument(serverUrl: string, name: string, options: ConnectOptions = {}): DocumentConnection {
  // y-websocket adds one process 'exit' listener per provider; many documents are normal here.
  if (process.getMaxListeners() !== 0) process.setMaxListeners(0);
  const doc = options.doc ?? new Y.Doc({ gc: parseDocName(name)?.role === 'status' });
  const provider = new WebsocketProvider(serverUrl, name, doc, {
    WebSocketPolyfill: WebSocket as unknown as typeof globalThis.WebSocket,
    disableBc: true,
    maxBackoffTime: options.maxBackoffMs ?? 10_000,
  });
  return {
    name,
    doc,
    provider,
    close() {
      provider.destroy();
      // provider.destroy() leaves the awareness' own check interval running.
      provider.awareness.destroy();
    },
  };
}

export function waitForSync(connection: DocumentConnection, timeoutMs: number): Promise<void> {
  if (connection.provider.synced) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      connection.provider.off('sync', onSync);
      reject(new Error(`no sync with ${connection.provider.url} for ${connection.name} within ${timeoutMs} ms; is the coordinator running and reachable?`));
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

export function httpBaseFromWs(serverUrl: string): string {
  return serverUrl.replace(/^ws(s?):/, 'http$1:').replace(/\/+$/, '');
}
