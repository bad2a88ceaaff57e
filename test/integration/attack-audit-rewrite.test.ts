import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { Level } from 'level';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { openUpdateLog } from '../../coordinator/update-log.js';
import type { CheckpointHeads } from '../../shared/audit/checkpoint.js';
import { generateSigningKey } from '../../shared/crypto/keys.js';
import { signPayload } from '../../shared/crypto/signatures.js';
import { desiredDocName } from '../../shared/documents/names.js';
import { keptCheckpointsFile } from '../../shared/node/fleet-trust.js';
import { writeKeyFile } from '../../shared/node/key-file.js';
import type { SignedCheckpoint } from '../../shared/schemas/checkpoint.js';
import { startRelayProcess } from '../bench/relay-fixtures.js';
import { closureOf } from '../harness/audit-history.js';
import { prepareHost, type SimulatedHost, startAgentProcess } from '../harness/fleet.js';
import { TEST_AGENT_FLAGS } from '../harness/lifecycle-fleet.js';
import { makeCacheKey } from '../harness/nix-fixtures.js';
import { basePolicy, makeTestOrg, postJson, pushPolicy, signPolicy } from '../harness/policy-fixtures.js';
import {
  type DaemonProcess,
  removeDirectory,
  runCli,
  startCoordinatorProcess,
  temporaryDirectory,
  waitFor,
} from '../harness/processes.js';

// A coordinator that rewrites history after its timestamp key signed a checkpoint of the log
// heads. A real agent (h2), connected through a real relay, follows fleet/timestamp; both keep
// the signed checkpoints they accept.
// The coordinator is then stopped and its LevelDB rewritten the careful way: h1's last intent
// (the one a compromised coordinator would want forgotten) is dropped and the chain re-hashed,
// so the log is consistent in itself and `outpost audit verify` without the kept checkpoint
// passes. With the agent's kept checkpoints it fails, whatever the forger does with the stored
// heads behind the checkpoint: leaves them (head-mismatch), rewrites them to fit the new log
// (checkpoint-mismatch: they no longer hash to what was signed), or deletes them
// (checkpoint-missing).
const org = makeTestOrg();
const h1 = generateSigningKey('h1');
let dir = '';
let dataDir = '';
let coordinator: DaemonProcess & { url: string; port: number };
let agentHost: SimulatedHost;
let agent: DaemonProcess | null = null;
const files: Record<string, string> = {};
let keptFile = '';
let relayKeptFile = '';
let relay: (DaemonProcess & { url: string }) | null = null;
const relayKey = generateSigningKey('relay-1');

async function startCoordinator(): Promise<void> {
  coordinator = await startCoordinatorProcess(dataDir, join(dir, `coordinator-${Date.now()}.log`), 0, [
    '--org-root',
    org.root.publicKey,
    '--timestamp-key',
    files.timestamp!,
    '--timestamp-interval',
    '0.5',
  ]);
}

async function enroll(host: string, hostKey: string): Promise<void> {
  const enrollment = {
    kind: 'enrollment' as const,
    host,
    hostKey,
    approvedAt: new Date().toISOString(),
    policyVersion: 1,
  };
  const approved = await postJson(coordinator.url, '/api/enroll/approve', {
    enrollment,
    signatures: [signPayload('enrollment', enrollment, org.alice)],
  });
  assert.is(approved.status, 200, approved.body.error);
}

async function verify(...extra: string[]): Promise<{ code: number | null; codes: string[]; out: string }> {
  const result = await runCli(
    [
      'audit',
      'verify',
      '--coordinator',
      coordinator.url,
      '--key',
      files.carol!,
      '--org-root',
      org.root.publicKey,
      '--all',
      '--json',
      ...extra,
    ],
    { timeoutMs: 120_000 },
  );
  let codes: string[] = [];
  try {
    codes = (JSON.parse(result.stdout) as { anomalies: { code: string }[] }).anomalies.map((a) => a.code);
  } catch {
    // Not JSON: the assertion on the exit code shows what was printed.
  }
  return { code: result.code, codes, out: result.stdout + result.stderr };
}

// The forger's rewrite, with the coordinator stopped: h1's desired log without its last entry,
// re-chained from genesis by the coordinator's own append code.
async function dropLastIntent(): Promise<void> {
  const name = desiredDocName('h1');
  let log = await openUpdateLog(dataDir);
  const entries = await log.read(name);
  await log.close();
  const db = new Level<string, Uint8Array>(dataDir, { keyEncoding: 'utf8', valueEncoding: 'view' });
  for (const entry of entries) await db.del(`u!${name}!${entry.seq.toString(16).padStart(12, '0')}`);
  await db.del(`d!${name}`);
  await db.close();
  log = await openUpdateLog(dataDir);
  for (const entry of entries.slice(0, -1)) await log.append(name, entry.principal, entry.update);
  await log.close();
}

// The stored heads behind every checkpoint, rewritten by `change` (null deletes them).
async function rewriteCheckpoints(change: (c: CheckpointHeads) => CheckpointHeads | null): Promise<void> {
  const db = new Level<string, string>(dataDir, { keyEncoding: 'utf8', valueEncoding: 'utf8' });
  for await (const [key, value] of db.iterator({ gt: 'c!', lt: 'c"' })) {
    const next = change(JSON.parse(value) as CheckpointHeads);
    if (next === null) await db.del(key);
    else await db.put(key, JSON.stringify(next));
  }
  await db.close();
}

