import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { z } from 'zod';
import { runCommand, runDaemon } from '../cli/command.js';
import { defineCommand, logLevelOption, numberSchema, option, portSchema } from '../cli/options.js';
import type { Logger } from '../shared/log.js';
import { createLogger } from '../shared/node/log.js';
import { createWebApp, DEFAULT_WEB_APP_DIR } from '../shared/node/web-app.js';
import { createWebForwarder, DEFAULT_FORWARDER_LIMITS } from '../shared/node/web-forwarder.js';
import { coordinatorOption } from './common-options.js';

const REQUEST_HEAD_TIMEOUT_MS = 10_000;

// `outpost web`: the web editor served from the admin's own installation, not from the
// coordinator. A coordinator or relay serving the page serves the code that holds the admin's
// passphrase and key; a compromised one could serve a page that steals them. Here the page comes
// from the build beside this command (the same files the coordinator would serve, but the ones
// this machine installed), on a loopback address only, and its API requests and websockets are
// forwarded unchanged to the coordinator so the page stays same-origin (docs/web.md).

const LOOPBACK = /^(127\.\d{1,3}\.\d{1,3}\.\d{1,3}|::1|localhost)$/;

export const webCommand = defineCommand({
  name: 'web',
  summary:
    "serve the web editor from this installation on 127.0.0.1, talking to the coordinator (not the coordinator's copy of the page)",
  usage: 'outpost web --coordinator URL [--coordinator URL …] [--port N] [--listen 127.0.0.1]',
  options: z.object({
    coordinator: coordinatorOption,
    listen: option(
      z
        .string()
        .regex(
          LOOPBACK,
          'expected a loopback address (127.0.0.1, ::1 or localhost): the page holds your key, serve it to this machine only',
        )
        .default('127.0.0.1'),
      { placeholder: 'HOST', description: 'loopback address to serve the page on (only this machine may reach it)' },
    ),
    port: option(portSchema.default(8430), {
      placeholder: 'N',
      description: 'TCP port (0 picks a free one and prints it); the page keeps its stored keys per port',
    }),
    maxConnections: option(numberSchema('a whole number').int().min(1).max(100_000).default(512), {
      placeholder: 'N',
      description: 'connections the browser may hold open at once (page loads, API requests, websockets)',
    }),
    logLevel: logLevelOption,
  }),
  examples: ['outpost web --coordinator wss://fleet.example.org     # then open the printed URL'],
});

export type WebOptions = z.output<typeof webCommand.options>;

export function runWebCommand(argv: string[]): Promise<number> {
  return runCommand(webCommand, argv, async (options) => {
    const logger = createLogger('web', options.logLevel);
    const served = await serveWebEditor({ ...options, logger });
    return runDaemon('web', logger, served, { url: served.url, port: served.port });
  });
}

export interface ServedWebEditor {
  url: string;
  port: number;
  close(): Promise<void>;
}

export async function serveWebEditor(options: {
  // Several coordinators of one fleet: forwarded to one at a time, the next when it is unreachable.
  coordinator: string | readonly string[];
  listen: string;
  port: number;
  maxConnections: number;
  logger: Logger;
  webAppDir?: string;
}): Promise<ServedWebEditor> {
  const { logger } = options;
  const webApp = createWebApp(options.webAppDir ?? DEFAULT_WEB_APP_DIR);
  const forwarder = createWebForwarder(
    options.coordinator,
    DEFAULT_FORWARDER_LIMITS,
    (what, error) =>
      logger.warn({ event: 'web-forward-failed', what, err: error.message }, `forwarding to the coordinator failed`),
    (from, to) =>
      logger.warn({ event: 'web-forward-switched', from, to }, `${from} is unreachable: forwarding to ${to} now`),
  );
  const server: Server = createServer((req, res) => {
    try {
      const path = new URL(req.url ?? '/', 'http://localhost').pathname;
      if (webApp.handle(req, res, path)) return;
      // The page's challenge and API requests, and nothing else, go to the coordinator.
      if ((req.method === 'GET' || req.method === 'POST') && (path.startsWith('/api/') || path === '/auth/challenge'))
        return forwarder.forwardRequest(req, res);
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: `outpost web serves the web editor and forwards /api/ only; not ${path}` }));
    } catch {
      res.destroy();
    }
  });
  server.on('upgrade', (req, socket, head) => forwarder.forwardUpgrade(req, socket, head));
  server.on('clientError', (_error, socket) => socket.destroy());
  server.maxConnections = options.maxConnections;
  // A connection that has not sent its whole request head (or upgrade) by then is dropped, as
  // the coordinator does by default (--upgrade-timeout 10).
  server.headersTimeout = REQUEST_HEAD_TIMEOUT_MS;
  server.requestTimeout = REQUEST_HEAD_TIMEOUT_MS * 3;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.listen, () => {
      server.off('error', reject);
      resolve();
    });
  }).catch((error: NodeJS.ErrnoException) => {
    throw new Error(
      error.code === 'EADDRINUSE'
        ? `port ${options.port} on ${options.listen} is in use: choose another with --port`
        : `cannot listen on ${options.listen}:${options.port} (${error.message}): check --listen and --port`,
    );
  });
  const port = (server.address() as AddressInfo).port;
  const host = options.listen.includes(':') ? `[${options.listen}]` : options.listen;
  const url = `http://${host}:${port}/`;
  logger.info({ event: 'web-serving', url, coordinator: options.coordinator }, `open ${url} in your browser`);
  return {
    url,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        forwarder.close();
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
