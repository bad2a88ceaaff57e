import { storeArgs } from '../pipeline/fetch.js';
import { runCommand } from './run-command.js';

// Which of these store paths the host's store does not have yet. Asked in chunks: a NixOS
// closure has thousands of paths and the command line has a size limit.
export async function invalidPaths(store: string | undefined, paths: readonly string[]): Promise<string[]> {
  const invalid: string[] = [];
  for (let i = 0; i < paths.length; i += 500) {
    const chunk = paths.slice(i, i + 500);
    const outcome = await runCommand(
      'nix-store',
      [...storeArgs(store), '--check-validity', '--print-invalid', ...chunk],
      { timeoutMs: 120_000, keepBytes: 1 << 20 },
    );
    if (outcome.code !== 0)
      throw new Error(
        `nix-store --check-validity failed (${outcome.code ?? outcome.signal}): ${outcome.outputTail.trim().split('\n').pop()}`,
      );
    const listed = new Set(
      outcome.outputTail
        .split('\n')
        .map((l) => l.trim())
        .filter(Boolean),
    );
    invalid.push(...chunk.filter((p) => listed.has(p)));
  }
  return invalid;
}
