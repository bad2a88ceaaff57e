import { EventEmitter } from 'node:events';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type WebSocket from 'ws';
import {
  checkSilence,
  connectUpstream,
  createUpstreamState,
  openUpstreamChannel,
  startUpstreamLink,
  stopUpstreamLink,
  type UpstreamHandlers,
  type UpstreamLinkOptions,
  type UpstreamState,
} from '../../../relay/upstream.js';
import type { Logger } from '../../../shared/log.js';
import { silentLogger } from '../../../shared/log.js';
import {
  decodeFrame,
  encodeFrame,
  FRAME_CHANGES,
  FRAME_CLOSE,
  FRAME_DATA,
  FRAME_OPEN,
  FRAME_PRESENCE,
  type MuxFrame,
} from '../../../shared/sync/mux-frames.js';
import { connectNow } from '../../../shared/sync/reconnect.js';
import { sleep } from '../../../shared/time/sleep.js';

// The relay's upstream link with a stand-in socket: what an open link announces and sends, frames
// from above reaching the handlers, a bad frame or a silent link dropping the socket, and the
// reconnect schedule (backoff that restarts after a success, failover after two failures).

// ws's client as far as the link uses it; terminate() closes it as ws does (1006).
class FakeSocket extends EventEmitter {
  binaryType = '';
  readonly sent: MuxFrame[] = [];
  pings = 0;
  terminated = false;
  constructor(readonly url: string) {
    super();
  }
  send(bytes: Uint8Array, done?: (error?: Error) => void): void {
    this.sent.push(decodeFrame(bytes));
    done?.();
  }
  ping(): void {
    this.pings += 1;
  }
  terminate(): void {
    if (this.terminated) return;
    this.terminated = true;
    setImmediate(() => this.emit('close', 1006, Buffer.from('')));
  }
  receive(frame: MuxFrame): void {
    this.emit('message', Buffer.from(encodeFrame(frame)));
  }
  refuse(): void {
    this.emit('close', 1006, Buffer.from('connection refused'));
  }
}

interface Recorded {
  calls: string[];
  retries: number[];
  sockets: FakeSocket[];
}

function setUp(
  urls: string[],
  options: Partial<UpstreamLinkOptions> = {},
  handlerOverrides: Partial<UpstreamHandlers> = {},
): { link: UpstreamState; seen: Recorded } {
  const seen: Recorded = { calls: [], retries: [], sockets: [] };
  const logger: Logger = {
    ...silentLogger,
    debug: ((fields: { event?: string; delayMs?: number }) => {
      if (fields.event === 'upstream-retry' && fields.delayMs !== undefined) seen.retries.push(fields.delayMs);
    }) as Logger['debug'],
  };
  const handlers: UpstreamHandlers = {
    connected: (url) => void seen.calls.push(`connected ${url}`),
    disconnected: () => void seen.calls.push('disconnected'),
    data: (channel, message) => void seen.calls.push(`data ${channel} ${[...message]}`),
    closed: (channel, code, reason) => void seen.calls.push(`closed ${channel} ${code} ${reason}`),
    changes: (epoch, cursor, documents) => void seen.calls.push(`changes ${epoch} ${cursor} ${documents}`),
    ...handlerOverrides,
  };
  const link = createUpstreamState(
    {
      urls,
      identity: null,
      logger,
      baseBackoffMs: 10,
      maxBackoffMs: 40,
      timeoutMs: 60_000,
      maxPayload: 1 << 20,
      ...options,
    },
    handlers,
    (url) => {
      const socket = new FakeSocket(url);
      seen.sockets.push(socket);
      return socket as unknown as WebSocket;
    },
  );
  // No jitter, so the delays can be compared.
  (link.hooks as { random?: () => number }).random = () => 1;
  return { link, seen };
}

async function until(condition: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 400 && !condition(); i++) await sleep(5);
  assert.ok(condition(), what);
}

test('an open link announces itself, numbers channels from 1 and hands frames from above to the handlers', async () => {
  const { link, seen } = setUp(['ws://upstream-a/']);
  await connectUpstream(link, 'ws://upstream-a/');
  const socket = seen.sockets[0]!;
  assert.is(socket.url, 'ws://upstream-a/_relay', 'no identity: no proof in the URL');
  assert.is(openUpstreamChannel(link, 'hosts/h1/status'), null, 'nothing is sent before the link is open');
  socket.emit('open');
  assert.equal(seen.calls, ['connected ws://upstream-a/']);
  assert.is(openUpstreamChannel(link, 'hosts/h1/status'), 1);
  assert.is(openUpstreamChannel(link, 'hosts/h2/status'), 2);
  assert.equal(socket.sent, [
    { type: FRAME_OPEN, channel: 1, document: 'hosts/h1/status' },
    { type: FRAME_OPEN, channel: 2, document: 'hosts/h2/status' },
  ]);
  socket.receive({ type: FRAME_DATA, channel: 1, message: new Uint8Array([0, 1]) });
  socket.receive({ type: FRAME_CLOSE, channel: 2, code: 4403, reason: 'not yours' });
  socket.receive({ type: FRAME_CHANGES, epoch: 'e1', cursor: 7, documents: ['hosts/h3/desired'] });
  socket.receive({ type: FRAME_PRESENCE, hosts: [] }); // not for relays: ignored
  assert.equal(seen.calls.slice(1), ['data 1 0,1', 'closed 2 4403 not yours', 'changes e1 7 hosts/h3/desired']);
  assert.is(link.channels, 1);
  assert.is(link.counters.connects, 1);
  assert.ok(link.counters.bytesIn > 0 && link.counters.bytesOut > 0);
  stopUpstreamLink(link);
});

