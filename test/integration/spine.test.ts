import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { HostView } from '../../admin/fleet-view.js';
import type { SigningKey } from '../../shared/crypto/keys.js';
import { appendIntent } from '../../shared/documents/desired.js';
import { desiredDocName } from '../../shared/documents/names.js';
import { connectDocument, waitForSync } from '../../shared/node/connect.js';
import { readKeyFile } from '../../shared/node/key-file.js';
import { signIntent } from '../../shared/trust/sign-intent.js';
import { serveBinaryCache } from '../harness/cache-server.js';
import { activations, prepareHost, profileTarget, type SimulatedHost, startAgentProcess } from '../harness/fleet.js';
import { buildTestClosure, type CacheKeyFiles, makeCacheKey, publishToCache } from '../harness/nix-fixtures.js';
import {
  type DaemonProcess,
  removeDirectory,
  runCli,
  startCoordinatorProcess,
  temporaryDirectory,
  waitFor,
} from '../harness/processes.js';

// The spine, end to end with real processes and real Nix: admin CLI → coordinator → two agents,
// each installing into its own store root from a signed binary cache served over HTTP.
let dir = '';
let coordinator: DaemonProcess & { url: string; port: number };
let cache: Awaited<ReturnType<typeof serveBinaryCache>>;
let cacheKey: CacheKeyFiles;
let adminKeyFile = '';
let admin: SigningKey;
const hosts: SimulatedHost[] = [];
const agents: DaemonProcess[] = [];
const closures: Record<string, string> = {};

test.before(async () => {
  dir = temporaryDirectory('spine');
  cacheKey = await makeCacheKey(join(dir, 'keys'), 'test-cache-1');
  const untrusted = await makeCacheKey(join(dir, 'keys'), 'rogue-cache-1');
  const cacheDir = join(dir, 'cache');
  const stamp = `${process.pid}-${Date.now()}`;
  for (const name of ['gen1', 'gen2', 'gen7']) {
    closures[name] = await buildTestClosure({
      name: `nixos-system-${name}`,
      extraPaths: 2,
      uniqueness: `${stamp}-${name}`,
    });
    await publishToCache(closures[name]!, cacheDir, cacheKey.secretKeyFile);
  }
  // Signed only by a key the agents do not trust.
  closures.rogue = await buildTestClosure({ name: 'nixos-system-rogue', uniqueness: `${stamp}-rogue` });
  await publishToCache(closures.rogue, cacheDir, untrusted.secretKeyFile);
  cache = await serveBinaryCache(cacheDir);

  adminKeyFile = join(dir, 'alice.key');
  assert.is((await runCli(['keygen', '--out', adminKeyFile, '--name', 'alice'])).code, 0);
  admin = await readKeyFile(adminKeyFile);
  coordinator = await startCoordinatorProcess(join(dir, 'coordinator'), join(dir, 'coordinator.log'));
  for (const id of ['h1', 'h2']) {
    const host = await prepareHost(dir, id);
    hosts.push(host);
    agents.push(
      startAgentProcess(host, {
        coordinators: [coordinator.url],
        adminKeys: [admin.publicKey],
        substituters: [cache.url],
        trustedCacheKeys: [cacheKey.publicKey],
        extraArgs: ['--log-level', 'debug'],
      }),
    );
  }
});

test.after(async () => {
  await Promise.all(agents.map((a) => a.stop()));
  await coordinator?.stop();
  await cache?.close();
  removeDirectory(dir);
});

async function fleetStatus(): Promise<HostView[]> {
  const result = await runCli(['status', '--coordinator', coordinator.url, '--json', '--admin-key', admin.publicKey]);
  if (result.code !== 0) throw new Error(result.stderr);
  return (JSON.parse(result.stdout) as { hosts: HostView[] }).hosts;
}

async function deploy(
  host: string,
  closure: string,
  extra: string[] = [],
  key = adminKeyFile,
): Promise<{ code: number | null; stderr: string }> {
  return runCli([
    'deploy',
    '--coordinator',
    coordinator.url,
    '--key',
    key,
    '--host',
    host,
    '--closure',
    closure,
    ...extra,
  ]);
}

