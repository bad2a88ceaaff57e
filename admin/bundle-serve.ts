import { promises as fs } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { z } from 'zod';
import { subcommand } from '../cli/command.js';
import { defineCommand, option, portSchema } from '../cli/options.js';
import { CACHE_PATH_PATTERN } from '../shared/bundle/format.js';
import { serveFile } from '../shared/node/serve-range.js';

// `outpost bundle serve-cache`: a host with no relay serves the binary cache `bundle apply
// --cache-dir` wrote, so its agent fetches with `--substituter http://127.0.0.1:PORT` (the agent
// fetches narinfos over HTTP only). Read-only, cache files only, with byte ranges for resumes;
// it holds no key and checks nothing: the agent verifies every narinfo signature and Nix every
// NAR hash, as with any cache.

const CONTENT_TYPES: [RegExp, string][] = [
  [/^nix-cache-info$/, 'text/x-nix-cache-info'],
  [/\.narinfo$/, 'text/x-nix-narinfo'],
  [/^nar\//, 'application/x-nix-nar'],
];

const serveSpec = defineCommand({
  name: 'bundle serve-cache',
  summary: 'serve a --cache-dir written by bundle apply to the agents of a host with no relay',
  usage: 'outpost bundle serve-cache --cache-dir DIR [--listen HOST] [--port N]',
  options: z.object({
    cacheDir: option(z.string().min(1, 'give the directory bundle apply --cache-dir wrote'), {
      placeholder: 'DIR',
      description: 'the binary cache bundle apply --cache-dir wrote',
    }),
    listen: option(z.string().min(1).default('127.0.0.1'), {
      placeholder: 'HOST',
      description: 'address to listen on (the agent runs on this host: keep loopback)',
    }),
    port: option(portSchema.default(8422), {
      placeholder: 'N',
      description: 'TCP port (0 picks a free one and prints it)',
    }),
  }),
  examples: [
    'outpost bundle serve-cache --cache-dir /var/lib/outpost-bundle-cache --port 8422   # agent: --substituter http://127.0.0.1:8422',
  ],
});

export const serveCacheCommand = subcommand(serveSpec, async (o) => {
  const stat = await fs.stat(o.cacheDir).catch(() => null);
  if (!stat?.isDirectory()) {
    console.error(
      `outpost bundle serve-cache: ${o.cacheDir} is not a directory: give the --cache-dir bundle apply wrote`,
    );
    return 1;
  }
  const server = createServer((req, res) => {
    // No decoding: cache file names are plain ASCII, so an escaped name is simply not one.
    const path = (req.url ?? '/').split('?')[0]!.replace(/^\/+/, '');
    const type = CACHE_PATH_PATTERN.test(path) ? CONTENT_TYPES.find(([p]) => p.test(path))?.[1] : undefined;
    if ((req.method !== 'GET' && req.method !== 'HEAD') || !type) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
      return;
    }
    const file = join(o.cacheDir, path);
    fs.stat(file).then(
      (info) =>
        info.isFile()
          ? serveFile(req, res, file, type, info.size)
          : res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n'),
      () => res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n'),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port, o.listen, resolve);
  });
  const port = (server.address() as AddressInfo).port;
  const url = `http://${o.listen.includes(':') ? `[${o.listen}]` : o.listen}:${port}`;
  console.log(JSON.stringify({ event: 'listening', url, port }));
  console.error(`serving ${o.cacheDir} at ${url}: give the agent --substituter ${url}; Ctrl-C stops`);
  await new Promise<void>((resolve) => {
    const stop = (): void => {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      resolve();
    };
    process.on('SIGINT', stop);
    process.on('SIGTERM', stop);
  });
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return 0;
});
