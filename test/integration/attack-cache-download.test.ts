import { promises as fs } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { SimulatedHost } from '../harness/fleet.js';
import { type LifecycleFleet, logEvents, startLifecycleFleet } from '../harness/lifecycle-fleet.js';
import { runCommand } from '../harness/nix-fixtures.js';
import { removeDirectory, temporaryDirectory } from '../harness/processes.js';
import { buildSystemClosure } from '../harness/system-closures.js';

// Issue 11 item 7, written as the attack: a hostile binary cache on 127.0.0.1 serves the real,
// validly signed narinfos of a closure (the signature covers StorePath, NarHash, NarSize and
// References only) with the unsigned lines changed, and NAR bodies that never end, are the
// right length but the wrong bytes, or break after a few new bytes every time. A real agent
// (`--max-closure-size 1M --download-retries 1`, as in the report) must keep what it receives
// within the signed sizes, stop retrying within its bounds, and report a signed failure that
// says what the cache did.

type Mode =
  // FileSize: 200 MB for a NAR of about 1 KB; the body never ends.
  | 'lying-file-size'
  // Honest narinfo; the body is the real NAR followed by junk that never ends.
  | 'endless-body'
  // Honest narinfo; exactly NarSize bytes, all wrong.
  | 'wrong-bytes'
  // Honest narinfo; every transfer (Range honoured) sends 16 more real bytes, then breaks.
  | 'cut-after-progress';

interface HostileCache {
  url: string;
  narRequests: number;
  // NAR body bytes the kernel accepted from us: an upper bound on what the agent received.
  narBytesSent: number;
  close(): Promise<void>;
}

const MiB = 1024 * 1024;
const JUNK = Buffer.alloc(64 * 1024, 0x78);
// A failing run (no defence) still ends: no single body goes past this.
const BODY_LIMIT = 512 * MiB;

