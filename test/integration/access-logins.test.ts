import { promises as fs } from 'node:fs';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { generateSigningKey } from '../../shared/crypto/keys.js';
import { writeKeyFile } from '../../shared/node/key-file.js';
import { accountSchema } from '../../shared/schemas/logins.js';
import type { Policy } from '../../shared/schemas/policy.js';
import { startRelayProcess } from '../bench/relay-fixtures.js';
import { type AdminTarget, hostStatus, targetArgs, writeEnrollToken } from '../harness/admin-cli.js';
import { type BinaryCacheServer, serveBinaryCache } from '../harness/cache-server.js';
import { prepareHost, type SimulatedHost } from '../harness/fleet.js';
import { logEvents, startPolicyAgent } from '../harness/lifecycle-fleet.js';
import { type CacheKeyFiles, makeCacheKey, runCommand } from '../harness/nix-fixtures.js';
import { basePolicy, makeTestOrg, pushPolicy, signPolicy } from '../harness/policy-fixtures.js';
import {
  type DaemonProcess,
  removeDirectory,
  runCli,
  startCoordinatorProcess,
  temporaryDirectory,
  waitFor,
} from '../harness/processes.js';
import { startSshd, type TestSshd } from '../harness/sshd.js';

// Issue 17, login access: a real coordinator, a real relay and a real agent behind it, a real sshd
// reading the agent's files. An operator grants a person's SSH key with `outpost policy add-login`
// and revokes it with `remove-login`; each version reaches the agent through the relay and its
// file follows within one sync, without a restart or a rebuild: sshd lets the key in, then not.
const org = makeTestOrg();
const relayKey = generateSigningKey('site-1');
const dir = temporaryDirectory('access-logins');
// The account people log in as: the user running the test, so sshd (run by it) can log it in.
const account = userInfo().username;
const files = {
  root: join(dir, 'root.key'),
  alice: join(dir, 'alice.key'),
  relay: join(dir, 'relay.key'),
  token: join(dir, 'h1.token'),
  personKey: join(dir, 'person'),
  otherKey: join(dir, 'other'),
  keysDir: join(dir, 'authorized-keys'),
  v: (n: number) => join(dir, `policy-v${n}.json`),
};
let coordinator: DaemonProcess & { url: string };
let relay: DaemonProcess & { url: string };
let cacheKey: CacheKeyFiles;
let cache: BinaryCacheServer;
let host: SimulatedHost;
let agent: DaemonProcess;
let sshd: TestSshd | null = null;

async function cli(args: string[]): Promise<string> {
  const result = await runCli(args);
  if (result.code !== 0) throw new Error(`outpost ${args.slice(0, 2).join(' ')} failed: ${result.stderr}`);
  return result.stdout;
}

// sshd on a loopback port reading the agent's files (AuthorizedKeysFile DIR/%u, as the NixOS
// module sets it); StrictModes is off there because the test directory lies under /tmp (mode 1777).
function sshLogin(key: string, port: number) {
  return runCommand(
    'ssh',
    [
      '-F',
      '/dev/null',
      '-i',
      key,
      '-o',
      'IdentitiesOnly=yes',
      '-o',
      'StrictHostKeyChecking=no',
      '-o',
      'UserKnownHostsFile=/dev/null',
      '-o',
      'BatchMode=yes',
      '-o',
      'ConnectTimeout=5',
      '-o',
      'LogLevel=ERROR',
      '-p',
      String(port),
      `${account}@127.0.0.1`,
      'echo logged-in',
    ],
    { timeoutMs: 15_000 },
  );
}

// Alice at the coordinator, checking what it serves against the org root.
const alice = (): AdminTarget => ({ coordinator: coordinator.url, key: files.alice, orgRoot: org.root.publicKey });

const accountFile = (): Promise<string | null> => fs.readFile(join(files.keysDir, account), 'utf8').catch(() => null);

// The operator's way: next version, one edit, root signature, push. Resolves with when the push
// command started and how long it ran (its own start-up included).
async function publishNext(from: number, edit: string[]): Promise<{ startedAt: number; pushMs: number }> {
  await cli(['policy', 'next', '--from', files.v(from), '--out', files.v(from + 1)]);
  await cli(['policy', ...edit, '--policy', files.v(from + 1)]);
  await cli(['policy', 'sign', '--policy', files.v(from + 1), '--key', files.root]);
  const startedAt = Date.now();
  await cli(['policy', 'push', '--policy', files.v(from + 1), '--coordinator', coordinator.url]);
  return { startedAt, pushMs: Date.now() - startedAt };
}

