import { digest } from 'lib0/hash/sha256';
import { z } from 'zod';
import { bytesEqual, sha256Hex } from '../crypto/encoding.js';
import { isoTimeSchema } from '../schemas/primitives.js';

// A sneakernet bundle (issue 16, docs/sneakernet.md): the Yjs updates a site without a link is
// missing, in one file carried on a USB stick. Nothing in it is trusted: intents, policies and
// checkpoints inside the updates are signed and verified by their readers as always. The hashes
// catch what a stick does to a file (a partial copy, a flipped byte) and an edit made without
// also editing the manifest, and name the document that differs.
//
// Layout (all lengths big-endian u32):
//   magic "OUTPOST-BUNDLE\n" (15 bytes) | manifest length | manifest (UTF-8 JSON)
//   | for each manifest document, in order: update length | update bytes
//   | SHA-256 of every byte before it (32 bytes)
// The trailing hash makes a cut-short copy fail as "incomplete" before any document is read.

export const BUNDLE_MAGIC = new TextEncoder().encode('OUTPOST-BUNDLE\n');
export const BUNDLE_FORMAT_VERSION = 1;
// Bounds checked before parsing: a manifest is small JSON; one document's update is bounded like
// a document on a server (coordinator --max-document-size defaults to 32 MiB).
export const MAX_MANIFEST_BYTES = 1024 * 1024;
export const MAX_DOCUMENTS = 20_000;
export const MAX_UPDATE_BYTES = 33 * 1024 * 1024;
const HASH_BYTES = 32;

const sha256HexSchema = z.string().regex(/^[0-9a-f]{64}$/, 'expected a SHA-256 in hex');
// The document names servers use (hosts/<id>/desired, fleet/policy…): no control characters.
const documentNameSchema = z
  .string()
  .min(1)
  .max(256)
  .regex(/^[A-Za-z0-9._\-/]+$/, 'expected a document name such as hosts/h1/desired');

export const bundleDocumentSchema = z.looseObject({
  name: documentNameSchema,
  sha256: sha256HexSchema,
  bytes: z.number().int().min(0).max(MAX_UPDATE_BYTES),
  // Whole state (true) or only what the site's state vector lacked (false).
  full: z.boolean(),
});
export type BundleDocument = z.infer<typeof bundleDocumentSchema>;

export const bundleManifestSchema = z.looseObject({
  format: z.literal('outpost-bundle'),
  version: z.literal(BUNDLE_FORMAT_VERSION),
  createdAt: isoTimeSchema,
  // Who made it, as they said: informative only (the updates' signatures are what readers check).
  creator: z.looseObject({ name: z.string().max(256), publicKey: z.string().max(256) }),
  source: z.string().max(2048),
  hosts: z.array(z.string().max(256)).max(MAX_DOCUMENTS),
  documents: z
    .array(bundleDocumentSchema)
    .max(MAX_DOCUMENTS)
    .refine((docs) => new Set(docs.map((d) => d.name)).size === docs.length, 'a document is named twice'),
});
export type BundleManifest = z.infer<typeof bundleManifestSchema>;

export interface BundleEntry {
  name: string;
  update: Uint8Array;
  full: boolean;
}

export interface DecodedBundle {
  manifest: BundleManifest;
  updates: Map<string, Uint8Array>;
}

export type DecodeResult = { ok: true; bundle: DecodedBundle } | { ok: false; reason: string };

export function manifestFor(
  entries: readonly BundleEntry[],
  meta: Pick<BundleManifest, 'createdAt' | 'creator' | 'source' | 'hosts'>,
): BundleManifest {
  return bundleManifestSchema.parse({
    format: 'outpost-bundle',
    version: BUNDLE_FORMAT_VERSION,
    ...meta,
    documents: entries.map((e) => ({
      name: e.name,
      sha256: sha256Hex(e.update),
      bytes: e.update.length,
      full: e.full,
    })),
  });
}

const u32 = (value: number): Uint8Array => {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, value, false);
  return out;
};

// Size of the file encodeBundle would write, without building it (for --max-size).
export function encodedBundleSize(manifest: BundleManifest): number {
  const manifestBytes = new TextEncoder().encode(JSON.stringify(manifest)).length;
  return (
    BUNDLE_MAGIC.length + 4 + manifestBytes + manifest.documents.reduce((sum, d) => sum + 4 + d.bytes, 0) + HASH_BYTES
  );
}

