import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { AUTH_HEADERS, authParamsSchema } from '../shared/sync/auth-proof.js';

// Helpers that let no request throw out of a handler: URL parsing that answers null instead of
// throwing (`GET http://[` is a valid request line whose URL does not parse), answers that never
// throw when the response is already under way or gone, and a plain HTTP refusal for an upgrade.

// The path of a request URL, or null when it does not parse.
export function requestPath(url: string | undefined): string | null {
  try {
    return new URL(url ?? '/', 'http://localhost').pathname;
  } catch {
    return null;
  }
}

// The query of a request URL (empty when it does not parse).
export function requestQuery(url: string | undefined): URLSearchParams {
  try {
    return new URL(url ?? '/', 'http://localhost').searchParams;
  } catch {
    return new URLSearchParams();
  }
}

// The document a websocket upgrade asks for: the percent-decoded path without leading slashes, or
// null when the URL or its percent-encoding is malformed (`/%E0%A4%A` is a URIError).
export function upgradeDocument(url: string | undefined): string | null {
  const path = requestPath(url);
  if (path === null) return null;
  try {
    return decodeURIComponent(path).replace(/^\/+/, '');
  } catch {
    return null;
  }
}

// The one JSON answer of every handler (shared with `outpost web`): never throws.
export { respondJson } from '../shared/node/http-json.js';

// How long a refused upgrade's connection may stay after its answer, for the client to read it
// and close first (closing at once could reset the connection before the answer is read).
export const REFUSED_UPGRADE_LINGER_MS = 2_000;

// Answers an upgrade request with a plain HTTP status before any websocket exists, and makes sure
// the connection goes. Never throws. After 'upgrade' nobody reads the socket: without reading it
// the server never sees the client close or reset, and the socket (a file descriptor and a
// --max-connections-per-address slot) stayed for good (fuzz finding 3, docs/fuzzing.md). So what
// the client still sends is read and dropped, the socket is destroyed once the client has gone,
// and at the latest REFUSED_UPGRADE_LINGER_MS after the answer.
export function refuseUpgrade(socket: Duplex, status: number, statusText: string, message: string): void {
  try {
    if (!socket.writable) {
      socket.destroy();
      return;
    }
    const timer = setTimeout(() => socket.destroy(), REFUSED_UPGRADE_LINGER_MS);
    timer.unref();
    socket.once('close', () => clearTimeout(timer));
    socket.once('end', () => socket.destroy());
    socket.resume();
    socket.end(
      `HTTP/1.1 ${status} ${statusText}\r\ncontent-type: text/plain\r\nconnection: close\r\ncontent-length: ${Buffer.byteLength(message) + 1}\r\n\r\n${message}\n`,
    );
  } catch {
    socket.destroy();
  }
}

// A request header's value (the first, if repeated).
export function headerOf(req: IncomingMessage, name: string): string | undefined {
  const value = req.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

// The key proof an HTTP request carries in its headers (AUTH_HEADERS), parsed, not yet verified.
export function proofFromHeaders(req: IncomingMessage) {
  return authParamsSchema.safeParse({
    principal: headerOf(req, AUTH_HEADERS.principal),
    challenge: headerOf(req, AUTH_HEADERS.challenge),
    signature: headerOf(req, AUTH_HEADERS.signature),
  });
}
