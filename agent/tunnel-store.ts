import { join } from 'node:path';
import { z } from 'zod';
import { writeFileDurably } from '../shared/node/durable-file.js';
import {
  SSH_SESSION_LOG_MAX,
  type SshSession,
  sshSessionSchema,
  tunnelNonceSchema,
} from '../shared/tunnel/session-log.js';
import { loadStateFile } from './state-file.js';

// What the agent remembers about `outpost ssh` across restarts: every nonce it accepted, until
// the request could no longer be accepted anyway (expiresAt + clock skew), so the same signed
// request is refused the second time even after a restart; and its last sessions, for the status.
const FILE = 'ssh-tunnels.json';
// Nonces are recorded only for requests a policy admin with `ssh` signed, and each lives minutes:
// this many at once means something is wrong, and new requests are refused rather than the file grown.
export const MAX_REMEMBERED_NONCES = 10_000;

const storedSchema = z.object({
  // nonce → until when it must be remembered (ms since the epoch).
  nonces: z.record(tunnelNonceSchema, z.number()),
  sessions: z.array(sshSessionSchema).max(SSH_SESSION_LOG_MAX),
});
type Stored = z.infer<typeof storedSchema>;

export interface TunnelStore {
  // Records the nonce durably; false when it was used before (or the store is full).
  claim(nonce: string, keepUntilMs: number): Promise<{ ok: true } | { ok: false; reason: string }>;
  // The session log: `update` replaces one entry (by nonce) or appends it, keeping the newest.
  sessions(): SshSession[];
  update(session: SshSession): Promise<void>;
}

export async function openTunnelStore(stateDir: string, now: () => number): Promise<TunnelStore> {
  const path = join(stateDir, FILE);
  // A damaged file must not open the door to replays: refuse to start tunnels instead.
  const stored: Stored = await loadStateFile(path, {
    schema: storedSchema,
    missing: () => ({ nonces: {}, sessions: [] }),
    fix: 'move it away to reset the tunnel log',
  });
  // Sessions that were open when the agent stopped ended then.
  const restartedAt = new Date(now()).toISOString();
  stored.sessions = stored.sessions.map((s) =>
    s.closedAt === null ? { ...s, closedAt: restartedAt, closeReason: 'the agent stopped' } : s,
  );
  const save = (): Promise<void> => writeFileDurably(path, JSON.stringify(stored));
  return {
    async claim(nonce, keepUntilMs) {
      const at = now();
      for (const [known, until] of Object.entries(stored.nonces)) if (until < at) delete stored.nonces[known];
      if (nonce in stored.nonces)
        return {
          ok: false,
          reason: 'this request was used before (its nonce is spent); run outpost ssh again for a fresh one',
        };
      if (Object.keys(stored.nonces).length >= MAX_REMEMBERED_NONCES)
        return {
          ok: false,
          reason: `more than ${MAX_REMEMBERED_NONCES} tunnel requests in the last minutes; try again later`,
        };
      // In memory first (a second copy arriving meanwhile is refused), then on disk before any byte flows.
      stored.nonces[nonce] = keepUntilMs;
      await save();
      return { ok: true };
    },
    sessions: () => stored.sessions,
    async update(session) {
      const others = stored.sessions.filter((s) => s.nonce !== session.nonce);
      const index = stored.sessions.findIndex((s) => s.nonce === session.nonce);
      if (index >= 0) {
        stored.sessions = stored.sessions.map((s) => (s.nonce === session.nonce ? session : s));
      } else stored.sessions = [...others, session].slice(-SSH_SESSION_LOG_MAX);
      await save();
    },
  };
}
