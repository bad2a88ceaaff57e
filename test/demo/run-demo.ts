import { promises as fs } from 'node:fs';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { HostView } from '../../admin/fleet-view.js';
import { serveBinaryCache } from '../harness/cache-server.js';
import { prepareHost, type SimulatedHost, startAgentProcess } from '../harness/fleet.js';
import { buildTestClosure, makeCacheKey, publishToCache, runCommand } from '../harness/nix-fixtures.js';
import { type DaemonProcess, OUTPOST_CLI, runCli, startCoordinatorProcess, waitFor } from '../harness/processes.js';

// `npm start`: a working fleet on this machine. Real Nix builds two tiny system closures, signs
// them into a binary cache served on 127.0.0.1, and three agents (each with its own store root)
// apply what an admin deploys through the coordinator. `--once` exits after the walkthrough.
const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));
const once = process.argv.includes('--once');
// Tests point OUTPOST_DEMO_DIR elsewhere so they never touch a demo someone is running.
const workDir = process.env.OUTPOST_DEMO_DIR ?? join(repoRoot, '.outpost-demo');
const say = (line = ''): void => console.log(line);

async function requireNix(): Promise<void> {
  try {
    const result = await runCommand('nix-store', ['--version'], { timeoutMs: 20_000 });
    if (result.code === 0) return;
  } catch {
    // handled below
  }
  console.error(
    [
      'The demo needs Nix (it builds and installs real closures), and nix-store was not found.',
      '  Debian/Ubuntu:  sudo apt-get install -y nix-bin',
      '  elsewhere:      https://nixos.org/download (single-user install is enough)',
      'Then run `npm start` again.',
    ].join('\n'),
  );
  process.exit(1);
}

async function status(url: string): Promise<HostView[]> {
  const result = await runCli(['status', '--coordinator', url, '--json']);
  if (result.code !== 0) throw new Error(result.stderr);
  return (JSON.parse(result.stdout) as { hosts: HostView[] }).hosts;
}

async function main(): Promise<void> {
  await requireNix();
  await fs.rm(workDir, { recursive: true, force: true });
  await fs.mkdir(workDir, { recursive: true });
  const children: DaemonProcess[] = [];
  let closeCache: (() => Promise<void>) | null = null;
  const shutdown = async (): Promise<void> => {
    await Promise.all(children.map((c) => c.stop()));
    await closeCache?.();
  };
  process.once('SIGINT', () => void shutdown().then(() => process.exit(0)));
  process.once('SIGTERM', () => void shutdown().then(() => process.exit(0)));
  try {
    say('1. Building two system closures with Nix and signing them into a binary cache…');
    const cacheKey = await makeCacheKey(join(workDir, 'keys'), 'demo-cache-1');
    const stamp = String(Date.now());
    const gen1 = await buildTestClosure({ name: 'nixos-system-demo-1', extraPaths: 2, uniqueness: `${stamp}-1` });
    const gen2 = await buildTestClosure({ name: 'nixos-system-demo-2', extraPaths: 2, uniqueness: `${stamp}-2` });
    const cacheDir = join(workDir, 'cache');
    await publishToCache(gen1, cacheDir, cacheKey.secretKeyFile);
    await publishToCache(gen2, cacheDir, cacheKey.secretKeyFile);
    const cache = await serveBinaryCache(cacheDir);
    closeCache = cache.close;
    say(`   cache ${cache.url} signed by ${cacheKey.publicKey}`);

    say('2. Creating the admin key and starting the coordinator…');
    const adminKey = join(workDir, 'keys', 'admin.key');
    const keygen = await runCli(['keygen', '--out', adminKey, '--name', 'admin', '--json']);
    const { publicKey: adminPublicKey } = JSON.parse(keygen.stdout) as { publicKey: string };
    const coordinator = await startCoordinatorProcess(join(workDir, 'coordinator'), join(workDir, 'coordinator.log'));
    children.push(coordinator);
    say(`   coordinator ${coordinator.url} (log: ${relative(repoRoot, coordinator.logFile)})`);

    say('3. Starting three agents, each with its own Nix store root and system profile…');
    const hosts: SimulatedHost[] = [];
    for (const id of ['clinic-1', 'clinic-2', 'warehouse-1']) {
      const host = await prepareHost(join(workDir, 'hosts'), id);
      hosts.push(host);
      children.push(
        startAgentProcess(host, {
          coordinators: [coordinator.url],
          adminKeys: [adminPublicKey],
          substituters: [cache.url],
          trustedCacheKeys: [cacheKey.publicKey],
        }),
      );
    }

    say('4. Deploying generation 1 to every host…');
    for (const host of hosts) {
      const result = await runCli([
        'deploy',
        '--coordinator',
        coordinator.url,
        '--key',
        adminKey,
        '--host',
        host.host,
        '--closure',
        gen1,
      ]);
      if (result.code !== 0) throw new Error(result.stderr);
    }
    await waitFor(
      'every host to apply generation 1',
      async () => (await status(coordinator.url)).filter((v) => v.applied?.generation === 1).length === hosts.length,
      120_000,
      500,
    );

    say('5. Deploying generation 2 to clinic-1 only…');
    const second = await runCli([
      'deploy',
      '--coordinator',
      coordinator.url,
      '--key',
      adminKey,
      '--host',
      'clinic-1',
      '--closure',
      gen2,
    ]);
    if (second.code !== 0) throw new Error(second.stderr);
    await waitFor(
      'clinic-1 to apply generation 2',
      async () => (await status(coordinator.url)).some((v) => v.host === 'clinic-1' && v.applied?.generation === 2),
      120_000,
      500,
    );

    say('\n$ outpost status');
    say((await runCli(['status', '--coordinator', coordinator.url])).stdout.trimEnd());
    const cli = `node ${relative(process.cwd(), OUTPOST_CLI)}`;
    say(`
Every row above is signed: intents by the admin key, status and results by each host's key.
Each host installed its closure with real Nix into ${relative(process.cwd(), join(workDir, 'hosts', '<host>', 'root'))}.

The web editor: open ${coordinator.url.replace(/^ws/, 'http')}/ in a browser on this machine, import
${relative(process.cwd(), adminKey)} as your key (choose a passphrase) and leave the org root empty: this demo
runs in open mode, so the page marks what it shows as unverified (see docs/web.md).

Try next (in another terminal):
  ${cli} status --coordinator ${coordinator.url} --json
  ${cli} deploy --coordinator ${coordinator.url} --key ${relative(process.cwd(), adminKey)} --host clinic-2 --closure ${gen2}
  ${cli} deploy --coordinator ${coordinator.url} --key ${relative(process.cwd(), adminKey)} --host clinic-2 --closure ${gen1} --generation 1 --force   # refused: rollback
  tail -f ${relative(process.cwd(), join(workDir, 'hosts', 'clinic-2', 'agent.log'))}
Stop the fleet with Ctrl-C.`);
    if (once) {
      await shutdown();
      return;
    }
    await new Promise(() => undefined);
  } catch (error) {
    console.error(`demo failed: ${(error as Error).message}\nlogs are in ${workDir}`);
    await shutdown();
    process.exit(1);
  }
}

void main();
