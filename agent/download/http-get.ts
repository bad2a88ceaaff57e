import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { connect, type Socket } from 'node:net';

// GET requests for NAR bodies, as a BodySource: the status, the headers and a body that is
// pushed into a callback, with backpressure. Two transports:
//   - plain http:// bodies expected to be large go over a bare TCP socket that reads into one
//     reused buffer (RawHttpGet below): node:http allocates a fresh 64 KiB buffer per read and
//     costs about ten times the CPU per byte (measured: 0.3-0.5 s against 0.03-0.05 s per 100
//     MiB), which on a small machine is what limits a fast link;
//   - https://, and small files (where a kept-alive connection saves a round trip per file), go
//     through node:http(s).
// Redirects are followed as Nix follows them (some caches send NARs from a storage host), at
// most MAX_REDIRECTS, http and https only.

const MAX_REDIRECTS = 5;
// The raw transport's read buffer.
const READ_BUFFER_BYTES = 256 * 1024;
// A response head (status line and headers) larger than this is refused.
const MAX_HEAD_BYTES = 64 * 1024;
// Chunk-size lines and trailers of a chunked body are bounded too.
const MAX_CHUNK_LINE_BYTES = 1024;

export interface BodySource {
  // The URL that answered, after redirects.
  url: string;
  status: number;
  // Lower-case header name → value.
  header(name: string): string | undefined;
  // Streams the body into `onChunk` (the bytes are only valid during the call: copy what you
  // keep). Returning false stops reading until resume(). Resolves at the end of the body, rejects
  // when the connection breaks first.
  pipe(onChunk: (chunk: Uint8Array) => boolean): Promise<void>;
  resume(): void;
  destroy(): void;
}

export interface GetOptions {
  headers: Record<string, string>;
  signal: AbortSignal;
  // Whether the body is worth the raw transport (large, so per-byte cost beats per-file cost).
  large: boolean;
}

// ------------------------------------------------------------------------------------------
// node:http(s)

// The body is read from the response on, not from pipe(): the caller opens its file in between,
// and a connection that breaks meanwhile (or an abort) would otherwise end the message before
// pipe() listens, and pipe() wait for ever. What arrives before pipe() is held (reading pauses at
// EARLY_BYTES) and handed over at once when pipe() is called, as the raw transport does: bytes
// received before a cut are kept for the next attempt to resume from.
const EARLY_BYTES = 64 * 1024;

function abortError(): Error {
  return Object.assign(new Error('aborted'), { name: 'AbortError' });
}

function messageSource(url: string, message: IncomingMessage, signal: AbortSignal): BodySource {
  const early: Buffer[] = [];
  let earlyBytes = 0;
  let consumer: ((chunk: Buffer) => void) | null = null;
  // The consumer asked for a pause (its writes are behind).
  let paused = false;
  let outcome: { error: Error | null } | null = null;
  let onOutcome: (() => void) | null = null;
  const settle = (error: Error | null): void => {
    if (outcome) return;
    outcome = { error };
    onOutcome?.();
  };
  message.on('data', (chunk: Buffer) => {
    if (consumer) {
      consumer(chunk);
      return;
    }
    early.push(chunk);
    earlyBytes += chunk.length;
    if (earlyBytes >= EARLY_BYTES) message.pause();
  });
  // An abort makes node:http drop the rest of the body and end the message: not a whole body.
  message.once('end', () => settle(signal.aborted ? abortError() : null));
  message.once('error', (error) => settle(signal.aborted ? abortError() : error));
  message.once('close', () => {
    if (!message.complete)
      settle(signal.aborted ? abortError() : new Error('the connection closed before the end of the body'));
  });
  return {
    url,
    status: message.statusCode ?? 0,
    header: (name) => {
      const value = message.headers[name];
      return Array.isArray(value) ? value.join(', ') : value;
    },
    pipe(onChunk) {
      return new Promise((resolve, reject) => {
        let settled = false;
        const stop = (error: Error | null): void => {
          if (settled) return;
          settled = true;
          if (error) reject(error);
          else resolve();
        };
        consumer = (chunk) => {
          if (settled) return;
          try {
            if (!onChunk(chunk)) {
              paused = true;
              message.pause();
            }
          } catch (error) {
            message.destroy();
            stop(error as Error);
          }
        };
        for (const chunk of early.splice(0)) consumer(chunk);
        onOutcome = () => stop(outcome?.error ?? null);
        if (outcome) stop(outcome.error);
        else if (!paused && !settled) message.resume();
      });
    },
    resume: () => {
      paused = false;
      message.resume();
    },
    destroy: () => message.destroy(),
  };
}

