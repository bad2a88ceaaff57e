import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import * as encoding from 'lib0/encoding';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { type WebSocket, WebSocketServer } from 'ws';
import * as syncProtocol from 'y-protocols/sync';
import * as Y from 'yjs';
import { commitTentativeMessage, tentativeUpdateMessage } from '../../../shared/sync/tentative.js';
import { LeanDocClient } from '../../bench/lean-client.js';

// The dispatch bench's lean client, opted in to tentative delivery, against a scripted server on a
// real socket: a tentative update stays out of the doc until its commit, is dropped with the
// connection, and a server breaking the protocol is disconnected with nothing applied.

interface Events {
  tentative: number;
  committed: number;
  dropped: number;
}

async function scripted(): Promise<{
  client: LeanDocClient;
  events: Events;
  peer: WebSocket;
  url: string;
  close: () => Promise<void>;
}> {
  const server = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await once(server, 'listening');
  const events: Events = { tentative: 0, committed: 0, dropped: 0 };
  const accepted = once(server, 'connection') as Promise<[WebSocket, { url: string }]>;
  const client = new LeanDocClient({
    serverUrl: `ws://127.0.0.1:${(server.address() as AddressInfo).port}`,
    name: 'hosts/a/desired',
    doc: new Y.Doc(),
    tentative: {
      onTentative: () => events.tentative++,
      onCommitted: () => events.committed++,
      onDropped: () => events.dropped++,
    },
  });
  const [peer, request] = await accepted;
  return {
    client,
    events,
    peer,
    url: request.url,
    close: async () => {
      client.close();
      for (const socket of server.clients) socket.terminate();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

function intentUpdate(value: string): Uint8Array {
  const doc = new Y.Doc();
  doc.getArray('intents').push([value]);
  return Y.encodeStateAsUpdate(doc);
}

async function until(condition: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 5000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`${what}: not within 5 s`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

test('a tentative update is held outside the doc and applied on its commit', async () => {
  const { client, events, peer, url, close } = await scripted();
  try {
    assert.match(url, /[?&]tentative=1(&|$)/);
    peer.send(tentativeUpdateMessage(1, intentUpdate('first')));
    await until(() => events.tentative === 1, 'tentative update');
    assert.equal(client.doc.getArray('intents').toArray(), []);
    assert.ok(client.holding);
    peer.send(commitTentativeMessage(1));
    await until(() => events.committed === 1, 'commit');
    assert.equal(client.doc.getArray('intents').toArray(), ['first']);
    assert.not.ok(client.holding);
  } finally {
    await close();
  }
});

test('a held update is dropped, never applied, when the connection ends', async () => {
  const { client, events, peer, close } = await scripted();
  try {
    peer.send(tentativeUpdateMessage(1, intentUpdate('lost')));
    await until(() => events.tentative === 1, 'tentative update');
    peer.terminate();
    await until(() => events.dropped === 1, 'drop');
    assert.equal(client.doc.getArray('intents').toArray(), []);
    assert.not.ok(client.holding);
  } finally {
    await close();
  }
});

const violations: [string, (peer: WebSocket) => void][] = [
  [
    'a second tentative update before the commit',
    (peer) => {
      peer.send(tentativeUpdateMessage(1, intentUpdate('one')));
      peer.send(tentativeUpdateMessage(2, intentUpdate('two')));
    },
  ],
  [
    'a commit of another update',
    (peer) => {
      peer.send(tentativeUpdateMessage(1, intentUpdate('one')));
      peer.send(commitTentativeMessage(2));
    },
  ],
  ['a commit with nothing held', (peer) => peer.send(commitTentativeMessage(1))],
  [
    'a plain sync update before the commit',
    (peer) => {
      peer.send(tentativeUpdateMessage(1, intentUpdate('one')));
      const encoder = encoding.createEncoder();
      encoding.writeVarUint(encoder, 0);
      syncProtocol.writeUpdate(encoder, intentUpdate('two'));
      peer.send(encoding.toUint8Array(encoder));
    },
  ],
];

for (const [what, send] of violations)
  test(`${what} closes the connection with nothing applied`, async () => {
    const { client, peer, close } = await scripted();
    try {
      const closed = once(peer, 'close') as Promise<[number, Buffer]>;
      send(peer);
      const [code] = await Promise.race([
        closed,
        new Promise<never>((_, reject) => setTimeout(() => reject(new Error('not closed within 5 s')), 5000).unref()),
      ]);
      assert.is(code, 1002);
      assert.equal(client.doc.getArray('intents').toArray(), []);
      assert.not.ok(client.holding);
    } finally {
      await close();
    }
  });

test.run();
