import type { AddressInfo } from 'node:net';
import { createServer, type Server, type Socket } from 'node:net';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { type BodySource, httpGet } from '../../../agent/download/http-get.js';

// The NAR transports against a TCP server on 127.0.0.1 that answers byte for byte what each case
// writes: heads and bodies split at every position, chunked bodies, hostile framing, early
// closes, backpressure, redirects. Both transports (raw for large plain-http bodies, node:http
// for the rest) must hand over exactly the body bytes or fail with a reason.

type Script = (socket: Socket, request: string) => unknown;

const sockets = new Set<Socket>();

async function serve(script: Script): Promise<{ url: string; server: Server; requests: string[] }> {
  const requests: string[] = [];
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    let text = '';
    socket.on('data', (data) => {
      text += data.toString('latin1');
      if (!text.includes('\r\n\r\n')) return;
      requests.push(text);
      const request = text;
      text = '';
      void Promise.resolve(script(socket, request)).catch(() => socket.destroy());
    });
    socket.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}`, server, requests };
}

function close(server: Server): Promise<void> {
  // Kept-alive node:http connections would keep close() waiting.
  for (const socket of sockets) socket.destroy();
  return new Promise((resolve) => server.close(() => resolve()));
}

// Writes `bytes` in pieces of `step` bytes, a tick apart, so every split position is exercised.
async function dribble(socket: Socket, bytes: Buffer, step: number): Promise<void> {
  for (let at = 0; at < bytes.length; at += step) {
    socket.write(bytes.subarray(at, at + step));
    await new Promise((resolve) => setImmediate(resolve));
  }
}

async function readAll(source: BodySource): Promise<Buffer> {
  const parts: Buffer[] = [];
  await source.pipe((chunk) => {
    parts.push(Buffer.from(chunk));
    return true;
  });
  return Buffer.concat(parts);
}

const body = Buffer.from(Array.from({ length: 3000 }, (_, i) => i % 251));
const signal = new AbortController().signal;

for (const large of [true, false]) {
  const transport = large ? 'raw' : 'node:http';

  test(`${transport}: Content-Length body, head and body split in 7-byte pieces`, async () => {
    const { url, server, requests } = await serve((socket) =>
      dribble(
        socket,
        Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\nX-A: b\r\n\r\n`), body]),
        7,
      ),
    );
    try {
      const source = await httpGet(`${url}/nar/x.nar`, { headers: { range: 'bytes=0-' }, signal, large });
      assert.is(source.status, 200);
      assert.is(source.header('x-a'), 'b');
      assert.is(source.header('content-length'), String(body.length));
      assert.equal(await readAll(source), body);
      assert.match(requests[0]!, /^GET \/nar\/x\.nar HTTP\/1\.1\r\n/);
      assert.match(requests[0]!, /\r\nrange: bytes=0-\r\n/i);
    } finally {
      await close(server);
    }
  });

  test(`${transport}: chunked body with extensions and trailers, split byte by byte`, async () => {
    const chunked = Buffer.concat([
      Buffer.from('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n'),
      Buffer.from('10;ext=1\r\n'),
      body.subarray(0, 16),
      Buffer.from('\r\n'),
      Buffer.from(`${(body.length - 16).toString(16)}\r\n`),
      body.subarray(16),
      Buffer.from('\r\n0\r\nX-Trailer: t\r\n\r\n'),
    ]);
    const { url, server } = await serve((socket) => dribble(socket, chunked, 1));
    try {
      const source = await httpGet(`${url}/a`, { headers: {}, signal, large });
      assert.equal(await readAll(source), body);
    } finally {
      await close(server);
    }
  });

  test(`${transport}: a connection closed before Content-Length bytes arrived is an error, not a short body`, async () => {
    const { url, server } = await serve((socket) => {
      socket.end(
        Buffer.concat([Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n'), body.subarray(0, 100)]),
      );
    });
    try {
      const source = await httpGet(`${url}/a`, { headers: {}, signal, large });
      const received: number[] = [];
      const error = await source
        .pipe((chunk) => {
          received.push(chunk.length);
          return true;
        })
        .then(
          () => null,
          (e: Error) => e,
        );
      assert.ok(error, 'the body promise rejects');
      assert.is(
        received.reduce((a, b) => a + b, 0),
        100,
      );
    } finally {
      await close(server);
    }
  });

  // The downloader opens its file between the response and pipe(): a break or an abort in that
  // gap happened before pipe() listens (it hung for ever on node:http, and with it the download).
  // Bytes that arrived before a break are still handed over: the next attempt resumes after them.
  for (const gap of ['the connection breaks', 'the transfer is aborted'] as const)
    test(`${transport}: ${gap} before pipe() is called: pipe() rejects, it does not wait for ever`, async () => {
      let serverSocketClosed: Promise<void> = Promise.resolve();
      const { url, server } = await serve((socket) => {
        serverSocketClosed = new Promise((resolve) => socket.once('close', () => resolve()));
        socket.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n0123456789abcdef\r\n');
        if (gap === 'the connection breaks') setImmediate(() => socket.destroy());
      });
      try {
        const controller = new AbortController();
        const source = await httpGet(`${url}/a`, { headers: {}, signal: controller.signal, large });
        if (gap === 'the transfer is aborted') controller.abort();
        // The client has seen the break too by the time pipe() is called.
        await serverSocketClosed;
        await new Promise((resolve) => setTimeout(resolve, 50));
        const received: Buffer[] = [];
        let hung: NodeJS.Timeout | undefined;
        const outcome = await Promise.race([
          source
            .pipe((chunk) => {
              received.push(Buffer.from(chunk));
              return true;
            })
            .then(
              () => 'resolved',
              (error: Error) => error,
            ),
          new Promise<'hung'>((resolve) => {
            hung = setTimeout(() => resolve('hung'), 5000);
          }),
        ]);
        clearTimeout(hung);
        assert.ok(outcome instanceof Error, `pipe() ${outcome === 'hung' ? 'never settled' : String(outcome)}`);
        if (gap === 'the connection breaks') assert.is(Buffer.concat(received).toString(), '0123456789abcdef');
        else assert.is(outcome.name, 'AbortError');
      } finally {
        await close(server);
      }
    });

  test(`${transport}: a whole body that arrived before pipe() is called is handed over`, async () => {
    const { url, server } = await serve((socket) => {
      socket.end(Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\n\r\n`), body]));
    });
    try {
      const source = await httpGet(`${url}/a`, { headers: {}, signal, large });
      await new Promise((resolve) => setTimeout(resolve, 50));
      assert.equal(await readAll(source), body);
    } finally {
      await close(server);
    }
  });

  test(`${transport}: redirects are followed (relative Location), at most 5`, async () => {
    let hops = 0;
    const { url, server } = await serve((socket, request) => {
      if (request.startsWith('GET /final ')) {
        socket.end(`HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok`);
        return;
      }
      hops += 1;
      socket.end(
        `HTTP/1.1 302 Found\r\nLocation: ${hops >= 3 ? '/final' : `/hop${hops}`}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`,
      );
    });
    try {
      const source = await httpGet(`${url}/start`, { headers: {}, signal, large });
      assert.is(source.status, 200);
      assert.is(source.url, `${url}/final`);
      assert.is((await readAll(source)).toString(), 'ok');
    } finally {
      await close(server);
    }
    const loop = await serve((socket) =>
      socket.end('HTTP/1.1 301 Moved\r\nLocation: /again\r\nContent-Length: 0\r\nConnection: close\r\n\r\n'),
    );
    try {
      await httpGet(`${loop.url}/start`, { headers: {}, signal, large }).then(
        () => assert.unreachable('a redirect loop must fail'),
        (error: Error) => assert.match(error.message, /more than 5 redirects/),
      );
    } finally {
      await close(loop.server);
    }
    const ftp = await serve((socket) =>
      socket.end(
        'HTTP/1.1 302 Found\r\nLocation: ftp://example.org/x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n',
      ),
    );
    try {
      await httpGet(`${ftp.url}/start`, { headers: {}, signal, large }).then(
        () => assert.unreachable('an ftp redirect must fail'),
        (error: Error) => assert.match(error.message, /only http:\/\/ and https:\/\/ are followed/),
      );
    } finally {
      await close(ftp.server);
    }
  });
}

test('raw: a body read until the connection closes (no Content-Length, not chunked)', async () => {
  const { url, server } = await serve((socket) => {
    socket.end(Buffer.concat([Buffer.from('HTTP/1.0 200 OK\r\n\r\n'), body]));
  });
  try {
    assert.equal(await readAll(await httpGet(`${url}/a`, { headers: {}, signal, large: true })), body);
  } finally {
    await close(server);
  }
});

test('raw: bytes after Content-Length are not handed over', async () => {
  const { url, server } = await serve((socket) => {
    socket.end(Buffer.concat([Buffer.from('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n'), body]));
  });
  try {
    assert.equal(await readAll(await httpGet(`${url}/a`, { headers: {}, signal, large: true })), body.subarray(0, 10));
  } finally {
    await close(server);
  }
});

test('raw: hostile heads and framing are refused with the reason, never buffered without bound', async () => {
  const cases: [string, string | Buffer, RegExp, 'head' | 'body'][] = [
    ['not HTTP', 'SSH-2.0-OpenSSH\r\n\r\n', /is not HTTP\/1\.x/, 'head'],
    ['malformed header', 'HTTP/1.1 200 OK\r\nno colon here\r\n\r\n', /malformed header line/, 'head'],
    ['head > 64 KiB', `HTTP/1.1 200 OK\r\nX: ${'a'.repeat(70_000)}\r\n\r\n`, /head larger than 65536 bytes/, 'head'],
    ['endless head', `HTTP/1.1 200 OK\r\n${'X: y\r\n'.repeat(20_000)}`, /head larger than 65536 bytes/, 'head'],
    ['bad Content-Length', 'HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n', /Content-Length "-5"/, 'head'],
    ['unknown transfer coding', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n', /only chunked/, 'head'],
    ['bad chunk size', 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n', /malformed chunk size/, 'body'],
    [
      'endless chunk-size line',
      `HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n${'1'.repeat(5000)}`,
      /chunked-encoding line longer than 1024 bytes/,
      'body',
    ],
    [
      'chunk longer than declared',
      'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabcdef\r\n0\r\n\r\n',
      /chunk longer than its declared size/,
      'body',
    ],
    [
      'huge chunk size',
      'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\n',
      /malformed chunk size/,
      'body',
    ],
  ];
  for (const [name, response, reason, where] of cases) {
    const { url, server } = await serve((socket) => {
      socket.write(response);
    });
    try {
      // A bad head fails the request; bad framing fails the body.
      const outcome = await httpGet(`${url}/a`, { headers: {}, signal, large: true }).then(
        (source) =>
          source
            .pipe(() => true)
            .then(
              () => 'no error',
              (error: Error) => ({ where: 'body', error }),
            ),
        (error: Error) => ({ where: 'head', error }),
      );
      assert.type(outcome, 'object', `${name}: refused`);
      const { where: seen, error } = outcome as { where: string; error: Error };
      assert.is(seen, where, name);
      assert.match(error.message, reason, name);
    } finally {
      await close(server);
    }
  }
});

test('raw: a consumer that returns false gets nothing more until resume()', async () => {
  const big = Buffer.alloc(4 * 1024 * 1024, 7);
  const { url, server } = await serve((socket) => {
    socket.end(Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\nContent-Length: ${big.length}\r\n\r\n`), big]));
  });
  try {
    const source = await httpGet(`${url}/a`, { headers: {}, signal, large: true });
    let received = 0;
    let callsWhilePaused = 0;
    let paused = false;
    const done = source.pipe((chunk) => {
      if (paused) callsWhilePaused += 1;
      received += chunk.length;
      paused = true;
      setTimeout(() => {
        paused = false;
        source.resume();
      }, 2);
      return false;
    });
    await done;
    assert.is(received, big.length);
    assert.is(callsWhilePaused, 0);
  } finally {
    await close(server);
  }
});

test('raw: the abort signal ends a transfer in progress', async () => {
  const { url, server } = await serve((socket) => {
    socket.write('HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\nabc');
  });
  try {
    const controller = new AbortController();
    const source = await httpGet(`${url}/a`, { headers: {}, signal: controller.signal, large: true });
    const done = source.pipe(() => true);
    setTimeout(() => controller.abort(), 20);
    const error = await done.then(
      () => null,
      (e: Error) => e,
    );
    assert.ok(error);
    assert.is(error!.name, 'AbortError');
  } finally {
    await close(server);
  }
});

test.run();
