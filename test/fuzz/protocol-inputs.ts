import fc from 'fast-check';
import * as encoding from 'lib0/encoding';
import * as syncProtocol from 'y-protocols/sync';
import * as Y from 'yjs';
import {
  FRAME_CHANGES,
  FRAME_CLOSE,
  FRAME_DATA,
  FRAME_OPEN,
  FRAME_PRESENCE,
  FRAME_SINCE,
} from '../../shared/sync/mux-frames.js';
import { bytes, EDGE_NUMBERS, edgeNumber, encode, mutated, nastyString, rawVarUint, weirdJson } from './bytes.js';

// Inputs for the servers (coordinator and relay): Yjs updates, y-protocols messages, document
// names, websocket frames and handshakes, raw HTTP requests and relay-link frames. Each class
// mixes valid encodings, mutations of them and random bytes, so inputs reach every layer.

// Documents fuzzed writes go to: a bounded pool, so what the servers legitimately keep (the
// update log's per-document counters, loaded documents) stays bounded over a long run.
export const POOL_SIZE = 64;
export const poolHost = (i: number): string => `fz-${i % POOL_SIZE}`;
export const poolDocument = (): fc.Arbitrary<string> =>
  fc
    .tuple(fc.nat({ max: POOL_SIZE - 1 }), fc.constantFrom('desired', 'status'))
    .map(([i, role]) => `hosts/${poolHost(i)}/${role}`);

// ---------------------------------------------------------------------------------- Yjs updates

type YOp =
  | { op: 'push'; key: string; values: unknown[] }
  | { op: 'set'; key: string; field: string; value: unknown }
  | { op: 'text'; key: string; at: number; text: string }
  | { op: 'delete'; key: string; at: number; length: number };

const Y_KEYS = ['intents', 'policies', 'requests', 'enrollments', 'results', 'status', 'timestamp', 'x'] as const;

const yOp = (): fc.Arbitrary<YOp> =>
  fc.oneof(
    fc.record({
      op: fc.constant('push' as const),
      key: fc.constantFrom(...Y_KEYS),
      values: fc.array(weirdJson(3), { minLength: 1, maxLength: 3 }),
    }),
    fc.record({
      op: fc.constant('set' as const),
      key: fc.constantFrom(...Y_KEYS),
      field: nastyString().map((s) => s.slice(0, 100)),
      value: weirdJson(3),
    }),
    fc.record({
      op: fc.constant('text' as const),
      key: fc.constantFrom('t', 'x'),
      at: fc.nat({ max: 20 }),
      text: fc.string({ maxLength: 30 }),
    }),
    fc.record({
      op: fc.constant('delete' as const),
      key: fc.constantFrom(...Y_KEYS),
      at: fc.nat({ max: 5 }),
      length: fc.integer({ min: 1, max: 5 }),
    }),
  );

function applyOp(doc: Y.Doc, op: YOp): void {
  switch (op.op) {
    case 'push':
      doc.getArray(op.key).push(op.values);
      return;
    case 'set':
      doc.getMap(`${op.key}-map`).set(op.field, op.value);
      return;
    case 'text': {
      const text = doc.getText(op.key);
      text.insert(Math.min(op.at, text.length), op.text);
      return;
    }
    case 'delete': {
      const array = doc.getArray(op.key);
      if (op.at < array.length) array.delete(op.at, Math.min(op.length, array.length - op.at));
      return;
    }
  }
}

// A real update from a doc with a chosen client id: whole (applies) or only the last ops
// (depends on structs the server never saw: pending forever, or a delete of unknown items).
const validUpdate = (): fc.Arbitrary<Uint8Array> =>
  fc
    .record({
      clientId: fc.oneof(fc.nat({ max: 2 ** 32 - 1 }), fc.constantFrom(0, 1, 2 ** 31, 2 ** 32 - 1)),
      base: fc.array(yOp(), { maxLength: 4 }),
      tail: fc.array(yOp(), { maxLength: 3 }),
      incremental: fc.boolean(),
    })
    .map(({ clientId, base, tail, incremental }) => {
      const doc = new Y.Doc({ gc: false });
      doc.clientID = clientId;
      // Yjs refuses some values locally (an object whose `constructor` key is not Object's);
      // such an op is left out, as a client could not send it either.
      const apply = (op: YOp): void => {
        try {
          doc.transact(() => applyOp(doc, op));
        } catch {}
      };
      for (const op of base) apply(op);
      const before = Y.encodeStateVector(doc);
      for (const op of tail) apply(op);
      const update = incremental ? Y.encodeStateAsUpdate(doc, before) : Y.encodeStateAsUpdate(doc);
      doc.destroy();
      return update;
    });

