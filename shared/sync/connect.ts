import WebSocket from 'ws';
import { WebsocketProvider } from 'y-websocket';
import * as Y from 'yjs';
import type { SigningKey } from '../crypto/keys.js';
import { documentGarbageCollects } from '../documents/names.js';
import { challengeResponseSchema, signAuthProof } from './auth-proof.js';

export interface DocumentConnection {
  name: string;
  doc: Y.Doc;
  provider: WebsocketProvider;
  close(): void;
}

export interface ConnectOptions {
  doc?: Y.Doc;
  // Reconnect backoff: base × 2^attempt, capped, with jitter. Agents on satellite links use a
  // cap of minutes so a fleet coming back after an outage does not storm its peers.
  maxBackoffMs?: number;
  baseBackoffMs?: number;
  // The key this connection proves at the upgrade; defaults to the process identity.
  identity?: SigningKey | null;
  // Called with the endpoint now in use after a failover.
  onEndpoint?: (url: string) => void;
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

export function backoffDelay(
  attempt: number,
  baseMs: number,
  capMs: number,
  random: () => number = Math.random,
): number {
  return Math.min(capMs, baseMs * 2 ** Math.min(attempt, 30)) * (0.5 + random() / 2);
}

// A stock y-websocket client, so agents use exactly what browsers use, with the reconnect loop
// taken over: y-websocket's own backoff has no jitter and knows one URL. After every closed or
// failed connection we schedule the next attempt ourselves (jittered exponential backoff), move
// to the next endpoint (coordinator or relay) when this one keeps failing, and, with an identity,
// sign a fresh single-use challenge from that endpoint. BroadcastChannel is off: in one Node
// process it would let two providers of the same room sync behind the server's back.
export function connectDocument(
  endpoints: string | string[],
  name: string,
  options: ConnectOptions = {},
): DocumentConnection {
  // y-websocket adds one process 'exit' listener per provider; many documents are normal here.
  if (process.getMaxListeners() !== 0) process.setMaxListeners(0);
  const urls = typeof endpoints === 'string' ? [endpoints] : endpoints;
  if (urls.length === 0) throw new Error(`no endpoint to connect ${name} to`);
  const identity = options.identity === undefined ? processIdentity : options.identity;
  const doc = options.doc ?? new Y.Doc({ gc: documentGarbageCollects(name) });
  const capMs = options.maxBackoffMs ?? 10_000;
  const baseMs = options.baseBackoffMs ?? 250;
  const provider = new WebsocketProvider(urls[0]!, name, doc, {
    WebSocketPolyfill: WebSocket as unknown as typeof globalThis.WebSocket,
    disableBc: true,
    connect: false,
  });
  let closed = false;
  let timer: NodeJS.Timeout | null = null;
  let attempt = 0;
  let endpoint = 0;
  let failuresHere = 0;

  const schedule = (delayMs: number): void => {
    if (closed || timer) return;
    timer = setTimeout(() => {
      timer = null;
      void connectNow();
    }, delayMs);
  };
  const failed = (): void => {
    attempt += 1;
    failuresHere += 1;
    if (urls.length > 1 && failuresHere >= 2) {
      endpoint = (endpoint + 1) % urls.length;
      failuresHere = 0;
      options.onEndpoint?.(urls[endpoint]!);
    }
    schedule(backoffDelay(attempt, baseMs, capMs));
  };
  const connectNow = async (): Promise<void> => {
    if (closed) return;
    provider.serverUrl = urls[endpoint]!;
    if (identity) {
      try {
        provider.params = await fetchProof(urls[endpoint]!, name, identity);
      } catch {
        failed();
        return;
      }
    }
    if (!closed) provider.connect();
  };
  provider.on('sync', (synced: boolean) => {
    if (!synced) return;
    attempt = 0;
    failuresHere = 0;
  });
  provider.on('connection-close', () => {
    // Stop y-websocket's own reconnect; ours follows.
    provider.shouldConnect = false;
    if (!closed) failed();
  });
  void connectNow();
  return {
    name,
    doc,
    provider,
    close() {
      closed = true;
      if (timer) clearTimeout(timer);
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
