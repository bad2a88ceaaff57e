import nacl from 'tweetnacl';
import { z } from 'zod';
import { bytesEqual, concatBytes, fromBase64, fromHex, utf8Bytes } from '../crypto/encoding.js';
import { verifyDetached } from '../crypto/signatures.js';
import { storePathSchema } from '../schemas/primitives.js';
import { decodeNixBase32, encodeNixBase32 } from './base32.js';

// A narinfo is the signed description of one store path in a binary cache
// (src/libstore/nar-info.cc). The cache itself is untrusted: everything here is parsed strictly
// and bounded, and only a signature by a trusted key makes its contents believable.

const STORE_DIR = '/nix/store';

// A real narinfo is a few hundred bytes; a NixOS toplevel with hundreds of references stays far
// below 1 MiB. The caps keep a hostile cache from making us buffer or split without bound.
export const NARINFO_MAX_BYTES = 1024 * 1024;
export const NARINFO_MAX_LINES = 256;
export const NARINFO_MAX_REFERENCES = 20_000;
export const NARINFO_MAX_SIGS = 64;

const REPUBLISH_HINT =
  "the substituter served a corrupt or non-Nix narinfo; re-publish the path with 'nix copy --to <cache>' or check the substituter URL";

const storeBaseNameSchema = z
  .string()
  .regex(
    /^[0-9a-df-np-sv-z]{32}-[A-Za-z0-9+\-._?=]{1,211}$/,
    'expected a store path base name such as <32 nix-base32 chars>-name',
  );

// Nix prints NarHash as sha256:<nix32>, but parses base16 and SRI too; accept all three and
// normalise when building the fingerprint, which is always signed in nix32.
export function narHashToNix32(hash: string): string {
  const nix32 = /^sha256:([0-9a-df-np-sv-z]{52})$/.exec(hash);
  if (nix32) {
    decodeNixBase32(nix32[1]!, 32); // refuses a first character with bits beyond 256
    return hash;
  }
  const base16 = /^sha256:([0-9a-fA-F]{64})$/.exec(hash);
  if (base16) return `sha256:${encodeNixBase32(fromHex(base16[1]!))}`;
  const sri = /^sha256-([A-Za-z0-9+/]{43}=)$/.exec(hash);
  if (sri) return `sha256:${encodeNixBase32(fromBase64(sri[1]!))}`;
  throw new Error(
    `not a SHA-256 NAR hash: ${JSON.stringify(hash.slice(0, 80))} (expected sha256:<52 nix-base32 chars>, sha256:<64 hex chars> or sha256-<base64>)`,
  );
}

function isSha256Hash(text: string): boolean {
  try {
    narHashToNix32(text);
    return true;
  } catch {
    return false;
  }
}

const sha256HashSchema = z
  .string()
  .refine(isSha256Hash, 'expected sha256:<52 nix-base32 chars>, sha256:<64 hex chars> or sha256-<base64>');

function byteCountSchema(minimum: number) {
  return z
    .string()
    .regex(/^[0-9]{1,16}$/, 'expected a decimal byte count')
    .transform(Number)
    .pipe(
      z
        .number()
        .int()
        .min(minimum, minimum > 0 ? 'must be greater than 0' : 'must not be negative')
        .max(Number.MAX_SAFE_INTEGER),
    );
}

export interface Narinfo {
  storePath: string;
  // Relative to the substituter URL, e.g. nar/<hash>.nar.xz.
  url: string;
  compression: string;
  fileHash?: string;
  fileSize?: number;
  narHash: string;
  narSize: number;
  // Base names (<hash>-<name>), as the narinfo lists them; a path may list itself.
  references: string[];
  deriver?: string;
  sigs: string[];
  ca?: string;
}

