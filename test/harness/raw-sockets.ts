import { connect, type Socket } from 'node:net';

// Raw TCP towards a server under attack: whatever bytes an attacker would send, no HTTP or
// websocket library in between to tidy them up.

export const WS_UPGRADE_HEADERS =
  'Host: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n';

// `localAddress` (another loopback address, 127.0.0.2 …) makes the attacker a different client
// address from the test's own clients; the server is still 127.0.0.1.
export function openSocket(port: number, localAddress?: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port, localAddress }, () => resolve(socket));
    socket.once('error', reject);
  });
}

// Sends `bytes`, then collects what comes back until the server closes or `timeoutMs` passes.
export async function exchange(
  port: number,
  bytes: string | Uint8Array,
  options: { timeoutMs?: number; after?: (socket: Socket) => void; keepOpen?: boolean } = {},
): Promise<{ text: string; closed: boolean }> {
  const socket = await openSocket(port);
  return new Promise((resolve) => {
    let text = '';
    let done = false;
    const finish = (closed: boolean): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      resolve({ text, closed });
    };
    const timer = setTimeout(() => finish(false), options.timeoutMs ?? 3000);
    socket.on('data', (d: Buffer) => {
      text += d.toString('latin1');
      // A complete answer other than a websocket handshake: no need to wait for the close.
      if (!options.keepOpen && text.includes('\r\n\r\n') && statusOf(text) !== 101)
        setTimeout(() => finish(socket.destroyed), 50);
    });
    socket.on('error', () => finish(true));
    socket.on('close', () => finish(true));
    socket.write(bytes);
    options.after?.(socket);
  });
}

// The status code of the first response line, or null when none came.
export function statusOf(text: string): number | null {
  const match = /^HTTP\/1\.1 (\d{3})/.exec(text);
  return match ? Number(match[1]) : null;
}

// Resolves when the socket is closed by the other side (or errors), with how long that took.
export function whenClosed(socket: Socket): Promise<number> {
  const started = Date.now();
  return new Promise((resolve) => {
    if (socket.destroyed) return resolve(0);
    socket.once('close', () => resolve(Date.now() - started));
  });
}
