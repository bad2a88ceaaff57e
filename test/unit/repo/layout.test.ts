import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, normalize, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';

// The tree as the README and docs describe it: every path the README's layout table names exists,
// shared/ imports nothing outside itself, components import what docs/architecture.md says, and
// docs link only to files inside the repo.

function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!(existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'README.md')))) dir = dirname(dir);
  return dir;
}
const root = repoRoot();

function filesUnder(dir: string, suffix: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) return name === 'node_modules' || name === 'dist' ? [] : filesUnder(path, suffix);
    return name.endsWith(suffix) ? [path] : [];
  });
}

test("every path in the README's layout table exists", () => {
  const readme = readFileSync(join(root, 'README.md'), 'utf8');
  const table = readme.slice(readme.indexOf('## Layout'));
  const rows = table.split('\n').filter((line) => line.startsWith('| `'));
  assert.ok(rows.length >= 8, 'the layout table has a row per component');
  const missing: string[] = [];
  for (const row of rows) {
    const [pathCell, whatCell] = row.split(' | ');
    const folders = [...(pathCell ?? '').matchAll(/`([^`]+)`/g)].map((m) => m[1]!);
    for (const folder of folders) if (!existsSync(join(root, folder))) missing.push(folder);
    // Names in the description are files of that row's first folder (or paths from the root).
    const base = folders[0] ?? '';
    for (const m of (whatCell ?? '').matchAll(/`([^`\s]+\.(?:ts|nix|json))`/g)) {
      const name = m[1]!;
      const candidates = [join(root, name), join(root, base, name)];
      // "pipeline/ (verify.ts …)": a file named after a sub-folder mention lives in that sub-folder.
      const sub = [...(whatCell ?? '').matchAll(/`([a-z-]+\/)`/g)].map((s) => join(root, base, s[1]!, name));
      if (![...candidates, ...sub, ...filesUnder(join(root, base), `/${name}`)].some((p) => existsSync(p)))
        missing.push(`${name} (row ${base})`);
    }
  }
  assert.equal(missing, [], `README layout names what does not exist: ${missing.join(', ')}`);
});

test('shared/ imports nothing from a component, and nothing outside shared/ at all', () => {
  const offenders: string[] = [];
  for (const file of filesUnder(join(root, 'shared'), '.ts')) {
    const text = readFileSync(file, 'utf8');
    for (const m of text.matchAll(/(?:from|import)\s*\(?\s*'(\.[^']+)'/g)) {
      const target = resolve(dirname(file), m[1]!);
      if (relative(join(root, 'shared'), target).startsWith('..'))
        offenders.push(`${relative(root, file)} → ${relative(root, target)}`);
    }
    // The core (all but shared/node/) must not reach Node; the compiler checks types, this the imports.
    if (!relative(join(root, 'shared'), file).startsWith('node/') && /from\s+'(node:|ws'|pino'|level')/.test(text))
      offenders.push(`${relative(root, file)} imports a Node-only module`);
  }
  assert.equal(offenders, []);
});

// What each component may import (docs/architecture.md, the "imports" column): the option and
// command kit of cli/ but never the `outpost` entry point, and no component reaches into one the
// data path puts after it (the agent never loads admin code, admin never agent code).
const ALLOWED_IMPORTS: Record<string, string[]> = {
  admin: ['admin', 'shared', 'cli'],
  coordinator: ['coordinator', 'shared', 'cli'],
  relay: ['relay', 'coordinator', 'shared', 'cli'],
  agent: ['agent', 'shared', 'cli'],
};

test('components import only what docs/architecture.md says they do', () => {
  const offenders: string[] = [];
  for (const [component, allowed] of Object.entries(ALLOWED_IMPORTS)) {
    for (const file of filesUnder(join(root, component), '.ts')) {
      const text = readFileSync(file, 'utf8');
      for (const m of text.matchAll(/(?:from|import)\s*\(?\s*'(\.[^']+)'/g)) {
        const target = relative(root, resolve(dirname(file), m[1]!));
        const top = target.split('/')[0]!;
        if (!allowed.includes(top) || target.startsWith('cli/outpost'))
          offenders.push(`${relative(root, file)} → ${target}`);
      }
    }
  }
  assert.equal(offenders, []);
});

test('docs and README link only to files inside the repo, and those exist', () => {
  const broken: string[] = [];
  for (const file of [join(root, 'README.md'), ...filesUnder(join(root, 'docs'), '.md')]) {
    const text = readFileSync(file, 'utf8');
    for (const m of text.matchAll(/\]\(([^)#\s]+)(?:#[^)]*)?\)/g)) {
      const href = m[1]!;
      if (/^[a-z]+:/.test(href)) continue; // external URLs (https:) are fine
      const target = normalize(join(dirname(file), href));
      if (relative(root, target).startsWith('..') || !existsSync(target))
        broken.push(`${relative(root, file)}: ${href}`);
    }
    if (text.includes('../shared/reference')) broken.push(`${relative(root, file)}: names ../shared/reference`);
  }
  assert.equal(broken, []);
});

test('every source path the docs name exists', () => {
  const missing: string[] = [];
  for (const file of [join(root, 'README.md'), ...filesUnder(join(root, 'docs'), '.md')]) {
    const text = readFileSync(file, 'utf8');
    // Backticked repo paths: a known top-level folder, then a file with a source ending.
    for (const m of text.matchAll(
      /`((?:cli|admin|shared|coordinator|relay|agent|nix|test|docs)\/[\w./-]+\.(?:ts|nix|md|json))`/g,
    ))
      if (!existsSync(join(root, m[1]!))) missing.push(`${relative(root, file)}: ${m[1]}`);
  }
  assert.equal(missing, []);
});

test.run();
