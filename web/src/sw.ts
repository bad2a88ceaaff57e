/// <reference lib="webworker" />
// The web editor's service worker: keeps the app shell (the page and its built assets, listed by
// the build) so the editor loads with no link. The page is fetched from the network first (so a
// new build reaches the browser) and from the cache when that fails; hashed assets come from the
// cache. Nothing else (APIs, challenges, documents over websockets) passes through here.
declare const self: ServiceWorkerGlobalScope;

// Replaced by the build (web/vite.config.ts) with {version, files}.
const PRECACHE: { version: string; files: string[] } = JSON.parse('__OUTPOST_PRECACHE__');
const CACHE = `outpost-shell-${PRECACHE.version}`;
const SHELL = new Set(PRECACHE.files);

self.addEventListener('install', (event) => {
  event.waitUntil(
    caches
      .open(CACHE)
      .then((cache) => cache.addAll(PRECACHE.files))
      .then(() => self.skipWaiting()),
  );
});

self.addEventListener('activate', (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((names) =>
        Promise.all(names.filter((n) => n.startsWith('outpost-shell-') && n !== CACHE).map((n) => caches.delete(n))),
      )
      .then(() => self.clients.claim()),
  );
});

async function pageFirstFromNetwork(request: Request): Promise<Response> {
  const cache = await caches.open(CACHE);
  try {
    const response = await fetch(request);
    if (response.ok) await cache.put('/', response.clone());
    return response;
  } catch {
    return (await cache.match('/')) ?? Response.error();
  }
}

self.addEventListener('fetch', (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== 'GET' || url.origin !== self.location.origin) return;
  if (event.request.mode === 'navigate' && (url.pathname === '/' || url.pathname === '/index.html')) {
    event.respondWith(pageFirstFromNetwork(event.request));
    return;
  }
  if (SHELL.has(url.pathname)) {
    event.respondWith(caches.match(url.pathname).then((cached) => cached ?? fetch(event.request)));
  }
});