async function waitForResult(
  host: string,
  seqAbove: number,
  timeoutMs = 60_000,
): Promise<NonNullable<HostView['lastResult']>> {
  return waitFor(
    `a result from ${host} after #${seqAbove}`,
    async () => {
      const view = (await fleetStatus()).find((v) => v.host === host);
      return view?.lastResult && view.lastResult.seq > seqAbove ? view.lastResult : null;
    },
    timeoutMs,
    300,
  );
}

async function lastSeq(host: string): Promise<number> {
  return (await fleetStatus()).find((v) => v.host === host)?.lastResult?.seq ?? 0;
}

test('generation 1 reaches both hosts: profiles point at the closure, the switch ran, signed results in status --json', async () => {
  for (const host of hosts) assert.is((await deploy(host.host, closures.gen1!)).code, 0);
  for (const host of hosts) {
    const result = await waitForResult(host.host, 0);
    assert.is(result.outcome, 'applied', result.reason);
    assert.is(result.generation, 1);
    assert.ok(result.signatureValid, 'result signature verifies');
    assert.is(await profileTarget(host), closures.gen1);
    assert.equal(await activations(host), [`switch ${closures.gen1}`]);
  }
  // Each agent appends its result before it publishes the status with the final phase (finish()
  // in agent/status-publish.ts): the last host's status may still say 'confirming' here.
  const views = await waitFor(
    "both hosts' signed status to leave confirming",
    async () => {
      const all = await fleetStatus();
      return all.every((v) => v.phase !== 'activating' && v.phase !== 'confirming') ? all : null;
    },
    30_000,
    300,
  ).catch(() => fleetStatus());
  for (const view of views) {
    assert.is(view.phase, 'applied');
    assert.is(view.applied?.generation, 1);
    assert.ok(view.statusSignatureValid);
    assert.ok(view.online, `${view.host} online through awareness`);
    assert.ok(
      view.results.every(
        (r) => r.signatureValid && r.signature.publicKey === hosts.find((h) => h.host === view.host)!.publicKey,
      ),
    );
  }
});

test('generation 2 replaces generation 1', async () => {
  for (const host of hosts) {
    const before = await lastSeq(host.host);
    assert.is((await deploy(host.host, closures.gen2!)).code, 0);
    const result = await waitForResult(host.host, before);
    assert.is(result.outcome, 'applied', result.reason);
    assert.is(result.generation, 2);
    assert.is(await profileTarget(host), closures.gen2);
  }
});

test('an older generation is refused; the refusal is a signed result and the host keeps generation 2', async () => {
  const host = hosts[0]!;
  const before = await lastSeq(host.host);
  const refusedByCli = await deploy(host.host, closures.gen1!, ['--generation', '1']);
  assert.is(refusedByCli.code, 1, 'the CLI refuses to issue a lower generation without --force');
  assert.match(refusedByCli.stderr, /not above 2/);
  assert.is((await deploy(host.host, closures.gen1!, ['--generation', '1', '--force'])).code, 0);
  const result = await waitForResult(host.host, before);
  assert.is(result.outcome, 'refused');
  assert.match(result.reason, /^rollback: generation 1 is not above generation 2/);
  assert.ok(result.signatureValid);
  assert.is(await profileTarget(host), closures.gen2);
  assert.is((await activations(host)).length, 2);
});

// Writes an intent straight into a desired document, as a compromised relay or careless tool could.
async function injectIntent(docHost: string, signed: ReturnType<typeof signIntent>): Promise<void> {
  const connection = connectDocument(coordinator.url, desiredDocName(docHost), { identity: null });
  try {
    await waitForSync(connection, 10_000);
    appendIntent(connection.doc, signed);
    const reader = connectDocument(coordinator.url, desiredDocName(docHost), { identity: null });
    await waitFor(
      'the injected intent to be stored',
      async () => {
        await waitForSync(reader, 10_000);
        return (
          reader.doc.getArray('intents').length > 0 &&
          JSON.stringify(reader.doc.getArray('intents').toJSON()).includes(signed.signatures[0]!.signature)
        );
      },
      10_000,
    );
    reader.close();
  } finally {
    connection.close();
  }
}

