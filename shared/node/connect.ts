import WebSocket from 'ws';
import type { SigningKey } from '../crypto/keys.js';
import { type ConnectOptions, connectDocument as connectWith, type DocumentConnection } from '../sync/connect.js';
import { fetchAuthHeaders } from '../sync/reconnect.js';

export { type DocumentConnection, waitForSync } from '../sync/connect.js';

// The largest message a server sends: a document's whole state at first sync (sync step 2), which
// coordinators and relays keep under --max-document-size (32 MiB by default, coordinator/limits.ts),
// with room for framing and one update. ws accepts 100 MiB by default: a hostile server could
// make every client hold that much per connection.
export const MAX_SERVER_MESSAGE_BYTES = 33 * 1024 * 1024;

export interface NodeConnectOptions extends ConnectOptions {
  // For servers run with a larger --max-document-size.
  maxMessageBytes?: number;
}

// connectDocument on Node: the `ws` client with maxPayload bounded, and no listener warning
// (y-websocket adds one process 'exit' listener per provider; many documents per process are
// normal for agents and relays). A message over the bound closes the connection (ws sends 1009)
// and the retry reason (onRetry, logged by daemons) says so; the reconnect loop goes on.
// The key proved is the caller's `identity`: there is no process-wide default, so every
// connection says which key it proves (none: open-mode servers only).
export function connectDocument(
  endpoints: string | readonly string[],
  name: string,
  options: NodeConnectOptions,
): DocumentConnection {
  if (process.getMaxListeners() !== 0) process.setMaxListeners(0);
  const { maxMessageBytes = MAX_SERVER_MESSAGE_BYTES, ...connectOptions } = options;
  let oversized = false;
  class BoundedWebSocket extends WebSocket {
    constructor(address: string, protocols?: string | string[]) {
      super(address, protocols ?? [], { maxPayload: maxMessageBytes });
      this.on('error', (error: Error & { code?: string }) => {
        if (error.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH') oversized = true;
      });
    }
  }
  return connectWith(endpoints, name, {
    WebSocketPolyfill: BoundedWebSocket as unknown as typeof globalThis.WebSocket,
    ...connectOptions,
    onRetry: (retry) => {
      const tooLarge = oversized;
      oversized = false;
      connectOptions.onRetry?.(
        tooLarge
          ? {
              ...retry,
              code: retry.code ?? 1009,
              reason: `the server sent a message over ${maxMessageBytes} bytes (more than any document a server keeps): closed the connection (${retry.reason})`,
            }
          : retry,
      );
    },
  });
}

// Headers proving `identity` to a read-only HTTP API such as /api/documents; none without an
// identity (open-mode servers need none).
export async function proofHeaders(url: string, identity: SigningKey | null): Promise<Record<string, string>> {
  return identity ? fetchAuthHeaders(url, identity, 15_000) : {};
}