// Building a doc per input costs milliseconds; a fixed corpus of real updates (the same in every
// run) mutated per input costs microseconds.
let corpus: Uint8Array[] | null = null;
const corpusUpdate = (): fc.Arbitrary<Uint8Array> =>
  fc.nat().map((i) => {
    corpus ??= fc.sample(validUpdate(), { seed: 20_240_601, numRuns: 400 });
    return corpus[i % corpus.length]!;
  });

export const yjsUpdate = (): fc.Arbitrary<Uint8Array> =>
  fc.oneof(
    { weight: 3, arbitrary: corpusUpdate() },
    { weight: 5, arbitrary: mutated(corpusUpdate(), 3) },
    { weight: 2, arbitrary: bytes(48) },
    // Struct and delete-set counts at the varint edges.
    {
      weight: 1,
      arbitrary: fc
        .tuple(edgeNumber(), edgeNumber(), edgeNumber(), bytes(16))
        .map(([structs, client, clock, rest]) =>
          concat(rawVarUint(structs), rawVarUint(1), rawVarUint(client), rawVarUint(clock), rest),
        ),
    },
  );

const stateVector = (): fc.Arbitrary<Uint8Array> =>
  fc.oneof(
    fc
      .array(fc.tuple(edgeNumber(), edgeNumber()), { maxLength: 4 })
      .map((entries) =>
        concat(
          rawVarUint(entries.length),
          ...entries.flatMap(([client, clock]) => [rawVarUint(client), rawVarUint(clock)]),
        ),
      ),
    bytes(24),
  );

// ----------------------------------------------------------------------- y-protocols messages

const awarenessUpdate = (): fc.Arbitrary<Uint8Array> =>
  fc.oneof(
    fc
      .array(
        fc.record({
          client: edgeNumber(),
          clock: edgeNumber(),
          state: fc.oneof(
            weirdJson(3).map((v) => JSON.stringify(v) ?? 'null'),
            fc.constantFrom('null', '{', '', '{"role":"agent","host":"fz-1"}', '[]'),
            nastyString(),
          ),
        }),
        { maxLength: 4 },
      )
      .map((entries) =>
        encode((e) => {
          encoding.writeVarUint(e, entries.length);
          for (const entry of entries) {
            encoding.writeUint8Array(e, rawVarUint(entry.client));
            encoding.writeUint8Array(e, rawVarUint(entry.clock));
            encoding.writeVarString(e, entry.state);
          }
        }),
      ),
    // An update with no entries (what encodeAwarenessUpdate(awareness, []) gives).
    fc.constant(new Uint8Array([0])),
    bytes(32),
  );

const validMessage = (): fc.Arbitrary<Uint8Array> =>
  fc.oneof(
    stateVector().map((sv) =>
      encode((e) => {
        encoding.writeVarUint(e, 0);
        encoding.writeVarUint(e, syncProtocol.messageYjsSyncStep1);
        encoding.writeVarUint8Array(e, sv);
      }),
    ),
    fc
      .tuple(fc.constantFrom(syncProtocol.messageYjsSyncStep2, syncProtocol.messageYjsUpdate), yjsUpdate())
      .map(([subtype, update]) =>
        encode((e) => {
          encoding.writeVarUint(e, 0);
          encoding.writeVarUint(e, subtype);
          encoding.writeVarUint8Array(e, update);
        }),
      ),
    awarenessUpdate().map((update) =>
      encode((e) => {
        encoding.writeVarUint(e, 1);
        encoding.writeVarUint8Array(e, update);
      }),
    ),
    fc.constant(new Uint8Array([3])),
    bytes(8).map((rest) => concat(new Uint8Array([2]), rest)),
    fc.tuple(edgeNumber(), bytes(8)).map(([type, rest]) => concat(rawVarUint(type), rest)),
    fc.tuple(edgeNumber(), bytes(8)).map(([subtype, rest]) => concat(new Uint8Array([0]), rawVarUint(subtype), rest)),
  );

// One websocket message of the y-websocket protocol: valid, mutated or random.
export const yMessage = (): fc.Arbitrary<Uint8Array> =>
  fc.oneof(
    { weight: 6, arbitrary: validMessage() },
    { weight: 3, arbitrary: mutated(validMessage(), 3) },
    { weight: 1, arbitrary: bytes(32) },
  );

