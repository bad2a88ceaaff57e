import { createReadStream } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';

// Serves one file from disk, whole or the one byte range asked for: agents resume a NAR cut off
// mid-transfer with `Range: bytes=N-` (satellite links).
export function serveFile(
  req: IncomingMessage,
  res: ServerResponse,
  file: string,
  contentType: string,
  size: number,
): void {
  const range = parseRange(req.headers.range, size);
  if (range === 'unsatisfiable') {
    res
      .writeHead(416, { 'content-type': 'text/plain', 'content-range': `bytes */${size}` })
      .end('range not satisfiable\n');
    return;
  }
  if (range) {
    res.writeHead(206, {
      'content-type': contentType,
      'content-length': String(range.end - range.start + 1),
      'content-range': `bytes ${range.start}-${range.end}/${size}`,
      'accept-ranges': 'bytes',
    });
  } else {
    res.writeHead(200, {
      'content-type': contentType,
      'content-length': String(size),
      'accept-ranges': 'bytes',
    });
  }
  if (req.method === 'HEAD') return void res.end();
  const stream = createReadStream(file, range ? { start: range.start, end: range.end } : {});
  stream.on('error', () => res.destroy());
  stream.pipe(res);
}

// One `bytes=START-[END]` or `bytes=-SUFFIX` range (all an agent sends); anything else is served
// whole, as RFC 9110 allows.
export function parseRange(
  header: string | undefined,
  size: number,
): { start: number; end: number } | 'unsatisfiable' | null {
  const match = header === undefined ? null : /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!match || (match[1] === '' && match[2] === '')) return null;
  if (match[1] === '') {
    const suffix = Number(match[2]);
    if (suffix === 0) return 'unsatisfiable';
    return { start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(match[1]);
  const end = match[2] === '' ? size - 1 : Math.min(Number(match[2]), size - 1);
  if (start >= size || end < start) return 'unsatisfiable';
  return { start, end };
}
