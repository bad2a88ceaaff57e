import { appendFileSync } from 'node:fs';
import { getHeapSpaceStatistics } from 'node:v8';

// Preloaded into the server processes of the benchmark (node --import …/memory-probe.js), so the
// real CLI runs unchanged: on SIGWINCH it appends one JSON line with process.memoryUsage() and
// the V8 heap spaces to the file named by OUTPOST_BENCH_MEMORY_PROBE. This splits RSS into JS
// heap (used and reserved), external memory (Buffers) and the rest (native: libuv, sockets,
// malloc). The signal listener does not keep the process alive.

export interface MemoryProbe {
  at: number;
  rss: number;
  heapTotal: number;
  heapUsed: number;
  external: number;
  arrayBuffers: number;
  spaces: { name: string; size: number; used: number }[];
}

const file = process.env.OUTPOST_BENCH_MEMORY_PROBE;
if (file) {
  process.on('SIGWINCH', () => {
    const probe: MemoryProbe = {
      at: Date.now(),
      ...process.memoryUsage(),
      spaces: getHeapSpaceStatistics().map((s) => ({
        name: s.space_name,
        size: s.space_size,
        used: s.space_used_size,
      })),
    };
    appendFileSync(file, `${JSON.stringify(probe)}\n`);
  });
}
