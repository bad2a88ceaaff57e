import { createReadStream, promises as fs } from 'node:fs';
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import fc from 'fast-check';
import nacl from 'tweetnacl';
import { fromBase64, toBase64 } from '../../shared/crypto/encoding.js';
import { narinfoFingerprint, parseNarinfo } from '../../shared/nix/narinfo.js';
import { edgeNumber, nastyString } from './bytes.js';

// A binary cache that serves the real signed closures of the fleet and, for store paths the
// fuzzer invents, narinfos (and NARs) it generates: mutations of a real narinfo, unsigned or
// re-signed with the trusted cache key (so they pass the signature check and reach what comes
// after it), plus lies in the HTTP layer. The agent fetches them through the intents it is given.

export const NIX32 = '0123456789abcdfghijklmnpqrsvwxyz';

export interface ServedNarinfo {
  text: string;
  // How the response lies: a Content-Length that does not match, a failing status, a cut body.
  http: 'plain' | 'short-length' | 'long-length' | 'status-500' | 'status-403' | 'cut';
}

export interface HostileCache {
  url: string;
  // Store path hash part → what to serve for it.
  narinfos: Map<string, ServedNarinfo>;
  // NAR file name (nar/<x>) → bytes.
  nars: Map<string, Uint8Array>;
  requests: number;
  close(): Promise<void>;
}

