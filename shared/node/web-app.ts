import { promises as fs } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { join, relative, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { respondJson } from './http-json.js';

// Serves the web editor (web/, built by `npm run build` into dist/web) at `/`, from coordinators
// and relays alike, so a site's relay serves the editor to local staff when the uplink is down.
// Only the files the build produced are served: their list is read once and a request path is
// looked up in it, never joined onto a directory, so `..`, encoded slashes or symlinks cannot
// reach anything else. Everything is held in memory (the build is a few hundred KiB).

// Where the build lands: dist/web, beside this file's dist/shared/node.
export const DEFAULT_WEB_APP_DIR = fileURLToPath(new URL('../../web/', import.meta.url));

// More than a build ever has; a directory holding something else entirely is not served whole.
const MAX_FILES = 200;
const MAX_TOTAL_BYTES = 16 * 1024 * 1024;
const MAX_PATH_LENGTH = 256;

const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.webmanifest': 'application/manifest+json',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.txt': 'text/plain; charset=utf-8',
};

// The page runs only its own scripts and talks only to the server it came from (the websocket
// and HTTP APIs are same-origin); nothing may frame it.
const SECURITY_HEADERS = {
  'content-security-policy':
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; worker-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cross-origin-opener-policy': 'same-origin',
};

interface BuiltFile {
  body: Buffer;
  contentType: string;
  // Hashed assets never change under their name; the page and the service worker are checked
  // at every load so an update reaches the browser.
  immutable: boolean;
}

export interface WebApp {
  // True when `path` is the editor's (answered, possibly with 404 when the build is missing).
  handle(req: IncomingMessage, res: ServerResponse, path: string): boolean;
}

async function listFiles(dir: string): Promise<string[]> {
  const found: string[] = [];
  const walk = async (at: string): Promise<void> => {
    for (const entry of await fs.readdir(at, { withFileTypes: true })) {
      if (found.length > MAX_FILES) return;
      const path = join(at, entry.name);
      // Regular files only: a symlink in the build directory is not followed.
      if (entry.isDirectory()) await walk(path);
      else if (entry.isFile()) found.push(path);
    }
  };
  await walk(dir);
  return found;
}

async function loadBuild(dir: string): Promise<Map<string, BuiltFile>> {
  const files = await listFiles(dir).catch((error: NodeJS.ErrnoException) => {
    throw new Error(
      error.code === 'ENOENT' ? `${dir} does not exist: build the web editor with npm run build` : error.message,
    );
  });
  if (files.length > MAX_FILES)
    throw new Error(`${dir} holds more than ${MAX_FILES} files: not a web editor build; rebuild with npm run build`);
  const served = new Map<string, BuiltFile>();
  let total = 0;
  for (const file of files) {
    const name = relative(dir, file).split(sep).join('/');
    const extension = name.slice(name.lastIndexOf('.'));
    const contentType = CONTENT_TYPES[extension];
    if (!contentType || name.endsWith('.map')) continue;
    const body = await fs.readFile(file);
    total += body.length;
    if (total > MAX_TOTAL_BYTES)
      throw new Error(`${dir} holds more than ${MAX_TOTAL_BYTES} bytes: not a web editor build; rebuild it`);
    served.set(`/${name}`, { body, contentType, immutable: name.startsWith('assets/') });
  }
  const index = served.get('/index.html');
  if (!index) throw new Error(`${dir} has no index.html: build the web editor with npm run build`);
  served.set('/', index);
  return served;
}

export function createWebApp(dir: string = DEFAULT_WEB_APP_DIR): WebApp {
  let loaded: Promise<Map<string, BuiltFile>> | null = null;
  const build = (): Promise<Map<string, BuiltFile>> => {
    loaded ??= loadBuild(dir).catch((error: Error) => {
      // Tried again at the next request: the build may appear after the server started.
      loaded = null;
      throw error;
    });
    return loaded;
  };
  const ownsPath = (path: string): boolean =>
    path === '/' ||
    path === '/index.html' ||
    path === '/sw.js' ||
    path.startsWith('/assets/') ||
    path === '/app.webmanifest';
  return {
    handle(req, res, path) {
      if (req.method !== 'GET' || path.length > MAX_PATH_LENGTH || !ownsPath(path)) return false;
      build().then(
        (files) => {
          const file = files.get(path);
          if (!file) return respondJson(res, 404, { error: `no such file of the web editor: ${path}` });
          if (res.headersSent || res.destroyed) return;
          res.writeHead(200, {
            ...SECURITY_HEADERS,
            'content-type': file.contentType,
            'content-length': file.body.length,
            'cache-control': file.immutable ? 'public, max-age=31536000, immutable' : 'no-cache',
          });
          res.end(file.body);
        },
        (error: Error) => respondJson(res, 404, { error: `the web editor is not available here: ${error.message}` }),
      );
      return true;
    },
  };
}
