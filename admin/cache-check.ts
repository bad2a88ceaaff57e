import { closureNarinfos, closureNarSize, verifyNarinfo } from '../shared/nix/narinfo.js';
import { formatBytes } from '../shared/text/bytes.js';

// `outpost deploy --substituter URL [--trusted-cache-key K]`: before anything is signed, check
// that the binary cache serves the whole closure (every path's narinfo, walked through its
// references as an agent will) and, with pinned keys, that each is signed by one of them. An
// intent for a closure the cache lacks would only fail on every host, after the signature.
export type CacheCheck = { ok: true; summary: string } | { ok: false; reason: string };

export async function checkClosureInCache(
  substituter: string,
  closure: string,
  trustedKeys: readonly string[],
  options: { concurrency?: number; timeoutMs?: number } = {},
): Promise<CacheCheck> {
  let infos: Awaited<ReturnType<typeof closureNarinfos>>;
  try {
    infos = await closureNarinfos(substituter, closure, {
      concurrency: options.concurrency ?? 16,
      timeoutMs: options.timeoutMs ?? 30_000,
    });
  } catch (error) {
    return { ok: false, reason: `cache check: ${(error as Error).message}` };
  }
  const signers = new Set<string>();
  if (trustedKeys.length > 0) {
    for (const info of infos) {
      const verdict = verifyNarinfo(info, trustedKeys);
      if (!verdict.ok)
        return {
          ok: false,
          reason: `cache check: ${info.storePath} in ${substituter} is not signed by a pinned --trusted-cache-key (${verdict.reason}); sign it ('nix store sign' or the cache's secret key) and push it again`,
        };
      signers.add(verdict.keyName);
    }
  }
  return {
    ok: true,
    summary: `cache check: ${substituter} has all ${infos.length} paths of the closure (${formatBytes(closureNarSize(infos))} unpacked)${signers.size ? `, signed by ${[...signers].join(', ')}` : ' (signatures not checked: give --trusted-cache-key to)'}`,
  };
}