test.before(async () => {
  await writeKeyFile(files.root, org.root);
  await writeKeyFile(files.alice, org.alice);
  await writeKeyFile(files.relay, relayKey);
  for (const key of [files.personKey, files.otherKey])
    await runCommand('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'person@laptop', '-f', key]);
  coordinator = await startCoordinatorProcess(join(dir, 'coordinator'), join(dir, 'coordinator.log'), 0, [
    '--org-root',
    org.root.publicKey,
  ]);
  // Version 1: the relay serves h1; another person already logs in to h1 as the account.
  const v1: Policy = basePolicy(org, {
    relays: [{ name: 'site-1', key: relayKey.publicKey, hosts: ['h1'], groups: [] }],
    logins: [
      {
        name: 'other',
        account,
        sshKeys: [(await fs.readFile(`${files.otherKey}.pub`, 'utf8')).trim()],
        hosts: ['h1'],
      },
    ],
  });
  const signed = signPolicy(v1, org.root);
  await fs.writeFile(files.v(1), JSON.stringify(signed));
  const pushed = await pushPolicy(coordinator.url, signed);
  assert.is(pushed.status, 200, pushed.body.error);
  relay = await startRelayProcess(join(dir, 'relay'), join(dir, 'relay.log'), [coordinator.url], {
    extra: ['--key', files.relay, '--org-root', org.root.publicKey],
  });
  cacheKey = await makeCacheKey(join(dir, 'keys'), 'access-cache-1');
  await fs.mkdir(join(dir, 'cache'), { recursive: true });
  cache = await serveBinaryCache(join(dir, 'cache'));
  host = await prepareHost(dir, 'h1');
  await writeEnrollToken(files.token, org.alice, 'h1');
  if (accountSchema.safeParse(account).success)
    sshd = await startSshd(join(dir, 'sshd'), { authorizedKeysFile: `${files.keysDir}/%u` });
});

test.after(async () => {
  await sshd?.stop();
  await agent?.stop('SIGKILL');
  await relay?.stop();
  await coordinator?.stop();
  await cache?.close();
  if (!process.env.OUTPOST_KEEP_TEST_DIR) removeDirectory(dir);
});

test("add-login grants a person's key and remove-login revokes it: the agent behind the relay rewrites the account's file within one sync, sshd follows, and the signed status says which version it enforces", async () => {
  agent = startPolicyAgent(host, {
    coordinators: [relay.url],
    orgRoot: org.root.publicKey,
    substituter: cache.url,
    cacheKey: cacheKey.publicKey,
    extraArgs: ['--enroll-token', files.token, '--authorized-keys-dir', files.keysDir],
  });
  const personPub = (await fs.readFile(`${files.personKey}.pub`, 'utf8')).trim();
  const personBlob = personPub.split(' ')[1]!;
  await waitFor('the account file of version 1', async () => (await accountFile())?.includes('version 1'), 30_000);
  assert.not.match((await accountFile())!, personBlob);
  assert.is((await fs.stat(join(files.keysDir, account))).mode & 0o777, 0o644);
  if (sshd) assert.is((await sshLogin(files.personKey, sshd.port)).code, 255, 'no login before the grant');

  // Grant.
  const grantedAt = await publishNext(1, [
    'add-login',
    '--name',
    'person',
    '--account',
    account,
    '--ssh-key',
    `${files.personKey}.pub`,
    '--host',
    'h1',
  ]);
  await waitFor('the person key in the file', async () => (await accountFile())?.includes(personBlob), 20_000, 50);
  const grantMs = Date.now() - grantedAt.startedAt;
  const text = (await accountFile())!;
  assert.match(text, `# login person\n${personPub}\n`);
  // OpenSSH's own parser reads the file: both keys, nothing else.
  const listed = await runCommand('ssh-keygen', ['-l', '-f', join(files.keysDir, account)]);
  assert.is(listed.code, 0, listed.stderr);
  assert.is(listed.stdout.trim().split('\n').length, 2, listed.stdout);
  if (sshd) {
    const login = await sshLogin(files.personKey, sshd.port);
    assert.is(login.stdout.trim(), 'logged-in', login.stderr);
  }

  // Revoke.
  const revokedAt = await publishNext(2, ['remove-login', '--name', 'person']);
  await waitFor('the person key gone', async () => !(await accountFile())?.includes(personBlob), 20_000, 50);
  const revokeMs = Date.now() - revokedAt.startedAt;
  assert.match((await accountFile())!, 'version 3');
  if (sshd) assert.is((await sshLogin(files.personKey, sshd.port)).code, 255, 'no login after the revocation');
  if (sshd)
    assert.is((await sshLogin(files.otherKey, sshd.port)).stdout.trim(), 'logged-in', 'the other key still works');

  // The signed status, read through `outpost status` with the pinned root: version 3, one key,
  // and a digest that matches what version 3 gives h1.
  const shown = await waitFor(
    "h1's signed status to name version 3",
    async () => {
      const v = await hostStatus(alice(), 'h1').catch(() => null);
      return v?.access?.policyVersion === 3 ? v : null;
    },
    20_000,
    200,
  );
  assert.ok(shown.statusSignatureValid);
  assert.equal(shown.access?.accounts, { [account]: 1 });
  assert.is(shown.access?.check?.verdict, 'matches');
  const table = await cli(['status', ...targetArgs(alice())]);
  assert.match(table, `h1: policy v3: ${account} 1 key (matches policy v3)`);
  // The audit timeline (the coordinator's log, checked by the auditor) shows the status change.
  const timeline = await cli(['audit', 'timeline', ...targetArgs(alice()), '--host', 'h1']);
  assert.match(timeline, /login keys of policy 2 \(2 keys, digest [0-9a-f]{12}…\)/);
  assert.match(timeline, /login keys of policy 3 \(1 keys, digest [0-9a-f]{12}…\)/);
  const written = logEvents(agent, 'access-written').map((e) => e.policyVersion);
  assert.equal(written, [1, 2, 3], 'one write per version');
  console.log(
    `  through the relay, from the start of 'outpost policy push': grant in the file after ${grantMs} ms (the push command itself took ${grantedAt.pushMs} ms), revocation after ${revokeMs} ms (push ${revokedAt.pushMs} ms)`,
  );
});

test.run();
