import * as decoding from 'lib0/decoding';
import * as encoding from 'lib0/encoding';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as syncProtocol from 'y-protocols/sync';
import * as Y from 'yjs';
import type { DocumentHost, HostedDocument } from '../../../coordinator/hosted-documents.js';
import { PresenceTable } from '../../../coordinator/presence.js';
import { MESSAGE_SYNC } from '../../../coordinator/wire.js';
import {
  type Bridged,
  createBridgeState,
  documentLoaded,
  isDirty,
  localUpdateAccepted,
  upstreamClosedChannel,
  upstreamConnected,
  upstreamSyncMessage,
} from '../../../relay/bridge.js';
import type { UpstreamLink } from '../../../relay/upstream.js';
import { silentLogger } from '../../../shared/log.js';

// The bridge's confirmation logic with a stand-in document host and upstream link: local writes go
// up and stay pinned until a step 2 answering a later probe confirms them; upstream writes never
// echo back; a refused channel is not reopened.

interface Sent {
  channel: number;
  subtype: number;
}

function fakeHost(pins: string[], unpins: string[]): DocumentHost {
  return {
    pin: async (name: string) => {
      pins.push(name);
      return undefined as unknown as HostedDocument;
    },
    unpin: (name: string) => void unpins.push(name),
    acceptUpdate: async (hosted: HostedDocument, update: Uint8Array) => {
      Y.applyUpdate(hosted.doc, update);
      return update;
    },
  } as unknown as DocumentHost;
}

function fakeLink(sent: Sent[]): UpstreamLink {
  let next = 1;
  return {
    connectedUrl: () => 'ws://upstream',
    open: () => next++,
    send: (channel: number, message: Uint8Array) => {
      const decoder = decoding.createDecoder(message);
      assert.is(decoding.readVarUint(decoder), MESSAGE_SYNC);
      sent.push({ channel, subtype: decoding.readVarUint(decoder) });
    },
    close: () => undefined,
    since: () => undefined,
    presence: () => undefined,
    stats: () => ({ bytesIn: 0, bytesOut: 0, connects: 0, channels: 0 }),
    stop: () => undefined,
  };
}

function hostedDocument(name: string): HostedDocument {
  return { name, doc: new Y.Doc(), run: async (task: () => unknown) => task() } as unknown as HostedDocument;
}

function step(subtype: number, write: (encoder: encoding.Encoder) => void): decoding.Decoder {
  const encoder = encoding.createEncoder();
  write(encoder);
  const message = encoding.toUint8Array(encoder);
  const decoder = decoding.createDecoder(message);
  assert.is(decoding.peekVarUint(decoder), subtype);
  return decoder;
}

test('local writes stay pinned until the upstream confirms them; refused channels stay closed', async () => {
  const sent: Sent[] = [];
  const pins: string[] = [];
  const unpins: string[] = [];
  const bridge = createBridgeState(fakeHost(pins, unpins), new PresenceTable(), {
    logger: silentLogger,
    passConcurrency: 2,
    pullOnly: () => false,
    inScope: (name) => name.startsWith('hosts/'),
  });
  bridge.link = fakeLink(sent);
  upstreamConnected(bridge, 'ws://upstream');
  const hosted = hostedDocument('hosts/h1/status');
  documentLoaded(bridge, hosted);
  const doc = bridge.bridged.get('hosts/h1/status') as Bridged;
  assert.is(doc.channel, 1, 'a loaded document gets a channel');

  // The upstream's step 1 is answered with a step 2, then the bridge probes with its own step 1.
  const upstreamDoc = new Y.Doc();
  await upstreamSyncMessage(
    bridge,
    doc,
    step(syncProtocol.messageYjsSyncStep1, (e) => syncProtocol.writeSyncStep1(e, upstreamDoc)),
  );
  assert.equal(
    sent.map((s) => s.subtype),
    [syncProtocol.messageYjsSyncStep2, syncProtocol.messageYjsSyncStep1],
  );

  // A local write goes up at once and pins the document.
  hosted.doc.getMap('status').set('current', 'x');
  localUpdateAccepted(bridge, hosted, Y.encodeStateAsUpdate(hosted.doc), 'host:h1');
  assert.is(sent.at(-1)?.subtype, syncProtocol.messageYjsUpdate);
  assert.ok(isDirty(doc) && doc.pinned && pins.includes('hosts/h1/status'));

  // An update from upstream is applied but not sent back up.
  const before = sent.length;
  localUpdateAccepted(bridge, hosted, new Uint8Array([0, 0]), 'upstream:ws://upstream');
  assert.is(sent.length, before, 'upstream writes do not echo');

  // The answer to the first probe (sent before the write) does not confirm it: a new probe goes up.
  const answer = () =>
    step(syncProtocol.messageYjsSyncStep2, (e) => syncProtocol.writeSyncStep2(e, upstreamDoc, new Uint8Array([0])));
  await upstreamSyncMessage(bridge, doc, answer());
  assert.ok(isDirty(doc), 'the write is not yet confirmed');
  assert.is(sent.at(-1)?.subtype, syncProtocol.messageYjsSyncStep1);
  await upstreamSyncMessage(bridge, doc, answer());
  assert.not.ok(isDirty(doc), 'confirmed');
  assert.not.ok(doc.pinned);
  assert.ok(unpins.includes('hosts/h1/status'), 'unpinned once confirmed');

  upstreamClosedChannel(bridge, 1, 4403, 'not yours');
  assert.is(doc.refused, true);
  assert.is(doc.channel, null);
  assert.is(bridge.byChannel.size, 0);
});