// Field names are the narinfo's own, so a validation error names the line a person would look at.
const narinfoFieldsSchema = z
  .object({
    StorePath: storePathSchema,
    URL: z.string().regex(/^[\x21-\x7e]{1,4096}$/, 'expected a relative URL such as nar/<hash>.nar.xz'),
    // Nix writes no Compression line for bzip2-compressed NARs from old caches and defaults it.
    Compression: z
      .string()
      .regex(/^[a-z0-9]{1,16}$/, 'expected a compression name such as none, xz or zstd')
      .default('bzip2'),
    FileHash: sha256HashSchema.optional(),
    FileSize: byteCountSchema(0).optional(),
    NarHash: sha256HashSchema,
    // Nix itself treats NarSize 0 as a corrupt narinfo.
    NarSize: byteCountSchema(1),
    References: z
      .string()
      .default('')
      .transform((value) => (value === '' ? [] : value.split(' ')))
      .pipe(z.array(storeBaseNameSchema).max(NARINFO_MAX_REFERENCES, `more than ${NARINFO_MAX_REFERENCES} references`)),
    // "unknown-deriver" is how Nix spells "none".
    Deriver: z
      .string()
      .transform((value) => (value === 'unknown-deriver' ? undefined : value))
      .pipe(storeBaseNameSchema.regex(/\.drv$/, 'expected a .drv base name').optional())
      .optional(),
    // Kept loose on purpose: verifyNarinfo judges each signature, so one odd Sig line from
    // another tool does not make an otherwise well-signed narinfo unreadable.
    Sig: z
      .array(z.string().regex(/^[\x21-\x7e]{1,1024}$/, 'expected name:base64'))
      .max(NARINFO_MAX_SIGS, `more than ${NARINFO_MAX_SIGS} Sig lines`),
    CA: z
      .string()
      .regex(/^[\x21-\x7e]{1,1024}$/, 'expected a content address such as fixed:r:sha256:…')
      .optional(),
  })
  .transform(
    (fields): Narinfo => ({
      storePath: fields.StorePath,
      url: fields.URL,
      compression: fields.Compression,
      fileHash: fields.FileHash,
      fileSize: fields.FileSize,
      narHash: fields.NarHash,
      narSize: fields.NarSize,
      references: fields.References,
      deriver: fields.Deriver,
      sigs: fields.Sig,
      ca: fields.CA,
    }),
  );

const REQUIRED_FIELDS = ['StorePath', 'URL', 'NarHash', 'NarSize'] as const;

// `where` names the narinfo in errors (its URL or file), so an operator knows which cache to fix.
export function parseNarinfo(text: string, where: string): Narinfo {
  const fail = (message: string): never => {
    throw new Error(`narinfo ${where}: ${message}; ${REPUBLISH_HINT}`);
  };
  // Every UTF-16 unit is at least one UTF-8 byte, so a long string fails before it is encoded.
  if (text.length > NARINFO_MAX_BYTES || utf8Bytes(text).length > NARINFO_MAX_BYTES)
    fail(`larger than ${NARINFO_MAX_BYTES} bytes`);
  if (text.includes('\r')) fail('contains carriage returns (Nix writes LF line endings only)');
  const lines = text.split('\n');
  if (lines.length > NARINFO_MAX_LINES) fail(`more than ${NARINFO_MAX_LINES} lines`);

  // No prototype, so a line named "constructor" or "toString" is just an unknown field.
  const fields = Object.assign(Object.create(null) as Record<string, string | string[]>, { Sig: [] as string[] });
  lines.forEach((line, index) => {
    if (line === '') return;
    const match = /^([A-Za-z][A-Za-z0-9-]{0,63}):(?: (.*))?$/.exec(line);
    if (!match) {
      fail(`line ${index + 1} is not "Name: value": ${JSON.stringify(line.slice(0, 80))}`);
      return;
    }
    const name = match[1]!;
    const value = match[2] ?? '';
    if (name === 'Sig') {
      (fields.Sig as string[]).push(value);
    } else if (name in fields) {
      // Nix keeps the last of repeated lines; refusing them avoids ever checking one NarHash
      // while something else uses another.
      fail(`${name} appears more than once (line ${index + 1})`);
    } else {
      fields[name] = value;
    }
  });
  for (const name of REQUIRED_FIELDS) {
    if (!(name in fields)) fail(`missing the ${name} line`);
  }

  const parsed = narinfoFieldsSchema.safeParse(fields);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((issue) => `${issue.path.join('.') || '(narinfo)'}: ${issue.message}`);
    return fail(problems.join('; '));
  }
  return parsed.data;
}

