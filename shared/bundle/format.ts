import { z } from 'zod';
import type { SigningKey } from '../crypto/keys.js';
import { type Signature, signatureSchema, signPayload, verifyPayloadSignature } from '../crypto/signatures.js';
import { isoTimeSchema } from '../schemas/primitives.js';

// A sneakernet bundle (issue 16, docs/sneakernet.md): the Yjs updates a site without a link is
// missing, and the NARs and narinfos of the closures its hosts' intents name (a Nix binary cache
// laid out as Nix lays one out: nix-cache-info, <hash>.narinfo, nar/<file>), in one file carried
// on a USB stick. The way back (a "return" bundle) carries the site's status documents and what
// the site holds. Nothing in a bundle is trusted: intents, policies, checkpoints, statuses and
// results inside the updates are signed and verified by their readers as always, and narinfos
// are checked against the pinned cache keys (by `bundle apply`, then by agents and Nix). The
// hashes catch what a stick does to a file (a partial copy, a flipped byte) and name what differs.
//
// Layout (version 3): a POSIX (ustar) tar file, written and read as a stream through tar-stream
// (shared/node/bundle-file.ts), with the entries in this order:
//   outpost-bundle.json          the manifest (first: a partly copied file is named from it, by
//                                the exact length it gives, before anything else is read)
//   documents/<name>.update      each document's Yjs update (documents/hosts/h1/desired.update)
//   nix-cache-info, <hash>.narinfo, nar/<file>
//                                the closures, in Nix's binary-cache layout
//   outpost-bundle.sha256        SHA-256 (hex) of every byte before this entry's header
//   1024 zero bytes              the end of the archive
// so `tar tf` lists it and `tar xf` gives a directory that `nix copy --from file://DIR` reads.
// Every header is one 512-byte block (names stay within ustar's 100 bytes), so the manifest
// gives the file's exact length. The manifest names every entry's SHA-256; the closing digest
// covers the tar headers and padding as well, and the reader checks that the closing entry's
// padding and the end blocks are zeros: every flipped byte is caught.

// The first bytes of a version 1 or 2 bundle (our own framing, before bundles were tar files).
export const OLD_BUNDLE_MAGIC = new TextEncoder().encode('OUTPOST-BUNDLE\n');
export const BUNDLE_FORMAT_VERSION = 3;
export const MANIFEST_ENTRY = 'outpost-bundle.json';
export const DIGEST_ENTRY = 'outpost-bundle.sha256';
// The closing entry's contents: 64 hex digits and a newline.
export const DIGEST_ENTRY_BYTES = 65;
export const TAR_BLOCK = 512;
// ustar's name field: longer names would need extension headers, which the layout leaves out.
export const MAX_TAR_NAME_BYTES = 100;
// Bounds checked before parsing: the manifest lists every file (a closure of 20,000 paths is
// 40,000 entries of ~150 bytes); one document's update is bounded like a document on a server
// (coordinator --max-document-size defaults to 32 MiB); documents are held in memory, NARs not.
export const MAX_MANIFEST_BYTES = 16 * 1024 * 1024;
export const MAX_ENTRIES = 60_000;
export const MAX_DOCUMENTS = 20_000;
export const MAX_UPDATE_BYTES = 33 * 1024 * 1024;
export const MAX_DOCUMENT_TOTAL_BYTES = 512 * 1024 * 1024;
export const MAX_CACHE_INFO_BYTES = 64 * 1024;
// A return bundle posted to a running coordinator (coordinator/bundle-return.ts) is read whole
// before anything is applied: statuses only, a few KB per host, so this bounds it generously.
export const MAX_RETURN_BUNDLE_BYTES = 64 * 1024 * 1024;
// Where a running coordinator takes a return bundle (POST, the admin's key proof in headers).
export const RETURN_BUNDLE_PATH = '/api/bundle/return';
// Where a running site relay answers what its return bundle needs (relay/bundle-return-data.ts):
// GET, with a key proof by the relay's own key (the one its --key names), signed for this path.
export const RETURN_DATA_PATH = '/api/bundle/return-data';

const sha256HexSchema = z.string().regex(/^[0-9a-f]{64}$/, 'expected a SHA-256 in hex');
// The document names servers use (hosts/<id>/desired, fleet/policy…): no control characters.
const documentNameSchema = z
  .string()
  .min(1)
  .max(256)
  .regex(/^[A-Za-z0-9._\-/]+$/, 'expected a document name such as hosts/h1/desired');
// Paths of a Nix binary cache, relative to its root; nothing else (no "..", no other folder).
export const CACHE_PATH_PATTERN =
  /^(nix-cache-info|[0-9a-df-np-sv-z]{32}\.narinfo|nar\/[0-9a-df-np-sv-z]{52}\.nar(\.[a-z0-9]{1,8})?)$/;
const cachePathSchema = z
  .string()
  .max(128)
  .regex(CACHE_PATH_PATTERN, 'expected nix-cache-info, <hash>.narinfo or nar/<hash>.nar[.<compression>]');

