import * as Y from 'yjs';
import { WebsocketProvider } from 'y-websocket';
import WebSocket from 'ws';
import { documentGarbageCollects } from '../documents/names.js';
import type { SigningKey } from '../crypto/keys.js';
import { challengeResponseSchema, signAuthProof } from './auth-proof.js';

export interface DocumentConnection {
  name: string;
  doc: Y.Doc;
  provider: WebsocketProvider;
  close(): void;
}

export interface ConnectOptions {
  doc?: Y.Doc;
  maxBackoffMs?: number;
  // The key this connection proves at the upgrade; defaults to the process identity.
  identity?: SigningKey | null;
}

let processIdentity: SigningKey | null = null;

// The key a CLI command or daemon connects as (admin key, host key); set once at start.
export function useIdentity(key: SigningKey | null): void {
  processIdentity = key;
}

export function httpBaseFromWs(serverUrl: string): string {
  return serverUrl.replace(/^ws(s?):/, 'http$1:').replace(/\/+$/, '');
}

async function fetchProof(serverUrl: string, name: string, key: SigningKey): Promise<Record<string, string>> {
  const response = await fetch(`${httpBaseFromWs(serverUrl)}/auth/challenge`, { signal: AbortSignal.timeout(15_000) });
  if (!response.ok) throw new Error(`challenge request answered ${response.status}`);
  const { challenge } = challengeResponseSchema.parse(await response.json());
  return { ...signAuthProof(key, challenge, name) };
}

// A stock y-websocket client, so agents use exactly what browsers use. BroadcastChannel is off:
// in one Node process it would let two providers of the same room sync behind the server's back.
// With an identity, each connection attempt carries a freshly signed single-use challenge: one is
// fetched before connecting and another right after every successful connect, ready for the
// provider's own reconnects; a refusal (4401/4403) fetches a new one and tries again later.
export function connectDocument(serverUrl: string, name: string, options: ConnectOptions = {}): DocumentConnection {
  // y-websocket adds one process 'exit' listener per provider; many documents are normal here.
  if (process.getMaxListeners() !== 0) process.setMaxListeners(0);
  const identity = options.identity === undefined ? processIdentity : options.identity;
  const doc = options.doc ?? new Y.Doc({ gc: documentGarbageCollects(name) });
  const maxBackoffMs = options.maxBackoffMs ?? 10_000;
  const provider = new WebsocketProvider(serverUrl, name, doc, {
    WebSocketPolyfill: WebSocket as unknown as typeof globalThis.WebSocket,
    disableBc: true,
    maxBackoffTime: maxBackoffMs,
    connect: identity === null,
  });
  let closed = false;
  let retry: NodeJS.Timeout | null = null;
  if (identity) {
    const refresh = async (thenConnect: boolean, attempt = 0): Promise<void> => {
      if (closed) return;
      try {
        provider.params = await fetchProof(serverUrl, name, identity);
        if (thenConnect && !closed) provider.connect();
      } catch {
        if (closed) return;
        // Jittered, capped backoff: a fleet coming back must not storm the coordinator.
        const delay = Math.min(maxBackoffMs, 200 * 2 ** attempt) * (0.5 + Math.random() / 2);
        retry = setTimeout(() => void refresh(thenConnect, attempt + 1), delay);
      }
    };
    provider.on('status', ({ status }: { status: string }) => {
      if (status === 'connected') void refresh(false);
    });
    provider.on('closed', () => {
      if (closed) return;
      retry = setTimeout(() => void refresh(true), maxBackoffMs * (0.5 + Math.random() / 2));
    });
    void refresh(true);
  }
  return {
    name,
    doc,
    provider,
    close() {
      closed = true;
      if (retry) clearTimeout(retry);
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
      reject(new Error(`no sync with ${connection.provider.serverUrl} for ${connection.name} within ${timeoutMs} ms; is the coordinator running and reachable, and may this key open the document?`));
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
