import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { storeArgs } from '../pipeline/fetch.js';
import { runCommand } from './run-command.js';

// The generations a rollback or the next step needs are GC roots of the agent's own, registered
// with Nix as indirect roots (<state-dir>/gcroots/<name> → closure): `nix-collect-garbage -d`
// deletes old profile generations, and without these the rollback target would go with them.
export type RootName = 'current' | 'previous' | 'target';
type StepLink = RootName | `${RootName}.next`;

export function gcRootPath(stateDir: string, name: StepLink): string {
  return join(stateDir, 'gcroots', name);
}

export type GcRootStep = { kind: 'pin'; link: StepLink; closure: string } | { kind: 'remove'; link: StepLink };

// The steps from the roots there are to the roots wanted, ordered so that a garbage collection
// between any two of them finds every closure of either set rooted: a changed root is first pinned
// under `<name>.next`, only then are the names moved (a switch moves the old `current` to `previous`
// and a rollback swaps them, so replacing one name first would leave its old closure unrooted for a
// moment), and the spare links and the roots no longer wanted go last.
export function planGcRootSteps(
  existing: Partial<Record<RootName, string>>,
  wanted: Record<RootName, string | null>,
): GcRootStep[] {
  const changed = (Object.entries(wanted) as [RootName, string | null][]).filter(
    ([name, closure]) => (existing[name] ?? null) !== closure,
  );
  const pinned = changed.filter((entry): entry is [RootName, string] => entry[1] !== null);
  return [
    ...pinned.map(([name, closure]): GcRootStep => ({ kind: 'pin', link: `${name}.next`, closure })),
    ...pinned.map(([name, closure]): GcRootStep => ({ kind: 'pin', link: name, closure })),
    // Every spare link, also one a crash between two steps left behind.
    ...(Object.keys(wanted) as RootName[]).map((name): GcRootStep => ({ kind: 'remove', link: `${name}.next` })),
    ...changed.filter(([, closure]) => closure === null).map(([name]): GcRootStep => ({ kind: 'remove', link: name })),
  ];
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

async function readRoot(link: string): Promise<string | undefined> {
  try {
    return await fs.readlink(link);
  } catch {
    return undefined;
  }
}

// Makes <state-dir>/gcroots match: a root per named closure, none for null.
export async function syncGcRoots(
  store: string | undefined,
  stateDir: string,
  roots: Record<RootName, string | null>,
): Promise<void> {
  await fs.mkdir(join(stateDir, 'gcroots'), { recursive: true, mode: 0o700 });
  const existing: Partial<Record<RootName, string>> = {};
  for (const name of Object.keys(roots) as RootName[]) {
    const closure = await readRoot(gcRootPath(stateDir, name));
    if (closure !== undefined) existing[name] = closure;
  }
  for (const step of planGcRootSteps(existing, roots)) {
    const link = gcRootPath(stateDir, step.link);
    if (step.kind === 'pin') await pin(store, link, step.closure);
    else await fs.rm(link, { force: true });
  }
}