export const bundleDocumentSchema = z.looseObject({
  type: z.literal('document'),
  name: documentNameSchema,
  sha256: sha256HexSchema,
  bytes: z.number().int().min(0).max(MAX_UPDATE_BYTES),
  // Whole state (true) or only what the site's state vector lacked (false).
  full: z.boolean(),
});
export type BundleDocument = z.infer<typeof bundleDocumentSchema>;

export const bundleCacheFileSchema = z.looseObject({
  type: z.literal('cache'),
  path: cachePathSchema,
  sha256: sha256HexSchema,
  bytes: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
});
export type BundleCacheFile = z.infer<typeof bundleCacheFileSchema>;

export const bundleEntrySchema = z.discriminatedUnion('type', [bundleDocumentSchema, bundleCacheFileSchema]);
export type BundleEntryInfo = z.infer<typeof bundleEntrySchema>;

// Where an entry lives in the tar file.
export function entryTarName(entry: BundleEntryInfo): string {
  return entry.type === 'document' ? `documents/${entry.name}.update` : entry.path;
}

// What a site holds, as the site reported it (a return bundle) or as an operator wrote it:
// `bundle create --since-state` carries only what these state vectors lack, `--site-has` leaves
// out the store paths listed (their narinfos and NARs).
export const siteStateSchema = z.looseObject({
  documents: z.record(z.string().max(256), z.string().max(4 * 1024 * 1024)).default({}),
  storePaths: z
    .array(z.string().regex(/^\/nix\/store\/[0-9a-df-np-sv-z]{32}-[A-Za-z0-9+\-._?=]{1,211}$/, 'expected a store path'))
    .max(1_000_000)
    .default([]),
});
export type SiteState = z.infer<typeof siteStateSchema>;

// The answer of RETURN_DATA_PATH, as NDJSON: one line per document the relay's log holds (its
// state vector, and its whole state when a return bundle carries it: hosts/<id>/status), then one
// closing line with the store paths its cache mirror holds whole. Without the closing line the
// answer was cut short. Lines are bounded like the bundle they become (base64: 4/3 of the bytes).
export const MAX_RETURN_DATA_LINE_BYTES = Math.ceil((MAX_UPDATE_BYTES * 4) / 3) + 64 * 1024;
export const MAX_RETURN_DATA_BYTES = Math.ceil((MAX_RETURN_BUNDLE_BYTES * 4) / 3) + 64 * 1024 * 1024;
export const returnDataDocumentSchema = z.looseObject({
  document: documentNameSchema,
  vector: z.base64().max(4 * 1024 * 1024),
  state: z.base64().max(MAX_RETURN_DATA_LINE_BYTES).optional(),
});
export const returnDataEndSchema = z.looseObject({
  end: z.literal(true),
  documents: z.number().int().min(0),
  storePaths: siteStateSchema.shape.storePaths,
});
export type ReturnDataLine = z.infer<typeof returnDataDocumentSchema> | z.infer<typeof returnDataEndSchema>;

export const bundleManifestSchema = z
  .looseObject({
    format: z.literal('outpost-bundle'),
    version: z.literal(BUNDLE_FORMAT_VERSION),
    // to-site: HQ's updates and closures for a site; return: the site's statuses for HQ.
    direction: z.enum(['to-site', 'return']),
    createdAt: isoTimeSchema,
    // Who made it, as they said: informative only (the updates' signatures are what readers check).
    creator: z.looseObject({ name: z.string().max(256), publicKey: z.string().max(256) }),
    source: z.string().max(2048),
    hosts: z.array(z.string().max(256)).max(MAX_DOCUMENTS),
    entries: z.array(bundleEntrySchema).max(MAX_ENTRIES),
    // A return bundle: what the site holds, for HQ's next bundle (--since-state, --site-has).
    siteState: siteStateSchema.optional(),
    // A return bundle: the site relay's signature over the rest of the manifest (which names every
    // entry's SHA-256), so a running coordinator can take it from whoever carried it and check it
    // against the policy's relays and their scopes (returnBundleSigner).
    signature: signatureSchema.optional(),
  })
  .superRefine((manifest, ctx) => {
    const names = new Set<string>();
    let documents = 0;
    let documentBytes = 0;
    for (const entry of manifest.entries) {
      const key = entry.type === 'document' ? `document ${entry.name}` : `cache file ${entry.path}`;
      if (names.has(key)) ctx.addIssue({ code: 'custom', path: ['entries'], message: `${key} is named twice` });
      if (entryTarName(entry).length > MAX_TAR_NAME_BYTES)
        ctx.addIssue({
          code: 'custom',
          path: ['entries'],
          message: `${key} makes a tar name longer than ${MAX_TAR_NAME_BYTES} bytes`,
        });
      names.add(key);
      if (entry.type === 'document') {
        documents += 1;
        documentBytes += entry.bytes;
      }
    }
    if (documents > MAX_DOCUMENTS)
      ctx.addIssue({ code: 'custom', path: ['entries'], message: `more than ${MAX_DOCUMENTS} documents` });
    if (documentBytes > MAX_DOCUMENT_TOTAL_BYTES)
      ctx.addIssue({
        code: 'custom',
        path: ['entries'],
        message: `the documents add up to ${documentBytes} bytes, over ${MAX_DOCUMENT_TOTAL_BYTES}`,
      });
  });
