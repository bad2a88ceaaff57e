import { promises as fs } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  type CacheMirrorOptions,
  type CacheMirrorState,
  cacheMirrorStats,
  createCacheMirrorState,
  handleCacheRequest,
  scanMirrorDirectory,
} from '../../../relay/cache-mirror.js';
import { silentLogger } from '../../../shared/log.js';
import { parseRange } from '../../../shared/node/serve-range.js';
import { removeDirectory, temporaryDirectory } from '../../harness/processes.js';

// The cache mirror's transitions with a stand-in upstream (fetch) and request/response objects:
// a miss fetches once (concurrent requests share it) and a hit never fetches, ranges are served
// from the stored file, the size bound refuses or evicts, and a restart finds what was stored.

const NARINFO = `/${'a'.repeat(32)}.narinfo`;
const NAR = (n: number): string => `/nar/${String(n).padStart(52, '0')}.nar.xz`;

interface Upstream {
  files: Map<string, Uint8Array>;
  requests: string[];
  // Sends no content-length (a chunked answer), so only the running count can bound it.
  chunked: boolean;
  failing: boolean;
}

function fakeFetch(upstream: Upstream): typeof fetch {
  return (async (input: string | URL | Request) => {
    const url = String(input);
    upstream.requests.push(url);
    if (upstream.failing) throw new Error('connection refused');
    const body = upstream.files.get(new URL(url).pathname.replace(/^\/cache/, ''));
    if (!body) return new Response('no such file', { status: 404 });
    const headers: Record<string, string> = upstream.chunked ? {} : { 'content-length': String(body.length) };
    return new Response(body.slice(), { status: 200, headers });
  }) as typeof fetch;
}

function upstream(files: Record<string, string> = {}): Upstream {
  const map = new Map(Object.entries(files).map(([path, text]) => [path, new TextEncoder().encode(text)]));
  return { files: map, requests: [], chunked: false, failing: false };
}

interface Answer {
  status: number;
  headers: Record<string, string>;
  body: string;
}

// A ServerResponse stand-in: the status and headers written, and the body once it ends.
class FakeResponse extends Writable {
  status = 0;
  headers: Record<string, string> = {};
  headersSent = false;
  private readonly chunks: Buffer[] = [];
  writeHead(status: number, headers: Record<string, string>): this {
    this.status = status;
    this.headers = headers;
    this.headersSent = true;
    return this;
  }
  override _write(chunk: Buffer, _encoding: string, done: () => void): void {
    this.chunks.push(chunk);
    done();
  }
  text(): string {
    return Buffer.concat(this.chunks).toString();
  }
}

function request(
  mirror: CacheMirrorState,
  path: string,
  headers: Record<string, string> = {},
  method = 'GET',
): Promise<Answer> {
  const res = new FakeResponse();
  const req = { method, headers } as unknown as IncomingMessage;
  return new Promise((resolve) => {
    res.on('finish', () => resolve({ status: res.status, headers: res.headers, body: res.text() }));
    handleCacheRequest(mirror, req, res as unknown as ServerResponse, `/nix-cache${path}`);
  });
}

const dirs: string[] = [];
test.after.each(() => {
  for (const dir of dirs.splice(0)) removeDirectory(dir);
});

async function mirrorOf(
  source: Upstream | Upstream[],
  options: Partial<CacheMirrorOptions> = {},
): Promise<CacheMirrorState> {
  const dir = temporaryDirectory('mirror');
  dirs.push(dir);
  const sources = Array.isArray(source) ? source : [source];
  const upstreams = sources.map((_, i) => `http://upstream-${i}.invalid/cache`);
  const byHost = new Map(upstreams.map((u, i) => [new URL(u).host, fakeFetch(sources[i]!)]));
  const mirror = createCacheMirrorState({
    dir,
    upstreams,
    maxBytes: 1 << 20,
    logger: silentLogger,
    fetch: ((input: string, init: RequestInit) => byHost.get(new URL(input).host)!(input, init)) as typeof fetch,
    ...options,
  });
  await scanMirrorDirectory(mirror);
  return mirror;
}

test('a miss is fetched once, however many ask at the same time; a hit fetches nothing', async () => {
  const cache = upstream({ [NARINFO]: 'StorePath: /nix/store/x\n' });
  const mirror = await mirrorOf(cache);
  const answers = await Promise.all([request(mirror, NARINFO), request(mirror, NARINFO)]);
  for (const answer of answers) {
    assert.is(answer.status, 200);
    assert.is(answer.body, 'StorePath: /nix/store/x\n');
    assert.is(answer.headers['content-type'], 'text/x-nix-narinfo');
  }
  assert.is(cache.requests.length, 1, 'one download for both');
  const again = await request(mirror, NARINFO);
  assert.is(again.body, 'StorePath: /nix/store/x\n');
  assert.is(cache.requests.length, 1, 'served from disk');
  assert.equal(cacheMirrorStats(mirror), { files: 1, bytes: 24, fetchedBytes: 24, fetches: 1, hits: 1 });
  const head = await request(mirror, NARINFO, {}, 'HEAD');
  assert.is(head.status, 200);
  assert.is(head.body, '');
  assert.is(head.headers['content-length'], '24');
});

