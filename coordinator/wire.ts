import * as encoding from 'lib0/encoding';
import { WebSocket } from 'ws';
import { parseDocName } from '../shared/documents/names.js';

// y-websocket wire protocol (y-websocket/src/y-websocket.js): the first varUint is the message type.
export const MESSAGE_SYNC = 0;
export const MESSAGE_AWARENESS = 1;
export const MESSAGE_AUTH = 2;
export const MESSAGE_QUERY_AWARENESS = 3;

// Document names a peer may open, directly or over a relay link: a host's desired or status
// document, or a fleet-wide one. Anything else (`../../etc/passwd`, NUL bytes, 100,000
// characters) is refused before a document is loaded.
export function isServedDocument(name: string): boolean {
  return (name.length <= 256 && parseDocName(name) !== null) || /^fleet\/[a-z0-9-]{1,63}$/.test(name);
}

export function send(ws: WebSocket, message: Uint8Array): void {
  if (ws.readyState === WebSocket.OPEN) ws.send(message, (error) => error && ws.terminate());
}

// A websocket close reason is at most 123 bytes of UTF-8 (ws throws on longer ones): cut it on a
// character boundary.
export function closeReason(text: string): string {
  if (Buffer.byteLength(text) <= 123) return text;
  let cut = text.slice(0, 120);
  while (Buffer.byteLength(cut) > 120) cut = cut.slice(0, -1);
  // The ellipsis is 3 bytes: 123 at most.
  return `${cut}…`;
}

// Closes a socket without ever throwing (a bad code or reason would).
export function closeSocket(ws: Pick<WebSocket, 'close' | 'terminate'>, code: number, reason: string): void {
  try {
    ws.close(code, closeReason(reason));
  } catch {
    ws.terminate();
  }
}

export function syncMessage(write: (encoder: encoding.Encoder) => void): Uint8Array {
  const encoder = encoding.createEncoder();
  encoding.writeVarUint(encoder, MESSAGE_SYNC);
  write(encoder);
  return encoding.toUint8Array(encoder);
}

export function awarenessMessage(update: Uint8Array): Uint8Array {
  const encoder = encoding.createEncoder();
  encoding.writeVarUint(encoder, MESSAGE_AWARENESS);
  encoding.writeVarUint8Array(encoder, update);
  return encoding.toUint8Array(encoder);
}