// What the cache key signs (src/libstore/path-info.cc ValidPathInfo::fingerprint). References
// are a set in Nix, so duplicates collapse and the order is the sorted full paths.
export function narinfoFingerprint(info: Pick<Narinfo, 'storePath' | 'narHash' | 'narSize' | 'references'>): string {
  const references = [...new Set(info.references.map((name) => `${STORE_DIR}/${name}`))].sort();
  return `1;${info.storePath};${narHashToNix32(info.narHash)};${info.narSize};${references.join(',')}`;
}

export interface CacheKey {
  name: string;
  publicKey: Uint8Array;
}

const cacheKeyNamePattern = /^[A-Za-z0-9][A-Za-z0-9._+@-]{0,127}$/;

// Public keys as Nix writes them ("cache.example.org-1:<base64 of 32 bytes>"), the same text an
// operator puts into trusted-public-keys.
export function parseCacheKey(text: string): CacheKey {
  const trimmed = text.trim();
  const colon = trimmed.indexOf(':');
  const name = colon < 0 ? '' : trimmed.slice(0, colon);
  if (!cacheKeyNamePattern.test(name)) {
    throw new Error(
      `not a Nix cache public key: ${JSON.stringify(trimmed.slice(0, 40))} (expected name:base64, e.g. cache.example.org-1:…; the name is letters, digits and . _ + @ -)`,
    );
  }
  let bytes: Uint8Array;
  try {
    bytes = fromBase64(trimmed.slice(colon + 1));
  } catch (error) {
    throw new Error(`cache key ${name}: ${(error as Error).message}`);
  }
  if (bytes.length === nacl.sign.secretKeyLength) {
    throw new Error(
      `cache key ${name} is a 64-byte secret key; use the public key file that nix-store --generate-binary-cache-key wrote next to it`,
    );
  }
  if (bytes.length !== nacl.sign.publicKeyLength) {
    throw new Error(
      `cache key ${name} is ${bytes.length} bytes; an Ed25519 public key is ${nacl.sign.publicKeyLength}`,
    );
  }
  return { name, publicKey: bytes };
}

export type NarinfoVerdict = { ok: true; keyName: string } | { ok: false; reason: string };

function trustedKeyMap(trustedKeys: readonly (CacheKey | string)[]): Map<string, Uint8Array> | string {
  if (trustedKeys.length === 0) return 'no trusted keys configured';
  const byName = new Map<string, Uint8Array>();
  for (const [index, entry] of trustedKeys.entries()) {
    let key: CacheKey;
    try {
      key = typeof entry === 'string' ? parseCacheKey(entry) : entry;
    } catch (error) {
      return `trusted key #${index + 1} is malformed: ${(error as Error).message}`;
    }
    if (
      !cacheKeyNamePattern.test(key.name) ||
      !(key.publicKey instanceof Uint8Array) ||
      key.publicKey.length !== nacl.sign.publicKeyLength
    ) {
      return `trusted key #${index + 1} (${JSON.stringify(String(key.name).slice(0, 40))}) is malformed: expected a name and a 32-byte public key`;
    }
    const existing = byName.get(key.name);
    // A signature names its key; two different keys under one name would make "which key
    // signed this" ambiguous, so that is a configuration error, not something to guess at.
    if (existing && !bytesEqual(existing, key.publicKey)) {
      return `trusted keys name ${key.name} twice with different keys; give every key a unique name`;
    }
    byName.set(key.name, key.publicKey);
  }
  return byName;
}