// Messages that cannot write (step 1, awareness, queries, junk): for documents outside the pool.
export const readOnlyYMessage = (): fc.Arbitrary<Uint8Array> =>
  fc.oneof(
    stateVector().map((sv) => concat(new Uint8Array([0, 0]), rawVarUint(sv.length), sv)),
    awarenessUpdate().map((u) => concat(new Uint8Array([1]), rawVarUint(u.length), u)),
    fc.constant(new Uint8Array([3])),
    fc.constant(new Uint8Array([])),
  );

// ------------------------------------------------------------------------------ document names

const docNameRaw = (): fc.Arbitrary<string> =>
  fc.oneof(
    { weight: 2, arbitrary: poolDocument() },
    {
      weight: 4,
      arbitrary: fc.constantFrom(
        'fleet/policy',
        'fleet/enrollment',
        'fleet/timestamp',
        'fleet/x',
        '_relay',
        '',
        '/',
        'hosts',
        'hosts/',
        'hosts//desired',
        'hosts/h1',
        'hosts/h1/',
        'hosts/h1/desired/',
        'hosts/h1/desired/x',
        'hosts/H1/desired',
        'hosts/-h/desired',
        'hosts/../fleet/policy',
        '../../etc/passwd',
        'hosts/h1/../../etc/passwd',
        'fleet/\0nul',
        'fleet/',
        'fleet/../hosts/h1/desired',
        'hosts/h1/desired\0',
        'hosts/h\u0131/desired',
        'hosts/h1/status\uFEFF',
        'hosts/%2e%2e/desired',
        'hosts/a%2Fb/desired',
        '\\hosts\\h1\\desired',
        'hosts/h1/desired?x=1',
        'hosts/h1/desired#frag',
      ),
    },
    {
      weight: 2,
      arbitrary: fc
        .tuple(
          fc.constantFrom('hosts/', 'fleet/', '', '_relay/'),
          nastyString(),
          fc.constantFrom('/desired', '/status', '', '/'),
        )
        .map(([a, b, c]) => `${a}${b.slice(0, 2000)}${c}`),
    },
    {
      weight: 1,
      arbitrary: fc.constantFrom(64, 65, 1_000, 8_000, 16_000, 100_000).map((n) => `hosts/${'a'.repeat(n)}/desired`),
    },
    { weight: 1, arbitrary: fc.constantFrom(57, 58, 64, 5_000, 20_000).map((n) => `fleet/${'b'.repeat(n)}`) },
  );

// How the name goes into the request target: as browsers encode it, raw, fully percent-encoded,
// or with broken escapes.
export const docPath = (): fc.Arbitrary<string> =>
  fc
    .tuple(
      docNameRaw(),
      fc.constantFrom('encoded', 'raw', 'percent-all', 'broken-escape', 'double-slash'),
      fc.nat({ max: 100 }),
    )
    .map(([name, chosen, at]) => {
      // Encoding a 100,000-character name byte by byte is slow and adds nothing over 'raw'.
      const style = name.length > 2_000 && chosen === 'percent-all' ? 'raw' : chosen;
      switch (style) {
        case 'encoded':
          return `/${name.split('/').map(safeEncode).join('/')}`;
        case 'raw':
          return `/${name}`;
        case 'percent-all':
          return `/${Array.from(new TextEncoder().encode(name), (b) => `%${b.toString(16).padStart(2, '0')}`).join('')}`;
        case 'broken-escape': {
          const encoded = name.split('/').map(safeEncode).join('/');
          const cut = at % (encoded.length + 1);
          return `/${encoded.slice(0, cut)}${['%', '%E0%A4%A', '%zz', '%C0%AF', '%ED%A0%80'][at % 5]}${encoded.slice(cut)}`;
        }
        default:
          return `//${name}`;
      }
    });

function safeEncode(segment: string): string {
  try {
    return encodeURIComponent(segment);
  } catch {
    // Lone surrogates: encoded as their UTF-8 replacement would be.
    return encodeURIComponent(segment.replace(/[\uD800-\uDFFF]/g, '\uFFFD'));
  }
}

// ----------------------------------------------------------------------------- relay-link frames

const muxDocument = (): fc.Arbitrary<string> =>
  fc.oneof({ weight: 3, arbitrary: poolDocument() }, { weight: 1, arbitrary: docNameRaw() });

// A relay-link frame as a relay would send it upstream; `channel` picks among a few so DATA
// and CLOSE often hit an open channel.
export type MuxStep =
  | { kind: 'open'; channel: number; document: string }
  | { kind: 'data'; channel: number; message: Uint8Array }
  | { kind: 'close'; channel: number; code: number; reason: string }
  | { kind: 'raw'; bytes: Uint8Array };

const channelNumber = (): fc.Arbitrary<number> =>
  fc.oneof({ weight: 6, arbitrary: fc.integer({ min: 1, max: 4 }) }, { weight: 1, arbitrary: edgeNumber() });

