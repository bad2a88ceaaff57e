import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { writeKeyFile } from '../../shared/node/key-file.js';
import { closureOf } from '../harness/audit-history.js';
import { startNatsCluster } from '../harness/nats-cluster.js';
import { basePolicy, makeTestOrg, pushPolicyAndEnroll } from '../harness/policy-fixtures.js';
import {
  type DaemonProcess,
  removeDirectory,
  runCli,
  startCoordinatorProcess,
  temporaryDirectory,
} from '../harness/processes.js';

// Issue 15's migration, checked as an auditor would: a real LevelDB coordinator (org root pinned)
// gets a policy, an enrollment and signed deploys through the real CLI; an auditor verifies it and
// keeps its heads. The coordinator is stopped, `outpost coordinator migrate` copies its log into a
// NATS stream, and a coordinator started on that stream passes `outpost audit verify --all` against
// the heads kept from the original: the same documents, the same hash chains, every signature.
const test = suite('coordinator migrate: the copy passes the audit');
const org = makeTestOrg();
const dir = temporaryDirectory('nats-migrate-audit');
const daemons: DaemonProcess[] = [];
let closeCluster: (() => Promise<void>) | undefined;

test.after(async () => {
  await Promise.all(daemons.map((d) => d.stop('SIGKILL')));
  await closeCluster?.();
  if (!process.env.OUTPOST_KEEP_TEST_DIR) removeDirectory(dir);
});

async function ok(...args: string[]): Promise<string> {
  const result = await runCli(args, { timeoutMs: 120_000 });
  assert.is(result.code, 0, `outpost ${args.join(' ')} failed: ${result.stderr}${result.stdout}`);
  return result.stdout;
}

test('a LevelDB log migrated to NATS verifies under the org root against the heads kept before', async () => {
  const files = { alice: join(dir, 'alice.key'), carol: join(dir, 'carol.key') };
  await writeKeyFile(files.alice, org.alice);
  await writeKeyFile(files.carol, org.carol);
  const levelDir = join(dir, 'level');
  const level = await startCoordinatorProcess(levelDir, join(dir, 'level.log'), 0, ['--org-root', org.root.publicKey]);
  daemons.push(level);
  await pushPolicyAndEnroll(level.url, org, basePolicy(org), ['h1', 'h2']);
  for (const [host, n] of [
    ['h1', 1],
    ['h2', 2],
    ['h1', 3],
  ] as const)
    await ok('deploy', '--coordinator', level.url, '--key', files.alice, '--host', host, '--closure', closureOf(n));
  const audit = (url: string) => ['--coordinator', url, '--key', files.carol, '--org-root', org.root.publicKey];
  const before = await ok('audit', 'verify', ...audit(level.url), '--all');
  const documents = /verified: (\d+) documents/.exec(before)?.[1];
  assert.ok(documents, before);
  // Each document's last entry (DOC@SEQ:HASH), as an auditor keeps them.
  const heads = (await ok('audit', 'heads', '--coordinator', level.url, '--key', files.carol)).trim().split('\n');
  assert.is(heads.length, Number(documents), heads.join('\n'));
  await level.stop();

  const cluster = await startNatsCluster(join(dir, 'nats'), 1);
  closeCluster = () => cluster.close();
  const stream = ['--nats-stream', 'MIGRATED', '--nats-replicas', '1'];
  const copied = await ok('coordinator', 'migrate', '--from-level', levelDir, '--to', cluster.backend, ...stream);
  assert.match(copied, /copied (\d+) of \1 entries/);
  const onNats = await startCoordinatorProcess(
    join(dir, 'unused'),
    join(dir, 'nats-coordinator.log'),
    0,
    ['--backend', cluster.backend, ...stream, '--org-root', org.root.publicKey],
    {},
    60_000,
  );
  daemons.push(onNats);
  const kept = heads.flatMap((head) => ['--head', head]);
  // The auditor lists the old coordinator first, as a saved command line would: it is gone, so
  // the command goes on to the one on the stream and says so.
  const verified = await runCli(
    ['audit', 'verify', '--coordinator', level.url, ...audit(onNats.url), '--all', ...kept],
    { timeoutMs: 120_000 },
  );
  assert.is(verified.code, 0, verified.stderr + verified.stdout);
  assert.match(verified.stderr, new RegExp(`using ${onNats.url}; .*connection refused`));
  const after = verified.stdout;
  assert.match(after, new RegExp(`verified: ${documents} documents`), after);
  const timeline = JSON.parse(await ok('audit', 'timeline', ...audit(onNats.url), '--host', 'h1', '--json')) as {
    events: { kind: string; verified: boolean; signers: { name: string | null }[] }[];
  };
  const intents = timeline.events.filter((e) => e.kind === 'intent');
  assert.is(intents.length, 2, "h1's two deploys, read from the stream");
  assert.ok(
    intents.every((e) => e.verified && e.signers.some((s) => s.name === 'alice')),
    'each verified as signed by alice',
  );
});

test.run();