export function encodeBundle(manifest: BundleManifest, entries: readonly BundleEntry[]): Uint8Array {
  if (entries.length !== manifest.documents.length || entries.some((e, i) => e.name !== manifest.documents[i]!.name))
    throw new Error('internal: bundle entries do not match the manifest');
  const manifestBytes = new TextEncoder().encode(JSON.stringify(manifest));
  if (manifestBytes.length > MAX_MANIFEST_BYTES)
    throw new Error(`the manifest is ${manifestBytes.length} bytes, over ${MAX_MANIFEST_BYTES}: bundle fewer hosts`);
  const parts: Uint8Array[] = [BUNDLE_MAGIC, u32(manifestBytes.length), manifestBytes];
  for (const entry of entries) parts.push(u32(entry.update.length), entry.update);
  const body = concat(parts);
  const out = new Uint8Array(body.length + HASH_BYTES);
  out.set(body, 0);
  out.set(digest(body), body.length);
  return out;
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((sum, p) => sum + p.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

// Checks everything before returning anything: the magic, the whole-file hash, the manifest's
// schema, every section's length and every document's SHA-256. A bundle that fails any check
// yields only the reason, so a caller cannot apply part of a damaged bundle.
export function decodeBundle(bytes: Uint8Array): DecodeResult {
  if (
    bytes.length < BUNDLE_MAGIC.length + 4 + HASH_BYTES ||
    !bytesEqual(bytes.subarray(0, BUNDLE_MAGIC.length), BUNDLE_MAGIC)
  )
    return {
      ok: false,
      reason: 'not an outpost bundle (it does not start with OUTPOST-BUNDLE); is this the right file?',
    };
  const body = bytes.subarray(0, bytes.length - HASH_BYTES);
  // Checked first, reported last: the per-document checks name what differs; this one adds
  // that the file as a whole is damaged or cut short.
  const wholeFileOk = bytesEqual(digest(body), bytes.subarray(bytes.length - HASH_BYTES));
  const fail = (reason: string): DecodeResult => ({
    ok: false,
    reason: wholeFileOk
      ? reason
      : `${reason} (the file's closing SHA-256 does not match either: it is damaged or incomplete; copy the bundle again from the original)`,
  });
  const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
  let offset = BUNDLE_MAGIC.length;
  const manifestLength = view.getUint32(offset, false);
  offset += 4;
  if (manifestLength > MAX_MANIFEST_BYTES || offset + manifestLength > body.length)
    return fail(
      `the manifest length (${manifestLength} bytes) is over ${MAX_MANIFEST_BYTES} or past the end of the file`,
    );
  let raw: unknown;
  try {
    raw = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(body.subarray(offset, offset + manifestLength)));
  } catch (error) {
    return fail(`the manifest is not JSON (${(error as Error).message})`);
  }
  offset += manifestLength;
  const parsed = bundleManifestSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    return fail(
      `the manifest is not an outpost bundle manifest of version ${BUNDLE_FORMAT_VERSION} (${issue.path.join('.') || 'manifest'}: ${issue.message}); a newer outpost may have written it`,
    );
  }
  const manifest = parsed.data;
  const updates = new Map<string, Uint8Array>();
  for (const document of manifest.documents) {
    if (offset + 4 > body.length) return fail(`the file ends before the update of ${document.name}`);
    const length = view.getUint32(offset, false);
    offset += 4;
    if (length !== document.bytes)
      return fail(
        `the update of ${document.name} is ${length} bytes but the manifest says ${document.bytes}: the bundle was edited`,
      );
    if (offset + length > body.length) return fail(`the file ends inside the update of ${document.name}`);
    const update = body.subarray(offset, offset + length);
    offset += length;
    const actual = sha256Hex(update);
    if (actual !== document.sha256)
      return fail(
        `the update of ${document.name} has SHA-256 ${actual} but the manifest says ${document.sha256}: the bundle was edited or damaged; nothing was applied`,
      );
    updates.set(document.name, update);
  }
  if (offset !== body.length)
    return fail(`${body.length - offset} bytes follow the last update the manifest names: the bundle was edited`);
  if (!wholeFileOk)
    return {
      ok: false,
      reason:
        "the file's closing SHA-256 does not match its contents although every document's does: it is damaged or incomplete; copy the bundle again from the original",
    };
  return { ok: true, bundle: { manifest, updates } };
}
