import { createHash, type Hash } from 'node:crypto';
import { createReadStream, promises as fs } from 'node:fs';
import { dirname } from 'node:path';
import * as tar from 'tar-stream';
import {
  type BundleEntryInfo,
  type BundleManifest,
  bundleFileSize,
  CLOSING_BYTES,
  DIGEST_ENTRY,
  DIGEST_ENTRY_BYTES,
  encodeManifest,
  entryLabel,
  entryTarName,
  isOldFormat,
  MANIFEST_ENTRY,
  MAX_MANIFEST_BYTES,
  OLD_BUNDLE_MAGIC,
  OLD_FORMAT_REASON,
  parseManifest,
  TAR_BLOCK,
} from '../bundle/format.js';

// Reading and writing bundle files (format: shared/bundle/format.ts, a tar file) as streams
// through tar-stream: at most one chunk of a NAR is in memory at a time, whatever the bundle's
// size. Every entry is written with the same plain header (regular file, mode 0644, owner 0, the
// manifest's createdAt as mtime), so the layout is exactly what bundleFileSize computes.

const CHUNK_BYTES = 1024 * 1024;

type TarHeader = Parameters<tar.Pack['entry']>[0];
type TarEntry = tar.Extract extends AsyncIterable<infer E> ? E : never;

// Where an entry's bytes come from when the bundle is written: in memory (documents, narinfos)
// or a stream (a NAR from the cache), whose length and SHA-256 must match the manifest.
export type EntrySource = { bytes: Uint8Array } | { stream: () => Promise<AsyncIterable<Uint8Array>> };

function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

// Waits until a stream (tar-stream's are streamx streams) drains or goes away.
interface Emitter {
  once(event: string, listener: () => void): unknown;
  off(event: string, listener: () => void): unknown;
}
function drained(stream: Emitter): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      stream.off('drain', done);
      stream.off('close', done);
      resolve();
    };
    stream.once('drain', done);
    stream.once('close', done);
  });
}

// Writes one entry's bytes into the pack, with backpressure, checking length and SHA-256 of a
// streamed source against its manifest entry as they pass.
async function packEntry(
  pack: tar.Pack,
  header: TarHeader,
  entry: BundleEntryInfo | null,
  source: EntrySource,
): Promise<void> {
  let failed: Error | null = null;
  const done = new Promise<void>((resolve, reject) => {
    const sink = pack.entry(header, (error) => (error ? reject(error) : resolve()));
    // A failed entry is reported through `reject`; the sink's own error event has nothing to add.
    sink.on('error', () => undefined);
    const write = async (): Promise<void> => {
      if ('bytes' in source) {
        if (!sink.write(Buffer.from(source.bytes))) await drained(sink);
        sink.end(undefined);
        return;
      }
      const hash = createHash('sha256');
      let size = 0;
      for await (const chunk of await source.stream()) {
        size += chunk.length;
        if (entry && size > entry.bytes)
          throw new Error(`${entryLabel(entry)} grew past the ${entry.bytes} bytes its narinfo declares`);
        hash.update(chunk);
        if (!sink.write(Buffer.from(chunk))) await drained(sink);
      }
      if (entry && size !== entry.bytes) throw new Error(`${entryLabel(entry)}: got ${size} of ${entry.bytes} bytes`);
      const actual = hash.digest('hex');
      if (entry && actual !== entry.sha256)
        throw new Error(
          `${entryLabel(entry)} has SHA-256 ${actual}, not the ${entry.sha256} its narinfo declares: the cache is damaged or hostile`,
        );
      sink.end(undefined);
    };
    write().catch((error: Error) => {
      failed = error;
      sink.destroy(error);
      reject(error);
    });
  });
  await done.catch((error: Error) => {
    throw failed ?? error;
  });
}

// Every entry's header: a regular file, mode 0644, owner 0, the manifest's time.
function entryHeader(name: string, size: number, mtime: Date): TarHeader {
  return { name, size, mtime, mode: 0o644, type: 'file' };
}

// The last CLOSING_BYTES of a bundle: the digest entry and the end of the archive.
async function closingBytes(mtime: Date, digest: Uint8Array): Promise<Buffer> {
  const pack = tar.pack();
  const parts: Buffer[] = [];
  const collect = (async () => {
    for await (const chunk of pack as AsyncIterable<Buffer>) parts.push(chunk);
  })();
  await packEntry(pack, entryHeader(DIGEST_ENTRY, DIGEST_ENTRY_BYTES, mtime), null, { bytes: digest });
  pack.finalize();
  await collect;
  return Buffer.concat(parts);
}

