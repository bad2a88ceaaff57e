import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { describeSessionChanges, type SshSession } from '../../../../shared/tunnel/session-log.js';

// The audit timeline names, per status version, only the sessions it opened or closed.
const key = `${'A'.repeat(43)}=`;
const open: SshSession = {
  nonce: 'ab'.repeat(16),
  admin: 'alice',
  key,
  openedAt: '2026-12-02T14:00:00.000Z',
  closedAt: null,
  bytesIn: 0,
  bytesOut: 0,
};
const closed: SshSession = {
  ...open,
  closedAt: '2026-12-02T14:05:00.000Z',
  bytesIn: 10,
  bytesOut: 20,
  closeReason: 'idle',
};

test('opened, closed, unchanged', () => {
  assert.is(
    describeSessionChanges(undefined, [open]),
    'ssh session opened by alice (request abababab…) at 2026-12-02T14:00:00.000Z',
  );
  assert.is(
    describeSessionChanges([open], [closed]),
    'ssh session of alice (request abababab…) 2026-12-02T14:00:00.000Z to 2026-12-02T14:05:00.000Z, 10 bytes in, 20 out (idle)',
  );
  assert.match(
    describeSessionChanges(undefined, [closed]) ?? '',
    /to 2026-12-02T14:05:00/,
    'opened and closed between two versions',
  );
  assert.is(describeSessionChanges([closed], [closed]), null);
  assert.is(describeSessionChanges([open], [open]), null);
  assert.is(describeSessionChanges(undefined, undefined), null);
});

test.run();
