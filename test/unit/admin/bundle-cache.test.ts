import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import nacl from 'tweetnacl';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { checkCacheFiles, narFileDigest } from '../../../admin/bundle-cache.js';
import type { BundleCacheFile } from '../../../shared/bundle/format.js';
import { toBase64 } from '../../../shared/crypto/encoding.js';
import { encodeNixBase32 } from '../../../shared/nix/base32.js';
import { narinfoFingerprint, parseNarinfo } from '../../../shared/nix/narinfo.js';
import { removeDirectory, temporaryDirectory } from '../../harness/processes.js';

// The cache part of `bundle apply` (admin/bundle-cache.ts) with a stand-in cache key: the cases
// the integration test does not reach (compressed NARs, a NAR no narinfo names, a NAR left out
// because the site holds it, one neither holds).
const dir = temporaryDirectory('bundle-cache');
const keys = nacl.sign.keyPair();
const trusted = [`unit-cache-1:${toBase64(keys.publicKey)}`];
const sha = (bytes: Uint8Array): Buffer => createHash('sha256').update(bytes).digest();
const hash32 = 'a'.repeat(32);

function narinfo(nar: Uint8Array, compression: 'none' | 'xz'): { text: Uint8Array; url: string } {
  const narHash = `sha256:${encodeNixBase32(sha(nar))}`;
  const url = `nar/${encodeNixBase32(sha(nar))}.nar${compression === 'xz' ? '.xz' : ''}`;
  const fields = { storePath: `/nix/store/${hash32}-unit`, narHash, narSize: nar.length, references: [] };
  const sig = toBase64(nacl.sign.detached(new TextEncoder().encode(narinfoFingerprint(fields)), keys.secretKey));
  const lines = [
    `StorePath: ${fields.storePath}`,
    `URL: ${url}`,
    `Compression: ${compression}`,
    ...(compression === 'xz' ? [`FileHash: ${narHash}`, `FileSize: ${nar.length}`] : []),
    `NarHash: ${narHash}`,
    `NarSize: ${nar.length}`,
    'References: ',
    `Sig: unit-cache-1:${sig}`,
  ];
  return { text: new TextEncoder().encode(`${lines.join('\n')}\n`), url };
}

const entry = (path: string, bytes: Uint8Array): BundleCacheFile => ({
  type: 'cache',
  path,
  sha256: sha(bytes).toString('hex'),
  bytes: bytes.length,
});

test.after(() => removeDirectory(dir));

test('a compressed NAR is checked against the narinfo FileHash and FileSize', async () => {
  // Stands for the compressed file: only its hash and size matter here.
  const file = new Uint8Array(1000).fill(7);
  const info = narinfo(file, 'xz');
  const digest = narFileDigest(parseNarinfo(new TextDecoder().decode(info.text), 'unit'));
  assert.equal(digest, { sha256: sha(file).toString('hex'), bytes: 1000 });
  const files = [entry(info.url, file), entry(`${hash32}.narinfo`, info.text)];
  const texts = new Map([[`${hash32}.narinfo`, info.text]]);
  assert.equal(await checkCacheFiles(files, texts, trusted, dir), { ok: true, paths: [`/nix/store/${hash32}-unit`] });
  const other = new Uint8Array(1000).fill(8);
  const swapped = [entry(info.url, other), files[1]!];
  const verdict = await checkCacheFiles(swapped, texts, trusted, dir);
  assert.not.ok(verdict.ok);
  if (!verdict.ok) assert.match(verdict.reason, 'the NAR was altered');
});

test('a NAR no narinfo names is refused; a NAR left out is fine only where the target has it', async () => {
  const nar = new Uint8Array(500).fill(1);
  const info = narinfo(nar, 'none');
  const texts = new Map([[`${hash32}.narinfo`, info.text]]);
  const stray = entry(`nar/${'0'.repeat(52)}.nar`, nar);
  const extra = await checkCacheFiles(
    [entry(info.url, nar), stray, entry(`${hash32}.narinfo`, info.text)],
    texts,
    trusted,
    dir,
  );
  assert.not.ok(extra.ok);
  if (!extra.ok) assert.match(extra.reason, 'which no narinfo in it names');
  const leftOut = [entry(`${hash32}.narinfo`, info.text)];
  const missing = await checkCacheFiles(leftOut, texts, trusted, dir);
  assert.not.ok(missing.ok);
  if (!missing.ok) assert.match(missing.reason, 'which neither the bundle nor');
  await fs.mkdir(join(dir, 'nar'), { recursive: true });
  await fs.writeFile(join(dir, info.url), nar);
  assert.ok((await checkCacheFiles(leftOut, texts, trusted, dir)).ok);
  const otherKey = [`unit-cache-1:${toBase64(nacl.sign.keyPair().publicKey)}`];
  const unsigned = await checkCacheFiles(leftOut, texts, otherKey, dir);
  assert.not.ok(unsigned.ok);
  if (!unsigned.ok) assert.match(unsigned.reason, 'does not verify');
});

test.run();
