import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { storeArgs } from '../pipeline/fetch.js';
import { runCommand } from './run-command.js';

// The generations a rollback or the next step needs are GC roots of the agent's own, registered
// with Nix as indirect roots (<state-dir>/gcroots/<name> → closure): `nix-collect-garbage -d`
// deletes old profile generations, and without these the rollback target would go with them.
export type RootName = 'current' | 'previous' | 'target';

export function gcRootPath(stateDir: string, name: RootName): string {
  return join(stateDir, 'gcroots', name);
}

async function pin(store: string | undefined, link: string, closure: string): Promise<void> {
  const outcome = await runCommand(
    'nix-store',
    [...storeArgs(store), '--realise', closure, '--add-root', link, '--indirect', '--option', 'substituters', ''],
    { timeoutMs: 120_000 },
  );
  if (outcome.code !== 0)
    throw new Error(`cannot register ${closure} as GC root ${link}: ${outcome.outputTail.trim().split('\n').pop()}`);
}

// Makes <state-dir>/gcroots match: a root per named closure, none for null.
export async function syncGcRoots(
  store: string | undefined,
  stateDir: string,
  roots: Record<RootName, string | null>,
): Promise<void> {
  await fs.mkdir(join(stateDir, 'gcroots'), { recursive: true, mode: 0o700 });
  for (const [name, closure] of Object.entries(roots) as [RootName, string | null][]) {
    const link = gcRootPath(stateDir, name);
    let existing: string | null = null;
    try {
      existing = await fs.readlink(link);
    } catch {
      existing = null;
    }
    if (existing === closure) continue;
    if (closure === null) await fs.rm(link, { force: true });
    else await pin(store, link, closure);
  }
}