async function startHostileCache(cacheDir: string, mode: Mode): Promise<HostileCache> {
  const state = { narRequests: 0, narBytesSent: 0 };
  const narinfo = async (path: string, response: ServerResponse): Promise<void> => {
    const text = await fs.readFile(join(cacheDir, path), 'utf8');
    const rewritten =
      mode === 'lying-file-size' ? text.replace(/^FileSize: \d+$/m, `FileSize: ${200 * 1000 * 1000}`) : text;
    response.writeHead(200, { 'content-type': 'text/x-nix-narinfo' }).end(rewritten);
  };
  // Writes as fast as the agent reads (backpressure), counting what the kernel took.
  const endless = (response: ServerResponse, first: Buffer): void => {
    let sent = 0;
    const pump = (): void => {
      while (!response.destroyed && sent < BODY_LIMIT) {
        const chunk = sent === 0 ? first : JUNK;
        sent += chunk.length;
        const more = response.write(chunk, (error) => {
          if (!error) state.narBytesSent += chunk.length;
        });
        if (!more) {
          response.once('drain', pump);
          return;
        }
      }
      if (!response.destroyed) response.end();
    };
    pump();
  };
  const nar = async (path: string, request: IncomingMessage, response: ServerResponse): Promise<void> => {
    state.narRequests += 1;
    const real = await fs.readFile(join(cacheDir, path));
    if (mode === 'lying-file-size' || mode === 'endless-body') {
      response.writeHead(200, { 'content-type': 'application/x-nix-nar' });
      endless(response, real);
    } else if (mode === 'wrong-bytes') {
      const wrong = Buffer.alloc(real.length, 0x78);
      response.writeHead(200, { 'content-length': String(wrong.length) });
      response.end(wrong, () => (state.narBytesSent += wrong.length));
    } else {
      const start = Number(/^bytes=(\d+)-$/.exec(request.headers.range ?? '')?.[1] ?? 0);
      const slice = real.subarray(start, start + 16);
      response.writeHead(start > 0 ? 206 : 200, {
        'content-length': String(real.length - start),
        ...(start > 0 ? { 'content-range': `bytes ${start}-${real.length - 1}/${real.length}` } : {}),
      });
      response.write(slice, () => {
        state.narBytesSent += slice.length;
        setTimeout(() => response.destroy(), 50);
      });
    }
  };
  const server: Server = createServer((request, response) => {
    const path = (request.url ?? '').split('?')[0]!;
    const work = /^\/[0-9a-z]{32}\.narinfo$/.test(path)
      ? narinfo(path, response)
      : /^\/nar\/[0-9a-z]{52}\.nar$/.test(path)
        ? nar(path, request, response)
        : path === '/nix-cache-info'
          ? Promise.resolve(void response.end('StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n'))
          : Promise.resolve(void response.writeHead(404).end());
    work.catch(() => response.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    get narRequests() {
      return state.narRequests;
    },
    get narBytesSent() {
      return state.narBytesSent;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

let fleet: LifecycleFleet;
let closure: string;
let narSizes: number[];

test.before(async () => {
  fleet = await startLifecycleFleet(temporaryDirectory('attack-cache'));
  // The system (a NAR of about 1 KB) and one 64 KiB payload.
  closure = await buildSystemClosure({ name: 'nixos-system-attack', extraPaths: 1, payloadBytes: 64 * 1024 });
  await fleet.publish(closure);
  narSizes = [];
  for (const name of await fs.readdir(fleet.cacheDir)) {
    if (name.endsWith('.narinfo'))
      narSizes.push(Number(/^NarSize: (\d+)$/m.exec(await fs.readFile(join(fleet.cacheDir, name), 'utf8'))![1]));
  }
});

test.after(async () => {
  await fleet?.close();
  if (fleet && !process.env.OUTPOST_KEEP_TEST_DIR) removeDirectory(fleet.dir);
});

async function storeHas(host: SimulatedHost, path: string): Promise<boolean> {
  return (await runCommand('nix-store', ['--store', host.storeRoot, '--check-validity', path])).code === 0;
}

// Runs the attack against a fresh agent; returns its signed result and what the cache sent.
async function attack(mode: Mode, name: string) {
  const cache = await startHostileCache(fleet.cacheDir, mode);
  try {
    const host = await fleet.host(name);
    const agent = fleet.startAgent(host, cache.url, ['--max-closure-size', '1M', '--download-retries', '1']);
    await fleet.deploy(name, closure);
    // Agent start, deploy, every attempt and its backoff, then the signed failure: ~5 s here, and
    // many times that on a loaded machine (each poll of nextResult is an `outpost status` process).
    const result = await fleet.nextResult(name, 0, 120_000);
    const requestsAtResult = cache.narRequests;
    const bytesAtResult = cache.narBytesSent;
    // Retries have stopped: nothing more is asked for after the result.
    await new Promise((resolve) => setTimeout(resolve, 3000));
    assert.is(cache.narRequests, requestsAtResult, 'no NAR request after the signed failure');
    assert.is(result.outcome, 'failed', result.reason);
    assert.ok(result.signatureValid, 'the failure is signed by the host');
    assert.not.ok(await storeHas(host, closure), 'nothing was registered');
    return { result, requests: requestsAtResult, bytes: bytesAtResult, agent };
  } finally {
    await cache.close();
  }
}

test('a signed 1 KB NAR whose narinfo declares FileSize 200 MB, served as an endless body: refused before any NAR byte, with the lie named', async () => {
  const { result, requests, bytes } = await attack('lying-file-size', 'lying-size');
  assert.is(bytes, 0, `the cache got ${bytes} NAR bytes out`);
  assert.is(requests, 0, 'no NAR was requested');
  assert.match(
    result.reason,
    /declares FileSize 200000000 \(190\.7 MiB\) for a NAR its signature says is \d+ bytes \(NarSize\); an uncompressed NAR file is exactly NarSize bytes\. FileSize is not signed: the cache is broken or hostile/,
  );
});

test('an endless body after the real NAR: the transfer is cut at the signed NarSize, not retried', async () => {
  const { result, requests, bytes } = await attack('endless-body', 'endless');
  // Socket buffers hold a few MiB that the agent never reads; without the cap it is unbounded.
  assert.ok(bytes < 16 * MiB, `the cache got ${bytes} bytes out before the agent cut it off`);
  assert.ok(requests <= narSizes.length, `each NAR asked for at most once (${requests} requests)`);
  assert.match(
    result.reason,
    /^download failed: \/nix\/store\/\S+: http:\/\/127\.0\.0\.1:\d+\/nar\/\S+ sent more than the \d+ bytes \(.*\) its signed NarSize allows: the cache is broken or hostile/,
  );
});

test('the right number of wrong bytes, every time: a hash mismatch counts as a failed attempt, so retries end', async () => {
  const { result, requests, bytes } = await attack('wrong-bytes', 'wrong-bytes');
  assert.match(
    result.reason,
    /does not match its declared hash sha256:\S+; the partial file was discarded; gave up after 1 retries without progress \(--download-retries\)/,
  );
  // --download-retries 1: two attempts per file at most.
  assert.ok(requests <= 2 * narSizes.length, `${requests} NAR requests`);
  const allowed = 2 * narSizes.reduce((sum, size) => sum + size, 0);
  assert.ok(bytes <= allowed, `${bytes} bytes sent, at most two attempts' worth (${allowed})`);
});

test('a cache that breaks every transfer after 16 new bytes: progress excuses failures in a row, never more than 4 × --download-retries', async () => {
  const { result, requests, agent } = await attack('cut-after-progress', 'cut-progress');
  assert.match(
    result.reason,
    /gave up after 5 failed attempts on this file \(at most 4 × --download-retries 1, progress or not\)/,
  );
  assert.ok(requests <= 5 * narSizes.length, `${requests} NAR requests`);
  const resumed = logEvents(agent, 'download-retry');
  assert.ok(resumed.length >= 4, 'it did retry while bytes were arriving');
});

test.run();
