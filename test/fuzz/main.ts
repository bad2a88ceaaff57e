import { promises as fs } from 'node:fs';
import { parseArgs } from 'node:util';
import { KNOWN_CRASHES } from './known.js';
import { DEFAULT_PARALLEL, runFuzz, summarize } from './run-fuzz.js';

// `npm run fuzz -- --count 1000000`: the long run. Every known crash class is included unless
// --skip-known is given; the exit code is 0 only with no crash, no failed health check and
// bounded memory in every process.
const { values } = parseArgs({
  options: {
    count: { type: 'string', default: '10000' },
    seed: { type: 'string' },
    'max-seconds': { type: 'string' },
    only: { type: 'string', multiple: true, default: [] },
    'skip-known': { type: 'boolean', default: false },
    'no-reduce': { type: 'boolean', default: false },
    'sample-seconds': { type: 'string', default: '5' },
    parallel: { type: 'string', default: String(DEFAULT_PARALLEL) },
    report: { type: 'string' },
    'keep-dir': { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
});

if (values.help) {
  console.log(`usage: npm run fuzz -- [--count N] [--seed S] [--max-seconds T] [--only CLASS …] [--skip-known]
                    [--no-reduce] [--sample-seconds S] [--parallel P] [--report FILE] [--keep-dir]
  --count N          inputs to deliver to the live processes (default 10000)
  --seed S           seed of the whole run (default: random, printed)
  --max-seconds T    stop after T seconds even if fewer inputs were delivered
  --only CLASS       only input classes whose name contains CLASS (repeatable)
  --skip-known       leave out inputs of crashes already reported and not fixed (test/fuzz/known.ts)
  --no-reduce        count and restart on crashes without reproducing and shrinking them
  --parallel P       workers per server class: P times the class's own (default ${DEFAULT_PARALLEL}; 1 as before)
  --report FILE      write the full result as JSON`);
  process.exit(0);
}

const seed = values.seed === undefined ? Math.floor(Math.random() * 2 ** 31) : Number(values.seed);
const count = Number(values.count);
if (!Number.isSafeInteger(count) || count < 1) {
  console.error(`--count: expected a positive whole number, got ${values.count}`);
  process.exit(2);
}
const parallel = Number(values.parallel);
if (!Number.isSafeInteger(parallel) || parallel < 1 || parallel > 16) {
  console.error(`--parallel: expected a whole number from 1 to 16, got ${values.parallel}`);
  process.exit(2);
}
const started = new Date().toISOString();
// Ctrl-C or a kill ends the run like --max-seconds: the processes are stopped and figures reported.
const stop = new AbortController();
for (const signal of ['SIGINT', 'SIGTERM'] as const)
  process.once(signal, () => {
    console.log(`${signal}: finishing the run`);
    stop.abort();
  });
const report = await runFuzz({
  seed,
  count,
  maxDurationMs: values['max-seconds'] === undefined ? undefined : Number(values['max-seconds']) * 1000,
  signal: stop.signal,
  skipKnown: values['skip-known'] ? KNOWN_CRASHES : [],
  only: values.only,
  reduce: !values['no-reduce'],
  sampleIntervalMs: Number(values['sample-seconds']) * 1000,
  parallel,
  keepDir: values['keep-dir'],
  log: (line) => console.log(`[${new Date().toISOString().slice(11, 19)}] ${line}`),
  // The state so far next to the report, so a long run cut short still leaves its figures.
  onProgress: values.report
    ? (snapshot) => {
        void fs
          .writeFile(
            `${values.report}.partial`,
            JSON.stringify({ started, command: process.argv.slice(2), seed, ...snapshot }, null, 1),
          )
          .catch(() => undefined);
      }
    : undefined,
});
console.log(summarize(report));
if (values.report)
  await fs.writeFile(values.report, JSON.stringify({ started, command: process.argv.slice(2), ...report }, null, 2));
const ok =
  report.crashes.length === 0 &&
  report.healthFailures.length === 0 &&
  Object.values(report.growth).every((g) => g.bounded);
process.exitCode = ok ? 0 : 1;
