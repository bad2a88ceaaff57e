import type { ServerResponse } from 'node:http';

// A JSON answer that never throws out of a handler: an answer already started, or a socket
// already gone, is ended instead (the client sees a cut connection, the server stays up).
export function respondJson(res: ServerResponse, status: number, body: unknown): void {
  try {
    if (res.headersSent || res.writableEnded || res.destroyed) {
      if (!res.writableEnded) res.destroy();
      return;
    }
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  } catch {
    res.destroy();
  }
}
