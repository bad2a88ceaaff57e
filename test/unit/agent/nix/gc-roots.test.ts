import fc from 'fast-check';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { type GcRootStep, planGcRootSteps, type RootName } from '../../../../agent/nix/gc-roots.js';

const names: RootName[] = ['current', 'previous', 'target'];
const closure = fc.constantFrom('/nix/store/a-sys', '/nix/store/b-sys', '/nix/store/c-sys', '/nix/store/d-sys');
const roots = fc.record({ current: fc.option(closure), previous: fc.option(closure), target: fc.option(closure) });

// Runs the steps over a map of links, checking after each that every closure rooted before and
// wanted after (a switch's old current, a rollback's target) is still the target of some link —
// what a garbage collection at that moment would keep — and so is every wanted closure once pinned.
function walk(
  existing: Partial<Record<RootName, string>>,
  wanted: Record<RootName, string | null>,
): Map<string, string> {
  const links = new Map<string, string>(Object.entries(existing));
  const wantedClosures = new Set(Object.values(wanted).filter((c) => c !== null));
  const needed = new Set(Object.values(existing).filter((c) => wantedClosures.has(c)));
  const check = (after: GcRootStep | null) => {
    const kept = new Set(links.values());
    for (const c of needed) assert.ok(kept.has(c), `${c} unrooted after ${JSON.stringify(after)}`);
  };
  check(null);
  for (const step of planGcRootSteps(existing, wanted)) {
    if (step.kind === 'pin') {
      links.set(step.link, step.closure);
      needed.add(step.closure);
    } else links.delete(step.link);
    check(step);
  }
  return links;
}

test('GC roots: a switch and a rollback keep the closures both sets name rooted at every step', () => {
  const a = '/nix/store/a-sys';
  const b = '/nix/store/b-sys';
  // A switch: the old current becomes previous.
  const switched = walk({ current: a }, { current: b, previous: a, target: null });
  assert.equal(Object.fromEntries(switched), { current: b, previous: a });
  // A rollback swaps them.
  const rolledBack = walk({ current: b, previous: a }, { current: a, previous: b, target: null });
  assert.equal(Object.fromEntries(rolledBack), { current: a, previous: b });
});

test('GC roots: any change of the three roots ends exactly at the wanted roots, no spare link left', () => {
  fc.assert(
    fc.property(roots, roots, (before, wanted) => {
      const existing = Object.fromEntries(Object.entries(before).filter(([, c]) => c !== null)) as Partial<
        Record<RootName, string>
      >;
      const links = walk(existing, wanted);
      const expected = Object.fromEntries(names.flatMap((n) => (wanted[n] === null ? [] : [[n, wanted[n]]])));
      assert.equal(Object.fromEntries(links), expected);
    }),
    { numRuns: 2000 },
  );
  const steps = planGcRootSteps(
    { current: '/nix/store/a-sys' },
    { current: '/nix/store/a-sys', previous: null, target: null },
  );
  assert.equal(
    steps.filter((s) => s.kind === 'pin'),
    [],
    'an unchanged root is not pinned again',
  );
  assert.ok(
    steps.some((s) => s.kind === 'remove' && s.link === 'current.next'),
    'a spare link is removed',
  );
});

test.run();