// Accepts when any signature by a trusted key verifies, as Nix does; other Sig lines (other
// caches' keys, junk) cannot weaken that. Never throws: every problem becomes a reason.
export function verifyNarinfo(info: Narinfo, trustedKeys: readonly (CacheKey | string)[]): NarinfoVerdict {
  try {
    const trusted = trustedKeyMap(trustedKeys);
    if (typeof trusted === 'string') return { ok: false, reason: trusted };
    let message: Uint8Array;
    try {
      message = new TextEncoder().encode(narinfoFingerprint(info));
    } catch (error) {
      return {
        ok: false,
        reason: `cannot compute the signed fingerprint of ${info.storePath}: ${(error as Error).message}`,
      };
    }
    if (info.sigs.length === 0) return { ok: false, reason: 'no signature' };

    const untrusted: string[] = [];
    const malformed: string[] = [];
    const failed: string[] = [];
    for (const sig of info.sigs) {
      const colon = sig.indexOf(':');
      const name = colon < 0 ? '' : sig.slice(0, colon);
      if (!cacheKeyNamePattern.test(name)) {
        malformed.push(`${JSON.stringify(sig.slice(0, 40))} is not name:base64`);
        continue;
      }
      const publicKey = trusted.get(name);
      if (!publicKey) {
        if (!untrusted.includes(name)) untrusted.push(name);
        continue;
      }
      let signature: Uint8Array;
      try {
        signature = fromBase64(sig.slice(colon + 1));
      } catch {
        malformed.push(`signature by ${name} is not base64`);
        continue;
      }
      if (signature.length !== nacl.sign.signatureLength) {
        malformed.push(`signature by ${name} is ${signature.length} bytes, not ${nacl.sign.signatureLength}`);
        continue;
      }
      // The shared Ed25519 check (lengths, S < L, then the backend): tweetnacl alone takes a
      // malleated S + L, which Nix (libsodium) refuses.
      if (verifyDetached(message, signature, publicKey)) return { ok: true, keyName: name };
      if (!failed.includes(name)) failed.push(name);
    }

    if (failed.length > 0) {
      return {
        ok: false,
        reason: `signature by ${failed.join(', ')} does not verify (References or NarHash altered?)`,
      };
    }
    const untrustedNote = untrusted.length > 0 ? `signed only by untrusted keys: ${untrusted.join(', ')}` : '';
    if (malformed.length > 0) {
      return {
        ok: false,
        reason: `malformed signature: ${malformed.join('; ')}${untrustedNote ? `; otherwise ${untrustedNote}` : ''}`,
      };
    }
    return { ok: false, reason: untrustedNote };
  } catch (error) {
    // Only reachable with an info object that did not come from parseNarinfo.
    return { ok: false, reason: `cannot verify narinfo: ${(error as Error).message}` };
  }
}

export interface NarinfoFetchOptions {
  // A deadline for the whole request including the body, so a cache that drips bytes cannot
  // hold us for longer than this (Nix's stalled-download-timeout only catches silence).
  timeoutMs?: number;
  maxBytes?: number;
  signal?: AbortSignal;
}

const DEFAULT_TIMEOUT_MS = 30_000;

function substituterBase(substituterUrl: string): string {
  let url: URL;
  try {
    url = new URL(substituterUrl);
  } catch {
    throw new Error(
      `substituter ${JSON.stringify(substituterUrl)} is not a URL; expected e.g. https://cache.example.org`,
    );
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new Error(
      `substituter ${substituterUrl}: only http:// and https:// binary caches can be fetched (got ${url.protocol})`,
    );
  }
  if (url.search || url.hash) {
    throw new Error(
      `substituter ${substituterUrl}: remove the ?query/#fragment; store options belong in nix.conf, not the cache URL`,
    );
  }
  return url.href.replace(/\/+$/, '');
}

export function narinfoUrl(substituterUrl: string, storePath: string): string {
  const parsed = storePathSchema.safeParse(storePath);
  if (!parsed.success)
    throw new Error(
      `${JSON.stringify(storePath.slice(0, 100))} is not a store path: ${parsed.error.issues[0]?.message}`,
    );
  const hashPart = storePath.slice(STORE_DIR.length + 1, STORE_DIR.length + 1 + 32);
  return `${substituterBase(substituterUrl)}/${hashPart}.narinfo`;
}

async function readCapped(response: Response, maxBytes: number, url: string): Promise<Uint8Array> {
  const declared = Number(response.headers.get('content-length') ?? '0');
  if (declared > maxBytes) {
    await response.body?.cancel();
    throw new Error(`narinfo ${url} is ${declared} bytes, over the ${maxBytes}-byte limit`);
  }
  const reader = response.body?.getReader();
  if (!reader) return new Uint8Array(0);
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > maxBytes) {
      await reader.cancel();
      throw new Error(`narinfo ${url} is over the ${maxBytes}-byte limit`);
    }
    chunks.push(value);
  }
  return concatBytes(chunks);
}

