import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as Y from 'yjs';
import {
  BUNDLE_FORMAT_VERSION,
  type BundleManifest,
  bundleFileSize,
  bundleManifestSchema,
  OLD_BUNDLE_MAGIC,
} from '../../../../shared/bundle/format.js';
import {
  type EntrySource,
  openBundleFile,
  readBundleEntries,
  writeBundleFile,
} from '../../../../shared/node/bundle-file.js';
import { removeDirectory, temporaryDirectory } from '../../../harness/processes.js';

// The bundle file (shared/bundle/format.ts, shared/node/bundle-file.ts, a tar file): round trip
// with a streamed entry; GNU tar lists it manifest first and extracts Nix's binary-cache layout;
// every flipped byte and every truncation of a small bundle is refused before the reader says ok;
// a stream that does not match its declared hash leaves no file behind; an old-format bundle is
// named as such.
const dir = temporaryDirectory('bundle-file');
const sha = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

function contents(): { manifest: BundleManifest; sources: EntrySource[]; bytes: Uint8Array[] } {
  const desired = new Y.Doc();
  desired.getMap('intents').set('h1', 'generation 2');
  const update = Y.encodeStateAsUpdate(desired);
  const nar = new Uint8Array(3 * 1024 * 1024 + 17).map((_, i) => i % 251);
  const narinfo = new TextEncoder().encode('StorePath: /nix/store/x\n');
  const manifest = bundleManifestSchema.parse({
    format: 'outpost-bundle',
    version: BUNDLE_FORMAT_VERSION,
    direction: 'to-site',
    createdAt: '2026-12-02T12:00:00.000Z',
    creator: { name: 'alice', publicKey: 'AAAA' },
    source: 'ws://127.0.0.1:1',
    hosts: ['h1'],
    entries: [
      { type: 'document', name: 'hosts/h1/desired', sha256: sha(update), bytes: update.length, full: true },
      { type: 'document', name: 'fleet/timestamp', sha256: sha(new Uint8Array(0)), bytes: 0, full: true },
      { type: 'cache', path: `nar/${'a'.repeat(52)}.nar`, sha256: sha(nar), bytes: nar.length },
      { type: 'cache', path: `${'b'.repeat(32)}.narinfo`, sha256: sha(narinfo), bytes: narinfo.length },
    ],
  });
  async function* chunks(): AsyncIterable<Uint8Array> {
    for (let at = 0; at < nar.length; at += 100_000) yield nar.subarray(at, at + 100_000);
  }
  return {
    manifest,
    sources: [{ bytes: update }, { bytes: new Uint8Array(0) }, { stream: async () => chunks() }, { bytes: narinfo }],
    bytes: [update, new Uint8Array(0), nar, narinfo],
  };
}

async function readAll(path: string): Promise<{ ok: boolean; reason?: string; entries?: Uint8Array[] }> {
  const opened = await openBundleFile(path);
  if (!opened.ok) return { ok: false, reason: opened.reason };
  const entries: Uint8Array[] = [];
  const checked = await readBundleEntries(opened, () => {
    const parts: Uint8Array[] = [];
    return { write: (c) => void parts.push(Buffer.from(c)), end: () => void entries.push(Buffer.concat(parts)) };
  });
  return checked.ok ? { ok: true, entries } : { ok: false, reason: checked.reason };
}

test.after(() => removeDirectory(dir));

test('a bundle round-trips, with a NAR streamed in chunks, at the size its manifest gives', async () => {
  const { manifest, sources, bytes } = contents();
  const path = join(dir, 'a.outpost-bundle');
  const written = await writeBundleFile(path, manifest, sources);
  assert.is(written, bundleFileSize(manifest));
  assert.is((await fs.stat(path)).size, written);
  const read = await readAll(path);
  assert.ok(read.ok, read.reason);
  assert.equal(
    read.entries!.map((e) => sha(e)),
    bytes.map((b) => sha(b)),
  );
});

