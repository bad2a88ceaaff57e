import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { connectDocument, waitForSync } from '../../shared/node/connect.js';
import { httpBaseFromWs } from '../../shared/sync/reconnect.js';
import { startRelayProcess } from '../bench/relay-fixtures.js';
import {
  type DaemonProcess,
  removeDirectory,
  startCoordinatorProcess,
  temporaryDirectory,
  waitFor,
} from '../harness/processes.js';
import { exchange, statusOf, WS_UPGRADE_HEADERS } from '../harness/raw-sockets.js';

// Issue 11, item 4: one request must not kill the coordinator or a relay. A stranger with nothing
// but a TCP connection sends requests whose URL does not parse, whose percent-encoding is broken,
// that break off mid-body or mid-handshake, or that send invalid frames to a socket being refused.
// Each gets an answer (400 where it is a bad request) and both processes keep serving a normal
// client afterwards. Before the fix the first two requests ended the process (URIError in the
// upgrade handler, Invalid URL in the request handler).

type Server = DaemonProcess & { url: string; port: number };
let dir = '';
let coordinator: Server;
let relay: Server;

test.before(async () => {
  dir = temporaryDirectory('attack-requests');
  coordinator = await startCoordinatorProcess(join(dir, 'coordinator'), join(dir, 'coordinator.log'));
  relay = await startRelayProcess(join(dir, 'relay'), join(dir, 'relay.log'), [coordinator.url], {
    extra: ['--cache-upstream', 'http://127.0.0.1:9/'],
  });
});

test.after(async () => {
  await relay?.stop();
  await coordinator?.stop();
  removeDirectory(dir);
});

function alive(server: Server): boolean {
  return server.child.exitCode === null && server.child.signalCode === null;
}

async function assertServes(server: Server, tag: string): Promise<void> {
  const a = connectDocument(server.url, 'hosts/bystander/desired', { maxBackoffMs: 300 });
  const b = connectDocument(server.url, 'hosts/bystander/desired', { maxBackoffMs: 300 });
  try {
    await Promise.all([waitForSync(a, 10_000), waitForSync(b, 10_000)]);
    a.doc.getArray('marks').push([tag]);
    await waitFor(`${tag} to reach the other client`, () => b.doc.getArray('marks').toArray().includes(tag), 10_000);
  } finally {
    a.close();
    b.close();
  }
}

// [label, bytes, expected status (null: any answer or a close, as long as the process lives)]
const attacks: [string, string, number | null][] = [
  ['websocket upgrade to /%E0%A4%A (URIError)', `GET /%E0%A4%A HTTP/1.1\r\n${WS_UPGRADE_HEADERS}\r\n`, 400],
  ['GET http://[ (Invalid URL)', 'GET http://[ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n', 400],
  ['websocket upgrade to http://[', `GET http://[ HTTP/1.1\r\n${WS_UPGRADE_HEADERS}\r\n`, 400],
  ['relay link upgrade with broken encoding', `GET /_relay%E0%A4%A HTTP/1.1\r\n${WS_UPGRADE_HEADERS}\r\n`, 400],
  ['upgrade with NUL in the document', `GET /fleet/%00nul HTTP/1.1\r\n${WS_UPGRADE_HEADERS}\r\n`, 404],
  ['GET /%E0%A4%A without upgrade', 'GET /%E0%A4%A HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n', 404],
  ['cache mirror path with broken encoding', 'GET /nix-cache/%E0%A4%A HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n', 404],
  ['garbage request line', 'ZZZ\u0000\u0001 / HTTP/9\r\n\r\n', 400],
  ['POST whose body never ends', 'POST /api/enroll HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{"a":', null],
  [
    'upgrade with a malformed key proof',
    `GET /hosts/h1/status?principal=junk HTTP/1.1\r\n${WS_UPGRADE_HEADERS}\r\n`,
    101,
  ],
];

for (const [label, bytes, expected] of attacks) {
  test(`${label}: answered, and coordinator and relay keep serving`, async () => {
    for (const server of [coordinator, relay]) {
      const { text } = await exchange(server.port, bytes, { timeoutMs: 1500 });
      if (expected !== null) assert.is(statusOf(text), expected, `${label} at ${server.url}: ${text.slice(0, 120)}`);
      await new Promise((resolve) => setTimeout(resolve, 100));
      assert.ok(alive(server), `${server.url} still runs after ${label}:\n${server.logs().slice(-2000)}`);
    }
  });
}

test('a peer that is being refused and answers with invalid frames, or resets mid-handshake, harms nobody', async () => {
  for (const server of [coordinator, relay]) {
    // The server accepts the handshake, then closes for the bad proof; the peer sends an unmasked
    // frame (a protocol error on the server's socket) and resets.
    await exchange(server.port, `GET /hosts/h1/status?principal=junk HTTP/1.1\r\n${WS_UPGRADE_HEADERS}\r\n`, {
      timeoutMs: 500,
      after: (socket) => {
        socket.write(Buffer.from([0x81, 0x05, 0x68, 0x65, 0x6c, 0x6c, 0x6f]));
        setTimeout(() => socket.resetAndDestroy(), 50);
      },
    });
    // A valid upgrade whose peer resets before reading the answer.
    await exchange(server.port, `GET /hosts/h1/status HTTP/1.1\r\n${WS_UPGRADE_HEADERS}\r\n`, {
      timeoutMs: 200,
      after: (socket) => socket.resetAndDestroy(),
    });
    // An unknown document, reset at once.
    await exchange(server.port, `GET /etc/passwd HTTP/1.1\r\n${WS_UPGRADE_HEADERS}\r\n`, {
      timeoutMs: 200,
      after: (socket) => socket.resetAndDestroy(),
    });
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.ok(alive(server), `${server.url} still runs:\n${server.logs().slice(-2000)}`);
  }
});

test('after every attack both still serve a normal client, and /healthz counts the bad requests', async () => {
  await assertServes(coordinator, 'after-attacks-coordinator');
  await assertServes(relay, 'after-attacks-relay');
  for (const server of [coordinator, relay]) {
    const health = (await (await fetch(`${httpBaseFromWs(server.url)}/healthz`)).json()) as {
      refusals: { badRequests: number; handlerErrors: number };
    };
    assert.ok(health.refusals.badRequests >= 4, `${server.url} counted ${health.refusals.badRequests} bad requests`);
    assert.is(health.refusals.handlerErrors, 0, 'no handler failed: every bad request was anticipated');
  }
});

test.run();