const validMuxFrame = (): fc.Arbitrary<Uint8Array> =>
  fc.oneof(
    fc.tuple(channelNumber(), muxDocument()).map(([channel, document]) =>
      encode((e) => {
        encoding.writeVarUint(e, FRAME_OPEN);
        encoding.writeUint8Array(e, rawVarUint(channel));
        encoding.writeVarString(e, document);
      }),
    ),
    fc.tuple(channelNumber(), edgeNumber(), nastyString()).map(([channel, code, reason]) =>
      encode((e) => {
        encoding.writeVarUint(e, FRAME_CLOSE);
        encoding.writeUint8Array(e, rawVarUint(channel));
        encoding.writeUint8Array(e, rawVarUint(code));
        encoding.writeVarString(e, reason.slice(0, 300));
      }),
    ),
    fc.tuple(fc.oneof(hexString(0, 16), nastyString()), edgeNumber()).map(([epoch, cursor]) =>
      encode((e) => {
        encoding.writeVarUint(e, FRAME_SINCE);
        encoding.writeVarString(e, epoch.slice(0, 200));
        encoding.writeUint8Array(e, rawVarUint(cursor));
      }),
    ),
    fc
      .array(
        fc.record({
          host: fc.oneof(
            fc.constantFrom('fz-1', 'fz-2', 'h1'),
            nastyString().map((s) => s.slice(0, 100)),
          ),
          online: fc.constantFrom(0, 1, 2, 2 ** 32),
          lastSeen: fc.oneof(
            fc.double(),
            fc.constantFrom(Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY, -0, 1e300, Date.now()),
          ),
        }),
        { maxLength: 5 },
      )
      .map((hosts) =>
        encode((e) => {
          encoding.writeVarUint(e, FRAME_PRESENCE);
          encoding.writeVarUint(e, hosts.length);
          for (const h of hosts) {
            encoding.writeVarString(e, h.host);
            encoding.writeUint8Array(e, rawVarUint(h.online));
            encoding.writeFloat64(e, h.lastSeen);
          }
        }),
      ),
    // Frames only an upstream sends, and types that do not exist.
    fc.array(muxDocument(), { maxLength: 3 }).map((documents) =>
      encode((e) => {
        encoding.writeVarUint(e, FRAME_CHANGES);
        encoding.writeVarString(e, 'epoch');
        encoding.writeVarUint(e, 1);
        encoding.writeVarUint(e, documents.length);
        for (const d of documents) encoding.writeVarString(e, d);
      }),
    ),
    fc
      .tuple(fc.constantFrom(6, 7, 127, 128, 2 ** 32, 2 ** 53), bytes(8))
      .map(([type, rest]) => concat(rawVarUint(type), rest)),
  );

export const muxStep = (): fc.Arbitrary<MuxStep> =>
  fc.oneof(
    {
      weight: 3,
      arbitrary: fc.record({ kind: fc.constant('open' as const), channel: channelNumber(), document: muxDocument() }),
    },
    {
      weight: 5,
      arbitrary: fc.record({ kind: fc.constant('data' as const), channel: channelNumber(), message: yMessage() }),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        kind: fc.constant('close' as const),
        channel: channelNumber(),
        code: fc.constantFrom(...EDGE_NUMBERS, 1000, 4403, 1008),
        reason: nastyString().map((s) => s.slice(0, 200)),
      }),
    },
    { weight: 3, arbitrary: fc.record({ kind: fc.constant('raw' as const), bytes: mutated(validMuxFrame(), 3) }) },
  );

// DATA that writes only where a write is bounded: pool documents. Other channels get messages
// that cannot write (a stray random update could otherwise create a document per input).
export function encodeMuxStep(step: MuxStep, openDocuments: Map<number, string>): Uint8Array {
  switch (step.kind) {
    case 'open':
      openDocuments.set(step.channel, step.document);
      return concat(rawVarUint(FRAME_OPEN), rawVarUint(step.channel), varString(step.document));
    case 'data': {
      const document = openDocuments.get(step.channel);
      const pooled = document !== undefined && /^hosts\/fz-\d+\/(desired|status)$/.test(document);
      const message = pooled
        ? step.message
        : step.message[0] === 0 && step.message[1] !== 0
          ? new Uint8Array([3])
          : step.message;
      return concat(rawVarUint(FRAME_DATA), rawVarUint(step.channel), message);
    }
    case 'close':
      openDocuments.delete(step.channel);
      return concat(rawVarUint(FRAME_CLOSE), rawVarUint(step.channel), rawVarUint(step.code), varString(step.reason));
    case 'raw':
      return step.bytes;
  }
}

