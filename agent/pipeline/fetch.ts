import { describeFailure, runCommand } from '../nix/run-command.js';

export interface FetchConfig {
  store?: string;
  substituters: string[];
  trustedCacheKeys: string[];
  timeoutMs: number;
  // Registers the closure as a GC root (an indirect root: a symlink Nix follows) as it lands.
  addRoot?: string;
  // More Nix options, e.g. for the agent's own streaming substituter (download/staging-server.ts).
  options?: Record<string, string>;
  // Stops Nix (the download it imports from was given up or cancelled).
  signal?: AbortSignal;
}

export type FetchOutcome = { ok: true } | { ok: false; reason: string; outputTail: string };

export function storeArgs(store: string | undefined): string[] {
  return store ? ['--store', store] : [];
}

// Fetches the closure with real Nix from the pinned substituters only (the agent passes its own
// staging directory, see staging.ts). The machine-wide
// substituters and keys are replaced, not extended, so nothing else can satisfy the request;
// Nix checks each narinfo signature and each NAR hash before registering a path, and paths that
// are already valid are not fetched again (so an interrupted fetch resumes).
export async function realiseClosure(closure: string, config: FetchConfig): Promise<FetchOutcome> {
  const args = [
    ...storeArgs(config.store),
    '--realise',
    closure,
    ...(config.addRoot ? ['--add-root', config.addRoot, '--indirect'] : []),
    '--option',
    'substituters',
    config.substituters.join(' '),
    '--option',
    'trusted-public-keys',
    config.trustedCacheKeys.join(' '),
    '--option',
    'require-sigs',
    'true',
    // Never trust Nix's local narinfo cache: a path that appeared since, or a cache URL now
    // served by another machine, must be looked up afresh.
    '--option',
    'narinfo-cache-negative-ttl',
    '0',
    '--option',
    'narinfo-cache-positive-ttl',
    '0',
    '--option',
    'fallback',
    'false',
    '--option',
    'max-jobs',
    '0',
    ...Object.entries(config.options ?? {}).flatMap(([name, value]) => ['--option', name, value]),
  ];
  const outcome = await runCommand('nix-store', args, { timeoutMs: config.timeoutMs, signal: config.signal });
  if (outcome.code === 0) return { ok: true };
  const notSigned = /not signed by any of the keys/.test(outcome.outputTail);
  const reason = notSigned
    ? `closure ${closure} is not signed by a trusted cache key (${config.trustedCacheKeys.map((k) => k.split(':')[0]).join(', ')})`
    : describeFailure(`fetching ${closure}`, outcome, config.timeoutMs);
  return { ok: false, reason, outputTail: outcome.outputTail };
}