// Writes `out` through `out.partial`, renamed into place only once every byte is written and
// synced: a stopped or failed write never leaves a file that looks like a bundle.
export async function writeBundleFile(
  out: string,
  manifest: BundleManifest,
  sources: readonly EntrySource[],
  onEntry?: (entry: BundleEntryInfo, index: number) => void,
): Promise<number> {
  if (sources.length !== manifest.entries.length) throw new Error('internal: bundle sources do not match the manifest');
  for (const [index, source] of sources.entries()) {
    const entry = manifest.entries[index]!;
    if ('bytes' in source && (source.bytes.length !== entry.bytes || sha256(source.bytes) !== entry.sha256))
      throw new Error(`internal: ${entryLabel(entry)} does not match its manifest entry`);
  }
  const expected = bundleFileSize(manifest);
  const covered = expected - CLOSING_BYTES;
  const partial = `${out}.partial`;
  await fs.mkdir(dirname(out), { recursive: true });
  const handle = await fs.open(partial, 'w');
  const pack = tar.pack();
  const mtime = new Date(manifest.createdAt);
  const header = (name: string, size: number): TarHeader => entryHeader(name, size, mtime);
  // The consumer: every byte the pack emits goes to the file; the first `covered` into the digest.
  const whole = createHash('sha256');
  let written = 0;
  let reachedCovered: () => void = () => undefined;
  const coveredDone = new Promise<void>((resolve) => (reachedCovered = resolve));
  const consume = (async () => {
    for await (const chunk of pack as AsyncIterable<Buffer>) {
      const hashed = Math.max(0, Math.min(chunk.length, covered - written));
      if (hashed > 0) whole.update(chunk.subarray(0, hashed));
      await handle.write(chunk);
      written += chunk.length;
      if (written >= covered) reachedCovered();
    }
  })();
  const produce = async (): Promise<void> => {
    await packEntry(pack, header(MANIFEST_ENTRY, encodeManifest(manifest).length), null, {
      bytes: encodeManifest(manifest),
    });
    for (const [index, entry] of manifest.entries.entries()) {
      onEntry?.(entry, index);
      await packEntry(pack, header(entryTarName(entry), entry.bytes), entry, sources[index]!);
    }
    await coveredDone;
    if (written !== covered) throw new Error(`internal: wrote ${written} bytes before the digest, expected ${covered}`);
    const digest = new TextEncoder().encode(`${whole.digest('hex')}\n`);
    await packEntry(pack, header(DIGEST_ENTRY, DIGEST_ENTRY_BYTES), null, { bytes: digest });
    pack.finalize();
  };
  try {
    await Promise.all([
      produce().catch((error: Error) => {
        pack.destroy(error);
        throw error;
      }),
      consume,
    ]);
    if (written !== expected) throw new Error(`internal: wrote ${written} bytes, the manifest describes ${expected}`);
    await handle.sync();
  } catch (error) {
    await handle.close();
    await fs.rm(partial, { force: true });
    throw error;
  }
  await handle.close();
  await fs.rename(partial, out);
  return written;
}

export interface OpenedBundle {
  path: string;
  manifest: BundleManifest;
  fileBytes: number;
}

export type BundleCheck = { ok: true } | { ok: false; reason: string };

// What receives one entry's bytes while it is checked: a document collects them, a cache file
// writes them to a staging file, an entry the target already holds drops them.
export interface EntryConsumer {
  write(chunk: Uint8Array): Promise<void> | void;
  // Called once after the entry's last byte (and when reading stops inside it), before its hash
  // is judged: close what was opened.
  end?(): Promise<void> | void;
}

export class BundleSizeError extends Error {}