function nodeGet(url: URL, options: GetOptions): Promise<BodySource> {
  return new Promise((resolve, reject) => {
    const request = (url.protocol === 'https:' ? httpsRequest : httpRequest)(url, {
      method: 'GET',
      headers: options.headers,
      signal: options.signal,
    });
    request.once('response', (message) => resolve(messageSource(url.href, message, options.signal)));
    request.once('error', reject);
    request.end();
  });
}

// ------------------------------------------------------------------------------------------
// Raw HTTP/1.1 over a TCP socket with a reused read buffer. One request per connection
// (`Connection: close`). Everything the server sends is bounded: the head, chunk-size lines,
// trailers; the body goes to the caller, which caps it.

type Framing =
  | { kind: 'length'; remaining: number }
  | { kind: 'close' }
  | {
      kind: 'chunked';
      state: 'size' | 'data' | 'data-end' | 'trailers' | 'done';
      remaining: number;
      line: string;
      trailerBytes: number;
    };

class HttpFormatError extends Error {}

function parseHead(text: string, url: string): { status: number; headers: Map<string, string> } {
  const lines = text.split('\r\n');
  const statusLine = /^HTTP\/1\.[01] ([1-9][0-9]{2})(?: .*)?$/.exec(lines[0] ?? '');
  if (!statusLine)
    throw new HttpFormatError(
      `${url} answered with something that is not HTTP/1.x: ${JSON.stringify((lines[0] ?? '').slice(0, 80))}`,
    );
  const headers = new Map<string, string>();
  for (const line of lines.slice(1)) {
    if (line === '') continue;
    const match = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*(.*?)[ \t]*$/.exec(line);
    if (!match) throw new HttpFormatError(`${url} sent a malformed header line: ${JSON.stringify(line.slice(0, 80))}`);
    const name = match[1]!.toLowerCase();
    const previous = headers.get(name);
    headers.set(name, previous === undefined ? match[2]! : `${previous}, ${match[2]}`);
  }
  return { status: Number(statusLine[1]), headers };
}

function framingOf(status: number, headers: Map<string, string>, url: string): Framing {
  if (status === 204 || status === 304 || (status >= 100 && status < 200)) return { kind: 'length', remaining: 0 };
  const transfer = headers.get('transfer-encoding');
  if (transfer !== undefined) {
    if (transfer.toLowerCase() !== 'chunked')
      throw new HttpFormatError(
        `${url} uses Transfer-Encoding ${JSON.stringify(transfer.slice(0, 40))}; only chunked is understood`,
      );
    return { kind: 'chunked', state: 'size', remaining: 0, line: '', trailerBytes: 0 };
  }
  const length = headers.get('content-length');
  if (length !== undefined) {
    if (!/^[0-9]{1,15}$/.test(length))
      throw new HttpFormatError(`${url} sent Content-Length ${JSON.stringify(length.slice(0, 40))}`);
    return { kind: 'length', remaining: Number(length) };
  }
  return { kind: 'close' };
}

class RawHttpGet implements BodySource {
  url: string;
  status = 0;
  private headers = new Map<string, string>();
  private readonly socket: Socket;
  private readonly buffer = Buffer.allocUnsafe(READ_BUFFER_BYTES);
  private head: Buffer[] = [];
  private headBytes = 0;
  private framing: Framing | null = null;
  // Body bytes that came with the head, before pipe() was called.
  private early: Buffer[] = [];
  private onChunk: ((chunk: Uint8Array) => boolean) | null = null;
  // The consumer asked for a pause (its writes are behind).
  private paused = false;
  // The head is in and pipe() has not been called yet.
  private holding = false;
  private ended = false;
  private failure: Error | null = null;
  // The body was complete and handed over: what the socket does afterwards does not matter.
  private settled = false;
  private headDone!: { resolve: () => void; reject: (error: Error) => void };
  private bodyDone: { resolve: () => void; reject: (error: Error) => void } | null = null;
  readonly headReady: Promise<void>;