test("a document that deleted what the upstream lacks: the log's history goes first, items before deletions, then the step 2", async () => {
  const messages: { channel: number; message: Uint8Array }[] = [];
  const link = fakeLink([]);
  const bridge = createBridgeState(fakeHost([], []), new PresenceTable(), {
    logger: silentLogger,
    passConcurrency: 2,
    pullOnly: () => false,
    inScope: (name) => name.startsWith('hosts/'),
    history: async function* () {
      for (const update of log) yield update;
    },
  });
  bridge.link = { ...link, send: (channel, message) => void messages.push({ channel, message }) };
  upstreamConnected(bridge, 'ws://upstream');
  // The relay's copy collects garbage, as status documents do; its log keeps every update.
  const hosted = { ...hostedDocument('hosts/h1/status'), doc: new Y.Doc({ gc: true }) } as HostedDocument;
  const log: Uint8Array[] = [];
  hosted.doc.on('update', (update: Uint8Array) => log.push(update));
  const results = hosted.doc.getArray('results');
  for (let seq = 1; seq <= 80; seq += 1) results.push([{ seq, tail: 'x'.repeat(100) }]);
  results.delete(0, 16); // the agent pruned #1–#16 once the relay held them
  documentLoaded(bridge, hosted);
  const doc = bridge.bridged.get('hosts/h1/status') as Bridged;
  // The upstream held nothing of it (the uplink was down the whole time).
  const upstream = new Y.Doc({ gc: true });
  const seen: number[] = [];
  upstream.getArray('results').observe((event) => {
    for (const d of event.changes.delta) if (d.insert) seen.push(...(d.insert as { seq: number }[]).map((v) => v.seq));
  });
  await upstreamSyncMessage(
    bridge,
    doc,
    step(syncProtocol.messageYjsSyncStep1, (e) => syncProtocol.writeSyncStep1(e, upstream)),
  );
  const subtypes = messages.map(({ message }) => {
    const decoder = decoding.createDecoder(message);
    decoding.readVarUint(decoder);
    const subtype = decoding.readVarUint(decoder);
    // Applied one by one, as the coordinator stores each message.
    if (subtype !== syncProtocol.messageYjsSyncStep1) Y.applyUpdate(upstream, decoding.readVarUint8Array(decoder));
    return subtype;
  });
  assert.equal(subtypes.slice(-2), [syncProtocol.messageYjsSyncStep2, syncProtocol.messageYjsSyncStep1]);
  assert.ok(subtypes.slice(0, -2).length >= 2, 'history parts first');
  assert.ok(
    subtypes.slice(0, -2).every((t) => t === syncProtocol.messageYjsUpdate),
    'sent as updates',
  );
  assert.equal(
    seen,
    Array.from({ length: 80 }, (_, i) => i + 1),
    'every result reached the upstream with content',
  );
  assert.equal(upstream.getArray('results').toJSON(), results.toJSON());
  // Without the log, the step 2 alone carries only tombstones for #1–#16.
  const plain = createBridgeState(fakeHost([], []), new PresenceTable(), {
    logger: silentLogger,
    passConcurrency: 2,
    pullOnly: () => false,
    inScope: (name) => name.startsWith('hosts/'),
  });
  const plainMessages: Uint8Array[] = [];
  plain.link = { ...link, send: (_channel, message) => void plainMessages.push(message) };
  upstreamConnected(plain, 'ws://upstream');
  documentLoaded(plain, hosted);
  await upstreamSyncMessage(
    plain,
    plain.bridged.get('hosts/h1/status') as Bridged,
    step(syncProtocol.messageYjsSyncStep1, (e) => syncProtocol.writeSyncStep1(e, new Y.Doc())),
  );
  assert.is(plainMessages.length, 2, 'step 2 and the probe only');
});

test.run();