// Counts the raw bytes of a bundle as they are read (against a bound), recognises the old
// format from its first bytes, and hashes all but the last CLOSING_BYTES, which it keeps: the
// closing digest entry and the end blocks, checked byte for byte once the stream has ended.
class RawTap {
  readonly whole: Hash = createHash('sha256');
  total = 0;
  private tail: Buffer = Buffer.alloc(0);
  private first: Buffer | null = Buffer.alloc(0);
  constructor(private readonly maxBytes: number) {}
  add(chunk: Uint8Array): void {
    this.total += chunk.length;
    if (this.total > this.maxBytes) throw new BundleSizeError(`it is over the ${this.maxBytes}-byte limit`);
    if (this.first !== null) {
      this.first = Buffer.concat([this.first, chunk]).subarray(0, OLD_BUNDLE_MAGIC.length);
      if (isOldFormat(this.first)) throw new Error(OLD_FORMAT_REASON);
      if (this.first.length >= OLD_BUNDLE_MAGIC.length) this.first = null;
    }
    const bytes = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    if (bytes.length >= CLOSING_BYTES) {
      this.whole.update(this.tail);
      this.whole.update(bytes.subarray(0, bytes.length - CLOSING_BYTES));
      this.tail = Buffer.from(bytes.subarray(bytes.length - CLOSING_BYTES));
    } else {
      const joined = Buffer.concat([this.tail, bytes]);
      const excess = Math.max(0, joined.length - CLOSING_BYTES);
      this.whole.update(joined.subarray(0, excess));
      this.tail = joined.subarray(excess);
    }
  }
  // Once the stream has ended: the length, the digest, and the zeros after it.
  async finish(expected: number, mtime: Date): Promise<string | null> {
    if (this.total !== expected)
      return this.total < expected
        ? `it is ${this.total} bytes but its manifest describes ${expected}: it is incomplete (a copy cut short?); copy it again from the original`
        : `it is ${this.total} bytes but its manifest describes ${expected}: bytes were added; copy it again from the original`;
    const digestAt = TAR_BLOCK;
    const digest = this.tail.subarray(digestAt, digestAt + DIGEST_ENTRY_BYTES).toString('latin1');
    if (digest !== `${this.whole.digest('hex')}\n`)
      return "the file's closing SHA-256 does not match its contents although every entry's does: it is damaged or was edited; copy the bundle again from the original";
    // The rest is fixed by the digest and the manifest's time: the closing entry's header, its
    // padding and the end blocks, compared byte for byte with what the writer makes.
    const exact = await closingBytes(mtime, this.tail.subarray(digestAt, digestAt + DIGEST_ENTRY_BYTES));
    if (!exact.equals(this.tail))
      return "the closing entry's header or the end of the tar file differs from what bundle create writes: it is damaged; copy it again from the original";
    return null;
  }
}

export interface StreamReadOptions {
  // Bytes the stream may hold at most (a request body); the file's own length otherwise.
  maxBytes: number;
  // Stop once the manifest is read and judged (openBundleFile): entries are not read.
  manifestOnly?: boolean;
  // Judges the manifest before any entry is read (a return bundle's signer, say): a reason refuses.
  onManifest?: (manifest: BundleManifest) => string | null;
}

export type StreamRead = { ok: true; manifest: BundleManifest } | { ok: false; reason: string; tooLarge?: boolean };

class BundleRefusal extends Error {}