// ------------------------------------------------------------------------------ websocket frames

export interface WsFrame {
  fin: boolean;
  rsv: number;
  opcode: number;
  masked: boolean;
  payload: Uint8Array;
  // How the length is written: minimal, forced 16/64-bit, or a lie (more than follows).
  length: 'minimal' | '16' | '64' | 'more' | 'huge';
}

export function encodeWsFrame(frame: WsFrame, maskKey = new Uint8Array([0x12, 0x34, 0x56, 0x78])): Uint8Array {
  const { payload } = frame;
  const head: number[] = [(frame.fin ? 0x80 : 0) | ((frame.rsv & 7) << 4) | (frame.opcode & 0x0f)];
  const maskBit = frame.masked ? 0x80 : 0;
  const declared =
    frame.length === 'more'
      ? payload.length + 1 + (payload.length % 7)
      : frame.length === 'huge'
        ? 2 ** 53 - 1
        : payload.length;
  const form =
    frame.length === 'huge' ? '64' : frame.length === 'more' || frame.length === 'minimal' ? 'minimal' : frame.length;
  if (form === 'minimal' && declared < 126) head.push(maskBit | declared);
  else if ((form === 'minimal' && declared < 65_536) || form === '16') {
    head.push(maskBit | 126, (declared >> 8) & 0xff, declared & 0xff);
  } else {
    head.push(maskBit | 127);
    const big = BigInt(declared);
    for (let shift = 56n; shift >= 0n; shift -= 8n) head.push(Number((big >> shift) & 0xffn));
  }
  if (!frame.masked) return concat(new Uint8Array(head), payload);
  const body = maskKey.every((b) => b === 0) ? payload : payload.map((b, i) => b ^ maskKey[i % 4]!);
  return concat(new Uint8Array(head), maskKey, body);
}

// A well-formed client frame carrying one binary message.
export function binaryFrame(payload: Uint8Array): Uint8Array {
  return encodeWsFrame({ fin: true, rsv: 0, opcode: 2, masked: true, payload, length: 'minimal' });
}

export const CLOSE_FRAME = encodeWsFrame({
  fin: true,
  rsv: 0,
  opcode: 8,
  masked: true,
  payload: new Uint8Array([0x03, 0xe8]),
  length: 'minimal',
});

const closePayload = (): fc.Arbitrary<Uint8Array> =>
  fc
    .tuple(fc.constantFrom(0, 999, 1000, 1004, 1005, 1006, 1015, 2999, 3000, 4999, 5000, 65_535), bytes(12))
    .map(([code, reason]) => concat(new Uint8Array([code >> 8, code & 0xff]), reason));

const wsFrame = (payload: fc.Arbitrary<Uint8Array>): fc.Arbitrary<WsFrame> =>
  fc.record({
    fin: fc.boolean(),
    rsv: fc.oneof({ weight: 6, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 7 }) }),
    opcode: fc.oneof(
      { weight: 6, arbitrary: fc.constantFrom(0, 1, 2, 8, 9, 10) },
      { weight: 1, arbitrary: fc.integer({ min: 0, max: 15 }) },
    ),
    masked: fc.oneof({ weight: 8, arbitrary: fc.constant(true) }, { weight: 1, arbitrary: fc.constant(false) }),
    payload: fc.oneof(
      payload,
      closePayload(),
      bytes(140),
      fc.constant(new TextEncoder().encode('{"x":1}')),
      fc.constant(new Uint8Array([0xc3, 0x28])),
    ),
    length: fc.oneof(
      { weight: 10, arbitrary: fc.constant('minimal' as const) },
      { weight: 1, arbitrary: fc.constantFrom('16' as const, '64' as const, 'more' as const, 'huge' as const) },
    ),
  });

// A fragmented binary message (continuations, with pings in between), as a well-behaved client
// might send it, then possibly broken.
const fragmented = (payload: fc.Arbitrary<Uint8Array>): fc.Arbitrary<WsFrame[]> =>
  fc
    .tuple(payload, fc.integer({ min: 2, max: 5 }), fc.boolean(), fc.boolean())
    .map(([message, parts, pingInside, dropLast]) => {
      const size = Math.ceil(message.length / parts) || 1;
      const frames: WsFrame[] = [];
      for (let i = 0; i * size < Math.max(message.length, 1) && i < parts; i++) {
        const last = (i + 1) * size >= message.length || i === parts - 1;
        frames.push({
          fin: last,
          rsv: 0,
          opcode: i === 0 ? 2 : 0,
          masked: true,
          payload: message.subarray(i * size, last ? message.length : (i + 1) * size),
          length: 'minimal',
        });
        if (pingInside && i === 0)
          frames.push({ fin: true, rsv: 0, opcode: 9, masked: true, payload: new Uint8Array(4), length: 'minimal' });
      }
      if (dropLast && frames.length > 1) frames.pop();
      return frames;
    });

