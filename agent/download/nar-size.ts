import type { Narinfo } from '../../shared/nix/narinfo.js';
import { formatBytes } from '../../shared/text/bytes.js';

// How many bytes one NAR file may cost, from what the cache key signs. The signature covers
// NarSize (and NarHash, References), not FileSize, FileHash, Compression or URL: a cache may
// write any FileSize it likes, so FileSize can only ever tighten a bound, never widen one.
//   Compression: none  the file is the NAR: exactly NarSize bytes, checked against NarHash.
//   anything else      at most NarSize plus the compression allowance below.

// What a compressor may add to incompressible data, with room to spare: bzip2 documents its
// worst case as 1 % + 600 bytes (BZ2_bzBuffToBuffCompress); xz, zstd, gzip, lz4 and brotli add
// less (at most 0.4 % + headers). 1/64 (1.6 %) plus 64 KiB for headers and block framing.
export function compressedAllowance(narSize: number): number {
  return narSize + Math.ceil(narSize / 64) + 65_536;
}

export interface NarFileBounds {
  // Bytes beyond this end the transfer at once (and the file is thrown away).
  cap: number;
  // The file must be exactly this long to count as complete; null when only the cap is known
  // (a compressed file whose narinfo declares no FileSize).
  exactSize: number | null;
  // What the transfer is expected to cost: for progress and the disk-space check.
  expectedBytes: number;
}

export type NarFileVerdict = ({ ok: true } & NarFileBounds) | { ok: false; reason: string };

export function narFileBounds(
  info: Pick<Narinfo, 'storePath' | 'compression' | 'fileSize' | 'narSize'>,
): NarFileVerdict {
  const declared = info.fileSize;
  const lying = (limit: string): NarFileVerdict => ({
    ok: false,
    reason:
      `the cache's narinfo of ${info.storePath} declares FileSize ${declared} (${formatBytes(declared ?? 0)}) for a NAR ` +
      `its signature says is ${info.narSize} bytes (NarSize); ${limit}. FileSize is not signed: the cache is broken ` +
      `or hostile. Nothing was downloaded; re-publish the path with 'nix copy --to <cache>' or use another substituter`,
  });
  if (info.compression === 'none') {
    if (declared !== undefined && declared !== info.narSize)
      return lying('an uncompressed NAR file is exactly NarSize bytes');
    return { ok: true, cap: info.narSize, exactSize: info.narSize, expectedBytes: info.narSize };
  }
  const allowance = compressedAllowance(info.narSize);
  if (declared !== undefined && declared > allowance)
    return lying(`compressed with ${info.compression} it cannot be more than ${allowance} bytes`);
  return {
    ok: true,
    cap: declared ?? allowance,
    exactSize: declared ?? null,
    expectedBytes: declared ?? info.narSize,
  };
}
