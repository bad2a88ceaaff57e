import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import fc from 'fast-check';
import * as encoding from 'lib0/encoding';
import { WebSocket, WebSocketServer } from 'ws';
import {
  decodeFrame,
  encodeFrame,
  FRAME_CHANGES,
  FRAME_DATA,
  FRAME_OPEN,
  FRAME_SINCE,
  type MuxFrame,
} from '../../shared/sync/mux-frames.js';
import { bytes, edgeNumber, encode, mutated, nastyString, rawVarUint } from './bytes.js';
import { type AnyInputClass, type HealthCheck, inputClass } from './campaign.js';
import { syncRoundTrip } from './health.js';
import { type LiveProcess, startLiveProcess } from './live-process.js';
import { concat, poolDocument, varString, yMessage } from './protocol-inputs.js';

// The relay attacked from above: its upstream is the fuzzer, speaking the relay-link protocol
// well enough that the relay's documents sync (it answers step 1s, confirms probes), and sending
// fuzzed frames in between: CHANGES naming odd documents, DATA with any y-protocols message on
// the relay's channels, CLOSE with any code, unknown and broken frames. A compromised
// coordinator may cut the relay off (an outage); it must not crash it, and the relay's own
// agents must keep syncing with each other meanwhile.

interface Session {
  ws: WebSocket;
  channels: number[];
}

export interface HostileUpstream {
  url: string;
  session(): Session | null;
  waitForSession(timeoutMs: number): Promise<Session | null>;
  close(): Promise<void>;
}

const EMPTY_STEP_2 = encode((e) => {
  encoding.writeVarUint(e, 0);
  encoding.writeVarUint(e, 1);
  encoding.writeVarUint8Array(e, new Uint8Array([0, 0]));
});
const EMPTY_STEP_1 = encode((e) => {
  encoding.writeVarUint(e, 0);
  encoding.writeVarUint(e, 0);
  encoding.writeVarUint8Array(e, new Uint8Array([0]));
});

