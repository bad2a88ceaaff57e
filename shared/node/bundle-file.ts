import { createHash, type Hash } from 'node:crypto';
import { createReadStream, promises as fs } from 'node:fs';
import { dirname } from 'node:path';
import {
  BUNDLE_HASH_BYTES,
  BUNDLE_MAGIC,
  type BundleEntryInfo,
  type BundleManifest,
  bundleFileSize,
  encodeBundleHeader,
  entryLabel,
  MAX_MANIFEST_BYTES,
  parseManifest,
} from '../bundle/format.js';

// Reading and writing bundle files (format: shared/bundle/format.ts) as streams: at most one
// chunk of a NAR is in memory at a time, whatever the bundle's size.

const CHUNK_BYTES = 1024 * 1024;

// Where an entry's bytes come from when the bundle is written: in memory (documents, narinfos)
// or a stream (a NAR from the cache), whose length and SHA-256 must match the manifest.
export type EntrySource = { bytes: Uint8Array } | { stream: () => Promise<AsyncIterable<Uint8Array>> };

function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
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
  const partial = `${out}.partial`;
  await fs.mkdir(dirname(out), { recursive: true });
  const handle = await fs.open(partial, 'w');
  const whole = createHash('sha256');
  let written = 0;
  const write = async (bytes: Uint8Array): Promise<void> => {
    whole.update(bytes);
    await handle.write(bytes);
    written += bytes.length;
  };
  try {
    await write(encodeBundleHeader(manifest));
    for (const [index, entry] of manifest.entries.entries()) {
      onEntry?.(entry, index);
      const source = sources[index]!;
      if ('bytes' in source) {
        if (source.bytes.length !== entry.bytes || sha256(source.bytes) !== entry.sha256)
          throw new Error(`internal: ${entryLabel(entry)} does not match its manifest entry`);
        await write(source.bytes);
        continue;
      }
      const hash = createHash('sha256');
      let size = 0;
      for await (const chunk of await source.stream()) {
        size += chunk.length;
        if (size > entry.bytes)
          throw new Error(`${entryLabel(entry)} grew past the ${entry.bytes} bytes its narinfo declares`);
        hash.update(chunk);
        await write(chunk);
      }
      if (size !== entry.bytes) throw new Error(`${entryLabel(entry)}: got ${size} of ${entry.bytes} bytes`);
      const actual = hash.digest('hex');
      if (actual !== entry.sha256)
        throw new Error(
          `${entryLabel(entry)} has SHA-256 ${actual}, not the ${entry.sha256} its narinfo declares: the cache is damaged or hostile`,
        );
    }
    const digest = whole.digest();
    await handle.write(digest);
    written += digest.length;
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
  // Offset of the first entry's bytes.
  dataOffset: number;
}

export type BundleCheck = { ok: true } | { ok: false; reason: string };

// Reads and checks the header: the magic, the manifest's bound and schema, and that the file is
// exactly as long as its manifest says (a partly copied file is named as such here).
export async function openBundleFile(
  path: string,
): Promise<({ ok: true } & OpenedBundle) | { ok: false; reason: string }> {
  const handle = await fs.open(path, 'r');
  try {
    const fileBytes = (await handle.stat()).size;
    const head = Buffer.alloc(BUNDLE_MAGIC.length + 4);
    const { bytesRead } = await handle.read(head, 0, head.length, 0);
    if (bytesRead < head.length || !head.subarray(0, BUNDLE_MAGIC.length).equals(BUNDLE_MAGIC))
      return {
        ok: false,
        reason: `${path} is not an outpost bundle (it does not start with OUTPOST-BUNDLE); is this the right file?`,
      };
    const manifestLength = head.readUInt32BE(BUNDLE_MAGIC.length);
    if (manifestLength > MAX_MANIFEST_BYTES || head.length + manifestLength > fileBytes)
      return {
        ok: false,
        reason: `the manifest length (${manifestLength} bytes) is over ${MAX_MANIFEST_BYTES} or past the end of the ${fileBytes}-byte file: the file is damaged or was cut short while copying; copy it again from the original`,
      };
    const manifestBytes = Buffer.alloc(manifestLength);
    await handle.read(manifestBytes, 0, manifestLength, head.length);
    const parsed = parseManifest(manifestBytes);
    if (!parsed.ok) return parsed;
    const expected = bundleFileSize(parsed.manifest);
    if (fileBytes !== expected)
      return {
        ok: false,
        reason:
          fileBytes < expected
            ? `the file is ${fileBytes} bytes but its manifest describes ${expected}: it is incomplete (a copy cut short?); copy it again from the original`
            : `the file is ${fileBytes} bytes but its manifest describes ${expected}: bytes were added; copy it again from the original`,
      };
    return { ok: true, path, manifest: parsed.manifest, fileBytes, dataOffset: head.length + manifestLength };
  } finally {
    await handle.close();
  }
}

// What receives one entry's bytes while it is checked: a document collects them, a cache file
// writes them to a staging file, an entry the target already holds drops them.
export interface EntryConsumer {
  write(chunk: Uint8Array): Promise<void> | void;
  // Called once after the entry's last byte (and when reading stops inside it), before its hash
  // is judged: close what was opened.
  end?(): Promise<void> | void;
}