  constructor(url: URL, options: GetOptions) {
    this.url = url.href;
    this.headReady = new Promise((resolve, reject) => {
      this.headDone = { resolve, reject };
    });
    const port = Number(url.port || 80);
    this.socket = connect({
      host: url.hostname.replace(/^\[(.*)\]$/, '$1'),
      port,
      onread: { buffer: this.buffer, callback: (bytes: number) => this.received(bytes) },
    });
    const lines = [
      `GET ${url.pathname}${url.search} HTTP/1.1`,
      `Host: ${url.host}`,
      'Connection: close',
      'User-Agent: outpost-agent',
      ...Object.entries(options.headers).map(([name, value]) => `${name}: ${value}`),
    ];
    this.socket.once('connect', () => this.socket.write(`${lines.join('\r\n')}\r\n\r\n`));
    this.socket.on('end', () => this.connectionEnded());
    this.socket.on('error', (error) => this.fail(error));
    this.socket.on('close', () => this.connectionEnded());
    const abort = (): void => this.fail(Object.assign(new Error('aborted'), { name: 'AbortError' }));
    if (options.signal.aborted) abort();
    else options.signal.addEventListener('abort', abort, { once: true });
    this.socket.once('close', () => options.signal.removeEventListener('abort', abort));
  }

  header(name: string): string | undefined {
    return this.headers.get(name);
  }

  pipe(onChunk: (chunk: Uint8Array) => boolean): Promise<void> {
    this.onChunk = onChunk;
    return new Promise((resolve, reject) => {
      this.bodyDone = { resolve, reject };
      if (this.failure) {
        reject(this.failure);
        return;
      }
      try {
        const early = this.early;
        this.early = [];
        for (const bytes of early) this.body(bytes);
      } catch (error) {
        this.fail(error as Error);
        return;
      }
      this.holding = false;
      if (this.finishIfComplete()) return;
      if (this.ended) this.connectionEnded();
      else if (!this.paused) this.socket.resume();
    });
  }

  resume(): void {
    if (!this.paused || this.failure) return;
    this.paused = false;
    if (!this.holding) this.socket.resume();
  }

  // At the end of the framed body: resolve and close (one request per connection).
  private finishIfComplete(): boolean {
    if (!this.bodyDone || !this.framing || this.framing.kind === 'close' || !this.isComplete()) return false;
    this.settled = true;
    this.bodyDone.resolve();
    this.socket.destroy();
    return true;
  }

  destroy(): void {
    this.socket.destroy();
  }

  private fail(error: Error): void {
    if (this.failure || this.settled) return;
    this.failure = error;
    this.socket.destroy();
    this.headDone.reject(error);
    this.bodyDone?.reject(error);
  }

  private isComplete(): boolean {
    const framing = this.framing;
    if (!framing) return false;
    if (framing.kind === 'length') return framing.remaining === 0;
    if (framing.kind === 'chunked') return framing.state === 'done';
    return this.ended;
  }

  private connectionEnded(): void {
    this.ended = true;
    if (this.failure || this.settled) return;
    if (!this.framing) {
      this.fail(new Error('the connection closed before the response head'));
      return;
    }
    if (!this.bodyDone) return; // pipe() will see `ended`
    if (this.isComplete()) {
      this.settled = true;
      this.bodyDone.resolve();
    } else this.fail(new Error('the connection closed before the end of the body'));
  }

  // The onread callback: false pauses the socket.
  private received(bytes: number): boolean {
    if (this.failure) return false;
    try {
      const data = this.buffer.subarray(0, bytes);
      if (!this.framing) this.readHead(data);
      else if (!this.onChunk) this.early.push(Buffer.from(data));
      else this.body(data);
    } catch (error) {
      this.fail(error as Error);
      return false;
    }
    if (this.finishIfComplete()) return false;
    // Until pipe() is called, nothing more is read.
    if (this.framing && !this.onChunk) this.holding = true;
    return !(this.paused || this.holding);
  }

