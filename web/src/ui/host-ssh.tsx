import type { SshSession } from '../../../shared/tunnel/session-log.js';
import { sshSessionText } from '../../../shared/views/ssh-sessions.js';

// The `outpost ssh` sessions the host's signed status lists (who, when, bytes, why it ended),
// newest first, in the same words as `outpost status`.
export function HostSshSessions({ sessions }: { sessions: SshSession[] | null | undefined }) {
  if (!sessions || sessions.length === 0) return null;
  return (
    <>
      <dt>ssh sessions</dt>
      <dd data-testid="host-ssh-sessions">
        <ul class="ssh-sessions">
          {[...sessions].reverse().map((session) => (
            <li key={session.nonce} data-open={session.closedAt === null ? 'yes' : 'no'} title={session.key}>
              {sshSessionText(session)}
            </li>
          ))}
        </ul>
      </dd>
    </>
  );
}
