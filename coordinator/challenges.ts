import { randomBytes } from 'node:crypto';

// Outstanding challenges, single use, in memory: a restart forgets them and peers fetch new ones.
// Bounded so a flood of challenge requests cannot grow memory without limit.
export interface ChallengeStore {
  issue(): { challenge: string; expiresAt: number };
  consume(challenge: string): boolean;
}

export function createChallengeStore(ttlMs: number, maxOutstanding = 100_000): ChallengeStore {
  const outstanding = new Map<string, number>();
  return {
    issue() {
      const now = Date.now();
      if (outstanding.size >= maxOutstanding) {
        for (const [challenge, expiresAt] of outstanding) if (expiresAt <= now) outstanding.delete(challenge);
        // Still full: drop the oldest (Map keeps insertion order).
        while (outstanding.size >= maxOutstanding) outstanding.delete(outstanding.keys().next().value!);
      }
      const challenge = randomBytes(32).toString('hex');
      const expiresAt = now + ttlMs;
      outstanding.set(challenge, expiresAt);
      return { challenge, expiresAt };
    },
    consume(challenge) {
      const expiresAt = outstanding.get(challenge);
      outstanding.delete(challenge);
      return expiresAt !== undefined && expiresAt > Date.now();
    },
  };
}
