import { promises as fs } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { profileTarget } from '../harness/fleet.js';
import { type LifecycleFleet, logEvents, startLifecycleFleet } from '../harness/lifecycle-fleet.js';
import { removeDirectory, temporaryDirectory } from '../harness/processes.js';
import { buildSystemClosure } from '../harness/system-closures.js';

// A download that takes a while gets Nix importing as the files arrive (agent/download/
// staging-server.ts), with real Nix and a real agent: the closure lands through the streaming
// import; and when the agent has to throw a file away mid-stream (the cache sent wrong bytes
// once), the streaming import fails and the agent imports from the finished files instead.
let fleet: LifecycleFleet;
let closure: string;
const KiB = 1024;

test.before(async () => {
  fleet = await startLifecycleFleet(temporaryDirectory('agent-download-streaming'));
  closure = await buildSystemClosure({ name: 'nixos-system-streaming', extraPaths: 4, payloadBytes: 192 * KiB });
  await fleet.publish(closure);
});

test.after(async () => {
  await fleet?.close();
  if (fleet && !process.env.OUTPOST_KEEP_TEST_DIR) removeDirectory(fleet.dir);
});

test('a slow download (24 KiB/s per transfer, about 8 s): Nix imports while the files arrive, and the closure is applied', async () => {
  const cache = await fleet.serveCache({ narBytesPerSecond: 24 * KiB });
  const host = await fleet.host('streamed');
  const agent = fleet.startAgent(host, cache.url);
  await fleet.deploy('streamed', closure);
  const result = await fleet.nextResult('streamed', 0, 90_000);
  assert.is(result.outcome, 'applied', result.reason);
  assert.is(await profileTarget(host), closure);
  const downloaded = logEvents(agent, 'downloaded')[0];
  assert.is(downloaded?.imported, 'while-downloading', JSON.stringify(downloaded));
  // Every NAR was fetched once from the cache; Nix read them from the agent, not from the cache.
  assert.is(cache.narTransfers.length, 5);
});

test('wrong bytes once, mid-stream: the file is thrown away, the streaming import fails, the import from the finished files succeeds', async () => {
  // The cache dir's NAR files, each sent wrong the first time it is asked for, at 16 KiB/s (so
  // the streaming import, which starts after 5 s, is following them when they turn out wrong),
  // and right the second time, at once.
  const asked = new Map<string, number>();
  const server: Server = createServer((request, response) => {
    const path = (request.url ?? '').split('?')[0]!;
    void (async () => {
      const file = await fs.readFile(join(fleet.cacheDir, path)).catch(() => null);
      if (!file || path.includes('..')) {
        response.writeHead(404).end();
        return;
      }
      if (!path.startsWith('/nar/')) {
        response.writeHead(200, { 'content-length': String(file.length) }).end(file);
        return;
      }
      const times = (asked.get(path) ?? 0) + 1;
      asked.set(path, times);
      if (times > 1) {
        response.writeHead(200, { 'content-length': String(file.length) }).end(file);
        return;
      }
      const body = Buffer.alloc(file.length, 0x78);
      response.writeHead(200, { 'content-length': String(body.length) });
      let at = 0;
      const step = (): void => {
        if (response.destroyed) return;
        if (at >= body.length) {
          response.end();
          return;
        }
        response.write(body.subarray(at, at + 1638));
        at += 1638;
        setTimeout(step, 100);
      };
      step();
    })().catch(() => response.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    const host = await fleet.host('refetched');
    const agent = fleet.startAgent(host, `http://127.0.0.1:${(server.address() as AddressInfo).port}`, [
      '--download-retries',
      '2',
    ]);
    await fleet.deploy('refetched', closure);
    const result = await fleet.nextResult('refetched', 0, 120_000);
    assert.is(result.outcome, 'applied', result.reason);
    assert.is(await profileTarget(host), closure);
    const retries = logEvents(agent, 'download-retry');
    assert.ok(
      retries.some((r) => /does not match its declared hash/.test(String(r.reason))),
      'the wrong bytes were caught by the agent',
    );
    const downloaded = logEvents(agent, 'downloaded')[0];
    assert.is(downloaded?.imported, 'after-download', JSON.stringify(downloaded));
    assert.type(downloaded?.streamingFailed, 'string', 'why the streaming import failed is logged');
  } finally {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});

test.run();