  private readHead(data: Buffer): void {
    this.head.push(Buffer.from(data));
    this.headBytes += data.length;
    const all = Buffer.concat(this.head);
    const end = all.indexOf('\r\n\r\n');
    if (end < 0) {
      if (this.headBytes > MAX_HEAD_BYTES)
        throw new HttpFormatError(`${this.url} sent a response head larger than ${MAX_HEAD_BYTES} bytes`);
      return;
    }
    if (end > MAX_HEAD_BYTES)
      throw new HttpFormatError(`${this.url} sent a response head larger than ${MAX_HEAD_BYTES} bytes`);
    const { status, headers } = parseHead(all.subarray(0, end).toString('latin1'), this.url);
    this.status = status;
    this.headers = headers;
    this.framing = framingOf(status, headers, this.url);
    this.head = [];
    const rest = all.subarray(end + 4);
    if (rest.length > 0) this.early.push(rest);
    this.headDone.resolve();
  }

  // Body bytes, unframed and handed on.
  private body(data: Buffer): void {
    const framing = this.framing!;
    if (framing.kind === 'close') {
      this.deliver(data);
      return;
    }
    if (framing.kind === 'length') {
      if (framing.remaining === 0) return; // bytes after the body: ignored, the connection closes
      const take = data.subarray(0, framing.remaining);
      framing.remaining -= take.length;
      this.deliver(take);
      return;
    }
    let at = 0;
    while (at < data.length && framing.state !== 'done') {
      if (framing.state === 'data') {
        const take = data.subarray(at, at + framing.remaining);
        framing.remaining -= take.length;
        at += take.length;
        this.deliver(take);
        if (framing.remaining === 0) {
          framing.state = 'data-end';
          framing.line = '';
        }
        continue;
      }
      // size, data-end and trailers are line-based.
      const newline = data.indexOf(10, at);
      const piece = data.subarray(at, newline < 0 ? data.length : newline + 1).toString('latin1');
      at += piece.length;
      framing.line += piece;
      if (framing.line.length > MAX_CHUNK_LINE_BYTES)
        throw new HttpFormatError(`${this.url} sent a chunked-encoding line longer than ${MAX_CHUNK_LINE_BYTES} bytes`);
      if (newline < 0) continue;
      const line = framing.line.replace(/\r?\n$/, '');
      framing.line = '';
      if (framing.state === 'data-end') {
        if (line !== '') throw new HttpFormatError(`${this.url} sent a chunk longer than its declared size`);
        framing.state = 'size';
      } else if (framing.state === 'size') {
        const size = /^([0-9a-fA-F]{1,13})(?:[ \t]*;.*)?$/.exec(line);
        if (!size)
          throw new HttpFormatError(`${this.url} sent a malformed chunk size ${JSON.stringify(line.slice(0, 40))}`);
        framing.remaining = Number.parseInt(size[1]!, 16);
        framing.state = framing.remaining === 0 ? 'trailers' : 'data';
      } else {
        framing.trailerBytes += line.length;
        if (framing.trailerBytes > MAX_HEAD_BYTES)
          throw new HttpFormatError(`${this.url} sent trailers larger than ${MAX_HEAD_BYTES} bytes`);
        if (line === '') framing.state = 'done';
      }
    }
  }

  private deliver(bytes: Uint8Array): void {
    if (bytes.length === 0) return;
    if (!this.onChunk!(bytes)) this.paused = true;
  }
}

async function rawGet(url: URL, options: GetOptions): Promise<BodySource> {
  const get = new RawHttpGet(url, options);
  await get.headReady;
  return get;
}

export async function httpGet(location: string, options: GetOptions): Promise<BodySource> {
  let url = new URL(location);
  for (let redirects = 0; ; redirects++) {
    if (url.protocol !== 'http:' && url.protocol !== 'https:')
      throw new Error(`${location} redirects to ${url.href}: only http:// and https:// are followed`);
    const source = url.protocol === 'http:' && options.large ? await rawGet(url, options) : await nodeGet(url, options);
    const target = source.header('location');
    if (![301, 302, 303, 307, 308].includes(source.status) || !target) return source;
    source.destroy();
    if (redirects >= MAX_REDIRECTS) throw new Error(`${location}: more than ${MAX_REDIRECTS} redirects`);
    url = new URL(target, url);
  }
}