// Pulls exact byte counts out of a stream of chunks, counting them against a bound.
class ChunkReader {
  private readonly iterator: AsyncIterator<Uint8Array>;
  private pending: Buffer = Buffer.alloc(0);
  position = 0;
  constructor(
    source: AsyncIterable<Uint8Array>,
    private readonly maxBytes: number,
  ) {
    this.iterator = source[Symbol.asyncIterator]();
  }
  private async more(): Promise<boolean> {
    const next = await this.iterator.next();
    if (next.done) return false;
    this.pending = this.pending.length ? Buffer.concat([this.pending, next.value]) : Buffer.from(next.value);
    if (this.position + this.pending.length > this.maxBytes)
      throw new BundleSizeError(`it is over the ${this.maxBytes}-byte limit`);
    return true;
  }
  async read(length: number): Promise<Buffer> {
    while (this.pending.length < length)
      if (!(await this.more()))
        throw new Error(`the bundle ended early at byte ${this.position + this.pending.length}`);
    const out = this.pending.subarray(0, length);
    this.pending = this.pending.subarray(length);
    this.position += length;
    return out;
  }
  // Up to `length` bytes, at least one (the entries' chunks).
  async readSome(length: number): Promise<Buffer> {
    if (this.pending.length === 0 && !(await this.more()))
      throw new Error(`the bundle ended early at byte ${this.position}`);
    return this.read(Math.min(length, this.pending.length));
  }
  async atEnd(): Promise<boolean> {
    return this.pending.length === 0 && !(await this.more());
  }
}

export class BundleSizeError extends Error {}

export interface StreamReadOptions {
  // Bytes the stream may hold at most (a request body); the file's own length otherwise.
  maxBytes: number;
  // Judges the manifest before any entry is read (a return bundle's signer, say): a reason refuses.
  onManifest?: (manifest: BundleManifest) => string | null;
}

export type StreamRead = { ok: true; manifest: BundleManifest } | { ok: false; reason: string; tooLarge?: boolean };

// Reads a whole bundle from a stream (a file, a request body): the header, then every entry in
// order to the consumer `visit` gives it, checking each entry's SHA-256, the closing SHA-256 over
// everything, and that nothing follows. The caller keeps what it consumed aside until this returns
// ok: on any mismatch it must throw it all away (nothing is applied).
export async function readBundleStream(
  source: AsyncIterable<Uint8Array>,
  options: StreamReadOptions,
  visit: (entry: BundleEntryInfo, index: number) => Promise<EntryConsumer> | EntryConsumer,
): Promise<StreamRead> {
  const input = new ChunkReader(source, options.maxBytes);
  const whole: Hash = createHash('sha256');
  try {
    const head = await input.read(BUNDLE_MAGIC.length + 4);
    if (!head.subarray(0, BUNDLE_MAGIC.length).equals(BUNDLE_MAGIC))
      return { ok: false, reason: 'it is not an outpost bundle (it does not start with OUTPOST-BUNDLE)' };
    const manifestLength = head.readUInt32BE(BUNDLE_MAGIC.length);
    if (manifestLength > MAX_MANIFEST_BYTES)
      return { ok: false, reason: `its manifest length (${manifestLength} bytes) is over ${MAX_MANIFEST_BYTES}` };
    const manifestBytes = await input.read(manifestLength);
    whole.update(head).update(manifestBytes);
    const parsed = parseManifest(manifestBytes);
    if (!parsed.ok) return parsed;
    const { manifest } = parsed;
    const expected = bundleFileSize(manifest);
    if (expected > options.maxBytes)
      return {
        ok: false,
        reason: `its manifest describes ${expected} bytes, over the ${options.maxBytes}-byte limit`,
        tooLarge: true,
      };
    const refusal = options.onManifest?.(manifest) ?? null;
    if (refusal !== null) return { ok: false, reason: refusal };
    for (const [index, entry] of manifest.entries.entries()) {
      const consumer = await visit(entry, index);
      const hash = createHash('sha256');
      try {
        for (let remaining = entry.bytes; remaining > 0; ) {
          const chunk = await input.readSome(Math.min(CHUNK_BYTES, remaining));
          remaining -= chunk.length;
          hash.update(chunk);
          whole.update(chunk);
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
    const closing = await input.read(BUNDLE_HASH_BYTES);
    if (!whole.digest().equals(closing))
      return {
        ok: false,
        reason:
          "the file's closing SHA-256 does not match its contents although every entry's does: it is damaged or was edited; copy the bundle again from the original",
      };
    if (!(await input.atEnd()))
      return { ok: false, reason: 'bytes follow the closing SHA-256: copy it again from the original' };
    return { ok: true, manifest };
  } catch (error) {
    if (error instanceof BundleSizeError) return { ok: false, reason: error.message, tooLarge: true };
    return { ok: false, reason: `reading the bundle failed: ${(error as Error).message}; copy it again` };
  }
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
  return read.ok
    ? { ok: true }
    : { ok: false, reason: read.reason.replace(/^reading the bundle/, `reading ${bundle.path}`) };
}
