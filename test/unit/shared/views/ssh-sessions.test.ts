import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { SshSession } from '../../../../shared/tunnel/session-log.js';
import { sshSessionsLine, sshSessionText } from '../../../../shared/views/ssh-sessions.js';

const session = (admin: string, closedAt: string | null, extra: Partial<SshSession> = {}): SshSession => ({
  nonce: admin.padEnd(32, '0').replace(/[^0-9a-f]/g, '0'),
  admin,
  key: `${'A'.repeat(43)}=`,
  openedAt: '2026-12-02T10:00:00.000Z',
  closedAt,
  bytesIn: 2048,
  bytesOut: 3 * 1024 * 1024,
  ...extra,
});

test('one line for outpost status: the open sessions, else the last one; nothing without sessions', () => {
  assert.is(sshSessionsLine(null), null);
  assert.is(sshSessionsLine([]), null);
  const closed = session('alice', '2026-12-02T10:05:00.000Z', { closeReason: 'idle timeout' });
  assert.match(
    String(sshSessionsLine([closed])),
    /^ssh: last session alice 2026-12-02T10:00:00.000Z to 2026-12-02T10:05:00.000Z, .* in, .* out \(idle timeout\)$/,
  );
  assert.is(sshSessionsLine([closed, session('bob', null)]), 'ssh: bob since 2026-12-02T10:00:00.000Z (open)');
});

test('each session in the words the web page shows', () => {
  assert.is(sshSessionText(session('bob', null)), 'bob since 2026-12-02T10:00:00.000Z (open)');
  assert.match(sshSessionText(session('alice', '2026-12-02T10:05:00.000Z')), /\(closed\)$/);
});

test.run();
