import {
  type ClientRequest,
  request as httpRequest,
  type IncomingHttpHeaders,
  type IncomingMessage,
  type ServerResponse,
} from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { Duplex } from 'node:stream';

// Forwards the web editor's API requests and websocket upgrades, unchanged, to a coordinator or
// relay, so a page served from the admin's own installation (`outpost web`) stays same-origin.
// Given several coordinators of one fleet it forwards to one at a time and moves to the next when
// that one cannot be reached: a GET or an upgrade (no body sent yet) is tried on the next at once,
// a POST is answered 502 (its body is gone) and the page's retry goes to the next.
// It trusts nothing and adds nothing: key proofs are signed in the page over the challenge the
// upstream issued and the path, both passed through untouched, so the upstream checks them as if
// the browser had connected directly. No header is added (no X-Forwarded-For); hop-by-hop headers
// and Host are replaced as any HTTP hop must. Every failure becomes an answer (502/413/504) or a
// closed socket, which the page shows as its usual offline state; nothing throws out of a handler.

export interface ForwarderLimits {
  // Largest request body the page may send (its POSTs are signed JSON of a few KiB).
  maxRequestBytes: number;
  // Largest answer passed back; a bigger one is cut off (the page reads bounded answers anyway).
  maxResponseBytes: number;
  // How long the upstream may take to answer a request or an upgrade.
  upstreamTimeoutMs: number;
  // Websocket links open at once through the forwarder.
  maxUpgrades: number;
}

export const DEFAULT_FORWARDER_LIMITS: ForwarderLimits = {
  maxRequestBytes: 1024 * 1024,
  maxResponseBytes: 64 * 1024 * 1024,
  upstreamTimeoutMs: 10_000,
  maxUpgrades: 256,
};

export interface WebForwarder {
  // Answers one HTTP request by forwarding it upstream.
  forwardRequest(req: IncomingMessage, res: ServerResponse): void;
  // Forwards one websocket upgrade and then the bytes both ways.
  forwardUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void;
  // Ends every forwarded websocket link.
  close(): void;
}

const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'host',
]);

function endToEndHeaders(headers: IncomingHttpHeaders): Record<string, string | string[]> {
  const kept: Record<string, string | string[]> = {};
  for (const [name, value] of Object.entries(headers))
    if (value !== undefined && !HOP_BY_HOP.has(name.toLowerCase())) kept[name] = value;
  return kept;
}

function answerJson(res: ServerResponse, status: number, error: string): void {
  try {
    if (res.headersSent || res.writableEnded || res.destroyed) {
      res.destroy();
      return;
    }
    res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
    res.end(JSON.stringify({ error }));
  } catch {
    res.destroy();
  }
}

