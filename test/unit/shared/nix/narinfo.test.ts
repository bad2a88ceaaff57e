import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { createServer, request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import nacl from 'tweetnacl';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { decodeNixBase32, encodeNixBase32 } from '../../../../shared/nix/base32.js';
import {
  closureNarinfos,
  closureNarSize,
  fetchNarinfo,
  type Narinfo,
  narHashToNix32,
  narinfoFingerprint,
  parseCacheKey,
  parseNarinfo,
  verifyNarinfo,
} from '../../../../shared/nix/narinfo.js';
import { type BinaryCacheServer, serveBinaryCache } from '../../../harness/cache-server.js';
import {
  buildTestClosure,
  type CacheKeyFiles,
  installFromCache,
  makeCacheKey,
  publishToCache,
  runCommand,
} from '../../../harness/nix-fixtures.js';

// One real closure (a top-level path with three payload dependencies), signed with a real
// `nix-store --generate-binary-cache-key` key, published with `nix copy` and served over HTTP.
interface Fixture {
  root: string;
  cacheDir: string;
  trusted: CacheKeyFiles;
  untrusted: CacheKeyFiles;
  system: string;
  server: BinaryCacheServer;
}
let fixture: Fixture;
const cleanups: (() => Promise<void>)[] = [];

test.before(async () => {
  const root = await fs.mkdtemp(join(tmpdir(), 'outpost-narinfo-test-'));
  cleanups.push(() => fs.rm(root, { recursive: true, force: true }));
  const trusted = await makeCacheKey(join(root, 'keys'), 'outpost-test-cache-1');
  const untrusted = await makeCacheKey(join(root, 'keys'), 'outpost-untrusted-1');
  const system = await buildTestClosure({
    name: 'outpost-narinfo-test-system',
    extraPaths: 3,
    payloadBytes: 4096,
    uniqueness: randomBytes(8).toString('hex'),
  });
  const cacheDir = join(root, 'cache');
  await publishToCache(system, cacheDir, trusted.secretKeyFile);
  const server = await serveBinaryCache(cacheDir);
  cleanups.push(() => server.close());
  fixture = { root, cacheDir, trusted, untrusted, system, server };
});

test.after(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

async function narinfoText(storePath: string): Promise<string> {
  const response = await fetch(
    `${fixture.server.url}/${storePath.slice('/nix/store/'.length, '/nix/store/'.length + 32)}.narinfo`,
  );
  assert.is(response.status, 200);
  return response.text();
}

// uvu/assert has no async counterpart of throws().
async function rejects(run: () => Promise<unknown>, pattern: RegExp): Promise<void> {
  try {
    await run();
  } catch (error) {
    assert.match((error as Error).message, pattern);
    return;
  }
  assert.unreachable(`expected a rejection matching ${pattern}`);
}

function replaceLine(text: string, field: string, replacement: string[]): string {
  const lines = text.split('\n').filter((line) => !line.startsWith(`${field}:`));
  return [...replacement, ...lines].join('\n');
}

// The root refers to itself (its switch-to-configuration names its own path), as a NixOS
// toplevel does; `payloads` are its other references.
async function rootNarinfo(): Promise<{ text: string; info: Narinfo; payloads: string[] }> {
  const text = await narinfoText(fixture.system);
  const info = parseNarinfo(text, 'test');
  return { text, info, payloads: info.references.filter((name) => `/nix/store/${name}` !== fixture.system) };
}

// --- nix-base32 -------------------------------------------------------------------------------

test('nix-base32 matches real Nix for SHA-256 and 20-byte (store path) values, both ways', async () => {
  const sha256s = Array.from({ length: 8 }, () => randomBytes(32).toString('hex'));
  const sha1s = Array.from({ length: 8 }, () => randomBytes(20).toString('hex'));
  const nix256 = await runCommand('nix-hash', ['--type', 'sha256', '--to-base32', ...sha256s]);
  const nix160 = await runCommand('nix-hash', ['--type', 'sha1', '--to-base32', ...sha1s]);
  assert.is(nix256.code, 0, nix256.stderr);
  assert.is(nix160.code, 0, nix160.stderr);
  const expected = [...nix256.stdout.trim().split('\n'), ...nix160.stdout.trim().split('\n')];
  [...sha256s, ...sha1s].forEach((hex, index) => {
    const bytes = new Uint8Array(Buffer.from(hex, 'hex'));
    assert.is(encodeNixBase32(bytes), expected[index]);
    assert.is(Buffer.from(decodeNixBase32(expected[index]!, bytes.length)).toString('hex'), hex);
  });
  // sha256 of the empty string, as printed by `nix-hash --type sha256 --to-base32`.
  assert.is(
    encodeNixBase32(
      new Uint8Array(Buffer.from('e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855', 'hex')),
    ),
    '0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73',
  );
});

test('nix-base32 decode refuses wrong characters, lengths and overflowing first characters', () => {
  const good = '0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73';
  for (const bad of ['e', 'o', 't', 'u', 'E', '-', ' ']) {
    assert.throws(() => decodeNixBase32(good.slice(0, 10) + bad + good.slice(11)), /not nix-base32: character/);
  }
  assert.throws(() => decodeNixBase32(good.slice(1)), /not nix-base32: 51 characters/);
  assert.throws(() => decodeNixBase32(good.slice(0, 32), 32), /not a 32-byte nix-base32 value/);
  // 52 characters carry 260 bits; the first may only be 0 or 1 for a 256-bit hash.
  assert.throws(() => decodeNixBase32(`2${good.slice(1)}`, 32), /sets bits beyond 32 bytes/);
  assert.is(decodeNixBase32('').length, 0);
});

test('NAR hashes in base16 and SRI form convert to the nix32 form Nix signs', () => {
  const bytes = randomBytes(32);
  const nix32 = `sha256:${encodeNixBase32(bytes)}`;
  assert.is(narHashToNix32(nix32), nix32);
  assert.is(narHashToNix32(`sha256:${bytes.toString('hex')}`), nix32);
  assert.is(narHashToNix32(`sha256-${bytes.toString('base64')}`), nix32);
  assert.throws(() => narHashToNix32(`sha512:${bytes.toString('hex')}`), /not a SHA-256 NAR hash/);
});

// --- parsing ----------------------------------------------------------------------------------

test('a real narinfo parses into its fields', async () => {
  const { info, payloads } = await rootNarinfo();
  assert.is(info.storePath, fixture.system);
  assert.is(info.compression, 'none');
  assert.match(info.url, /^nar\/[0-9a-z]{52}\.nar$/);
  assert.match(info.narHash, /^sha256:[0-9a-df-np-sv-z]{52}$/);
  assert.ok(info.narSize > 0);
  assert.is(info.references.length, 4, 'itself and the three payload paths');
  assert.ok(info.references.includes(fixture.system.slice('/nix/store/'.length)));
  assert.is(payloads.length, 3);
  assert.ok(payloads.every((name) => name.includes('-outpost-narinfo-test-system-payload-')));
  assert.match(info.deriver ?? '', /\.drv$/);
  assert.is(info.sigs.length, 1);
  assert.ok(info.sigs[0]!.startsWith('outpost-test-cache-1:'));
});

test('parse errors name the narinfo, the field and a fix', async () => {
  const { text } = await rootNarinfo();
  const where = 'http://cache.test/abc.narinfo';
  const expectError = (input: string, pattern: RegExp): void => {
    try {
      parseNarinfo(input, where);
    } catch (error) {
      const message = (error as Error).message;
      assert.ok(message.startsWith(`narinfo ${where}: `), message);
      assert.match(message, pattern);
      assert.match(message, /nix copy --to/);
      return;
    }
    assert.unreachable(`parsed: ${input.slice(0, 60)}`);
  };
  expectError(replaceLine(text, 'NarHash', []), /missing the NarHash line/);
  expectError(replaceLine(text, 'NarSize', ['NarSize: 12x']), /NarSize: expected a decimal byte count/);
  expectError(replaceLine(text, 'NarSize', ['NarSize: 0']), /NarSize: must be greater than 0/);
  expectError(replaceLine(text, 'NarHash', ['NarHash: md5:abc']), /NarHash: expected sha256/);
  expectError(replaceLine(text, 'StorePath', ['StorePath: /etc/passwd']), /StorePath: expected a Nix store path/);
  expectError(
    replaceLine(text, 'References', ['References: ../../etc']),
    /References\.0: expected a store path base name/,
  );
  expectError(`${text}StorePath: ${fixture.system}\n`, /StorePath appears more than once/);
  expectError(`${text}this is not a field\n`, /is not "Name: value"/);
  expectError(text.replace(/\n/g, '\r\n'), /carriage returns/);
  expectError(`${text}X-Padding: ${'a'.repeat(1024 * 1024)}\n`, /larger than/);
  expectError(`${text}${'Sig: x:y\n'.repeat(300)}`, /more than 256 lines/);
  // Unknown fields and "unknown-deriver" are normal and accepted, as Nix does.
  const extra = parseNarinfo(
    `${replaceLine(text, 'Deriver', ['Deriver: unknown-deriver'])}constructor: x\nFuture-Field: y\n`,
    where,
  );
  assert.is(extra.deriver, undefined);
});

// --- signatures -------------------------------------------------------------------------------

test('a narinfo signed by the trusted key verifies, also with NarHash in base16 or SRI form', async () => {
  const { text, info } = await rootNarinfo();
  assert.equal(verifyNarinfo(info, [fixture.trusted.publicKey]), { ok: true, keyName: 'outpost-test-cache-1' });
  assert.equal(
    verifyNarinfo(info, [parseCacheKey(fixture.untrusted.publicKey), parseCacheKey(fixture.trusted.publicKey)]),
    { ok: true, keyName: 'outpost-test-cache-1' },
  );
  const hashBytes = decodeNixBase32(info.narHash.slice('sha256:'.length), 32);
  for (const spelling of [
    `sha256:${Buffer.from(hashBytes).toString('hex')}`,
    `sha256-${Buffer.from(hashBytes).toString('base64')}`,
  ]) {
    const respelled = parseNarinfo(replaceLine(text, 'NarHash', [`NarHash: ${spelling}`]), 'test');
    assert.is(verifyNarinfo(respelled, [fixture.trusted.publicKey]).ok, true, spelling);
  }
  assert.ok(narinfoFingerprint(info).startsWith(`1;${fixture.system};${info.narHash};${info.narSize};/nix/store/`));
});

test('a narinfo is refused when only untrusted keys signed it, or nobody did', async () => {
  const { text, info } = await rootNarinfo();
  assert.equal(verifyNarinfo(info, [fixture.untrusted.publicKey]), {
    ok: false,
    reason: 'signed only by untrusted keys: outpost-test-cache-1',
  });
  const twoForeign = parseNarinfo(`${text}Sig: someone-else-1:${Buffer.alloc(64).toString('base64')}\n`, 'test');
  assert.equal(verifyNarinfo(twoForeign, [fixture.untrusted.publicKey]), {
    ok: false,
    reason: 'signed only by untrusted keys: outpost-test-cache-1, someone-else-1',
  });
  assert.equal(verifyNarinfo(parseNarinfo(replaceLine(text, 'Sig', []), 'test'), [fixture.trusted.publicKey]), {
    ok: false,
    reason: 'no signature',
  });
  assert.equal(verifyNarinfo(info, []), { ok: false, reason: 'no trusted keys configured' });
});

test('a narinfo with altered References or NarHash is refused', async () => {
  const { text, info, payloads } = await rootNarinfo();
  const refused = {
    ok: false,
    reason: 'signature by outpost-test-cache-1 does not verify (References or NarHash altered?)',
  };
  const fewerReferences = replaceLine(text, 'References', [`References: ${info.references.slice(1).join(' ')}`]);
  assert.equal(verifyNarinfo(parseNarinfo(fewerReferences, 'test'), [fixture.trusted.publicKey]), refused);
  const otherReference = replaceLine(text, 'References', [
    `References: ${[...info.references.slice(1), `${'0'.repeat(32)}-evil`].join(' ')}`,
  ]);
  assert.equal(verifyNarinfo(parseNarinfo(otherReference, 'test'), [fixture.trusted.publicKey]), refused);
  const otherHash = replaceLine(text, 'NarHash', [`NarHash: sha256:${encodeNixBase32(randomBytes(32))}`]);
  assert.equal(verifyNarinfo(parseNarinfo(otherHash, 'test'), [fixture.trusted.publicKey]), refused);
  const otherSize = replaceLine(text, 'NarSize', [`NarSize: ${info.narSize + 1}`]);
  assert.equal(verifyNarinfo(parseNarinfo(otherSize, 'test'), [fixture.trusted.publicKey]), refused);
  // The signature of one path does not carry over to another path's narinfo.
  const payload = parseNarinfo(await narinfoText(`/nix/store/${payloads[0]}`), 'test');
  assert.equal(verifyNarinfo({ ...payload, sigs: info.sigs }, [fixture.trusted.publicKey]), refused);
});

// The group order L of Ed25519, and 32-byte little-endian scalars.
const L = 2n ** 252n + 27742317777372353535851937790883648493n;
const scalar = (bytes: Uint8Array): bigint => bytes.reduceRight((n, b) => (n << 8n) | BigInt(b), 0n);
const scalarBytes = (n: bigint): Uint8Array =>
  Uint8Array.from({ length: 32 }, (_, i) => Number((n >> BigInt(8 * i)) & 0xffn));

test('a malleated signature (S + L, same R) is refused, as Nix (libsodium) refuses it, although tweetnacl alone accepts it', async () => {
  const { text, info } = await rootNarinfo();
  const trustedName = 'outpost-test-cache-1';
  const sig = info.sigs.find((s) => s.startsWith(`${trustedName}:`))!;
  const signature = new Uint8Array(Buffer.from(sig.slice(trustedName.length + 1), 'base64'));
  const malleated = signature.slice();
  malleated.set(scalarBytes(scalar(signature.subarray(32)) + L), 32);
  const publicKey = parseCacheKey(fixture.trusted.publicKey).publicKey;
  const message = new TextEncoder().encode(narinfoFingerprint(info));
  // Why the check is needed: on its own tweetnacl takes the malleated signature.
  assert.ok(nacl.sign.detached.verify(message, malleated, publicKey));
  const narinfo = parseNarinfo(
    replaceLine(text, 'Sig', [`Sig: ${trustedName}:${Buffer.from(malleated).toString('base64')}`]),
    'test',
  );
  assert.equal(verifyNarinfo(narinfo, [fixture.trusted.publicKey]), {
    ok: false,
    reason: `signature by ${trustedName} does not verify (References or NarHash altered?)`,
  });
  // The genuine signature beside it still verifies.
  assert.is(verifyNarinfo({ ...narinfo, sigs: [...narinfo.sigs, sig] }, [fixture.trusted.publicKey]).ok, true);
});

test('malformed signatures and keys give a clean refusal, never a throw', async () => {
  const { text, info } = await rootNarinfo();
  const trustedName = 'outpost-test-cache-1';
  const withSigs = (...sigs: string[]): Narinfo =>
    parseNarinfo(
      replaceLine(
        text,
        'Sig',
        sigs.map((sig) => `Sig: ${sig}`),
      ),
      'test',
    );
  const cases: [Narinfo, RegExp][] = [
    [withSigs('no-colon-here'), /^malformed signature: "no-colon-here" is not name:base64$/],
    [withSigs(':AAAA'), /^malformed signature: ":AAAA" is not name:base64$/],
    [withSigs(`${trustedName}:not*base64`), /^malformed signature: signature by outpost-test-cache-1 is not base64$/],
    [withSigs(`${trustedName}:AAAA`), /^malformed signature: signature by outpost-test-cache-1 is 3 bytes, not 64$/],
    [withSigs(`${trustedName}:${Buffer.alloc(65).toString('base64')}`), /is 65 bytes, not 64/],
    [
      withSigs('junk', `other-1:${Buffer.alloc(64).toString('base64')}`),
      /^malformed signature: .*; otherwise signed only by untrusted keys: other-1$/,
    ],
    [
      withSigs(`${trustedName}:${Buffer.alloc(64).toString('base64')}`),
      /^signature by outpost-test-cache-1 does not verify/,
    ],
  ];
  for (const [narinfo, pattern] of cases) {
    const verdict = verifyNarinfo(narinfo, [fixture.trusted.publicKey]);
    assert.is(verdict.ok, false);
    if (!verdict.ok) assert.match(verdict.reason, pattern);
  }
  // A good signature still counts next to junk, as in Nix.
  assert.equal(verifyNarinfo(withSigs('junk', ...info.sigs), [fixture.trusted.publicKey]), {
    ok: true,
    keyName: trustedName,
  });

  const otherKeyBytes = fixture.untrusted.publicKey.split(':')[1]!;
  const badKeySets: [string[], RegExp][] = [
    [
      [fixture.trusted.publicKey, `${trustedName}:${otherKeyBytes}`],
      /trusted keys name outpost-test-cache-1 twice with different keys/,
    ],
    [['no-colon'], /trusted key #1 is malformed: not a Nix cache public key/],
    [[`${trustedName}:AAAA`], /trusted key #1 is malformed: .*3 bytes/],
    [[`${trustedName}:${Buffer.alloc(64).toString('base64')}`], /is a 64-byte secret key/],
  ];
  for (const [keys, pattern] of badKeySets) {
    const verdict = verifyNarinfo(info, keys);
    assert.is(verdict.ok, false);
    if (!verdict.ok) assert.match(verdict.reason, pattern);
  }
  // The same key listed twice is harmless.
  assert.is(verifyNarinfo(info, [fixture.trusted.publicKey, fixture.trusted.publicKey]).ok, true);
  assert.throws(() => parseCacheKey(`${trustedName}:AAAA`), /3 bytes; an Ed25519 public key is 32/);
  // Objects that never went through parseNarinfo still yield a verdict.
  const nonsense = [
    {} as unknown as Narinfo,
    { ...info, narHash: 'sha256:zz' },
    { ...info, sigs: undefined } as unknown as Narinfo,
  ];
  for (const narinfo of nonsense) assert.is(verifyNarinfo(narinfo, [fixture.trusted.publicKey]).ok, false);
});

// --- fetching ---------------------------------------------------------------------------------

test('closureNarinfos returns every path of the closure, all verifiable, with Nix’s closure size', async () => {
  const closure = await closureNarinfos(fixture.server.url, fixture.system, { timeoutMs: 5000 });
  const nixClosure = await runCommand('nix-store', ['-qR', fixture.system]);
  assert.is(nixClosure.code, 0, nixClosure.stderr);
  assert.equal(closure.map((info) => info.storePath).sort(), nixClosure.stdout.trim().split('\n').sort());
  assert.is(closure.length, 4);
  assert.is(closure[0]!.storePath, fixture.system, 'root first');
  for (const info of closure) assert.is(verifyNarinfo(info, [fixture.trusted.publicKey]).ok, true, info.storePath);
  const nixSize = await runCommand('nix', [
    '--extra-experimental-features',
    'nix-command',
    'path-info',
    '-S',
    fixture.system,
  ]);
  assert.is(closureNarSize(closure), Number(nixSize.stdout.trim().split(/\s+/)[1]));
});

test('fetchNarinfo reports missing paths, oversize answers and a wrong StorePath', async () => {
  const missing = `/nix/store/${'0'.repeat(32)}-not-published`;
  await rejects(
    () => fetchNarinfo(fixture.server.url, missing),
    /does not have \/nix\/store\/0{32}-not-published \(HTTP 404/,
  );
  await rejects(() => fetchNarinfo(fixture.server.url, fixture.system, { maxBytes: 64 }), /over the 64-byte limit/);
  await rejects(() => fetchNarinfo(fixture.server.url, '/etc/passwd'), /is not a store path/);
  await rejects(() => fetchNarinfo('ftp://cache.test', fixture.system), /only http:\/\/ and https:\/\//);

  // A cache answering one path's hash with another path's (validly signed) narinfo.
  const { payloads } = await rootNarinfo();
  const swappedDir = join(fixture.root, 'swapped');
  await fs.cp(fixture.cacheDir, swappedDir, { recursive: true });
  const payloadHash = payloads[0]!.slice(0, 32);
  await fs.copyFile(
    join(swappedDir, `${fixture.system.slice(11, 43)}.narinfo`),
    join(swappedDir, `${payloadHash}.narinfo`),
  );
  const swapped = await serveBinaryCache(swappedDir);
  try {
    await rejects(
      () => fetchNarinfo(swapped.url, `/nix/store/${payloads[0]}`),
      /describes .* not .*corrupt or hostile/,
    );
  } finally {
    await swapped.close();
  }
});

test('closureNarinfos names the missing reference and its referrer', async () => {
  const { payloads } = await rootNarinfo();
  const partialDir = join(fixture.root, 'partial');
  await fs.cp(fixture.cacheDir, partialDir, { recursive: true });
  await fs.rm(join(partialDir, `${payloads[1]!.slice(0, 32)}.narinfo`));
  const partial = await serveBinaryCache(partialDir);
  try {
    await rejects(
      () => closureNarinfos(partial.url, fixture.system, { timeoutMs: 5000 }),
      new RegExp(`incomplete or unreadable at /nix/store/${payloads[1]} \\(referenced by ${fixture.system}\\)`),
    );
    await rejects(() => closureNarinfos(partial.url, fixture.system, { maxPaths: 2 }), /more than 2 paths/);
  } finally {
    await partial.close();
  }
});

test('fetchNarinfo gives up on a cache that never answers, or drips bytes, within its deadline', async () => {
  const stalled: Server = createServer((_request, response) => {
    // Headers, then one byte every 100 ms: never idle, never done.
    response.writeHead(200, { 'content-type': 'text/x-nix-narinfo' });
    const timer = setInterval(() => response.write('S'), 100);
    response.on('close', () => clearInterval(timer));
  });
  const silent: Server = createServer(() => undefined);
  for (const server of [stalled, silent]) {
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const started = Date.now();
    try {
      await rejects(() => fetchNarinfo(url, fixture.system, { timeoutMs: 400 }), /timed out after 400 ms/);
      assert.ok(Date.now() - started < 2000, 'deadline honoured');
    } finally {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  }
});

test('the cache server serves only cache files, never paths outside its directory', async () => {
  await fs.writeFile(join(fixture.root, 'secret.txt'), 'secret');
  const status = (path: string): Promise<number> =>
    new Promise((resolve, reject) => {
      const request = httpRequest({ host: '127.0.0.1', port: fixture.server.port, path, method: 'GET' }, (response) => {
        response.resume();
        resolve(response.statusCode ?? 0);
      });
      request.on('error', reject);
      request.end();
    });
  assert.is(await status('/nix-cache-info'), 200);
  for (const path of [
    '/../secret.txt',
    '/nar/../../secret.txt',
    '/%2e%2e/secret.txt',
    '/nar/..%2f..%2fsecret.txt',
    '/secret.txt',
    '/',
  ]) {
    assert.is(await status(path), 404, path);
  }
  assert.ok(fixture.server.requests.includes('GET /../secret.txt'));
});

// --- the fixtures are real: Nix itself installs from the served cache -------------------------

test('nix-store installs the closure from the served cache with the trusted key only', async () => {
  const trustedRoot = join(fixture.root, 'device-trusted');
  const installed = await installFromCache({
    storeRoot: trustedRoot,
    storePath: fixture.system,
    substituterUrl: fixture.server.url,
    trustedPublicKeys: [fixture.trusted.publicKey],
  });
  assert.is(installed.code, 0, installed.stderr);
  const { payloads } = await rootNarinfo();
  const payload = await fs.readFile(join(trustedRoot, 'nix/store', payloads[0]!), 'utf8');
  assert.is(payload, 'x'.repeat(4096));

  // The installed switch-to-configuration reports its action and its own (logical) store path.
  const log = join(fixture.root, 'activation.log');
  const switched = await runCommand(join(trustedRoot, fixture.system, 'bin/switch-to-configuration'), ['switch'], {
    env: { OUTPOST_TEST_ACTIVATION_LOG: log },
  });
  assert.is(switched.code, 0, switched.stderr);
  assert.is(await fs.readFile(log, 'utf8'), `switch ${fixture.system}\n`);

  const untrustedRoot = join(fixture.root, 'device-untrusted');
  const refused = await installFromCache({
    storeRoot: untrustedRoot,
    storePath: fixture.system,
    substituterUrl: fixture.server.url,
    trustedPublicKeys: [fixture.untrusted.publicKey],
  });
  assert.is.not(refused.code, 0);
  assert.match(refused.stderr, /is not signed by any of the keys in 'trusted-public-keys'/);
  await rejects(() => fs.stat(join(untrustedRoot, fixture.system)), /ENOENT/);
});

test('nix-store refuses the same tampered narinfo that verifyNarinfo refuses', async () => {
  const { text, info } = await rootNarinfo();
  const tamperedDir = join(fixture.root, 'tampered');
  await fs.cp(fixture.cacheDir, tamperedDir, { recursive: true });
  const tampered = replaceLine(text, 'References', [`References: ${info.references.slice(1).join(' ')}`]);
  await fs.writeFile(join(tamperedDir, `${fixture.system.slice(11, 43)}.narinfo`), tampered);
  assert.is(verifyNarinfo(parseNarinfo(tampered, 'test'), [fixture.trusted.publicKey]).ok, false);
  const server = await serveBinaryCache(tamperedDir);
  try {
    const refused = await installFromCache({
      storeRoot: join(fixture.root, 'device-tampered'),
      storePath: fixture.system,
      substituterUrl: server.url,
      trustedPublicKeys: [fixture.trusted.publicKey],
    });
    assert.is.not(refused.code, 0);
    assert.match(refused.stderr, /is not signed by any of the keys/);
  } finally {
    await server.close();
  }
});

test.run();