export async function serveHostileCache(dir: string): Promise<HostileCache> {
  const narinfos = new Map<string, ServedNarinfo>();
  const nars = new Map<string, Uint8Array>();
  const cache = { narinfos, nars, requests: 0 };
  const send = (res: ServerResponse, body: Uint8Array, mode: ServedNarinfo['http'], type: string): void => {
    if (mode === 'status-500' || mode === 'status-403') {
      res.writeHead(mode === 'status-500' ? 500 : 403, { 'content-type': 'text/plain' }).end('no\n');
      return;
    }
    const length =
      mode === 'short-length' ? Math.max(0, body.length - 3) : mode === 'long-length' ? body.length + 100 : body.length;
    res.writeHead(200, { 'content-type': type, 'content-length': String(length) });
    if (mode === 'cut' || mode === 'long-length') {
      res.write(body.subarray(0, mode === 'cut' ? Math.floor(body.length / 2) : body.length));
      res.destroy();
      return;
    }
    res.end(mode === 'short-length' ? body.subarray(0, length) : body);
  };
  const server = createServer((req, res) => {
    cache.requests += 1;
    const path = (req.url ?? '').split('?')[0]!;
    const narinfo = /^\/([0-9a-df-np-sv-z]{32})\.narinfo$/.exec(path);
    if (narinfo && narinfos.has(narinfo[1]!)) {
      const served = narinfos.get(narinfo[1]!)!;
      send(res, new TextEncoder().encode(served.text), served.http, 'text/x-nix-narinfo');
      return;
    }
    const nar = /^\/(nar\/[^/]+)$/.exec(path);
    if (nar && nars.has(nar[1]!)) {
      send(res, nars.get(nar[1]!)!, 'plain', 'application/x-nix-nar');
      return;
    }
    // Everything else from the real cache directory (file names as a cache has them only).
    if (
      !/^\/(nix-cache-info|[0-9a-df-np-sv-z]{32}\.narinfo|nar\/[0-9a-df-np-sv-z]{52}\.nar(\.[a-z0-9]{1,8})?)$/.test(
        path,
      )
    ) {
      res.writeHead(404).end();
      return;
    }
    const file = join(dir, path);
    fs.stat(file).then(
      (stat) => {
        res.writeHead(200, { 'content-length': String(stat.size) });
        createReadStream(file)
          .on('error', () => res.destroy())
          .pipe(res);
      },
      () => res.writeHead(404).end(),
    );
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return Object.assign(cache, {
    url: `http://127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((done) => {
        server.closeAllConnections();
        server.close(() => done());
      }),
  });
}

// A store path the fuzzer invents, from a number.
export function inventedStorePath(n: number, name = 'fuzz'): string {
  let hash = '';
  let x = (n * 2_654_435_761) >>> 0;
  for (let i = 0; i < 32; i++) {
    hash += NIX32[(x + i * 7 + n) % 32];
    x = (Math.imul(x, 1_103_515_245) + 12_345) >>> 0;
  }
  return `/nix/store/${hash}-${name}-${n}`;
}

export function hashPart(storePath: string): string {
  return storePath.slice('/nix/store/'.length, '/nix/store/'.length + 32);
}

export interface CacheSigner {
  name: string;
  secretKey: Uint8Array;
}

export async function readCacheSecretKey(file: string): Promise<CacheSigner> {
  const text = (await fs.readFile(file, 'utf8')).trim();
  const colon = text.indexOf(':');
  return { name: text.slice(0, colon), secretKey: fromBase64(text.slice(colon + 1)) };
}

// Replaces the Sig lines with a real signature over what the narinfo now says, when it parses.
export function resign(text: string, signer: CacheSigner): string {
  let info: ReturnType<typeof parseNarinfo>;
  try {
    info = parseNarinfo(text, 'fuzz');
  } catch {
    return text;
  }
  const signature = nacl.sign.detached(new TextEncoder().encode(narinfoFingerprint(info)), signer.secretKey);
  const lines = text.split('\n').filter((l) => !l.startsWith('Sig:'));
  const at = lines.length && lines.at(-1) === '' ? lines.length - 1 : lines.length;
  lines.splice(at, 0, `Sig: ${signer.name}:${toBase64(signature)}`);
  return lines.join('\n');
}

export type NarinfoEdit =
  | { kind: 'set'; field: string; value: string }
  | { kind: 'drop'; field: string }
  | { kind: 'duplicate'; field: string }
  | { kind: 'raw-line'; line: string }
  | { kind: 'references'; count: number }
  | { kind: 'crlf' }
  | { kind: 'huge' };

const FIELDS = [
  'StorePath',
  'URL',
  'Compression',
  'FileHash',
  'FileSize',
  'NarHash',
  'NarSize',
  'References',
  'Deriver',
  'Sig',
  'CA',
] as const;

const fieldValue = (): fc.Arbitrary<string> =>
  fc.oneof(
    edgeNumber().map(String),
    fc.constantFrom(
      '',
      '0',
      '-1',
      '1e3',
      '9007199254740993',
      '99999999999999999999',
      'none',
      'xz',
      'zstd',
      'bzip2',
      'br',
      'nar/../../../etc/passwd',
      'http://127.0.0.1:1/nar/x.nar',
      '//evil/nar/x.nar',
      'nar/%2e%2e/x',
      'sha256:0000000000000000000000000000000000000000000000000000',
      'sha256:zzzz',
      'sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=',
      'sha512:abc',
      'unknown-deriver',
      '/nix/store/00000000000000000000000000000000-x',
      'fixed:r:sha256:abc',
      'cache:',
      ':',
    ),
    nastyString().map((s) => s.replace(/\n/g, ' ').slice(0, 5_000)),
  );

export const narinfoEdit = (): fc.Arbitrary<NarinfoEdit> =>
  fc.oneof(
    {
      weight: 6,
      arbitrary: fc.record({
        kind: fc.constant('set' as const),
        field: fc.constantFrom(...FIELDS),
        value: fieldValue(),
      }),
    },
    { weight: 2, arbitrary: fc.record({ kind: fc.constant('drop' as const), field: fc.constantFrom(...FIELDS) }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant('duplicate' as const), field: fc.constantFrom(...FIELDS) }) },
    {
      weight: 2,
      arbitrary: fc.record({
        kind: fc.constant('raw-line' as const),
        line: fc.oneof(
          fc.constantFrom(
            'Garbage',
            'X-Unknown: 1',
            'constructor: x',
            '__proto__: y',
            ': x',
            'Sig:',
            'Sig: ',
            `${'A'.repeat(70)}: x`,
          ),
          fc.string({ maxLength: 40 }),
        ),
      }),
    },
    {
      weight: 1,
      arbitrary: fc.record({ kind: fc.constant('references' as const), count: fc.constantFrom(1, 2, 5, 300, 20_001) }),
    },
    { weight: 1, arbitrary: fc.constant({ kind: 'crlf' as const }) },
    { weight: 1, arbitrary: fc.constant({ kind: 'huge' as const }) },
  );

// Applies edits to a narinfo's text. `refsFrom` names invented paths for References edits.
export function editNarinfo(text: string, edits: readonly NarinfoEdit[], refsFrom: (i: number) => string): string {
  let lines = text.split('\n').filter((l) => l !== '');
  for (const edit of edits) {
    switch (edit.kind) {
      case 'set':
        lines = lines.filter((l) => !l.startsWith(`${edit.field}:`));
        lines.push(`${edit.field}: ${edit.value}`);
        break;
      case 'drop':
        lines = lines.filter((l) => !l.startsWith(`${edit.field}:`));
        break;
      case 'duplicate': {
        const line = lines.find((l) => l.startsWith(`${edit.field}:`));
        if (line) lines.push(line);
        break;
      }
      case 'raw-line':
        lines.push(edit.line);
        break;
      case 'references':
        lines = lines.filter((l) => !l.startsWith('References:'));
        lines.push(
          `References: ${Array.from({ length: edit.count }, (_, i) => refsFrom(i).slice('/nix/store/'.length)).join(' ')}`,
        );
        break;
      case 'crlf':
        return `${lines.join('\r\n')}\r\n`;
      case 'huge':
        lines.push(`X-Padding: ${'p'.repeat(1024 * 1024)}`);
        break;
    }
  }
  return `${lines.join('\n')}\n`;
}