// Sequences of frames after a valid handshake: good frames carrying protocol messages, broken
// frames, fragmentation, and now and then one over the 1 MiB message limit.
export const wsFrameSequence = (): fc.Arbitrary<Uint8Array[]> =>
  fc
    .oneof(
      { weight: 20, arbitrary: fc.array(wsFrame(yMessage()), { minLength: 1, maxLength: 5 }) },
      { weight: 10, arbitrary: fragmented(yMessage()) },
      {
        weight: 1,
        arbitrary: fc.constantFrom(1024 * 1024 + 1, 1024 * 1024 + 1025).map((size) => [
          {
            fin: true,
            rsv: 0,
            opcode: 2,
            masked: true,
            payload: OVERSIZED.subarray(0, size),
            length: 'minimal' as const,
          },
        ]),
      },
    )
    // A zero mask leaves the payload as it is: masking a megabyte per input would dominate.
    .map((frames) =>
      frames.map((frame) => encodeWsFrame(frame, frame.payload.length > 65_536 ? ZERO_MASK : undefined)),
    );

const OVERSIZED = new Uint8Array(1024 * 1024 + 1025);
const ZERO_MASK = new Uint8Array(4);

// -------------------------------------------------------------------------------- raw HTTP

export type Ending = 'half-close' | 'linger' | 'reset' | 'respond';

// What one TCP connection does: write the request (maybe in pieces), optionally wait for the
// first answer, write more, then end in one of three ways.
export interface RawExchange {
  request: Uint8Array[];
  waitForResponse: boolean;
  after: Uint8Array[];
  ending: Ending;
}

const ending = (): fc.Arbitrary<Ending> =>
  fc.oneof(
    { weight: 6, arbitrary: fc.constant('half-close' as const) },
    { weight: 2, arbitrary: fc.constant('reset' as const) },
    { weight: 1, arbitrary: fc.constant('linger' as const) },
  );

const HTTP_TARGETS = [
  '/',
  '/healthz',
  '/auth/challenge',
  '/api/documents',
  '/api/presence',
  '/api/policy',
  '/api/enroll',
  '/api/enroll/approve',
  '/nix-cache/nix-cache-info',
  '/nix-cache/0123456789abcdfghijklmnpqrsvwxyz.narinfo',
  '/nix-cache/nar/0123456789abcdfghijklmnpqrsvwxyz0123456789abcdfghijk.nar',
  '/nix-cache/../../etc/passwd',
  '/%E0%A4%A',
  'http://[',
  'http://x/healthz',
  'http://127.0.0.1:1/api/presence',
  '*',
  '//',
  '/..',
  '/healthz?%',
  '/healthz#x',
  '/api/documents?x=%E0%A4%A',
  'healthz',
  '/\u00e9',
  '/a b',
] as const;

export const httpTarget = (): fc.Arbitrary<string> =>
  fc.oneof(
    { weight: 5, arbitrary: fc.constantFrom(...HTTP_TARGETS) },
    { weight: 2, arbitrary: docPath() },
    { weight: 1, arbitrary: nastyString().map((s) => `/${s}`) },
    { weight: 1, arbitrary: fc.integer({ min: 1000, max: 40_000 }).map((n) => `/${'p'.repeat(n)}`) },
  );

const headerLine = (): fc.Arbitrary<string> =>
  fc.oneof(
    fc.constantFrom(
      'Content-Length: 5',
      'Content-Length: -1',
      'Content-Length: 99999999999999999999',
      'Content-Length: 1e3',
      'Content-Length: 0',
      'Content-Length: 3\r\nContent-Length: 4',
      'Transfer-Encoding: chunked',
      'Transfer-Encoding: chunked, chunked',
      'Transfer-Encoding: gzip',
      'Connection: keep-alive',
      'Connection: close',
      'Connection: Upgrade',
      'Upgrade: websocket',
      'Upgrade: h2c',
      'Expect: 100-continue',
      'Content-Type: application/json',
      'Range: bytes=0-',
      'Range: bytes=5-3',
      'Range: bytes=-0',
      'Range: bytes=99999999999999999999-',
      'Range: bytes=0-0,1-1',
      'Host: [',
      'Host:',
      'X: \u00ff\u00fe',
      ': empty-name',
      'No-Colon',
      ' Leading-Space: x',
    ),
    fc.tuple(fc.stringMatching(/^[A-Za-z-]{1,20}$/), fc.string({ maxLength: 60 })).map(([n, v]) => `${n}: ${v}`),
    fc.integer({ min: 1000, max: 20_000 }).map((n) => `X-Big: ${'v'.repeat(n)}`),
  );

