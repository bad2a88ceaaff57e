import { promises as fs } from 'node:fs';
import type { z } from 'zod';

// JSON files an operator hands a command (policy drafts, enrollment tokens): read, parsed and
// checked against their schema, with errors that name the file and what to do instead.

export function describeIssues(error: z.ZodError): string {
  return error.issues.map((i) => `${i.path.length ? `${i.path.join('.')}: ` : ''}${i.message}`).join('; ');
}

// Reads and validates a JSON file; `what` names it in errors and `fix` says what to do instead.
export async function readJsonFile<S extends z.ZodType>(
  path: string,
  schema: S,
  what: string,
  fix: string,
): Promise<z.infer<S>> {
  let text: string;
  try {
    text = await fs.readFile(path, 'utf8');
  } catch (error) {
    throw new Error(`cannot read ${what} ${path}: ${(error as Error).message}; ${fix}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new Error(`${what} ${path} is not JSON (${(error as Error).message}); ${fix}`);
  }
  const parsed = schema.safeParse(json);
  if (!parsed.success) throw new Error(`${what} ${path} is invalid: ${describeIssues(parsed.error)}; ${fix}`);
  return parsed.data;
}