test('a bad frame, or a handler that throws, drops the link and it reconnects', async () => {
  let throwOnData = true;
  const { link, seen } = setUp(
    ['ws://upstream-a'],
    {},
    {
      data: () => {
        if (throwOnData) throw new Error('handler bug');
      },
    },
  );
  connectNow(link.reconnect, link.hooks);
  await until(() => seen.sockets.length === 1, 'first attempt');
  seen.sockets[0]!.emit('open');
  seen.sockets[0]!.emit('message', Buffer.from([0xff, 0xff, 0xff]));
  assert.ok(seen.sockets[0]!.terminated, 'bad frame: dropped');
  await until(() => seen.sockets.length === 2, 'reconnected');
  assert.equal(seen.calls, ['connected ws://upstream-a', 'disconnected']);
  seen.sockets[1]!.emit('open');
  seen.sockets[1]!.receive({ type: FRAME_DATA, channel: 1, message: new Uint8Array([1]) });
  assert.ok(seen.sockets[1]!.terminated, 'throwing handler: dropped, not crashed');
  throwOnData = false;
  await until(() => seen.sockets.length === 3, 'reconnected again');
  stopUpstreamLink(link);
});

test('failed attempts back off exponentially to the cap and fail over after two; a success restarts the backoff', async () => {
  const { link, seen } = setUp(['ws://a', 'ws://b']);
  connectNow(link.reconnect, link.hooks);
  for (let n = 1; n <= 5; n++) {
    await until(() => seen.sockets.length === n, `attempt ${n}`);
    if (n < 5) seen.sockets[n - 1]!.refuse();
  }
  assert.equal(
    seen.sockets.map((s) => s.url),
    ['ws://a/_relay', 'ws://a/_relay', 'ws://b/_relay', 'ws://b/_relay', 'ws://a/_relay'],
  );
  assert.equal(seen.retries, [20, 40, 40, 40], 'doubling from the base, capped');
  seen.sockets[4]!.emit('open');
  assert.equal(seen.calls, ['connected ws://a']);
  seen.sockets[4]!.refuse(); // the live link is lost
  assert.equal(seen.calls, ['connected ws://a', 'disconnected']);
  assert.is(seen.retries.at(-1), 20, 'backoff starts again after a success');
  await until(() => seen.sockets.length === 6, 'reconnecting');
  assert.is(seen.sockets[5]!.url, 'ws://a/_relay', 'one failure after a success: same endpoint');
  stopUpstreamLink(link);
});

test('a silent link is dropped after the timeout; until then it is pinged', async () => {
  const { link, seen } = setUp(['ws://a'], { timeoutMs: 150 });
  await connectUpstream(link, 'ws://a');
  const socket = seen.sockets[0]!;
  socket.emit('open');
  const asSocket = socket as unknown as WebSocket;
  assert.not.ok(checkSilence(link, asSocket, 'ws://a', 1000, 1150), 'at the timeout: still kept');
  assert.is(socket.pings, 1, 'pinged');
  assert.ok(checkSilence(link, asSocket, 'ws://a', 1000, 1151), 'past it: dropped');
  assert.ok(socket.terminated);
  await until(() => seen.calls.includes('disconnected'), 'the bridge hears the link is gone');
  await until(() => seen.sockets.length === 2, 'reconnected');
  stopUpstreamLink(link);
  assert.ok(seen.sockets[1]!.terminated, 'stop closes the attempt in progress');
});

test('after stop nothing reconnects; the interface reports the connected URL and counts', async () => {
  const sockets: FakeSocket[] = [];
  const link = startUpstreamLink(
    {
      urls: ['ws://a'],
      identity: null,
      logger: silentLogger,
      baseBackoffMs: 5,
      maxBackoffMs: 5,
      timeoutMs: 60_000,
      maxPayload: 1 << 20,
    },
    {
      connected: () => undefined,
      disconnected: () => undefined,
      data: () => undefined,
      closed: () => undefined,
      changes: () => undefined,
    },
    (url) => {
      const socket = new FakeSocket(url);
      sockets.push(socket);
      return socket as unknown as WebSocket;
    },
  );
  await until(() => sockets.length === 1, 'connecting');
  assert.is(link.connectedUrl(), null);
  sockets[0]!.emit('open');
  assert.is(link.connectedUrl(), 'ws://a');
  assert.is(link.open('fleet/policy'), 1);
  link.presence([]);
  link.presence([{ host: 'h1', online: true, lastSeen: 1 }]);
  link.close(1);
  assert.equal(
    sockets[0]!.sent.map((f) => f.type),
    [FRAME_OPEN, FRAME_PRESENCE, FRAME_CLOSE],
    'an empty presence list is not sent',
  );
  assert.equal(link.stats().channels, 0);
  link.stop();
  await sleep(50);
  assert.is(sockets.length, 1, 'no attempt after stop');
  assert.is(link.connectedUrl(), null);
});

test.run();
