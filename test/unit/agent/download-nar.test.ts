import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { RETRY_BUDGET_FACTOR, type RetryCounters, retryVerdict } from '../../../agent/download/download.js';
import { downloadNar, type NarJob, type NarOutcome, stagedNarIntact } from '../../../agent/download/nar-download.js';
import { compressedAllowance, narFileBounds } from '../../../agent/download/nar-size.js';
import { encodeNixBase32 } from '../../../shared/nix/base32.js';
import { startFaultProxy } from '../../harness/fault-proxy.js';
import { removeDirectory, temporaryDirectory } from '../../harness/processes.js';

// The downloader of one NAR file against a real HTTP server on 127.0.0.1, and the size and retry
// rules it follows: caps from the signed NarSize, hash while receiving, Range resume with only
// the kept prefix read back, and what each kind of failure leaves on disk.

const dir = temporaryDirectory('download-nar');
test.after(() => removeDirectory(dir));

const MiB = 1024 * 1024;
const payload = Buffer.from(Array.from({ length: 3 * MiB + 123 }, (_, i) => (i * 7919) % 256));
const small = payload.subarray(0, 5000);

function nixHash(bytes: Uint8Array): string {
  return `sha256:${encodeNixBase32(new Uint8Array(createHash('sha256').update(bytes).digest()))}`;
}

type Handler = (request: IncomingMessage, response: ServerResponse) => void;

interface TestServer {
  url: string;
  requests: { range: string | undefined }[];
  close(): Promise<void>;
}