function refuseSocket(socket: Duplex, status: number, statusText: string): void {
  try {
    socket.end(`HTTP/1.1 ${status} ${statusText}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
    setTimeout(() => socket.destroy(), 2_000).unref();
  } catch {
    socket.destroy();
  }
}

interface Upstream {
  url: URL;
  secure: boolean;
  name: string;
}

function parseUpstream(upstream: string): Upstream {
  const url = new URL(upstream);
  const secure = url.protocol === 'wss:' || url.protocol === 'https:';
  return { url, secure, name: `${secure ? 'https' : 'http'}://${url.host}` };
}

// Errors that mean the upstream is down or cut off: refused, unroutable, reset, or silent until
// the forwarder's own timeout (ETIMEDOUT, a machine behind a firewall that drops packets).
const UNREACHED = new Set([
  'ECONNREFUSED',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ECONNRESET',
  'ETIMEDOUT',
]);

type Failure = 'stale-socket' | 'unreached' | 'other';

// One try of a request: at which upstream, how many upstreams tried so far, and whether it was
// already sent again over a fresh socket.
interface Attempt {
  index: number;
  tries: number;
  staleRetried: boolean;
}

// A kept-alive socket that the upstream closed just as it was reused is reset without the upstream
// being down: sent again to the same upstream, once, not counted against it.
function failureOf(outgoing: ClientRequest, error: Error): Failure {
  const code = (error as NodeJS.ErrnoException).code ?? '';
  if (code === 'ECONNRESET' && outgoing.reusedSocket) return 'stale-socket';
  return UNREACHED.has(code) ? 'unreached' : 'other';
}

// upstreams: the ws:// or wss:// URLs of the coordinators or relays (their origins; a path is
// ignored), in the order to try them.
export function createWebForwarder(
  upstreams: string | readonly string[],
  limits: ForwarderLimits = DEFAULT_FORWARDER_LIMITS,
  onError: (what: string, error: Error) => void = () => {},
  onSwitch: (from: string, to: string) => void = () => {},
): WebForwarder {
  const targets = [upstreams].flat().map(parseUpstream);
  if (targets.length === 0) throw new Error('createWebForwarder: no upstream given');
  let current = 0;
  const links = new Set<Duplex>();

  // The next upstream, once the one in use failed (other requests may have moved on already).
  const failedOver = (failed: number): void => {
    if (targets.length < 2 || failed !== current) return;
    current = (current + 1) % targets.length;
    onSwitch(targets[failed]!.name, targets[current]!.name);
  };
  // Where to send a request that failed before any answer: the same upstream once more (a stale
  // kept-alive socket), the next one (this one unreachable), or nowhere (null: answer it failed).
  const retryAfter = (outgoing: ClientRequest, error: Error, tried: Attempt, canResend: boolean): Attempt | null => {
    const failure = failureOf(outgoing, error);
    if (failure === 'stale-socket' && canResend && !tried.staleRetried) return { ...tried, staleRetried: true };
    if (failure !== 'unreached') return null;
    failedOver(tried.index);
    return canResend && tried.tries < targets.length
      ? { index: current, tries: tried.tries + 1, staleRetried: false }
      : null;
  };
  const noAnswer = (): Error =>
    Object.assign(new Error(`no answer within ${limits.upstreamTimeoutMs} ms`), { code: 'ETIMEDOUT' });

  // TLS is verified as everywhere in the CLI (Node's defaults; NODE_EXTRA_CA_CERTS adds a CA).
  const open = (index: number, req: IncomingMessage, headers: Record<string, string | string[]>) => {
    const { url, secure } = targets[index]!;
    return (secure ? httpsRequest : httpRequest)({
      protocol: secure ? 'https:' : 'http:',
      hostname: url.hostname.replace(/^\[|\]$/g, ''),
      port: url.port || (secure ? 443 : 80),
      method: req.method,
      path: req.url ?? '/',
      headers: { ...headers, host: url.host },
      timeout: limits.upstreamTimeoutMs,
    });
  };

  return {
    forwardRequest(req, res) {
      try {
        const declared = Number(req.headers['content-length'] ?? 0);
        if (!Number.isFinite(declared) || declared > limits.maxRequestBytes) {
          req.resume();
          return answerJson(res, 413, `request body over ${limits.maxRequestBytes} bytes`);
        }
        const headers = endToEndHeaders(req.headers);
        // Only a request without a body can be sent again, and only before its answer began.
        const resendable = req.method === 'GET' && declared === 0 && req.headers['transfer-encoding'] === undefined;
        const attempt = (tried: Attempt): void => {
          const outgoing = open(tried.index, req, headers);
          outgoing.on('timeout', () => outgoing.destroy(noAnswer()));
          outgoing.on('error', (error) => {
            onError('request', error);
            const next = retryAfter(outgoing, error, tried, resendable && !res.headersSent && !res.destroyed);
            if (next) return attempt(next);
            answerJson(res, 502, `${targets[tried.index]!.name} is not reachable: ${error.message}`);
          });
          outgoing.on('response', (answer) => {
            let received = 0;
            try {
              res.writeHead(answer.statusCode ?? 502, endToEndHeaders(answer.headers));
            } catch (error) {
              onError('response', error as Error);
              answer.destroy();
              res.destroy();
              return;
            }
            answer.on('data', (chunk: Buffer) => {
              received += chunk.length;
              if (received > limits.maxResponseBytes) {
                answer.destroy();
                res.destroy();
                return;
              }
              if (!res.write(chunk)) {
                answer.pause();
                res.once('drain', () => answer.resume());
              }
            });
            answer.on('end', () => res.end());
            answer.on('error', () => res.destroy());
            res.on('close', () => answer.destroy());
          });
          res.on('close', () => {
            if (!res.writableFinished) outgoing.destroy();
          });
          if (resendable) return void outgoing.end();
          let sent = 0;
          req.on('data', (chunk: Buffer) => {
            sent += chunk.length;
            if (sent > limits.maxRequestBytes) {
              outgoing.destroy();
              req.destroy();
              answerJson(res, 413, `request body over ${limits.maxRequestBytes} bytes`);
              return;
            }
            outgoing.write(chunk);
          });
          req.on('end', () => outgoing.end());
          req.on('error', () => outgoing.destroy());
        };
        if (resendable) req.resume();
        attempt({ index: current, tries: 1, staleRetried: false });
      } catch (error) {
        onError('request', error as Error);
        answerJson(res, 500, `could not forward the request: ${(error as Error).message}`);
      }
    },

    forwardUpgrade(req, socket, head) {
      try {
        socket.on('error', () => socket.destroy());
        if (links.size >= limits.maxUpgrades) return refuseSocket(socket, 503, 'Service Unavailable');
        links.add(socket);
        socket.once('close', () => links.delete(socket));
        const headers = endToEndHeaders(req.headers);
        headers.connection = 'Upgrade';
        headers.upgrade = req.headers.upgrade ?? 'websocket';
        const attempt = (tried: Attempt): void => {
          const outgoing = open(tried.index, req, headers);
          outgoing.on('timeout', () => outgoing.destroy(noAnswer()));
          outgoing.on('error', (error) => {
            onError('upgrade', error);
            const next = retryAfter(outgoing, error, tried, !socket.destroyed);
            if (next) return attempt(next);
            refuseSocket(socket, 502, 'Bad Gateway');
          });
          // The upstream refused the upgrade: pass its status on and close.
          outgoing.on('response', (answer) => {
            answer.resume();
            refuseSocket(socket, answer.statusCode ?? 502, answer.statusMessage ?? 'Refused');
          });
          outgoing.on('upgrade', (answer, upstreamSocket, upstreamHead) => {
            upstreamSocket.setTimeout(0);
            upstreamSocket.on('error', () => socket.destroy());
            socket.on('close', () => upstreamSocket.destroy());
            upstreamSocket.on('close', () => socket.destroy());
            if (socket.destroyed) return upstreamSocket.destroy();
            const lines = [`HTTP/1.1 ${answer.statusCode ?? 101} ${answer.statusMessage ?? 'Switching Protocols'}`];
            for (let i = 0; i < answer.rawHeaders.length; i += 2)
              lines.push(`${answer.rawHeaders[i]}: ${answer.rawHeaders[i + 1]}`);
            socket.write(`${lines.join('\r\n')}\r\n\r\n`);
            if (upstreamHead.length > 0) socket.write(upstreamHead);
            if (head.length > 0) upstreamSocket.write(head);
            upstreamSocket.pipe(socket);
            socket.pipe(upstreamSocket);
          });
          outgoing.end();
        };
        attempt({ index: current, tries: 1, staleRetried: false });
      } catch (error) {
        onError('upgrade', error as Error);
        socket.destroy();
      }
    },

    close() {
      for (const socket of links) socket.destroy();
      links.clear();
    },
  };
}
