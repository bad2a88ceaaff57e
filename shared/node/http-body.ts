import type { IncomingMessage } from 'node:http';
import type { z } from 'zod';
import { checkJsonBounds, MAX_CANONICAL_BYTES, MAX_CANONICAL_DEPTH } from '../crypto/canonical.js';

// One bounded body reader for every HTTP endpoint: the size is checked while reading (a declared
// Content-Length over the bound is refused before any byte is read), so a large or endless body
// costs at most maxBytes of memory.
export class RequestBodyError extends Error {
  constructor(
    message: string,
    readonly status: 400 | 413,
  ) {
    super(message);
  }
}

export async function readBody(req: IncomingMessage, maxBytes: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > maxBytes)
    throw new RequestBodyError(`request body of ${declared} bytes is over the ${maxBytes}-byte limit`, 413);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > maxBytes) throw new RequestBodyError(`request body is over the ${maxBytes}-byte limit`, 413);
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

// A JSON body checked against schema; errors name the field and what was expected.
export async function readJsonBody<S extends z.ZodType>(
  req: IncomingMessage,
  schema: S,
  maxBytes: number,
): Promise<z.infer<S>> {
  const body = await readBody(req, maxBytes);
  let json: unknown;
  try {
    json = JSON.parse(body.toString('utf8'));
  } catch {
    throw new RequestBodyError('request body is not JSON; send application/json', 400);
  }
  // Bodies are signed entries, checked as canonical JSON: one nested deeper than that allows, or
  // with a number JSON.parse made infinite (1e999), can be neither signed nor checked. Refused here
  // with where it is, not as the server's own failure later (fuzz finding 6).
  const bounds = checkJsonBounds(json, { maxDepth: MAX_CANONICAL_DEPTH, maxBytes: MAX_CANONICAL_BYTES });
  if (!bounds.ok) {
    const reason = bounds.reason.length > 300 ? `${bounds.reason.slice(0, 300)}…` : bounds.reason;
    throw new RequestBodyError(
      `request body cannot be signed or checked: ${reason}; signed entries are plain JSON nested at most ${MAX_CANONICAL_DEPTH} levels`,
      400,
    );
  }
  const parsed = schema.safeParse(json);
  if (!parsed.success)
    throw new RequestBodyError(
      parsed.error.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`).join('; '),
      400,
    );
  return parsed.data;
}