function intentFor(
  host: string,
  generation: number,
  closure: string,
  overrides: { expiresAt?: string; issuedAt?: string } = {},
) {
  const now = Date.now();
  return {
    kind: 'intent' as const,
    host,
    generation,
    closure,
    action: 'switch' as const,
    issuedAt: overrides.issuedAt ?? new Date(now - 1000).toISOString(),
    expiresAt: overrides.expiresAt ?? new Date(now + 3_600_000).toISOString(),
    issuer: 'test',
  };
}

const refusals: [string, () => Promise<void>, RegExp][] = [
  [
    'signed by an unknown key',
    async () => {
      const strangerFile = join(dir, 'mallory.key');
      await runCli(['keygen', '--out', strangerFile, '--name', 'mallory']);
      assert.is((await deploy('h1', closures.gen7!, ['--generation', '3'], strangerFile)).code, 0);
    },
    /^unknown-signer: signed by .*none of which is a trusted admin key/,
  ],
  [
    'meant for another host',
    () => injectIntent('h1', signIntent(intentFor('h2', 4, closures.gen7!), admin)),
    /^wrong-host: intent is for host h2, this is h1/,
  ],
  [
    'expired',
    () =>
      injectIntent(
        'h1',
        signIntent(
          intentFor('h1', 5, closures.gen7!, {
            issuedAt: new Date(Date.now() - 7_200_000).toISOString(),
            expiresAt: new Date(Date.now() - 3_600_000).toISOString(),
          }),
          admin,
        ),
      ),
    /^expired: intent expired at /,
  ],
  [
    'whose closure is signed by an untrusted cache key',
    () => deploy('h1', closures.rogue!, ['--generation', '6']).then((r) => assert.is(r.code, 0)),
    /^narinfo check: .*signed only by untrusted keys: rogue-cache-1/,
  ],
];

for (const [label, submit, reason] of refusals) {
  test(`an intent ${label} is refused with a clear reason; the host keeps its system`, async () => {
    const host = hosts[0]!;
    const before = await lastSeq(host.host);
    await submit();
    const result = await waitForResult(host.host, before);
    assert.is(result.outcome, 'refused');
    assert.match(result.reason, reason);
    assert.ok(result.signatureValid);
    assert.is(await profileTarget(host), closures.gen2);
    assert.is((await activations(host)).length, 2, 'no activation ran');
    assert.not.ok(existsSync(join(host.storeRoot, closures.rogue!)), 'the untrusted closure was never installed');
    assert.not.ok(existsSync(join(host.storeRoot, closures.gen7!)), 'no refused closure was installed');
  });
}

test('the agents refuse to start when Nix signature checks are off', async () => {
  const host = await prepareHost(dir, 'h3');
  const agent = startAgentProcess(host, {
    coordinators: [coordinator.url],
    adminKeys: [admin.publicKey],
    substituters: [cache.url],
    trustedCacheKeys: [cacheKey.publicKey],
    env: { NIX_CONFIG: 'require-sigs = false' },
  });
  const code = await agent.exited;
  assert.is(code, 1);
  assert.match(agent.logs(), /require-sigs = false/);
});

test('SIGKILL of the coordinator: agents reconnect by themselves and apply the next generation', async () => {
  const before = await Promise.all(hosts.map((h) => lastSeq(h.host)));
  coordinator.child.kill('SIGKILL');
  await coordinator.exited;
  coordinator = await startCoordinatorProcess(
    join(dir, 'coordinator'),
    join(dir, 'coordinator-2.log'),
    coordinator.port,
  );
  for (const host of hosts) assert.is((await deploy(host.host, closures.gen7!, ['--generation', '7'])).code, 0);
  for (const [i, host] of hosts.entries()) {
    const result = await waitForResult(host.host, before[i]!);
    assert.is(result.outcome, 'applied', result.reason);
    assert.is(result.generation, 7);
    assert.is(await profileTarget(host), closures.gen7);
  }
});

test.run();
