import { createReadStream, promises as fs } from 'node:fs';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';

// An HTTP binary cache over a file:// cache directory, as Nix and fetchNarinfo see one. Only the
// file names a cache can contain are served, so no request can reach outside the directory.
// NAR files honour `Range: bytes=N-` (as S3 and nginx do), and can be served slowly on purpose:
// throttled to a rate, or dripped a few bytes at a time (the slow-retrieval attack).

export interface CacheServerOptions {
  // NAR bodies at this many bytes per second (narinfos are always served at once).
  narBytesPerSecond?: number;
  // NAR bodies trickle `bytes` every `everyMs`.
  drip?: { bytes: number; everyMs: number };
}

// One NAR body transfer: what was asked for and how many body bytes actually went out.
export interface NarTransfer {
  path: string;
  range: string | null;
  status: number;
  bytesSent: number;
}

export interface BinaryCacheServer {
  url: string;
  port: number;
  // "GET /<hash>.narinfo", "HEAD /nar/<hash>.nar", … in arrival order, for assertions.
  requests: string[];
  narTransfers: NarTransfer[];
  close(): Promise<void>;
}

const SERVED_FILES: readonly { pattern: RegExp; contentType: string }[] = [
  { pattern: /^\/nix-cache-info$/, contentType: 'text/x-nix-cache-info' },
  { pattern: /^\/[0-9a-df-np-sv-z]{32}\.narinfo$/, contentType: 'text/x-nix-narinfo' },
  { pattern: /^\/nar\/[0-9a-df-np-sv-z]{52}\.nar(\.[a-z0-9]{1,8})?$/, contentType: 'application/x-nix-nar' },
];

// Writes `body` in slices of `sliceBytes` every `everyMs`, counting what went out.
function trickle(
  response: ServerResponse,
  body: Buffer,
  sliceBytes: number,
  everyMs: number,
  transfer: NarTransfer,
): void {
  let offset = 0;
  const step = (): void => {
    if (response.destroyed) return;
    if (offset >= body.length) {
      response.end();
      return;
    }
    const slice = body.subarray(offset, offset + sliceBytes);
    offset += slice.length;
    response.write(slice, () => {
      transfer.bytesSent += slice.length;
    });
    setTimeout(step, everyMs);
  };
  step();
}

async function answer(
  dir: string,
  request: IncomingMessage,
  response: ServerResponse,
  options: CacheServerOptions,
  transfers: NarTransfer[],
): Promise<void> {
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
  const isNar = path.startsWith('/nar/');
  const range = isNar ? /^bytes=(\d+)-$/.exec(request.headers.range ?? '') : null;
  const start = range ? Number(range[1]) : 0;
  if (range && start >= size) {
    response.writeHead(416, { 'content-range': `bytes */${size}` }).end();
    return;
  }
  const headers: Record<string, string> = {
    'content-type': served.contentType,
    'content-length': String(size - start),
    'accept-ranges': 'bytes',
  };
  if (range) headers['content-range'] = `bytes ${start}-${size - 1}/${size}`;
  response.writeHead(range ? 206 : 200, headers);
  if (request.method === 'HEAD') {
    response.end();
    return;
  }
  if (!isNar) {
    createReadStream(file)
      .on('error', () => response.destroy())
      .pipe(response);
    return;
  }
  const transfer: NarTransfer = { path, range: request.headers.range ?? null, status: range ? 206 : 200, bytesSent: 0 };
  transfers.push(transfer);
  const body = (await fs.readFile(file)).subarray(start);
  if (options.drip) trickle(response, body, options.drip.bytes, options.drip.everyMs, transfer);
  else if (options.narBytesPerSecond)
    trickle(response, body, Math.max(1, Math.round(options.narBytesPerSecond / 20)), 50, transfer);
  else response.end(body, () => (transfer.bytesSent = body.length));
}

export function serveBinaryCache(dir: string, options: CacheServerOptions = {}): Promise<BinaryCacheServer> {
  const requests: string[] = [];
  const narTransfers: NarTransfer[] = [];
  const server = createServer((request, response) => {
    requests.push(`${request.method} ${request.url}`);
    answer(dir, request, response, options, narTransfers).catch(() => response.destroy());
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      resolve({
        url: `http://127.0.0.1:${port}`,
        port,
        requests,
        narTransfers,
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
