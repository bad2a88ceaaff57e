import * as decoding from 'lib0/decoding';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  commitTentativeMessage,
  createTentativeHold,
  dropTentative,
  holdTentative,
  MESSAGE_COMMIT_TENTATIVE,
  MESSAGE_TENTATIVE_UPDATE,
  TentativeProtocolError,
  takeCommitted,
  tentativeUpdateMessage,
} from '../../../../shared/sync/tentative.js';

// The reader's rules for tentative updates: one held at a time, committed only by its own number,
// dropped with the connection; anything else is the server breaking the protocol.

// A message's body after its type, as the provider's handlers get it.
function body(message: Uint8Array, type: number): decoding.Decoder {
  const decoder = decoding.createDecoder(message);
  assert.is(decoding.readVarUint(decoder), type);
  return decoder;
}

test('a tentative update is held until the commit naming it, then handed over once', () => {
  const hold = createTentativeHold();
  const update = Uint8Array.of(1, 2, 3);
  assert.equal(holdTentative(hold, body(tentativeUpdateMessage(7, update), MESSAGE_TENTATIVE_UPDATE)), update);
  assert.equal(hold.held?.seq, 7);
  assert.equal(takeCommitted(hold, body(commitTentativeMessage(7), MESSAGE_COMMIT_TENTATIVE)), update);
  assert.is(hold.held, null);
  assert.throws(
    () => takeCommitted(hold, body(commitTentativeMessage(7), MESSAGE_COMMIT_TENTATIVE)),
    (error: Error) => error instanceof TentativeProtocolError && /no tentative update held/.test(error.message),
    'a second commit of the same update commits nothing',
  );
});

test('a commit naming another update, or a second tentative update, is a protocol error', () => {
  const hold = createTentativeHold();
  holdTentative(hold, body(tentativeUpdateMessage(1, Uint8Array.of(9)), MESSAGE_TENTATIVE_UPDATE));
  assert.throws(
    () => takeCommitted(hold, body(commitTentativeMessage(2), MESSAGE_COMMIT_TENTATIVE)),
    /commit of 2 while 1 is held/,
  );
  assert.throws(
    () => holdTentative(hold, body(tentativeUpdateMessage(2, Uint8Array.of(8)), MESSAGE_TENTATIVE_UPDATE)),
    /tentative update 2 arrived while 1 was not committed/,
  );
});

test('what the connection did not see committed is dropped with it', () => {
  const hold = createTentativeHold();
  holdTentative(hold, body(tentativeUpdateMessage(3, Uint8Array.of(5)), MESSAGE_TENTATIVE_UPDATE));
  dropTentative(hold);
  assert.throws(() => takeCommitted(hold, body(commitTentativeMessage(3), MESSAGE_COMMIT_TENTATIVE)), /no tentative/);
});

test('truncated messages are protocol errors, not crashes', () => {
  const hold = createTentativeHold();
  const message = tentativeUpdateMessage(4, Uint8Array.of(1, 2, 3, 4));
  assert.throws(
    () => holdTentative(hold, body(message.subarray(0, message.length - 2), MESSAGE_TENTATIVE_UPDATE)),
    (error: Error) => error instanceof TentativeProtocolError && /undecodable/.test(error.message),
  );
  assert.is(hold.held, null);
  assert.throws(
    () => takeCommitted(hold, body(Uint8Array.of(MESSAGE_COMMIT_TENTATIVE), MESSAGE_COMMIT_TENTATIVE)),
    /undecodable commit/,
  );
});

test.run();
