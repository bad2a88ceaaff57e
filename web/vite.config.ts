import { createHash } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { defineConfig, type Plugin } from 'vite';

// `npm run build` builds the web editor into dist/web, which coordinators and relays serve at /
// (shared/node/web-app.ts). Two entries: the page and the service worker (sw.js at the root, so
// its scope is the whole app), which gets the list of files to keep for offline use.
const here = (path: string): string => fileURLToPath(new URL(path, import.meta.url));
// The minifier may quote it with ', " or `.
const PRECACHE_PLACEHOLDER = /(["'`])__OUTPOST_PRECACHE__\1/;

// The page may use only the cross-platform core: shared/node/ and Node built-ins are errors here
// (the tsconfig without Node types catches them when type-checking; this catches them when bundling).
function browserOnly(): Plugin {
  return {
    name: 'outpost-browser-only',
    enforce: 'pre',
    resolveId(source, importer) {
      if (!importer || importer.includes('/node_modules/')) return null;
      if (source.startsWith('node:') || /(^|\/)shared\/node\//.test(source) || source.includes('/node/'))
        this.error(
          `${importer} imports ${source}: the web editor runs in the browser and may import only the cross-platform shared/ core (not shared/node/ or Node built-ins)`,
        );
      return null;
    },
  };
}

function precacheList(): Plugin {
  return {
    name: 'outpost-precache-list',
    generateBundle(_options, bundle) {
      const sw = Object.values(bundle).find((file) => file.type === 'chunk' && file.fileName === 'sw.js');
      if (sw?.type !== 'chunk') this.error('the service worker entry (sw.js) is missing from the bundle');
      const files = Object.keys(bundle)
        .filter((name) => name !== 'sw.js' && !name.endsWith('.map'))
        .map((name) => `/${name}`)
        .sort();
      const list = ['/', ...files];
      const version = createHash('sha256').update(list.join('\n')).digest('hex').slice(0, 16);
      if (!PRECACHE_PLACEHOLDER.test(sw.code)) this.error('sw.js has no precache placeholder');
      sw.code = sw.code.replace(PRECACHE_PLACEHOLDER, JSON.stringify(JSON.stringify({ version, files: list })));
    },
  };
}

export default defineConfig({
  root: here('.'),
  base: '/',
  publicDir: false,
  logLevel: 'warn',
  plugins: [browserOnly(), precacheList()],
  oxc: { jsx: { runtime: 'automatic', importSource: 'preact' } },
  build: {
    outDir: here('../dist/web'),
    emptyOutDir: true,
    target: 'es2022',
    sourcemap: false,
    rollupOptions: {
      input: { main: here('index.html'), sw: here('src/sw.ts') },
      output: {
        entryFileNames: (chunk) => (chunk.name === 'sw' ? 'sw.js' : 'assets/[name]-[hash].js'),
      },
    },
  },
});