test.before(async () => {
  dir = temporaryDirectory('attack-audit-rewrite');
  dataDir = join(dir, 'coordinator');
  for (const [name, key] of Object.entries({ alice: org.alice, carol: org.carol, timestamp: org.timestamp })) {
    files[name] = join(dir, `${name}.key`);
    await writeKeyFile(files[name]!, key);
  }
  await startCoordinator();
  const policy = basePolicy(org, { relays: [{ name: 'r1', key: relayKey.publicKey, hosts: ['h2'], groups: [] }] });
  const pushed = await pushPolicy(coordinator.url, signPolicy(policy, org.root));
  assert.is(pushed.status, 200, pushed.body.error);
  files.relay = join(dir, 'relay.key');
  await writeKeyFile(files.relay, relayKey);
  agentHost = await prepareHost(dir, 'h2');
  await enroll('h1', h1.publicKey);
  await enroll('h2', agentHost.publicKey);
  for (const n of [1, 2, 3]) {
    const deployed = await runCli([
      'deploy',
      '--coordinator',
      coordinator.url,
      '--key',
      files.alice!,
      '--host',
      'h1',
      '--closure',
      closureOf(n),
    ]);
    assert.is(deployed.code, 0, deployed.stderr);
  }
  // h2's agent, through a relay: nothing to install, it follows the fleet documents and keeps
  // checkpoints, and so does the relay.
  relay = await startRelayProcess(join(dir, 'relay'), join(dir, 'relay.log'), [coordinator.url], {
    extra: ['--key', files.relay, '--org-root', org.root.publicKey],
  });
  relayKeptFile = join(dir, 'relay', 'kept-checkpoints.jsonl');
  const cacheKey = await makeCacheKey(join(dir, 'keys'), 'rewrite-cache-1');
  agent = startAgentProcess(agentHost, {
    coordinators: [relay.url],
    adminKeys: [],
    substituters: ['http://127.0.0.1:9'],
    trustedCacheKeys: [cacheKey.publicKey],
    extraArgs: [...TEST_AGENT_FLAGS, '--org-root', org.root.publicKey],
  });
  keptFile = keptCheckpointsFile(agentHost.stateDir);
  const kept = await waitFor(
    'h2 to keep a signed checkpoint',
    async () => {
      const text = await fs.readFile(keptFile, 'utf8').catch(() => '');
      return text ? (JSON.parse(text.split('\n')[0]!) as SignedCheckpoint) : null;
    },
    60_000,
    250,
  );
  // fleet/policy, fleet/enrollment, hosts/h1/desired (and h2's status, once its agent reports).
  assert.ok(kept.checkpoint.heads.count >= 3, JSON.stringify(kept));
  await waitFor('the relay to keep a signed checkpoint', async () =>
    Boolean(await fs.readFile(relayKeptFile, 'utf8').catch(() => '')),
  );
  await agent.stop();
  agent = null;
  await relay.stop();
  relay = null;
});

test.after(async () => {
  await agent?.stop('SIGKILL');
  await relay?.stop();
  await coordinator?.stop();
  removeDirectory(dir);
});

test('the history as it was passes against the kept checkpoint, live and from a bundle', async () => {
  const live = await verify('--head', keptFile, '--head', relayKeptFile);
  assert.is(live.code, 0, live.out);
  const bundle = join(dir, 'bundle.json');
  const exported = await runCli([
    'audit',
    'export',
    '--coordinator',
    coordinator.url,
    '--key',
    files.carol!,
    '--out',
    bundle,
  ]);
  assert.is(exported.code, 0, exported.stderr);
  const offline = await runCli([
    'audit',
    'verify',
    '--bundle',
    bundle,
    '--org-root',
    org.root.publicKey,
    '--head',
    keptFile,
  ]);
  assert.is(offline.code, 0, offline.stdout + offline.stderr);
});

test('h1 last intent dropped and the chain re-hashed: consistent alone, caught by the kept checkpoint', async () => {
  await coordinator.stop();
  await dropLastIntent();
  await startCoordinator();
  const alone = await verify();
  assert.is(alone.code, 0, `the rewritten log is consistent in itself: ${alone.out}`);
  // Each keeper's file on its own catches it.
  for (const file of [keptFile, relayKeptFile]) {
    const checked = await verify('--head', file);
    assert.is(checked.code, 1, checked.out);
    assert.ok(checked.codes.includes('head-mismatch'), checked.out);
    assert.match(checked.out, /hosts\/h1\/desired/);
  }
});

test('the stored heads rewritten to fit the new log: they no longer hash to what was signed', async () => {
  await coordinator.stop();
  const log = await openUpdateLog(dataDir);
  const forged = await log.head(desiredDocName('h1'));
  await log.close();
  await rewriteCheckpoints((c) => ({
    ...c,
    changed: c.changed.map((h) => (h.document === desiredDocName('h1') ? forged! : h)),
  }));
  await startCoordinator();
  const checked = await verify('--head', keptFile);
  assert.is(checked.code, 1, checked.out);
  assert.ok(checked.codes.includes('checkpoint-mismatch'), checked.out);
});

test('the stored heads deleted: the signed checkpoint names heads the history no longer has', async () => {
  await coordinator.stop();
  await rewriteCheckpoints(() => null);
  await startCoordinator();
  const checked = await verify('--head', keptFile);
  assert.is(checked.code, 1, checked.out);
  assert.ok(checked.codes.includes('checkpoint-missing'), checked.out);
});

test.run();
