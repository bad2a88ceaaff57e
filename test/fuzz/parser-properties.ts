import fc from 'fast-check';
import nacl from 'tweetnacl';
import { toBase64 } from '../../shared/crypto/encoding.js';
import {
  NARINFO_MAX_REFERENCES,
  NARINFO_MAX_SIGS,
  narinfoFingerprint,
  parseNarinfo,
  verifyNarinfo,
} from '../../shared/nix/narinfo.js';
import { storePathSchema } from '../../shared/schemas/primitives.js';
import {
  decodeFrame,
  encodeFrame,
  FRAME_CHANGES,
  FRAME_CLOSE,
  FRAME_DATA,
  FRAME_OPEN,
  FRAME_PRESENCE,
  FRAME_SINCE,
  type MuxFrame,
} from '../../shared/sync/mux-frames.js';
import { bytes, mutated } from './bytes.js';
import { editNarinfo, inventedStorePath, NIX32, narinfoEdit, resign } from './hostile-cache.js';

// The two parsers every byte from an untrusted peer goes through before anything else, checked
// in-process (no Nix, no sockets) at thousands of inputs a second: the narinfo parser (a binary
// cache's answer) and the relay-link frame decoder (everything a relay or its upstream sends).
// Properties: never anything but an Error with a message that names the input; what parses
// keeps every bound the parser promises. (The slowest parse is reported, not asserted: timing
// belongs in benchmarks.)

const signer = (() => {
  const pair = nacl.sign.keyPair.fromSeed(new Uint8Array(32).fill(7));
  return { name: 'fuzz-cache-1', secretKey: pair.secretKey, publicKey: `fuzz-cache-1:${toBase64(pair.publicKey)}` };
})();

const nix32 = (length: number, seed: number): string =>
  Array.from({ length }, (_, i) => NIX32[(seed * 31 + i * 17 + ((i * i) % 7)) % 32]).join('');

// A narinfo as Nix writes it, signed by the key the checks trust.
export function sampleNarinfo(): string {
  const storePath = inventedStorePath(7, 'system');
  const text = [
    `StorePath: ${storePath}`,
    `URL: nar/${nix32(52, 3)}.nar`,
    'Compression: none',
    // The first of 52 characters carries only 1 bit of a 256-bit hash.
    `NarHash: sha256:0${nix32(51, 5)}`,
    'NarSize: 1234',
    `References: ${inventedStorePath(8).slice(11)} ${storePath.slice(11)}`,
    'Deriver: 00000000000000000000000000000000-system.drv',
    '',
  ].join('\n');
  return resign(text, signer);
}

export const narinfoText = (): fc.Arbitrary<string> => {
  const template = sampleNarinfo();
  return fc.oneof(
    {
      weight: 6,
      arbitrary: fc.tuple(fc.array(narinfoEdit(), { maxLength: 5 }), fc.boolean()).map(([edits, sign]) => {
        const text = editNarinfo(template, edits, (i) => inventedStorePath(100 + i));
        return sign ? resign(text, signer) : text;
      }),
    },
    {
      weight: 2,
      arbitrary: mutated(fc.constant(new TextEncoder().encode(template)), 6).map((b) => new TextDecoder().decode(b)),
    },
    { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 300 }) },
    { weight: 1, arbitrary: fc.constantFrom('', '\n', 'StorePath:', `${'\n'.repeat(300)}`, `${'A: b\n'.repeat(257)}`) },
  );
};

export interface ParserCheckResult {
  narinfo: { runs: number; parsed: number; verified: number; slowestMs: number };
  muxFrames: { runs: number; decoded: number };
}

function checkNarinfo(text: string, stats: ParserCheckResult['narinfo']): void {
  stats.runs += 1;
  const started = performance.now();
  let info: ReturnType<typeof parseNarinfo>;
  try {
    info = parseNarinfo(text, 'fuzz.narinfo');
  } catch (error) {
    if (!(error instanceof Error)) throw new Error(`parseNarinfo threw a non-Error: ${String(error)}`);
    if (!error.message.startsWith('narinfo fuzz.narinfo: '))
      throw new Error(`parseNarinfo error does not name the narinfo: ${error.message.slice(0, 200)}`);
    return;
  } finally {
    stats.slowestMs = Math.max(stats.slowestMs, performance.now() - started);
  }
  stats.parsed += 1;
  if (!storePathSchema.safeParse(info.storePath).success) throw new Error(`parsed a bad StorePath ${info.storePath}`);
  if (!Number.isSafeInteger(info.narSize) || info.narSize < 1) throw new Error(`parsed NarSize ${info.narSize}`);
  if (info.fileSize !== undefined && (!Number.isSafeInteger(info.fileSize) || info.fileSize < 0))
    throw new Error(`parsed FileSize ${info.fileSize}`);
  if (info.references.length > NARINFO_MAX_REFERENCES) throw new Error(`${info.references.length} references`);
  if (info.sigs.length > NARINFO_MAX_SIGS) throw new Error(`${info.sigs.length} signatures`);
  if (info.url.includes('\n') || info.url.length === 0) throw new Error(`parsed URL ${JSON.stringify(info.url)}`);
  // What a parsed narinfo feeds into must not throw either.
  narinfoFingerprint(info);
  const verdict = verifyNarinfo(info, [signer.publicKey]);
  if (typeof verdict.ok !== 'boolean') throw new Error('verifyNarinfo returned no verdict');
  if (verdict.ok) stats.verified += 1;
}

