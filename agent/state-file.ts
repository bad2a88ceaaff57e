import { promises as fs } from 'node:fs';
import type { z } from 'zod';

// The agent's JSON state files (state.json, actions.json, ssh-tunnels.json), read one way: a
// missing file is a fresh start, anything else that is wrong stops the agent with a message that
// names the file and what to do about it (`fix`): guessing a default for a damaged file could undo
// what it protects (the anti-rollback floor, at-most-once actions, spent tunnel nonces).
export interface StateFileSpec<T> {
  schema: z.ZodType<T>;
  // The value of a file that does not exist yet.
  missing: () => T;
  // What the operator can do about a damaged file, and what that costs.
  fix: string;
}

// Schema problems listed in a message, at most this many (a damaged file can have thousands).
const MAX_LISTED_ISSUES = 5;

export async function loadStateFile<T>(path: string, spec: StateFileSpec<T>): Promise<T> {
  let text: string;
  try {
    text = await fs.readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return spec.missing();
    throw new Error(`cannot read ${path}: ${(error as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new Error(`${path} is not valid JSON; ${spec.fix}`);
  }
  const parsed = spec.schema.safeParse(json);
  if (!parsed.success) {
    const issues = parsed.error.issues
      .slice(0, MAX_LISTED_ISSUES)
      .map((i) => `${i.path.map(String).join('.')}: ${i.message}`)
      .join('; ');
    throw new Error(`${path} is invalid (${issues}); ${spec.fix}`);
  }
  return parsed.data;
}
