import { promises as fs } from 'node:fs';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { requestPath, respondJson } from '../../../../coordinator/http-guard.js';
import { createWebApp } from '../../../../shared/node/web-app.js';
import { removeDirectory, temporaryDirectory } from '../../../harness/processes.js';

// The web editor's file handler serves the files the build produced and nothing else: no path
// (dot segments, encoded slashes, symlinks, other files beside the build) reaches anything outside
// that list, and a missing build is a clear 404, never a crash.
const dir = temporaryDirectory('web-app');
const build = join(dir, 'web');
const missing = join(dir, 'not-built');
let server: Server;
let port = 0;

function get(
  path: string,
  method = 'GET',
): Promise<{ status: number; body: string; headers: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }));
    });
    req.on('error', reject);
    req.end();
  });
}

test.before(async () => {
  await fs.mkdir(join(build, 'assets'), { recursive: true });
  await fs.writeFile(join(build, 'index.html'), '<!doctype html><title>Outpost</title>');
  await fs.writeFile(join(build, 'sw.js'), 'self.x = 1;');
  await fs.writeFile(join(build, 'assets', 'main-abc.js'), 'console.log(1)');
  await fs.writeFile(join(build, 'assets', 'main-abc.js.map'), '{}');
  await fs.writeFile(join(dir, 'secret.key'), 'SECRET');
  await fs.symlink(join(dir, 'secret.key'), join(build, 'assets', 'linked.js'));
  const app = createWebApp(build);
  const notBuilt = createWebApp(missing);
  server = createServer((req, res) => {
    const path = requestPath(req.url);
    if (path === null) return respondJson(res, 400, { error: 'bad url' });
    if (
      path.startsWith('/unbuilt')
        ? notBuilt.handle(req, res, path.slice('/unbuilt'.length) || '/')
        : app.handle(req, res, path)
    )
      return;
    respondJson(res, 404, { error: `no such endpoint ${path}` });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as AddressInfo).port;
});

test.after(async () => {
  await new Promise((resolve) => server.close(resolve));
  removeDirectory(dir);
});

test('serves the page at / and its files, with a same-origin CSP and caching by kind', async () => {
  const page = await get('/');
  assert.is(page.status, 200);
  assert.match(page.body, /Outpost/);
  assert.match(String(page.headers['content-type']), /text\/html/);
  assert.match(String(page.headers['content-security-policy']), /default-src 'self'.*frame-ancestors 'none'/);
  assert.is(page.headers['cache-control'], 'no-cache');
  const asset = await get('/assets/main-abc.js');
  assert.is(asset.status, 200);
  assert.match(String(asset.headers['content-type']), /text\/javascript/);
  assert.match(String(asset.headers['cache-control']), /immutable/);
  assert.is((await get('/sw.js')).status, 200);
});

test('nothing outside the build, no symlink, no source map, no other method', async () => {
  for (const path of [
    '/../secret.key',
    '/assets/../../secret.key',
    '/%2e%2e/secret.key',
    '/assets/%2e%2e%2f%2e%2e%2fsecret.key',
    '/assets/..%2f..%2fsecret.key',
    '/assets/linked.js',
    '/assets/main-abc.js.map',
    `/assets/${'a'.repeat(5000)}.js`,
  ]) {
    const answer = await get(path);
    assert.is(answer.status, 404, path);
    assert.not.match(answer.body, /SECRET/, path);
  }
  assert.is((await get('/', 'POST')).status, 404, 'POST is not the app’s (the server answers it)');
});

test('a missing build is a 404 that says how to build it', async () => {
  const answer = await get('/unbuilt/');
  assert.is(answer.status, 404);
  assert.match(answer.body, /does not exist: build the web editor with npm run build/);
});

test.run();