const frameString = (): fc.Arbitrary<string> => fc.string({ unit: 'grapheme', maxLength: 40 });
const frameNumber = (): fc.Arbitrary<number> => fc.oneof(fc.nat({ max: 2 ** 32 }), fc.constantFrom(0, 2 ** 53 - 1));

export const validFrame = (): fc.Arbitrary<MuxFrame> =>
  fc.oneof(
    fc.record({ type: fc.constant(FRAME_OPEN), channel: frameNumber(), document: frameString() }),
    fc.record({ type: fc.constant(FRAME_DATA), channel: frameNumber(), message: bytes(40) }),
    fc.record({ type: fc.constant(FRAME_CLOSE), channel: frameNumber(), code: frameNumber(), reason: frameString() }),
    fc.record({ type: fc.constant(FRAME_SINCE), epoch: frameString(), cursor: frameNumber() }),
    fc.record({
      type: fc.constant(FRAME_CHANGES),
      epoch: frameString(),
      cursor: frameNumber(),
      documents: fc.array(frameString(), { maxLength: 5 }),
    }),
    fc.record({
      type: fc.constant(FRAME_PRESENCE),
      hosts: fc.array(fc.record({ host: frameString(), online: fc.boolean(), lastSeen: fc.double() }), {
        maxLength: 4,
      }),
    }),
  );

// Frames compared field by field, NaN equal to NaN (a PRESENCE lastSeen may be NaN on the wire).
function sameFrame(a: MuxFrame, b: MuxFrame): boolean {
  const normalise = (f: MuxFrame): string =>
    JSON.stringify(f, (_, v: unknown) =>
      v instanceof Uint8Array
        ? Array.from(v)
        : typeof v === 'number' && !Number.isFinite(v)
          ? String(v)
          : Object.is(v, -0)
            ? '-0'
            : v,
    );
  return normalise(a) === normalise(b);
}

function checkFrameBytes(input: Uint8Array, stats: ParserCheckResult['muxFrames']): void {
  stats.runs += 1;
  let frame: MuxFrame;
  try {
    frame = decodeFrame(input);
  } catch (error) {
    if (!(error instanceof Error)) throw new Error(`decodeFrame threw a non-Error: ${String(error)}`);
    return;
  }
  stats.decoded += 1;
  // What decodes re-encodes to something that decodes to the same frame.
  const again = decodeFrame(encodeFrame(frame));
  if (!sameFrame(again, frame))
    throw new Error(
      `frame changes on re-encoding: ${JSON.stringify(frame).slice(0, 200)} → ${JSON.stringify(again).slice(0, 200)}`,
    );
  for (const n of [
    'channel' in frame ? frame.channel : 0,
    'cursor' in frame ? frame.cursor : 0,
    'code' in frame ? frame.code : 0,
  ])
    if (!Number.isSafeInteger(n) || n < 0) throw new Error(`decoded an unsafe number ${n}`);
}

export function checkParsers(seed: number, runs: number): ParserCheckResult {
  const result: ParserCheckResult = {
    narinfo: { runs: 0, parsed: 0, verified: 0, slowestMs: 0 },
    muxFrames: { runs: 0, decoded: 0 },
  };
  fc.assert(
    fc.property(narinfoText(), (text) => checkNarinfo(text, result.narinfo)),
    { seed, numRuns: runs },
  );
  fc.assert(
    fc.property(validFrame(), (frame) => {
      const decoded = decodeFrame(encodeFrame(frame));
      if (!sameFrame(decoded, frame)) throw new Error(`round trip changed ${JSON.stringify(frame).slice(0, 200)}`);
    }),
    { seed, numRuns: runs },
  );
  fc.assert(
    fc.property(fc.oneof(mutated(validFrame().map(encodeFrame), 4), bytes(64)), (input) =>
      checkFrameBytes(input, result.muxFrames),
    ),
    { seed, numRuns: runs },
  );
  return result;
}
