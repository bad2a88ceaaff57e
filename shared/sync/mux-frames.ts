import * as decoding from 'lib0/decoding';
import * as encoding from 'lib0/encoding';

// One websocket between a relay and its upstream (the coordinator or another relay) carries all
// documents: a relay with 10,000 hosts behind it would otherwise need 20,000 sockets upstream
// (docs/relays.md has the measurements). Towards agents and browsers nothing changes: they speak
// plain y-websocket, one document per socket.
//
// The relay proves its key once, at the upgrade of /_relay (the challenge is signed for the
// document name "_relay"). Every frame is one binary websocket message:
//   OPEN    0  varUint channel, varString document          relay → upstream
//   DATA    1  varUint channel, then one y-websocket message   both ways
//   CLOSE   2  varUint channel, varUint code, varString reason both ways
//   SINCE   3  varString epoch, varUint cursor                relay → upstream
//   CHANGES 4  varString epoch, varUint cursor, varUint n, n × varString document   upstream → relay
//   PRESENCE 5 varUint n, n × (varString host, varUint online, float64 lastSeen)   relay → upstream
// Each channel is served by the same serveConnection as a direct socket: same per-document queue,
// same authorization per update, same fsync before broadcast. CHANGES names the documents in the
// relay's scope that changed upstream since the relay's cursor (all of them when the epoch, which
// is new at every upstream start, does not match), so the relay fetches what its agents will
// need without holding every document open.

export const MUX_PATH = '_relay';
export const FRAME_OPEN = 0;
export const FRAME_DATA = 1;
export const FRAME_CLOSE = 2;
export const FRAME_SINCE = 3;
export const FRAME_CHANGES = 4;
export const FRAME_PRESENCE = 5;

export interface PresenceEntry {
  host: string;
  online: boolean;
  lastSeen: number;
}

export type MuxFrame =
  | { type: typeof FRAME_OPEN; channel: number; document: string }
  | { type: typeof FRAME_DATA; channel: number; message: Uint8Array }
  | { type: typeof FRAME_CLOSE; channel: number; code: number; reason: string }
  | { type: typeof FRAME_SINCE; epoch: string; cursor: number }
  | { type: typeof FRAME_CHANGES; epoch: string; cursor: number; documents: string[] }
  | { type: typeof FRAME_PRESENCE; hosts: PresenceEntry[] };

export function encodeFrame(frame: MuxFrame): Uint8Array {
  const encoder = encoding.createEncoder();
  encoding.writeVarUint(encoder, frame.type);
  switch (frame.type) {
    case FRAME_OPEN:
      encoding.writeVarUint(encoder, frame.channel);
      encoding.writeVarString(encoder, frame.document);
      break;
    case FRAME_DATA:
      encoding.writeVarUint(encoder, frame.channel);
      encoding.writeUint8Array(encoder, frame.message);
      break;
    case FRAME_CLOSE:
      encoding.writeVarUint(encoder, frame.channel);
      encoding.writeVarUint(encoder, frame.code);
      encoding.writeVarString(encoder, frame.reason);
      break;
    case FRAME_SINCE:
      encoding.writeVarString(encoder, frame.epoch);
      encoding.writeVarUint(encoder, frame.cursor);
      break;
    case FRAME_CHANGES:
      encoding.writeVarString(encoder, frame.epoch);
      encoding.writeVarUint(encoder, frame.cursor);
      encoding.writeVarUint(encoder, frame.documents.length);
      for (const document of frame.documents) encoding.writeVarString(encoder, document);
      break;
    case FRAME_PRESENCE:
      encoding.writeVarUint(encoder, frame.hosts.length);
      for (const entry of frame.hosts) {
        encoding.writeVarString(encoder, entry.host);
        encoding.writeVarUint(encoder, entry.online ? 1 : 0);
        encoding.writeFloat64(encoder, entry.lastSeen);
      }
      break;
  }
  return encoding.toUint8Array(encoder);
}

// lib0's readVarUint checks the range only before the last byte, which can carry a number past
// 2^53 (10 bytes decode to ~1e21): a value no peer can mean, and one that two different
// encodings decode to alike (two channels would become one). Refused like any malformed frame.
function readNumber(decoder: decoding.Decoder, what: string): number {
  const value = decoding.readVarUint(decoder);
  if (!Number.isSafeInteger(value)) throw new Error(`relay frame: ${what} is out of range (over 2^53)`);
  return value;
}

// Throws on anything malformed; callers close the socket.
export function decodeFrame(bytes: Uint8Array): MuxFrame {
  const decoder = decoding.createDecoder(bytes);
  const type = readNumber(decoder, 'frame type');
  switch (type) {
    case FRAME_OPEN:
      return { type, channel: readNumber(decoder, 'channel'), document: decoding.readVarString(decoder) };
    case FRAME_DATA: {
      const channel = readNumber(decoder, 'channel');
      return { type, channel, message: bytes.subarray(decoder.pos) };
    }
    case FRAME_CLOSE:
      return {
        type,
        channel: readNumber(decoder, 'channel'),
        code: readNumber(decoder, 'close code'),
        reason: decoding.readVarString(decoder),
      };
    case FRAME_SINCE:
      return { type, epoch: decoding.readVarString(decoder), cursor: readNumber(decoder, 'cursor') };
    case FRAME_CHANGES: {
      const epoch = decoding.readVarString(decoder);
      const cursor = readNumber(decoder, 'cursor');
      const count = readNumber(decoder, 'document count');
      if (count > 10_000_000) throw new Error('implausible document count');
      const documents: string[] = [];
      for (let i = 0; i < count; i++) documents.push(decoding.readVarString(decoder));
      return { type, epoch, cursor, documents };
    }
    case FRAME_PRESENCE: {
      const count = readNumber(decoder, 'host count');
      if (count > 10_000_000) throw new Error('implausible host count');
      const hosts: PresenceEntry[] = [];
      for (let i = 0; i < count; i++)
        hosts.push({
          host: decoding.readVarString(decoder),
          online: readNumber(decoder, 'online flag') === 1,
          lastSeen: decoding.readFloat64(decoder),
        });
      return { type, hosts };
    }
    default:
      throw new Error(`unknown relay frame type ${type}`);
  }
}