export async function fetchNarinfo(
  substituterUrl: string,
  storePath: string,
  options: NarinfoFetchOptions = {},
): Promise<Narinfo> {
  const url = narinfoUrl(substituterUrl, storePath);
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const maxBytes = Math.min(options.maxBytes ?? NARINFO_MAX_BYTES, NARINFO_MAX_BYTES);
  const controller = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    controller.abort();
  }, timeoutMs);
  const forwardAbort = (): void => controller.abort();
  options.signal?.addEventListener('abort', forwardAbort, { once: true });
  if (options.signal?.aborted) controller.abort();
  try {
    let bytes: Uint8Array;
    try {
      const response = await fetch(url, { signal: controller.signal, headers: { accept: 'text/x-nix-narinfo' } });
      // 403 as well: S3-style caches answer it for objects that do not exist.
      if (response.status === 404 || response.status === 403 || response.status === 410) {
        await response.body?.cancel();
        throw new Error(
          `substituter ${substituterUrl} does not have ${storePath} (HTTP ${response.status} for ${url}); publish it with 'nix copy --to <cache>'`,
        );
      }
      if (!response.ok) {
        await response.body?.cancel();
        throw new Error(`substituter ${substituterUrl} answered HTTP ${response.status} for ${url}`);
      }
      bytes = await readCapped(response, maxBytes, url);
    } catch (error) {
      if (timedOut)
        throw new Error(`timed out after ${timeoutMs} ms fetching ${url}; the substituter is slow or unreachable`);
      if (controller.signal.aborted) throw new Error(`fetching ${url} was cancelled`);
      const cause = (error as { cause?: unknown }).cause;
      if (error instanceof TypeError && cause instanceof Error)
        throw new Error(`cannot fetch ${url}: ${cause.message}`);
      throw error;
    }
    let text: string;
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
    } catch {
      throw new Error(`narinfo ${url} is not UTF-8 text; ${REPUBLISH_HINT}`);
    }
    const info = parseNarinfo(text, url);
    // The URL is derived from the hash only; a cache could answer with another path's narinfo
    // (validly signed for that path), which must not pass as this one.
    if (info.storePath !== storePath) {
      throw new Error(
        `narinfo ${url} describes ${info.storePath}, not ${storePath}; the substituter is corrupt or hostile`,
      );
    }
    return info;
  } finally {
    clearTimeout(timer);
    options.signal?.removeEventListener('abort', forwardAbort);
  }
}

// timeoutMs and maxBytes apply to each narinfo; pass signal for a deadline on the whole walk.
export interface ClosureFetchOptions extends NarinfoFetchOptions {
  // Refuse closures beyond this many paths instead of walking a hostile reference graph forever.
  maxPaths?: number;
  concurrency?: number;
}

// The whole runtime closure as the cache describes it, root first, breadth-first. Fetched
// before any NAR so the caller can check every signature and the total size up front.
export async function closureNarinfos(
  substituterUrl: string,
  storePath: string,
  options: ClosureFetchOptions = {},
): Promise<Narinfo[]> {
  const maxPaths = options.maxPaths ?? 50_000;
  const concurrency = Math.max(1, options.concurrency ?? 8);
  const referrerOf = new Map<string, string | undefined>([[storePath, undefined]]);
  const closure: Narinfo[] = [];
  let frontier = [storePath];
  while (frontier.length > 0) {
    const level: Narinfo[] = new Array<Narinfo>(frontier.length);
    let next = 0;
    const current = frontier;
    await Promise.all(
      Array.from({ length: Math.min(concurrency, current.length) }, async () => {
        while (next < current.length) {
          const index = next++;
          const path = current[index]!;
          try {
            level[index] = await fetchNarinfo(substituterUrl, path, options);
          } catch (error) {
            const referrer = referrerOf.get(path);
            if (referrer === undefined) throw error;
            throw new Error(
              `closure of ${storePath} is incomplete or unreadable at ${path} (referenced by ${referrer}): ${(error as Error).message}`,
            );
          }
        }
      }),
    );
    frontier = [];
    for (const info of level) {
      closure.push(info);
      for (const name of info.references) {
        const path = `${STORE_DIR}/${name}`;
        if (referrerOf.has(path)) continue;
        referrerOf.set(path, info.storePath);
        if (referrerOf.size > maxPaths) {
          throw new Error(
            `closure of ${storePath} has more than ${maxPaths} paths; raise maxPaths if that is expected`,
          );
        }
        frontier.push(path);
      }
    }
  }
  return closure;
}

export function closureNarSize(closure: readonly Narinfo[]): number {
  return closure.reduce((total, info) => total + info.narSize, 0);
}