async function serve(handler: Handler): Promise<TestServer> {
  const requests: { range: string | undefined }[] = [];
  const server: Server = createServer((request, response) => {
    requests.push({ range: request.headers.range });
    handler(request, response);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/nar/file.nar`,
    requests,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

// A cache serving `bytes` with Range support, as nginx or S3 would.
function honest(bytes: Buffer): Handler {
  return (request, response) => {
    const start = Number(/^bytes=(\d+)-$/.exec(request.headers.range ?? '')?.[1] ?? 0);
    if (start >= bytes.length && start > 0) {
      response.writeHead(416, { 'content-range': `bytes */${bytes.length}` }).end();
      return;
    }
    response.writeHead(start > 0 ? 206 : 200, {
      'content-length': String(bytes.length - start),
      ...(start > 0 ? { 'content-range': `bytes ${start}-${bytes.length - 1}/${bytes.length}` } : {}),
    });
    response.end(bytes.subarray(start));
  };
}

let counter = 0;
function job(url: string, bytes: Buffer, changes: Partial<NarJob> = {}): NarJob {
  counter += 1;
  const final = join(dir, `${counter}.nar`);
  return {
    url,
    part: `${final}.part`,
    final,
    exactSize: bytes.length,
    cap: bytes.length,
    expectedHash: nixHash(bytes),
    ...changes,
  };
}

async function run(narJob: NarJob): Promise<NarOutcome & { progress: number }> {
  let progress = 0;
  const outcome = await downloadNar(narJob, {
    throughput: { minBytesPerSecond: 0, windowMs: 1000 },
    signal: new AbortController().signal,
    now: Date.now,
    onBytes: (delta) => (progress += delta),
  });
  return { ...outcome, progress };
}

async function exists(path: string): Promise<boolean> {
  return fs.stat(path).then(
    () => true,
    () => false,
  );
}

test('sizes: an uncompressed NAR is exactly NarSize; a compressed one at most NarSize + the allowance; FileSize only tightens', () => {
  const base = { storePath: `/nix/store/${'a'.repeat(32)}-x`, narSize: 1000 };
  assert.equal(narFileBounds({ ...base, compression: 'none' }), {
    ok: true,
    cap: 1000,
    exactSize: 1000,
    expectedBytes: 1000,
  });
  assert.equal(narFileBounds({ ...base, compression: 'none', fileSize: 1000 }).ok, true);
  const lying = narFileBounds({ ...base, compression: 'none', fileSize: 200_000_000 });
  assert.is(lying.ok, false);
  assert.match(
    (lying as { reason: string }).reason,
    /declares FileSize 200000000 \(190\.7 MiB\) for a NAR its signature says is 1000 bytes \(NarSize\); an uncompressed NAR file is exactly NarSize bytes\. FileSize is not signed/,
  );
  assert.is(narFileBounds({ ...base, compression: 'none', fileSize: 999 }).ok, false, 'shorter is a lie too');
  const allowance = compressedAllowance(1000);
  assert.ok(allowance > 1000 && allowance < 1000 + 70_000);
  assert.equal(narFileBounds({ ...base, compression: 'xz' }), {
    ok: true,
    cap: allowance,
    exactSize: null,
    expectedBytes: 1000,
  });
  assert.equal(narFileBounds({ ...base, compression: 'zstd', fileSize: 300 }), {
    ok: true,
    cap: 300,
    exactSize: 300,
    expectedBytes: 300,
  });
  assert.match(
    (narFileBounds({ ...base, compression: 'xz', fileSize: allowance + 1 }) as { reason: string }).reason,
    new RegExp(`compressed with xz it cannot be more than ${allowance} bytes`),
  );
  // A big NAR: the allowance stays a small fraction.
  assert.ok(compressedAllowance(2 ** 30) < 2 ** 30 * 1.02);
});

test('retries: N in a row without kept progress, 4 × N per file whatever the progress, 4 × N × concurrency per closure', () => {
  const limits = { retries: 2, concurrency: 3 };
  const closure = { count: 0 };
  const fresh = (): RetryCounters => ({ inARow: 0, file: 0, closure });
  const dead = fresh();
  assert.is(retryVerdict(dead, false, limits), null);
  assert.is(retryVerdict(dead, false, limits), null);
  assert.match(retryVerdict(dead, false, limits) ?? '', /gave up after 2 retries without progress/);
  closure.count = 0;
  const flaky = fresh();
  const verdicts = Array.from({ length: RETRY_BUDGET_FACTOR * 2 + 1 }, () => retryVerdict(flaky, true, limits));
  assert.ok(
    verdicts.slice(0, -1).every((v) => v === null),
    'progress excuses failures up to the per-file budget',
  );
  assert.match(
    verdicts.at(-1) ?? '',
    /gave up after 9 failed attempts on this file \(at most 4 × --download-retries 2/,
  );
  closure.count = 0;
  let last: string | null = null;
  for (let file = 0; file < 100 && last === null; file++) {
    const counters = fresh();
    for (let attempt = 0; attempt < 3 && last === null; attempt++) last = retryVerdict(counters, true, limits);
  }
  assert.match(
    last ?? '',
    /gave up after 25 failed attempts across the closure \(at most 4 × --download-retries 2 × 3/,
  );
  assert.match(retryVerdict(fresh(), true, { retries: 0, concurrency: 4 }) ?? '', /gave up/, '0 retries: none');
});

test('a large file (raw transport) and a small one (node:http): hashed while received, renamed when whole', async () => {
  for (const bytes of [payload, small]) {
    const server = await serve(honest(bytes));
    try {
      const narJob = job(server.url, bytes);
      const outcome = await run(narJob);
      assert.ok(outcome.ok, JSON.stringify(outcome));
      assert.is(outcome.progress, bytes.length);
      assert.equal(await fs.readFile(narJob.final), bytes);
      assert.not.ok(await exists(narJob.part));
      assert.ok(await stagedNarIntact(narJob), 'checked by this process: trusted without a re-read');
    } finally {
      await server.close();
    }
  }
});

test('resume: only the missing bytes are requested; the kept prefix is hashed from disk', async () => {
  const server = await serve(honest(payload));
  try {
    const narJob = job(server.url, payload);
    await fs.writeFile(narJob.part, payload.subarray(0, MiB + 17));
    const outcome = await run(narJob);
    assert.ok(outcome.ok, JSON.stringify(outcome));
    assert.equal(server.requests, [{ range: `bytes=${MiB + 17}-` }]);
    assert.is(outcome.progress, payload.length - MiB - 17);
    assert.equal(await fs.readFile(narJob.final), payload);
  } finally {
    await server.close();
  }
});

test('resume against a cache that ignores Range: the file starts over and still checks out', async () => {
  const server = await serve((_request, response) => {
    response.writeHead(200, { 'content-length': String(payload.length) }).end(payload);
  });
  try {
    const narJob = job(server.url, payload);
    await fs.writeFile(narJob.part, payload.subarray(0, 1000));
    const outcome = await run(narJob);
    assert.ok(outcome.ok, JSON.stringify(outcome));
    assert.equal(await fs.readFile(narJob.final), payload);
  } finally {
    await server.close();
  }
});

test('a 206 for another range than asked: the partial file is thrown away, the attempt failed', async () => {
  const server = await serve((_request, response) => {
    response.writeHead(206, { 'content-range': `bytes 0-${payload.length - 1}/${payload.length}` }).end(payload);
  });
  try {
    const narJob = job(server.url, payload);
    await fs.writeFile(narJob.part, payload.subarray(0, 1000));
    const outcome = await run(narJob);
    assert.not.ok(outcome.ok);
    assert.match((outcome as { reason: string }).reason, /answered a request for bytes from 1000 with bytes 0-/);
    assert.is((outcome as { kept: number }).kept, 0);
    assert.not.ok(await exists(narJob.part));
  } finally {
    await server.close();
  }
});

test('more than the signed size: a Content-Length above the cap is refused unread; a body past it is cut', async () => {
  let sent = 0;
  const declared = await serve((_request, response) => {
    response.writeHead(200, { 'content-length': String(payload.length + 1) });
    response.end(Buffer.concat([payload, Buffer.from('x')]), () => (sent = payload.length + 1));
  });
  try {
    const narJob = job(declared.url, payload);
    const outcome = await run(narJob);
    assert.not.ok(outcome.ok);
    assert.is((outcome as { retryable: boolean }).retryable, false);
    assert.match(
      (outcome as { reason: string }).reason,
      /declared 3145852 bytes \(Content-Length after 0 kept\), more than the 3145851 bytes \(3\.0 MiB\) its signed NarSize allows/,
    );
    assert.is(outcome.received, 0);
  } finally {
    await declared.close();
  }
  assert.ok(sent >= 0);
  for (const large of [true, false]) {
    const bytes = large ? payload : small;
    // No Content-Length: the body is read until the cap is passed.
    const endless = await serve((_request, response) => {
      response.writeHead(200, { 'transfer-encoding': 'chunked' });
      const more = (): void => {
        while (!response.destroyed && response.write(bytes));
        if (!response.destroyed) response.once('drain', more);
      };
      more();
    });
    try {
      const narJob = job(endless.url, bytes);
      const outcome = await run(narJob);
      assert.not.ok(outcome.ok);
      assert.is((outcome as { retryable: boolean }).retryable, false);
      assert.match((outcome as { reason: string }).reason, /sent more than the \d+ bytes .* its signed NarSize allows/);
      assert.ok(outcome.received <= bytes.length, 'not one byte past the cap was taken');
      assert.is(outcome.progress, 0, 'what was counted is taken back');
      assert.not.ok(await exists(narJob.part));
    } finally {
      await endless.close();
    }
  }
});

test('the right length, the wrong bytes: nothing is kept (so the next attempt counts as no progress)', async () => {
  const wrong = Buffer.from(payload);
  wrong[wrong.length - 1] ^= 1;
  const server = await serve(honest(wrong));
  try {
    const narJob = job(server.url, payload);
    const outcome = await run(narJob);
    assert.not.ok(outcome.ok);
    assert.is((outcome as { retryable: boolean }).retryable, true);
    assert.match((outcome as { reason: string }).reason, /does not match its declared hash sha256:/);
    assert.is((outcome as { kept: number }).kept, 0);
    assert.not.ok(await exists(narJob.part));
    assert.not.ok(await exists(narJob.final));
  } finally {
    await server.close();
  }
});

test('a connection cut mid-body: what arrived is on disk and counts as kept, for the next attempt to resume', async () => {
  const server = await serve((_request, response) => {
    response.writeHead(200, { 'content-length': String(payload.length) });
    response.write(payload.subarray(0, MiB + 5), () => setTimeout(() => response.destroy(), 50));
  });
  try {
    const narJob = job(server.url, payload);
    const outcome = await run(narJob);
    assert.not.ok(outcome.ok);
    assert.is((outcome as { retryable: boolean }).retryable, true);
    assert.is((outcome as { kept: number }).kept, MiB + 5);
    assert.is((await fs.stat(narJob.part)).size, MiB + 5);
  } finally {
    await server.close();
  }
});

test('Content-Encoding despite identity: refused with the fix, not stored', async () => {
  const server = await serve((_request, response) => {
    response.writeHead(200, { 'content-encoding': 'gzip', 'content-length': '10' }).end('0123456789');
  });
  try {
    const outcome = await run(job(server.url, small));
    assert.not.ok(outcome.ok);
    assert.is((outcome as { retryable: boolean }).retryable, false);
    assert.match((outcome as { reason: string }).reason, /Content-Encoding gzip although identity was asked for/);
  } finally {
    await server.close();
  }
});

test('a complete file left by another process (a power loss may have truncated or garbled it) is checked before use', async () => {
  const good = job('http://127.0.0.1:9/unused', small);
  await fs.writeFile(good.final, small);
  assert.ok(await stagedNarIntact(good));
  const garbled = job('http://127.0.0.1:9/unused', small);
  const bytes = Buffer.from(small);
  bytes[10] ^= 0xff;
  await fs.writeFile(garbled.final, bytes);
  assert.not.ok(await stagedNarIntact(garbled));
  assert.not.ok(await exists(garbled.final), 'removed, to be fetched again');
  const short = job('http://127.0.0.1:9/unused', small);
  await fs.writeFile(short.final, small.subarray(0, 100));
  assert.not.ok(await stagedNarIntact(short));
});

// The bench measures downloads through the fault proxy (test/harness/fault-proxy.ts) at 10 MB/s
// on a busy machine: a late timer there once let newer chunks overtake older ones, and NARs
// arrived garbled (to the agent and to nix copy alike).
test('the throttled fault proxy keeps bytes in order while the event loop lags', async () => {
  const body = Buffer.alloc(16 * MiB);
  for (let i = 0; i < body.length; i += 4) body.writeUInt32LE(i, i);
  const server = await serve(honest(body));
  const proxy = await startFaultProxy(Number(new URL(server.url).port));
  proxy.bandwidth(32 * MiB);
  const lag = setInterval(() => {
    const until = Date.now() + 40;
    while (Date.now() < until);
  }, 15);
  try {
    for (let i = 0; i < 3; i++) {
      const narJob = job(`${proxy.url('http')}/nar/file.nar`, body);
      const outcome = await run(narJob);
      assert.ok(outcome.ok, JSON.stringify(outcome));
    }
  } finally {
    clearInterval(lag);
    await proxy.close();
    await server.close();
  }
});

test.run();
