import { closureNarinfos, closureNarSize, type Narinfo, verifyNarinfo } from '../../shared/nix/narinfo.js';

// `infos` (every path with its declared sizes) feed the size cap, the disk-space check, the
// progress totals and the per-file byte caps of the download.
export type ClosureVerdict =
  | { ok: true; paths: number; narBytes: number; substituter: string; infos: Narinfo[] }
  | { ok: false; reason: string };

// Our own check of every narinfo in the closure, before Nix downloads anything: the fingerprint
// signed by a pinned cache key, in addition to Nix's own check. It also yields the closure's size.
export async function verifyClosureSignatures(
  closure: string,
  substituters: string[],
  trustedCacheKeys: string[],
  timeoutMs = 60_000,
): Promise<ClosureVerdict> {
  const problems: string[] = [];
  for (const substituter of substituters) {
    let infos: Narinfo[];
    try {
      infos = await closureNarinfos(substituter, closure, { timeoutMs });
    } catch (error) {
      problems.push(`${substituter}: ${(error as Error).message}`);
      continue;
    }
    for (const info of infos) {
      const verdict = verifyNarinfo(info, trustedCacheKeys);
      if (!verdict.ok) return { ok: false, reason: `${info.storePath} from ${substituter}: ${verdict.reason}` };
    }
    return { ok: true, paths: infos.length, narBytes: closureNarSize(infos), substituter, infos };
  }
  return { ok: false, reason: `no substituter has the closure: ${problems.join('; ')}` };
}