test('ranges come from the stored file: resume, suffix, past the end', async () => {
  const mirror = await mirrorOf(upstream({ [NAR(1)]: '0123456789' }));
  const resumed = await request(mirror, NAR(1), { range: 'bytes=4-' });
  assert.is(resumed.status, 206);
  assert.is(resumed.body, '456789');
  assert.is(resumed.headers['content-range'], 'bytes 4-9/10');
  assert.is((await request(mirror, NAR(1), { range: 'bytes=-3' })).body, '789');
  assert.is((await request(mirror, NAR(1), { range: 'bytes=2-4' })).body, '234');
  const past = await request(mirror, NAR(1), { range: 'bytes=10-' });
  assert.is(past.status, 416);
  assert.is(past.headers['content-range'], 'bytes */10');
  assert.is((await request(mirror, NAR(1), { range: 'items=1-2' })).status, 200, 'other units: served whole');
  assert.equal(parseRange('bytes=5-100', 10), { start: 5, end: 9 });
  assert.equal(parseRange('bytes=-0', 10), 'unsatisfiable');
  assert.equal(parseRange('bytes=7-3', 10), 'unsatisfiable');
  assert.equal(parseRange('bytes=-', 10), null);
  assert.equal(parseRange(undefined, 10), null);
});

test('what no upstream has is 404; a failing upstream is skipped for the next', async () => {
  const broken = upstream();
  broken.failing = true;
  const good = upstream({ [NAR(2)]: 'nar bytes' });
  const mirror = await mirrorOf([broken, good]);
  assert.is((await request(mirror, NAR(2))).body, 'nar bytes');
  assert.is(broken.requests.length, 1);
  const missing = await request(mirror, NAR(3));
  assert.is(missing.status, 404);
  assert.match(missing.body, /connection refused.*404/);
  assert.is((await request(mirror, '/etc/passwd')).status, 404, 'not a cache file: never fetched');
  assert.is((await request(mirror, NAR(2), {}, 'POST')).status, 404);
  assert.is(good.requests.length, 2);
});

test('the size bound: a file declared or grown past it is refused and not kept', async () => {
  const cache = upstream({ [NAR(1)]: 'x'.repeat(100) });
  const mirror = await mirrorOf(cache, { maxBytes: 64 });
  const declared = await request(mirror, NAR(1));
  assert.is(declared.status, 502);
  assert.match(declared.body, /100 bytes, over the mirror's limit of 64/);
  cache.chunked = true;
  const grown = await request(mirror, NAR(1));
  assert.is(grown.status, 502);
  assert.match(grown.body, /grew past the mirror's limit of 64 bytes/);
  assert.is(mirror.stored.size, 0);
  assert.equal(await fs.readdir(join(mirror.options.dir, 'tmp')), [], 'no partial file left');
});

test('the least recently used files make room for a new one', async () => {
  const cache = upstream({ [NAR(1)]: 'a'.repeat(40), [NAR(2)]: 'b'.repeat(40), [NAR(3)]: 'c'.repeat(40) });
  const mirror = await mirrorOf(cache, { maxBytes: 100 });
  await request(mirror, NAR(1));
  await request(mirror, NAR(2));
  mirror.stored.get(NAR(1))!.used = 0; // used long ago
  await request(mirror, NAR(3));
  assert.equal([...mirror.stored.keys()].sort(), [NAR(2), NAR(3)]);
  assert.equal((await fs.readdir(join(mirror.options.dir, 'nar'))).length, 2, 'its file is deleted too');
  assert.is(cacheMirrorStats(mirror).bytes, 80);
});

test('a restart finds the stored files and serves them without fetching', async () => {
  const cache = upstream({ [NARINFO]: 'narinfo', [NAR(1)]: 'nar' });
  const first = await mirrorOf(cache);
  await request(first, NARINFO);
  await request(first, NAR(1));
  await fs.writeFile(join(first.options.dir, 'tmp', 'leftover'), 'partial');
  await fs.writeFile(join(first.options.dir, 'unrelated'), 'not a cache file');
  const second = createCacheMirrorState(first.options);
  await scanMirrorDirectory(second);
  assert.equal([...second.stored.keys()].sort(), [NAR(1), NARINFO].sort());
  assert.equal(await fs.readdir(join(first.options.dir, 'tmp')), [], 'partial downloads cleared');
  assert.is((await request(second, NAR(1))).body, 'nar');
  assert.is(cache.requests.length, 2);
});

test.run();
