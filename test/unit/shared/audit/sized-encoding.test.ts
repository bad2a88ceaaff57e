import fc from 'fast-check';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { prefixedSize, putVarString, utf8Size } from '../../../../shared/audit/sized-encoding.js';
import { anyLogText } from '../../../harness/log-entry-reference.js';

// The writers' bytes against lib0's are checked through the encodings that use them
// (log-chain.test.ts, coordinator/update-log.test.ts).

test('utf8Size is the length TextEncoder writes', () => {
  const encoder = new TextEncoder();
  fc.assert(
    fc.property(anyLogText, (text) => {
      assert.is(utf8Size(text), encoder.encode(text).length);
    }),
    { numRuns: 5000, seed: 152 },
  );
  for (const text of ['\ud800', '\udc00', '\ud83d\ude00', '\ude00\ud83d', 'a\ud83d', '\u07ff\u0800\uffff'])
    assert.is(utf8Size(text), encoder.encode(text).length, JSON.stringify(text));
});

test('putVarString fills exactly prefixedSize(utf8Size(text)) bytes', () => {
  fc.assert(
    fc.property(anyLogText, (text) => {
      const size = utf8Size(text);
      const bytes = new Uint8Array(prefixedSize(size) + 1);
      assert.is(putVarString(bytes, 1, text, size), bytes.length);
    }),
    { numRuns: 2000, seed: 154 },
  );
});

test.run();
