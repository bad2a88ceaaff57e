import { createHash, type Hash } from 'node:crypto';
import { promises as fs } from 'node:fs';
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

// Streams every entry, in order, to the consumer `visit` gives it, checking each entry's SHA-256
// and finally the closing SHA-256 over the file. The caller keeps what it consumed aside until
// this returns ok: on any mismatch it must throw it all away (nothing is applied).
export async function readBundleEntries(
  bundle: OpenedBundle,
  visit: (entry: BundleEntryInfo, index: number) => Promise<EntryConsumer> | EntryConsumer,
): Promise<BundleCheck> {
  const handle = await fs.open(bundle.path, 'r');
  const whole: Hash = createHash('sha256');
  try {
    let position = 0;
    const read = async (length: number): Promise<Buffer> => {
      const buffer = Buffer.allocUnsafe(length);
      let filled = 0;
      while (filled < length) {
        const { bytesRead } = await handle.read(buffer, filled, length - filled, position + filled);
        if (bytesRead === 0) throw new Error(`the file ended early at byte ${position + filled}`);
        filled += bytesRead;
      }
      position += length;
      return buffer;
    };
    whole.update(await read(bundle.dataOffset));
    for (const [index, entry] of bundle.manifest.entries.entries()) {
      const consumer = await visit(entry, index);
      const hash = createHash('sha256');
      try {
        for (let remaining = entry.bytes; remaining > 0; ) {
          const chunk = await read(Math.min(CHUNK_BYTES, remaining));
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
    const closing = await read(BUNDLE_HASH_BYTES);
    if (!whole.digest().equals(closing))
      return {
        ok: false,
        reason:
          "the file's closing SHA-256 does not match its contents although every entry's does: it is damaged or was edited; copy the bundle again from the original",
      };
    return { ok: true };
  } catch (error) {
    return { ok: false, reason: `reading ${bundle.path} failed: ${(error as Error).message}; copy it again` };
  } finally {
    await handle.close();
  }
}