const httpBody = (): fc.Arbitrary<string> =>
  fc.oneof(
    fc.constant(''),
    weirdJson(3).map((v) => JSON.stringify(v) ?? ''),
    fc.string({ maxLength: 80 }),
    fc.constantFrom('5\r\nhello\r\n0\r\n\r\n', 'zz\r\n', 'ffffffffffffffff\r\nx', '0\r\n\r\n'),
  );

export const httpRaw = (): fc.Arbitrary<RawExchange> =>
  fc
    .record({
      method: fc.oneof(
        { weight: 6, arbitrary: fc.constantFrom('GET', 'POST', 'HEAD', 'PUT', 'DELETE', 'OPTIONS', 'CONNECT', 'PRI') },
        { weight: 1, arbitrary: fc.stringMatching(/^[A-Z]{1,12}$/) },
        { weight: 1, arbitrary: nastyString().map((s) => s.slice(0, 20)) },
      ),
      target: httpTarget(),
      version: fc.oneof(
        { weight: 8, arbitrary: fc.constant('HTTP/1.1') },
        { weight: 1, arbitrary: fc.constantFrom('HTTP/1.0', 'HTTP/2.0', 'HTTP/1.1x', 'HTTP/9.9', '', 'http/1.1') },
      ),
      headers: fc.array(headerLine(), { maxLength: 5 }),
      host: fc.boolean(),
      body: httpBody(),
      splits: fc.array(fc.nat(), { maxLength: 2 }),
      mutations: fc.oneof(
        { weight: 4, arbitrary: fc.constant(0) },
        { weight: 1, arbitrary: fc.integer({ min: 1, max: 3 }) },
      ),
      mutationSeed: fc.array(fc.nat({ max: 255 }), { minLength: 6, maxLength: 6 }),
      ending: ending(),
    })
    .map((r) => {
      const head = [`${r.method} ${r.target} ${r.version}`, ...(r.host ? ['Host: 127.0.0.1'] : []), ...r.headers];
      let data: Uint8Array = new TextEncoder().encode(`${head.join('\r\n')}\r\n\r\n${r.body}`);
      for (let i = 0; i < r.mutations; i++) {
        const at = ((r.mutationSeed[i * 2]! << 8) | r.mutationSeed[i * 2 + 1]!) % Math.max(1, data.length);
        data = concat(data.subarray(0, at), new Uint8Array([r.mutationSeed[5]!]), data.subarray(at + 1));
      }
      return { request: split(data, r.splits), waitForResponse: false, after: [], ending: r.ending };
    });

// A JSON body POSTed to an endpoint; the body is made by an arbitrary of its own.
export function httpPost(path: string, body: Uint8Array, contentType = 'application/json'): Uint8Array {
  const head = `POST ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: ${contentType}\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`;
  return concat(new TextEncoder().encode(head), body);
}

export interface UpgradeOptions {
  path: string;
  key?: string | null;
  version?: string | null;
  extraHeaders?: string[];
}

export function upgradeRequest(options: UpgradeOptions): Uint8Array {
  const lines = [
    `GET ${options.path} HTTP/1.1`,
    'Host: 127.0.0.1',
    'Upgrade: websocket',
    'Connection: Upgrade',
    ...(options.key === null ? [] : [`Sec-WebSocket-Key: ${options.key ?? 'dGhlIHNhbXBsZSBub25jZQ=='}`]),
    ...(options.version === null ? [] : [`Sec-WebSocket-Version: ${options.version ?? '13'}`]),
    ...(options.extraHeaders ?? []),
  ];
  return new TextEncoder().encode(`${lines.join('\r\n')}\r\n\r\n`);
}

const handshakeHeaders = (): fc.Arbitrary<{ key?: string | null; version?: string | null; extraHeaders: string[] }> =>
  fc.record({
    key: fc.oneof(
      { weight: 6, arbitrary: fc.constant(undefined) },
      {
        weight: 1,
        arbitrary: fc.constantFrom(null, '', 'short', 'dGhlIHNhbXBsZSBub25jZQ', '!!!!!!!!!!!!!!!!!!!!!!!='),
      },
    ),
    version: fc.oneof(
      { weight: 6, arbitrary: fc.constant(undefined) },
      { weight: 1, arbitrary: fc.constantFrom(null, '8', '14', 'x', '13, 8') },
    ),
    extraHeaders: fc.array(
      fc.constantFrom(
        'Sec-WebSocket-Extensions: permessage-deflate',
        'Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits=0',
        'Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=16; server_max_window_bits=8',
        'Sec-WebSocket-Extensions: ;;;',
        'Sec-WebSocket-Protocol: a, a',
        'Sec-WebSocket-Protocol: ,',
        'Origin: null',
        'Connection: keep-alive, Upgrade',
      ),
      { maxLength: 2 },
    ),
  });

