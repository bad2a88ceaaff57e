import type { AddressInfo } from 'node:net';
import * as decoding from 'lib0/decoding';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { type WebSocket, WebSocketServer } from 'ws';
import * as syncProtocol from 'y-protocols/sync';
import * as Y from 'yjs';
import { syncMessage } from '../../../../coordinator/wire.js';
import { connectDocument, type DocumentConnection } from '../../../../shared/node/connect.js';
import { commitTentativeMessage, tentativeUpdateMessage } from '../../../../shared/sync/tentative.js';
import { sleep } from '../../../../shared/time/sleep.js';
import { waitFor } from '../../../harness/processes.js';

// The reader side of tentative delivery (connect.ts, holdTentativeUpdates) against a real
// websocket server this test scripts: a tentative update stays out of the document until its
// commit, is dropped with the connection, and a server that breaks the order is closed on.

interface ScriptedServer {
  url: string;
  sockets: WebSocket[];
  urls: string[];
  closes: { code: number; reason: string }[];
  close(): Promise<void>;
}

// Answers every sync step 1 with an empty step 2, so the client counts as synced.
async function scriptedServer(): Promise<ScriptedServer> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise<void>((resolve) => wss.once('listening', () => resolve()));
  const server: ScriptedServer = {
    url: `ws://127.0.0.1:${(wss.address() as AddressInfo).port}`,
    sockets: [],
    urls: [],
    closes: [],
    close: () =>
      new Promise((resolve) => {
        for (const ws of wss.clients) ws.terminate();
        wss.close(() => resolve());
      }),
  };
  wss.on('connection', (ws, req) => {
    server.sockets.push(ws);
    server.urls.push(req.url ?? '');
    ws.on('close', (code, reason) => server.closes.push({ code, reason: reason.toString() }));
    ws.on('message', (data: Buffer) => {
      const decoder = decoding.createDecoder(new Uint8Array(data));
      if (decoding.readVarUint(decoder) !== 0) return;
      if (decoding.readVarUint(decoder) !== syncProtocol.messageYjsSyncStep1) return;
      ws.send(syncMessage((encoder) => syncProtocol.writeSyncStep2(encoder, new Y.Doc(), Uint8Array.of(0))));
    });
  });
  return server;
}

function intentUpdate(value: string): Uint8Array {
  const doc = new Y.Doc();
  doc.getArray('intents').push([{ value }]);
  return Y.encodeStateAsUpdate(doc);
}

const held = (doc: Y.Doc): unknown[] => doc.getArray('intents').toArray();

let server: ScriptedServer;
let connection: DocumentConnection | null = null;
test.before.each(async () => {
  server = await scriptedServer();
});
test.after.each(async () => {
  connection?.close();
  connection = null;
  await server.close();
});

function connect(seen: Uint8Array[] = []): DocumentConnection {
  connection = connectDocument(server.url, 'hosts/h1/desired', {
    identity: null,
    baseBackoffMs: 50,
    maxBackoffMs: 100,
    tentative: true,
    onTentativeUpdate: (update) => void seen.push(update),
  });
  return connection;
}

test('a tentative update is applied only at its commit; the hook sees it before', async () => {
  const seen: Uint8Array[] = [];
  const { doc } = connect(seen);
  await waitFor('connected', () => server.sockets.length === 1 && server.urls[0]!.includes('tentative=1'));
  await waitFor('synced', () => connection!.provider.synced);
  server.sockets[0]!.send(tentativeUpdateMessage(1, intentUpdate('a')));
  await waitFor('the hook saw the update', () => seen.length === 1);
  await sleep(50);
  assert.equal(held(doc), [], 'not in the document before its commit');
  server.sockets[0]!.send(commitTentativeMessage(1));
  await waitFor('applied at the commit', () => held(doc).length === 1);
  assert.equal(held(doc), [{ value: 'a' }]);
});

test('a tentative update whose commit never comes is dropped with the connection', async () => {
  const { doc } = connect();
  await waitFor('synced', () => connection!.provider.synced);
  server.sockets[0]!.send(tentativeUpdateMessage(1, intentUpdate('lost')));
  await sleep(50);
  server.sockets[0]!.terminate();
  await waitFor('reconnected', () => server.sockets.length === 2 && connection!.provider.synced);
  // The new connection's server commits its own number 1: it must not apply the old hold.
  server.sockets[1]!.send(commitTentativeMessage(1));
  await waitFor('the client closed on a commit of nothing', () => server.closes.some((c) => c.code === 4000));
  assert.equal(held(doc), [], 'the uncommitted update was never applied');
  assert.match(server.closes.find((c) => c.code === 4000)!.reason, /commit of 1 with no tentative update held/);
});

test('a second tentative update before the commit closes the connection and applies neither', async () => {
  const { doc } = connect();
  await waitFor('synced', () => connection!.provider.synced);
  server.sockets[0]!.send(tentativeUpdateMessage(1, intentUpdate('a')));
  server.sockets[0]!.send(tentativeUpdateMessage(2, intentUpdate('b')));
  server.sockets[0]!.send(commitTentativeMessage(2));
  await waitFor('closed by the client', () => server.closes.length > 0);
  assert.is(server.closes[0]!.code, 4000);
  assert.match(server.closes[0]!.reason, /tentative update 2 arrived while 1 was not committed/);
  await waitFor('reconnected', () => server.sockets.length >= 2 && connection!.provider.synced);
  assert.equal(held(doc), []);
});

test('a reader that did not ask sends no tentative parameter', async () => {
  connection = connectDocument(server.url, 'hosts/h1/desired', { identity: null });
  await waitFor('connected', () => server.urls.length === 1);
  assert.not.match(server.urls[0]!, /tentative/);
});

test.run();