export type BundleManifest = z.infer<typeof bundleManifestSchema>;

export function encodeManifest(manifest: BundleManifest): Uint8Array {
  const bytes = new TextEncoder().encode(JSON.stringify(bundleManifestSchema.parse(manifest)));
  if (bytes.length > MAX_MANIFEST_BYTES)
    throw new Error(`the manifest is ${bytes.length} bytes, over ${MAX_MANIFEST_BYTES}: bundle fewer hosts`);
  return bytes;
}

// Bytes one tar entry of `bytes` bytes takes: its header block and its contents padded to blocks.
export function tarEntrySize(bytes: number): number {
  return TAR_BLOCK + Math.ceil(bytes / TAR_BLOCK) * TAR_BLOCK;
}

// The bytes at the end that the closing digest does not cover: its own entry and the two zero
// blocks that end the archive (the reader checks them byte for byte instead).
export const CLOSING_BYTES = tarEntrySize(DIGEST_ENTRY_BYTES) + 2 * TAR_BLOCK;

// Exact size of the file a manifest describes (for --max-size, and to name a partial copy).
export function bundleFileSize(manifest: BundleManifest): number {
  return (
    tarEntrySize(encodeManifest(manifest).length) +
    manifest.entries.reduce((sum, e) => sum + tarEntrySize(e.bytes), 0) +
    CLOSING_BYTES
  );
}

// The file starts with the old framing's magic: a bundle made before bundles were tar files.
export function isOldFormat(head: Uint8Array): boolean {
  return head.length >= OLD_BUNDLE_MAGIC.length && OLD_BUNDLE_MAGIC.every((byte, i) => head[i] === byte);
}

export const OLD_FORMAT_REASON =
  "it is a bundle of the old format (version 2, before bundles were tar files), which this outpost no longer reads: make it again with this outpost's bundle create (or apply it with the outpost that made it)";

export type ManifestParse = { ok: true; manifest: BundleManifest } | { ok: false; reason: string };

// Parses the manifest's bytes (already bounded by the caller) into a checked manifest.
export function parseManifest(bytes: Uint8Array): ManifestParse {
  let raw: unknown;
  try {
    raw = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (error) {
    return { ok: false, reason: `the manifest is not JSON (${(error as Error).message})` };
  }
  const version = (raw as { version?: unknown } | null)?.version;
  if (typeof version === 'number' && version !== BUNDLE_FORMAT_VERSION)
    return {
      ok: false,
      reason: `the bundle is of format version ${version}; this outpost reads version ${BUNDLE_FORMAT_VERSION}: make it again with this outpost's bundle create (or update outpost here)`,
    };
  const parsed = bundleManifestSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    return {
      ok: false,
      reason: `the manifest is not an outpost bundle manifest of version ${BUNDLE_FORMAT_VERSION} (${issue.path.join('.') || 'manifest'}: ${issue.message})`,
    };
  }
  return { ok: true, manifest: parsed.data };
}

export function entryLabel(entry: BundleEntryInfo): string {
  return entry.type === 'document' ? `the update of ${entry.name}` : `the cache file ${entry.path}`;
}

// What the site relay signs: the whole manifest but the signature (so every entry's hash, the
// hosts, the time and the site's state are covered). Domain-separated from every other signature.
function signedManifest(manifest: BundleManifest): Omit<BundleManifest, 'signature'> {
  const { signature: _signature, ...rest } = manifest;
  return rest;
}

export function signReturnManifest(manifest: BundleManifest, key: SigningKey): BundleManifest {
  return { ...manifest, signature: signPayload('return-bundle', signedManifest(manifest), key) };
}

// The key that signed a return bundle's manifest, or why there is none: the caller checks the key
// against the policy (a relay, and its scope).
export function returnBundleSigner(
  manifest: BundleManifest,
): { ok: true; signature: Signature } | { ok: false; reason: string } {
  if (manifest.direction !== 'return') return { ok: false, reason: 'it is not a return bundle (direction to-site)' };
  if (!manifest.signature)
    return {
      ok: false,
      reason:
        "it is not signed: make it at the site with the relay's key (outpost bundle create --return --relay-data-dir DIR --key RELAY-KEY)",
    };
  if (!verifyPayloadSignature('return-bundle', signedManifest(manifest), manifest.signature))
    return {
      ok: false,
      reason: `its manifest's signature by key ${manifest.signature.publicKey} does not verify: the bundle was edited after the site relay made it; get a fresh copy from the site`,
    };
  return { ok: true, signature: manifest.signature };
}
