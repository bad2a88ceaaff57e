import WebSocket from 'ws';
import type { SigningKey } from '../crypto/keys.js';
import { type ConnectOptions, connectDocument as connectWith, type DocumentConnection } from '../sync/connect.js';
import { fetchAuthHeaders } from '../sync/reconnect.js';

export { type DocumentConnection, waitForSync } from '../sync/connect.js';

// connectDocument on Node: the `ws` client, and no listener warning (y-websocket adds one process
// 'exit' listener per provider; many documents per process are normal for agents and relays).
// The key proved is the caller's `identity`: there is no process-wide default, so every
// connection says which key it proves (none: open-mode servers only).
export function connectDocument(
  endpoints: string | readonly string[],
  name: string,
  options: ConnectOptions,
): DocumentConnection {
  if (process.getMaxListeners() !== 0) process.setMaxListeners(0);
  return connectWith(endpoints, name, {
    WebSocketPolyfill: WebSocket as unknown as typeof globalThis.WebSocket,
    ...options,
  });
}

// Headers proving `identity` to a read-only HTTP API such as /api/documents; none without an
// identity (open-mode servers need none).
export async function proofHeaders(url: string, identity: SigningKey | null): Promise<Record<string, string>> {
  return identity ? fetchAuthHeaders(url, identity, 15_000) : {};
}
