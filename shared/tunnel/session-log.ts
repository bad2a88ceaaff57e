import { z } from 'zod';
import { base64Key32Schema, isoTimeSchema } from '../schemas/primitives.js';

// The `outpost ssh` sessions a host opened, newest last, in its signed status (statusContentSchema
// field `sshSessions`): who (admin name and key), which request (nonce), when it opened and
// closed, how many bytes went each way, and why it ended. Refused requests are not listed (the
// agent logs them): a status anyone can fill with refusals would push real sessions out.
export const SSH_SESSION_LOG_MAX = 20;

export const tunnelNonceSchema = z.string().regex(/^[0-9a-f]{32}$/, 'a nonce is 32 lowercase hex digits');

export const sshSessionSchema = z.looseObject({
  nonce: tunnelNonceSchema,
  admin: z.string().max(128),
  key: base64Key32Schema,
  openedAt: isoTimeSchema,
  // null while open.
  closedAt: isoTimeSchema.nullable(),
  // Bytes to the host's sshd and back from it.
  bytesIn: z.number().int().nonnegative(),
  bytesOut: z.number().int().nonnegative(),
  closeReason: z.string().max(200).optional(),
});
export type SshSession = z.infer<typeof sshSessionSchema>;

export const sshSessionLogSchema = z.array(sshSessionSchema).max(SSH_SESSION_LOG_MAX);

// What changed between two status versions' session logs, for the audit timeline: sessions opened
// and closed since `before` (null when nothing did).
export function describeSessionChanges(
  before: readonly SshSession[] | undefined,
  after: readonly SshSession[] | undefined,
): string | null {
  const previous = new Map((before ?? []).map((s) => [s.nonce, s]));
  const changes: string[] = [];
  for (const session of after ?? []) {
    const was = previous.get(session.nonce);
    const who = `${session.admin} (request ${session.nonce.slice(0, 8)}…)`;
    if (!was && session.closedAt === null) changes.push(`ssh session opened by ${who} at ${session.openedAt}`);
    else if (session.closedAt !== null && (!was || was.closedAt === null))
      changes.push(
        `ssh session of ${who} ${session.openedAt} to ${session.closedAt}, ${session.bytesIn} bytes in, ${session.bytesOut} out${session.closeReason ? ` (${session.closeReason})` : ''}`,
      );
  }
  return changes.length ? changes.join('; ') : null;
}