// Reads a whole bundle from a stream (a file, a request body): the manifest first, then every
// entry in order to the consumer `visit` gives it, checking each entry's tar name, size and
// SHA-256, then the closing digest over everything before it, the end of the archive, and the
// exact length. The caller keeps what it consumed aside until this returns ok: on any mismatch it
// must throw it all away (nothing is applied).
export async function readBundleStream(
  source: AsyncIterable<Uint8Array>,
  options: StreamReadOptions,
  visit: (entry: BundleEntryInfo, index: number) => Promise<EntryConsumer> | EntryConsumer,
): Promise<StreamRead> {
  const tap = new RawTap(options.maxBytes);
  const extract = tar.extract();
  let stopped = false;
  let feedError: Error | null = null;
  const feeding = (async () => {
    try {
      for await (const chunk of source) {
        if (stopped) break;
        tap.add(chunk);
        if (!extract.write(Buffer.from(chunk))) await drained(extract);
      }
      if (!stopped) extract.end(undefined);
    } catch (error) {
      feedError = error as Error;
      extract.destroy(error as Error);
    }
  })();
  const entries = extract[Symbol.asyncIterator]();
  const next = async (what: string): Promise<TarEntry> => {
    const step = await entries.next();
    if (step.done) throw new BundleRefusal(`the bundle ended before ${what}: it is incomplete; copy it again`);
    return step.value;
  };
  const expectEntry = (got: TarEntry, name: string, bytes: number, what: string): void => {
    const { header } = got;
    if (header.name !== name || (header.type ?? 'file') !== 'file')
      throw new BundleRefusal(
        `the tar entry ${JSON.stringify(header.name)} stands where ${what} (${name}) belongs: the bundle was rearranged or damaged; copy it again from the original`,
      );
    if (header.size !== bytes)
      throw new BundleRefusal(
        `the tar entry ${name} is ${header.size} bytes but the manifest says ${bytes}: the bundle was edited or damaged; copy it again from the original`,
      );
  };
  try {
    const first = await next('its manifest');
    if (first.header.name !== MANIFEST_ENTRY)
      throw new BundleRefusal(
        `it is a tar file but not an outpost bundle (its first entry is ${JSON.stringify(first.header.name)}, not ${MANIFEST_ENTRY}); is this the right file?`,
      );
    if ((first.header.size ?? 0) > MAX_MANIFEST_BYTES)
      throw new BundleRefusal(`its manifest (${first.header.size} bytes) is over ${MAX_MANIFEST_BYTES} bytes`);
    const parts: Buffer[] = [];
    for await (const chunk of first as AsyncIterable<Buffer>) parts.push(chunk);
    const parsed = parseManifest(Buffer.concat(parts));
    if (!parsed.ok) return parsed;
    const { manifest } = parsed;
    const expected = bundleFileSize(manifest);
    if (expected > options.maxBytes)
      return {
        ok: false,
        reason: `its manifest describes ${expected} bytes, ${options.manifestOnly ? `but the file is ${options.maxBytes}: it is incomplete (a copy cut short?); copy it again from the original` : `over the ${options.maxBytes}-byte limit`}`,
        tooLarge: !options.manifestOnly,
      };
    const refusal = options.onManifest?.(manifest) ?? null;
    if (refusal !== null) return { ok: false, reason: refusal };
    if (options.manifestOnly) return { ok: true, manifest };
    for (const [index, entry] of manifest.entries.entries()) {
      const got = await next(entryLabel(entry));
      expectEntry(got, entryTarName(entry), entry.bytes, entryLabel(entry));
      const consumer = await visit(entry, index);
      const hash = createHash('sha256');
      try {
        for await (const chunk of got as AsyncIterable<Buffer>) {
          hash.update(chunk);
          await consumer.write(chunk);
        }
      } finally {
        await consumer.end?.();
      }
      const actual = hash.digest('hex');
      if (actual !== entry.sha256)
        return {
          ok: false,
          reason: `${entryLabel(entry)} has SHA-256 ${actual} but the manifest says ${entry.sha256}: the bundle was edited or damaged; copy it again from the original`,
        };
    }
    const closing = await next('its closing SHA-256');
    expectEntry(closing, DIGEST_ENTRY, DIGEST_ENTRY_BYTES, 'the closing SHA-256');
    for await (const _chunk of closing as AsyncIterable<Buffer>) {
      // Checked from the raw bytes (RawTap.finish), with the padding and end blocks after it.
    }
    const after = await entries.next();
    if (!after.done)
      throw new BundleRefusal(
        `the tar entry ${JSON.stringify(after.value.header.name)} follows the closing SHA-256: bytes were added; copy it again from the original`,
      );
    await feeding;
    if (feedError) throw feedError;
    const problem = await tap.finish(expected, new Date(manifest.createdAt));
    return problem ? { ok: false, reason: problem } : { ok: true, manifest };
  } catch (error) {
    const cause = feedError ?? (error as Error);
    if (cause instanceof BundleSizeError) return { ok: false, reason: cause.message, tooLarge: true };
    if (cause instanceof BundleRefusal || cause.message === OLD_FORMAT_REASON)
      return { ok: false, reason: cause.message };
    return {
      ok: false,
      reason: `reading the bundle failed: ${cause.message.replace(/\. Maybe the tar is corrupted or it needs to be gunzipped\?$/, '')}; it is damaged or cut short: copy it again from the original`,
    };
  } finally {
    stopped = true;
    extract.destroy();
    await feeding;
  }
}

// Opens a bundle file: reads and checks its manifest (the first entry) and that the file is
// exactly as long as the manifest says, so a partly copied file is named before anything else
// is read.
export async function openBundleFile(
  path: string,
): Promise<({ ok: true } & OpenedBundle) | { ok: false; reason: string }> {
  const fileBytes = (await fs.stat(path)).size;
  const read = await readBundleStream(
    createReadStream(path, { highWaterMark: 64 * 1024 }),
    { maxBytes: fileBytes, manifestOnly: true },
    () => ({ write: () => undefined }),
  );
  if (!read.ok) return { ok: false, reason: read.reason.replace(/^it is/, `${path} is`) };
  const expected = bundleFileSize(read.manifest);
  if (fileBytes !== expected)
    return {
      ok: false,
      reason:
        fileBytes < expected
          ? `the file is ${fileBytes} bytes but its manifest describes ${expected}: it is incomplete (a copy cut short?); copy it again from the original`
          : `the file is ${fileBytes} bytes but its manifest describes ${expected}: bytes were added; copy it again from the original`,
    };
  return { ok: true, path, manifest: read.manifest, fileBytes };
}

// Streams every entry of an opened file (readBundleStream), naming the file in a failure.
export async function readBundleEntries(
  bundle: OpenedBundle,
  visit: (entry: BundleEntryInfo, index: number) => Promise<EntryConsumer> | EntryConsumer,
): Promise<BundleCheck> {
  const read = await readBundleStream(
    createReadStream(bundle.path, { highWaterMark: CHUNK_BYTES }),
    { maxBytes: bundle.fileBytes },
    visit,
  );
  return read.ok ? { ok: true } : { ok: false, reason: read.reason };
}
