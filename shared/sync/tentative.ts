import * as decoding from 'lib0/decoding';
import * as encoding from 'lib0/encoding';

// Tentative delivery: a server hands a reader an update while its log append (fsync) is still in
// flight, and tells it to apply the update once the append is durable. The reader keeps the update
// outside its Y.Doc until then, so nothing it acts on, stores or passes on can be an update the
// server then loses in a crash: a tentative update whose commit never comes is dropped with the
// connection. What the reader may do meanwhile is work that changes nothing (decode the update,
// check the signatures in it into a verdict cache), which then overlaps the fsync instead of
// following it. docs/protocol.md has the rules; docs/performance.md the measurements.
//
// Opt-in per connection, with the URL parameter `tentative=1`: servers that do not know it ignore
// it (and send plain updates), and a reader that did not ask never gets these messages.
//
// Two y-websocket message types beside sync (0), awareness (1), auth (2) and query-awareness (3):
//   TENTATIVE 16  varUint seq, varUint8Array update   server → reader
//   COMMIT    17  varUint seq                          server → reader
// A server sends a connection at most one tentative update at a time (a document's writes are
// stored one after the other), and its commit before any other sync message of that document;
// `seq` counts per document, so a commit names the update it commits. A reader does not rely on
// the second rule: a plain update that arrives meanwhile is applied as usual (it is durable), and
// the held one still waits for its own commit.

export const MESSAGE_TENTATIVE_UPDATE = 16;
export const MESSAGE_COMMIT_TENTATIVE = 17;
export const TENTATIVE_PARAM = 'tentative';

export function tentativeUpdateMessage(seq: number, update: Uint8Array): Uint8Array {
  const encoder = encoding.createEncoder();
  encoding.writeVarUint(encoder, MESSAGE_TENTATIVE_UPDATE);
  encoding.writeVarUint(encoder, seq);
  encoding.writeVarUint8Array(encoder, update);
  return encoding.toUint8Array(encoder);
}

export function commitTentativeMessage(seq: number): Uint8Array {
  const encoder = encoding.createEncoder();
  encoding.writeVarUint(encoder, MESSAGE_COMMIT_TENTATIVE);
  encoding.writeVarUint(encoder, seq);
  return encoding.toUint8Array(encoder);
}

// What a reader holds: the one update the server has sent and not committed yet.
export interface TentativeHold {
  held: { seq: number; update: Uint8Array } | null;
}

export class TentativeProtocolError extends Error {}

export function createTentativeHold(): TentativeHold {
  return { held: null };
}

// Reads a TENTATIVE message's body (after its type) into the hold and returns the update. A second
// tentative update before the first was committed breaks the server's rule: the caller drops the
// connection (and with it both), and syncs again.
export function holdTentative(hold: TentativeHold, decoder: decoding.Decoder): Uint8Array {
  let seq: number;
  let update: Uint8Array;
  try {
    seq = decoding.readVarUint(decoder);
    update = decoding.readVarUint8Array(decoder);
  } catch {
    throw new TentativeProtocolError('undecodable tentative update');
  }
  if (hold.held) {
    throw new TentativeProtocolError(
      `tentative update ${seq} arrived while ${hold.held.seq} was not committed; servers send one at a time`,
    );
  }
  hold.held = { seq, update };
  return update;
}

// Reads a COMMIT message's body and returns the update it commits, which leaves the hold.
export function takeCommitted(hold: TentativeHold, decoder: decoding.Decoder): Uint8Array {
  let seq: number;
  try {
    seq = decoding.readVarUint(decoder);
  } catch {
    throw new TentativeProtocolError('undecodable commit');
  }
  const held = hold.held;
  if (!held) throw new TentativeProtocolError(`commit of ${seq} with no tentative update held`);
  if (held.seq !== seq) throw new TentativeProtocolError(`commit of ${seq} while ${held.seq} is held`);
  hold.held = null;
  return held.update;
}

// The connection ended: what was not committed is dropped, never applied.
export function dropTentative(hold: TentativeHold): void {
  hold.held = null;
}
