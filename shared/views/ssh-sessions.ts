import { formatBytes } from '../text/bytes.js';
import type { SshSession } from '../tunnel/session-log.js';

// How `outpost status` and the web editor's host page describe the `outpost ssh` sessions of a
// host's signed status (shared/tunnel/session-log.ts), so both say the same thing.

export function sshSessionText(session: SshSession): string {
  if (session.closedAt === null) return `${session.admin} since ${session.openedAt} (open)`;
  return `${session.admin} ${session.openedAt} to ${session.closedAt}, ${formatBytes(session.bytesIn)} in, ${formatBytes(session.bytesOut)} out (${session.closeReason ?? 'closed'})`;
}

// One line: the sessions open now, else the last one; null without sessions.
export function sshSessionsLine(sessions: readonly SshSession[] | null | undefined): string | null {
  const list = sessions ?? [];
  const open = list.filter((s) => s.closedAt === null);
  if (open.length) return `ssh: ${open.map((s) => `${s.admin} since ${s.openedAt}`).join(', ')} (open)`;
  const last = list.at(-1);
  return last ? `ssh: last session ${sshSessionText(last)}` : null;
}
