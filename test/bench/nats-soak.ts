import { parseArgs } from 'node:util';
import { removeDirectory, temporaryDirectory } from '../harness/processes.js';
import { runSoak } from './nats-soak-workload.js';

// `npm run soak:nats`: issue 15's soak, 10,000 writes by default (test/bench/nats-soak-workload.ts).
// Exits 1 when an acknowledged write is missing anywhere. Run it niced: it takes the machine.
const { values } = parseArgs({
  options: {
    writes: { type: 'string', default: '10000' },
    workers: { type: 'string', default: '8' },
    hosts: { type: 'string', default: '5' },
    seed: { type: 'string', default: '1' },
    'pause-ms': { type: 'string', default: '60' },
  },
});
const dir = temporaryDirectory('soak-nats');
const started = Date.now();
try {
  const result = await runSoak({
    directory: dir,
    writes: Number(values.writes),
    workers: Number(values.workers),
    hosts: Number(values.hosts),
    seed: Number(values.seed),
    pauseMs: Number(values['pause-ms']),
    upMs: [2000, 5000],
    downMs: [2000, 5000],
    log: (line) => console.log(line),
  });
  const kinds = (what: string) => result.faults.filter((f) => f.includes(what)).length;
  console.log(
    `\n${result.attempted} writes to ${result.documents} documents through 3 coordinators in ${result.writingSeconds.toFixed(0)} s ` +
      `(${(result.attempted / result.writingSeconds).toFixed(0)}/s): ${result.acknowledged} acknowledged, ` +
      `${result.indeterminate} indeterminate, lost ${result.lost}\n` +
      `missing per coordinator after the grace period: ${JSON.stringify(result.missing)}\n` +
      `faults: ${kinds('SIGKILL coordinator')} coordinator SIGKILLs, ${kinds('SIGKILL nats')} NATS SIGKILLs ` +
      `(${result.faults.filter((f) => f.includes('SIGKILL nats') && f.includes(' and ')).length} of two nodes at once); whole run ${((Date.now() - started) / 1000).toFixed(0)} s`,
  );
  if (result.examples.length > 0) console.log(`missing: ${result.examples.join('; ')}`);
  process.exitCode = result.lost === 0 && Object.values(result.missing).every((n) => n === 0) ? 0 : 1;
} finally {
  removeDirectory(dir);
}
