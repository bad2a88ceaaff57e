import { createReadStream, promises as fs } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';

// An HTTP binary cache over a file:// cache directory, as Nix and fetchNarinfo see one. Only the
// file names a cache can contain are served, so no request can reach outside the directory.

export interface BinaryCacheServer {
  url: string;
  port: number;
  // "GET /<hash>.narinfo", "HEAD /nar/<hash>.nar", … in arrival order, for assertions.
  requests: string[];
  close(): Promise<void>;
}

const SERVED_FILES: readonly { pattern: RegExp; contentType: string }[] = [
  { pattern: /^\/nix-cache-info$/, contentType: 'text/x-nix-cache-info' },
  { pattern: /^\/[0-9a-df-np-sv-z]{32}\.narinfo$/, contentType: 'text/x-nix-narinfo' },
  { pattern: /^\/nar\/[0-9a-df-np-sv-z]{52}\.nar(\.[a-z0-9]{1,8})?$/, contentType: 'application/x-nix-nar' },
];

async function answer(dir: string, request: IncomingMessage, response: ServerResponse): Promise<void> {
  const path = (request.url ?? '').split('?')[0]!;
  const served = SERVED_FILES.find((file) => file.pattern.test(path));
  if ((request.method !== 'GET' && request.method !== 'HEAD') || !served) {
    response.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
    return;
  }
  const file = join(dir, path);
  let size: number;
  try {
    const stat = await fs.stat(file);
    if (!stat.isFile()) throw new Error('not a file');
    size = stat.size;
  } catch {
    response.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
    return;
  }
  response.writeHead(200, { 'content-type': served.contentType, 'content-length': String(size) });
  if (request.method === 'HEAD') {
    response.end();
    return;
  }
  const stream = createReadStream(file);
  stream.on('error', () => response.destroy());
  stream.pipe(response);
}

export function serveBinaryCache(dir: string): Promise<BinaryCacheServer> {
  const requests: string[] = [];
  const server = createServer((request, response) => {
    requests.push(`${request.method} ${request.url}`);
    answer(dir, request, response).catch(() => response.destroy());
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      resolve({
        url: `http://127.0.0.1:${port}`,
        port,
        requests,
        close: () =>
          new Promise<void>((done) => {
            // Nix and fetch keep connections alive; without this close() waits for them.
            server.closeAllConnections();
            server.close(() => done());
          }),
      });
    });
  });
}