test('GNU tar lists the manifest first and extracts the documents and the binary-cache layout', async () => {
  const { manifest, sources, bytes } = contents();
  const path = join(dir, 'listed.outpost-bundle');
  await writeBundleFile(path, manifest, sources);
  const listed = execFileSync('tar', ['tf', path], { encoding: 'utf8' }).trim().split('\n');
  assert.equal(listed, [
    'outpost-bundle.json',
    'documents/hosts/h1/desired.update',
    'documents/fleet/timestamp.update',
    `nar/${'a'.repeat(52)}.nar`,
    `${'b'.repeat(32)}.narinfo`,
    'outpost-bundle.sha256',
  ]);
  const out = join(dir, 'extracted');
  await fs.mkdir(out);
  execFileSync('tar', ['xf', path, '-C', out]);
  assert.is(sha(await fs.readFile(join(out, `nar/${'a'.repeat(52)}.nar`))), sha(bytes[2]!));
  assert.is(sha(await fs.readFile(join(out, 'documents/hosts/h1/desired.update'))), sha(bytes[0]!));
  const digest = (await fs.readFile(join(out, 'outpost-bundle.sha256'), 'utf8')).trim();
  const whole = await fs.readFile(path);
  assert.is(digest, sha(whole.subarray(0, whole.length - 2048)), 'the digest covers every byte before its entry');
});

test('a bundle of the old format (before tar) is named as such', async () => {
  const path = join(dir, 'old.outpost-bundle');
  await fs.writeFile(path, Buffer.concat([Buffer.from(OLD_BUNDLE_MAGIC), Buffer.alloc(600)]));
  const read = await readAll(path);
  assert.not.ok(read.ok);
  assert.match(read.reason ?? '', 'old format (version 2, before bundles were tar files)');
  assert.match(read.reason ?? '', 'make it again');
});

test('a stream that differs from its declared SHA-256 fails the write and leaves no file', async () => {
  const { manifest, sources } = contents();
  const bad = [...sources];
  bad[2] = {
    stream: async () =>
      (async function* () {
        yield new Uint8Array(3 * 1024 * 1024 + 17);
      })(),
  };
  const path = join(dir, 'bad.outpost-bundle');
  await writeBundleFile(path, manifest, bad).then(
    () => assert.unreachable('written'),
    (error: Error) => assert.match(error.message, 'SHA-256'),
  );
  assert.equal(
    (await fs.readdir(dir)).filter((n) => n.startsWith('bad')),
    [],
  );
});

test('every flipped byte and every truncation of a small bundle is refused', async () => {
  const { manifest, sources } = contents();
  const small = bundleManifestSchema.parse({
    ...manifest,
    entries: manifest.entries.filter((e) => e.type !== 'cache' || e.bytes < 100),
  });
  const path = join(dir, 'small.outpost-bundle');
  await writeBundleFile(path, small, [sources[0]!, sources[1]!, sources[3]!]);
  const bytes = await fs.readFile(path);
  const probe = join(dir, 'probe.outpost-bundle');
  for (let i = 0; i < bytes.length; i += 1) {
    const flipped = Buffer.from(bytes);
    flipped[i]! ^= 0x80;
    await fs.writeFile(probe, flipped);
    assert.not.ok((await readAll(probe)).ok, `byte ${i} flipped was accepted`);
  }
  for (const length of [0, 10, 20, 512, 1024, bytes.length - 2048, bytes.length - 1024, bytes.length - 1]) {
    await fs.writeFile(probe, bytes.subarray(0, length));
    const read = await readAll(probe);
    assert.not.ok(read.ok, `cut to ${length} bytes was accepted`);
  }
  await fs.writeFile(probe, bytes.subarray(0, bytes.length - 1));
  assert.match((await readAll(probe)).reason ?? '', 'incomplete');
  await fs.writeFile(probe, Buffer.concat([bytes, Buffer.alloc(512)]));
  assert.match((await readAll(probe)).reason ?? '', 'bytes were added');
});

test.run();