// Auth parameters as a client might (mis)write them: shapes the schema accepts, near misses,
// duplicates and garbage.
export const authQuery = (): fc.Arbitrary<string> =>
  fc.oneof(
    { weight: 3, arbitrary: fc.constant('') },
    {
      weight: 2,
      arbitrary: fc
        .record({
          principal: fc.oneof(
            fc.constantFrom(`${'A'.repeat(43)}=`, 'x', ''),
            nastyString().map((s) => s.slice(0, 60)),
          ),
          challenge: fc.oneof(hexString(64, 64), fc.constantFrom('', 'zz')),
          signature: fc.oneof(fc.constantFrom(`${'A'.repeat(86)}==`, ''), fc.base64String({ maxLength: 100 })),
        })
        .map((p) => `?${new URLSearchParams(p)}`),
    },
    {
      weight: 1,
      arbitrary: fc.constantFrom('?principal', '?principal=&principal=', '?%', '?principal=%E0%A4%A', '?&&&'),
    },
  );

export const wsUpgrade = (): fc.Arbitrary<RawExchange> =>
  fc
    .record({
      path: docPath(),
      query: authQuery(),
      headers: handshakeHeaders(),
      frames: fc.oneof(
        { weight: 3, arbitrary: wsFrameSequence() },
        { weight: 1, arbitrary: fc.constant([] as Uint8Array[]) },
      ),
      waitForResponse: fc.boolean(),
      ending: ending(),
    })
    .map((r) => ({
      request: [upgradeRequest({ path: `${r.path}${r.query}`, ...r.headers })],
      waitForResponse: r.waitForResponse,
      after: r.frames,
      ending: r.ending,
    }));

// A valid handshake to a pool document, then fuzzed frames.
export const wsFrames = (): fc.Arbitrary<RawExchange> =>
  fc
    .record({
      document: poolDocument(),
      frames: wsFrameSequence(),
      splits: fc.array(fc.nat(), { maxLength: 2 }),
      ending: ending(),
    })
    .map((r) => ({
      request: [upgradeRequest({ path: `/${r.document}` })],
      waitForResponse: true,
      after: split(concat(...r.frames), r.splits),
      ending: r.ending,
    }));

// A valid handshake to a pool document, then well-framed y-protocols messages.
export const ySync = (): fc.Arbitrary<RawExchange> =>
  fc
    .record({
      document: poolDocument(),
      messages: fc.array(yMessage(), { minLength: 1, maxLength: 6 }),
      ending: ending(),
    })
    .map((r) => ({
      request: [upgradeRequest({ path: `/${r.document}` })],
      waitForResponse: true,
      after: [...r.messages.map(binaryFrame), CLOSE_FRAME],
      ending: r.ending,
    }));

// A relay's link to /_relay: a sequence of relay-link frames.
export const muxSession = (): fc.Arbitrary<RawExchange> =>
  fc.record({ steps: fc.array(muxStep(), { minLength: 1, maxLength: 8 }), ending: ending() }).map((r) => {
    const open = new Map<number, string>();
    return {
      request: [upgradeRequest({ path: '/_relay' })],
      waitForResponse: true,
      after: [...r.steps.map((step) => binaryFrame(encodeMuxStep(step, open))), CLOSE_FRAME],
      ending: r.ending,
    };
  });

// ---------------------------------------------------------------------------------- helpers

function hexString(minLength: number, maxLength: number): fc.Arbitrary<string> {
  return fc.string({ unit: fc.constantFrom(...'0123456789abcdef'), minLength, maxLength });
}

export function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

export function varString(text: string): Uint8Array {
  return encode((e) => encoding.writeVarString(e, text));
}

function split(data: Uint8Array, cuts: number[]): Uint8Array[] {
  const points = [...new Set(cuts.map((c) => c % (data.length + 1)))].sort((a, b) => a - b);
  const parts: Uint8Array[] = [];
  let from = 0;
  for (const point of points) {
    if (point > from) parts.push(data.subarray(from, point));
    from = Math.max(from, point);
  }
  parts.push(data.subarray(from));
  return parts;
}
