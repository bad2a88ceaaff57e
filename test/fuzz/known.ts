// Crash classes (and leaks) reported and not yet fixed on main. The seeded run in npm test leaves
// their inputs out, so it passes while a fix is under way and fails on anything new; the long run
// includes them unless given --skip-known. Remove an entry when its fix lands on main; what was
// found and fixed so far is listed in docs/fuzzing.md.
export interface KnownCrash {
  // The open item (issue and number, or the fuzz finding in docs/fuzzing.md).
  item: string;
  // Input classes it applies to (matched against the class name, e.g. 'ws-upgrade@relay').
  classes: RegExp;
  matches(input: unknown): boolean;
}

// How deep a value nests (objects and arrays), without recursion.
function nestingDepth(value: unknown): number {
  let deepest = 0;
  const stack: [unknown, number][] = [[value, 0]];
  while (stack.length > 0) {
    const [node, depth] = stack.pop()!;
    if (node === null || typeof node !== 'object') continue;
    deepest = Math.max(deepest, depth + 1);
    for (const child of Object.values(node)) stack.push([child, depth + 1]);
  }
  return deepest;
}

export const KNOWN_CRASHES: KnownCrash[] = [
  // Not a crash: the agent's document copy silently stops taking updates (lib0 decodes values
  // recursively; past ~2,000 levels the stack may overflow, the update is lost and every later one
  // waits for it). It made most agent runs of seed 2 fail the "admin's intent is applied" check
  // from the first minutes on, which hides everything else the agent does. Skipped past 1,000
  // levels: every depth the entry bounds (32) and canonical JSON (64) care about stays in.
  {
    item: 'fuzz finding 10 (docs/fuzzing.md)',
    classes: /^(intents|policies|timestamps|status)@agent$/,
    matches: (input) => nestingDepth(input) > 1_000,
  },
];