export async function startHostileUpstream(): Promise<HostileUpstream> {
  const wss = new WebSocketServer({ noServer: true, maxPayload: 2 * 1024 * 1024 });
  let current: Session | null = null;
  const waiting: (() => void)[] = [];
  const server: Server = createServer((_, res) => res.writeHead(404).end());
  server.on('upgrade', (req, socket, head) => {
    socket.on('error', () => undefined);
    wss.handleUpgrade(req, socket, head, (ws) => {
      const session: Session = { ws, channels: [] };
      current = session;
      for (const wake of waiting.splice(0)) wake();
      const send = (frame: MuxFrame): void => {
        if (ws.readyState === WebSocket.OPEN) ws.send(encodeFrame(frame));
      };
      ws.on('error', () => undefined);
      ws.on('close', () => {
        if (current === session) current = null;
      });
      ws.on('message', (data: Buffer) => {
        let frame: MuxFrame;
        try {
          frame = decodeFrame(new Uint8Array(data));
        } catch {
          return;
        }
        if (frame.type === FRAME_SINCE) send({ type: FRAME_CHANGES, epoch: 'hostile', cursor: 0, documents: [] });
        if (frame.type === FRAME_OPEN) {
          session.channels.push(frame.channel);
          if (session.channels.length > 64) session.channels.shift();
          send({ type: FRAME_DATA, channel: frame.channel, message: EMPTY_STEP_1 });
        }
        // A step 1 (a sync or a probe) gets an empty step 2: as far as the relay knows, the
        // upstream stored everything.
        if (frame.type === FRAME_DATA && frame.message[0] === 0 && frame.message[1] === 0)
          send({ type: FRAME_DATA, channel: frame.channel, message: EMPTY_STEP_2 });
      });
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `ws://127.0.0.1:${port}`,
    session: () => current,
    waitForSession(timeoutMs) {
      // A link the relay is closing (its close not yet seen) is no session: wait for the next one.
      if (current?.ws.readyState === WebSocket.OPEN) return Promise.resolve(current);
      return new Promise((resolve) => {
        const timer = setTimeout(() => resolve(current), timeoutMs);
        waiting.push(() => {
          clearTimeout(timer);
          resolve(current);
        });
      });
    },
    async close() {
      for (const ws of wss.clients) ws.terminate();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

// One frame from the upstream; `channel` indexes the channels the relay opened, so DATA and
// CLOSE mostly land on a live one.
type UpstreamStep =
  | { kind: 'changes'; documents: string[]; cursor: number }
  | { kind: 'data'; channel: number; message: Uint8Array }
  | { kind: 'close'; channel: number; code: number; reason: string }
  | { kind: 'raw'; bytes: Uint8Array };

const upstreamStep = (): fc.Arbitrary<UpstreamStep> =>
  fc.oneof(
    {
      weight: 2,
      arbitrary: fc.record({
        kind: fc.constant('changes' as const),
        // Mostly documents the relay may keep (a bounded set), now and then anything.
        documents: fc.array(
          fc.oneof({ weight: 8, arbitrary: poolDocument() }, { weight: 1, arbitrary: nastyString() }),
          {
            maxLength: 5,
          },
        ),
        cursor: edgeNumber(),
      }),
    },
    { weight: 5, arbitrary: fc.record({ kind: fc.constant('data' as const), channel: fc.nat(), message: yMessage() }) },
    {
      weight: 1,
      arbitrary: fc.record({
        kind: fc.constant('close' as const),
        channel: fc.nat(),
        code: fc.constantFrom(1000, 1006, 1008, 4403, 0, 65_535, 2 ** 32),
        reason: nastyString().map((s) => s.slice(0, 200)),
      }),
    },
    {
      weight: 2,
      arbitrary: fc.record({
        kind: fc.constant('raw' as const),
        bytes: fc.oneof(
          mutated(
            fc.constant(
              encodeFrame({ type: FRAME_CHANGES, epoch: 'hostile', cursor: 1, documents: ['hosts/fz-1/status'] }),
            ),
            4,
          ),
          bytes(24),
        ),
      }),
    },
  );

function encodeStep(step: UpstreamStep, channels: number[]): Uint8Array {
  const pick = (n: number): number => (channels.length > 0 && n % 8 !== 7 ? channels[n % channels.length]! : n);
  switch (step.kind) {
    case 'changes':
      return encode((e) => {
        encoding.writeVarUint(e, FRAME_CHANGES);
        encoding.writeVarString(e, 'hostile');
        encoding.writeUint8Array(e, rawVarUint(step.cursor));
        encoding.writeVarUint(e, step.documents.length);
        for (const d of step.documents) encoding.writeVarString(e, d);
      });
    case 'data':
      return concat(rawVarUint(FRAME_DATA), rawVarUint(pick(step.channel)), step.message);
    case 'close':
      return concat(rawVarUint(2), rawVarUint(pick(step.channel)), rawVarUint(step.code), varString(step.reason));
    case 'raw':
      return step.bytes;
  }
}

export interface HostileUpstreamTarget {
  relay: LiveProcess;
  upstream: HostileUpstream;
  classes: AnyInputClass[];
  checks: HealthCheck[];
  close(): Promise<void>;
}

export async function startHostileUpstreamTarget(dir: string): Promise<HostileUpstreamTarget> {
  const upstream = await startHostileUpstream();
  const relay = await startLiveProcess({
    name: 'relay-under-hostile-upstream',
    listens: true,
    logFile: join(dir, 'relay-under-hostile-upstream.log'),
    dataDirs: [join(dir, 'relay-under-hostile-upstream')],
    args: (port) => [
      'relay',
      '--data-dir',
      join(dir, 'relay-under-hostile-upstream'),
      '--port',
      String(port),
      '--upstream',
      upstream.url,
      '--backoff-base',
      '0.05',
      '--backoff-max',
      '0.5',
      '--upstream-timeout',
      '5',
      '--idle-unload',
      '1',
      '--log-level',
      'error',
    ],
  });
  const classes: AnyInputClass[] = [
    inputClass({
      name: 'upstream-frames@relay-under-hostile-upstream',
      target: relay.name,
      arbitrary: fc.array(upstreamStep(), { minLength: 1, maxLength: 6 }),
      concurrency: 2,
      weight: 3,
      describe: (steps: UpstreamStep[]) =>
        steps.map((s) =>
          s.kind === 'data'
            ? { ...s, message: Buffer.from(s.message).toString('hex') }
            : s.kind === 'raw'
              ? { kind: 'raw', bytes: Buffer.from(s.bytes).toString('hex') }
              : s,
        ),
      async deliver(steps) {
        const session = await upstream.waitForSession(5_000);
        if (!session) return '(no link)';
        // Several workers share the link: one whose link the relay dropped before it sent anything
        // did not deliver its input.
        if (session.ws.readyState !== WebSocket.OPEN) return '(link down before the input)';
        for (const step of steps) {
          if (session.ws.readyState !== WebSocket.OPEN) break;
          session.ws.send(encodeStep(step, session.channels));
        }
        await new Promise((r) => setTimeout(r, 20));
        return session.ws.readyState === WebSocket.OPEN ? 'link kept' : 'link dropped by the relay';
      },
    }),
  ];
  const checks: HealthCheck[] = [
    {
      target: relay.name,
      name: "the relay's own clients sync with each other",
      intervalMs: 2_000,
      timeoutMs: 20_000,
      run: () => syncRoundTrip(relay.url, relay.url, 'hosts/health-site/status', 15_000),
    },
  ];
  return {
    relay,
    upstream,
    classes,
    checks,
    async close() {
      await relay.stop();
      await upstream.close();
    },
  };
}
