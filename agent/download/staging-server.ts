import { createReadStream, promises as fs } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { join } from 'node:path';

// The staging directory as an HTTP binary cache on 127.0.0.1, so Nix can import a NAR while the
// agent is still downloading it instead of after: on a slow link the import then overlaps the
// transfer instead of coming on top of it (download.ts starts this for downloads that take a
// while; on a fast link importing the finished files afterwards costs less CPU).
//
// A NAR still in progress is served as it reaches the disk, following the file; one already
// complete is served from disk. What Nix receives early has not been hash-checked yet, but Nix
// checks NarHash (signed) itself before it registers anything, exactly as it does for a NAR
// from any cache. When the downloader has to throw a file away (a hash mismatch, a cache that
// ignored Range) or gives up on it, the response is cut: Nix then fails, and the agent imports
// once more from the complete staging directory afterwards. Streaming is only ever a shortcut.

export interface FileFeed {
  // Bytes of the file on disk (the .part file while in progress).
  onDisk: number;
  // Bumped whenever the file is thrown away and started over.
  generation: number;
  state: 'pending' | 'complete' | 'failed';
}

export interface StagingFeeds {
  get(hash: string): FileFeed | undefined;
  // Nix asked for this file: fetch it next if it is still queued.
  want(hash: string): void;
  // Resolves at the next change of any feed (bytes on disk, restart, completion, failure).
  changed(): Promise<void>;
}

export interface StagingServer {
  url: string;
  close(): void;
}

const READ_BYTES = 256 * 1024;
// Nix opens up to http-connections (25) at once. Any local process can connect to 127.0.0.1 too:
// what it can get is the closure that is about to be in the world-readable store anyway, and it
// cannot make the agent hold more than this many read buffers (nor break the import: Nix's
// refused connections fail the streaming import, and the import from the files follows).
const MAX_CONNECTIONS = 64;
const CACHE_FILES = /^\/(nix-cache-info|[0-9a-df-np-sv-z]{32}\.narinfo)$/;
const NAR_FILE = /^\/nar\/([0-9a-df-np-sv-z]{32})\.nar$/;

function notFound(response: ServerResponse): void {
  response.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
}

// Writes and waits for the socket to take it (backpressure).
function send(response: ServerResponse, bytes: Uint8Array): Promise<void> {
  return new Promise((resolve, reject) => {
    if (response.destroyed) {
      reject(new Error('Nix closed the connection'));
      return;
    }
    if (response.write(bytes)) resolve();
    else {
      const onDrain = (): void => {
        response.off('close', onClose);
        resolve();
      };
      const onClose = (): void => {
        response.off('drain', onDrain);
        reject(new Error('Nix closed the connection'));
      };
      response.once('drain', onDrain);
      response.once('close', onClose);
    }
  });
}

async function openWhenPresent(
  files: { part: string; final: string },
  feed: FileFeed,
  feeds: StagingFeeds,
): Promise<FileHandle | null> {
  for (;;) {
    if (feed.state === 'failed') return null;
    if (feed.onDisk > 0 || feed.state === 'complete') {
      try {
        return await fs.open(feed.state === 'complete' ? files.final : files.part, 'r');
      } catch {
        // Renamed or thrown away between the check and the open: look again.
        if (feed.state === 'complete') return null;
      }
    }
    await feeds.changed();
  }
}

// Follows a file as the downloader writes it, from byte 0 to its end.
async function follow(
  response: ServerResponse,
  files: { part: string; final: string },
  feed: FileFeed,
  feeds: StagingFeeds,
): Promise<void> {
  const generation = feed.generation;
  const handle = await openWhenPresent(files, feed, feeds);
  if (!handle) {
    response.destroy();
    return;
  }
  try {
    const buffer = Buffer.allocUnsafe(READ_BYTES);
    let sent = 0;
    for (;;) {
      if (feed.generation !== generation || feed.state === 'failed') {
        // What Nix has is no prefix of the file any more.
        response.destroy();
        return;
      }
      const onDisk = feed.state === 'complete' ? (await handle.stat()).size : feed.onDisk;
      if (sent < onDisk) {
        const { bytesRead } = await handle.read(buffer, 0, Math.min(READ_BYTES, onDisk - sent), sent);
        if (bytesRead === 0) throw new Error('the staged file is shorter than written');
        await send(response, buffer.subarray(0, bytesRead));
        sent += bytesRead;
        continue;
      }
      if (feed.state === 'complete') {
        response.end();
        return;
      }
      await feeds.changed();
    }
  } finally {
    await handle.close().catch(() => undefined);
  }
}

async function answer(
  dir: string,
  feeds: StagingFeeds,
  request: IncomingMessage,
  response: ServerResponse,
): Promise<void> {
  const path = (request.url ?? '').split('?')[0]!;
  if (request.method !== 'GET' && request.method !== 'HEAD') {
    notFound(response);
    return;
  }
  if (CACHE_FILES.test(path)) {
    const text = await fs.readFile(join(dir, path)).catch(() => null);
    if (!text) {
      notFound(response);
      return;
    }
    response.writeHead(200, { 'content-length': String(text.length) });
    response.end(request.method === 'HEAD' ? undefined : text);
    return;
  }
  const nar = NAR_FILE.exec(path);
  const hash = nar?.[1];
  const feed = hash ? feeds.get(hash) : undefined;
  if (!hash || !feed || feed.state === 'failed') {
    notFound(response);
    return;
  }
  const final = join(dir, 'nar', `${hash}.nar`);
  if (feed.state === 'complete') {
    const size = (await fs.stat(final)).size;
    response.writeHead(200, { 'content-type': 'application/x-nix-nar', 'content-length': String(size) });
    if (request.method === 'HEAD') response.end();
    else
      createReadStream(final, { highWaterMark: READ_BYTES })
        .on('error', () => response.destroy())
        .pipe(response);
    return;
  }
  feeds.want(hash);
  // Length unknown until the file is complete (a compressed NAR has no signed size): chunked.
  response.writeHead(200, { 'content-type': 'application/x-nix-nar' });
  response.flushHeaders();
  if (request.method === 'HEAD') {
    response.end();
    return;
  }
  await follow(response, { part: `${final}.part`, final }, feed, feeds);
}

export function startStagingServer(dir: string, feeds: StagingFeeds): Promise<StagingServer> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((request, response) => {
    answer(dir, feeds, request, response).catch(() => response.destroy());
  });
  server.maxConnections = MAX_CONNECTIONS;
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      resolve({
        url: `http://127.0.0.1:${port}`,
        close() {
          server.close();
          for (const socket of sockets) socket.destroy();
        },
      });
    });
  });
}
