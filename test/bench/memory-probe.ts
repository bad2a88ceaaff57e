import { appendFileSync } from 'node:fs';
import { getHeapSpaceStatistics, setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

// Preloaded into the server processes of the benchmark (node --import …/memory-probe.js), so the
// real CLI runs unchanged: on SIGWINCH it appends one JSON line with process.memoryUsage() and
// the V8 heap spaces to the file named by OUTPOST_BENCH_MEMORY_PROBE. This splits RSS into JS
// heap (used and reserved), external memory (Buffers) and the rest (native: libuv, sockets,
// malloc). The signal listener does not keep the process alive.
// With OUTPOST_BENCH_MEMORY_PROBE_GC=1 each probe runs two full garbage collections first, so a
// reading does not depend on how much garbage happened to be uncollected at that moment
// (`npm run bench:nats` reads RSS that way; `gcBefore` says it did).

export interface MemoryProbe {
  at: number;
  rss: number;
  heapTotal: number;
  heapUsed: number;
  external: number;
  arrayBuffers: number;
  spaces: { name: string; size: number; used: number }[];
  gcBefore?: boolean;
}

const file = process.env.OUTPOST_BENCH_MEMORY_PROBE;
if (file) {
  let collect: (() => void) | null = null;
  if (process.env.OUTPOST_BENCH_MEMORY_PROBE_GC === '1') {
    // `gc` without --expose-gc on the command line (NODE_OPTIONS does not take it on Node 20).
    setFlagsFromString('--expose-gc');
    collect = runInNewContext('gc') as () => void;
  }
  process.on('SIGWINCH', () => {
    if (collect) {
      collect();
      collect();
    }
    const probe: MemoryProbe = {
      at: Date.now(),
      ...process.memoryUsage(),
      spaces: getHeapSpaceStatistics().map((s) => ({
        name: s.space_name,
        size: s.space_size,
        used: s.space_used_size,
      })),
      ...(collect ? { gcBefore: true } : {}),
    };
    appendFileSync(file, `${JSON.stringify(probe)}\n`);
  });
}
