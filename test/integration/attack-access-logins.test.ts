import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { generateSigningKey } from '../../shared/crypto/keys.js';
import { verifyPayloadSignature } from '../../shared/crypto/signatures.js';
import { appendPolicy, POLICY_DOC } from '../../shared/documents/fleet.js';
import { statusDocName } from '../../shared/documents/names.js';
import { readCurrentStatus } from '../../shared/documents/status.js';
import { type Policy, policySchema } from '../../shared/schemas/policy.js';
import type { Status } from '../../shared/schemas/report.js';
import { type BinaryCacheServer, serveBinaryCache } from '../harness/cache-server.js';
import { prepareHost, type SimulatedHost } from '../harness/fleet.js';
import { type HostilePeer, startHostilePeer } from '../harness/hostile-peer.js';
import { logEvents, startPolicyAgent } from '../harness/lifecycle-fleet.js';
import { type CacheKeyFiles, makeCacheKey, runCommand } from '../harness/nix-fixtures.js';
import { basePolicy, makeTestOrg, signPolicy } from '../harness/policy-fixtures.js';
import { type DaemonProcess, removeDirectory, temporaryDirectory, waitFor } from '../harness/processes.js';

// Login access from the relay's position (threat-model row "login keys from an old or forged
// policy"): a compromised relay holds every document the agent reads and writes into them at will
// (test/harness/hostile-peer.ts, the real sync protocol). After the org root revoked a person's key
// (v3), the relay serves a forged v4 that gives it back with one of its own, an equivocating v3,
// then forgets v3 and serves only the older versions — and finally meets an agent whose trust
// state was wiped (reinstalled), which walks from the pinned root to v2 only. The account's file
// never gets the revoked key or the relay's key back, and the agent's signed status says what the
// file holds.
const org = makeTestOrg();
const mallory = generateSigningKey('mallory');
const dir = temporaryDirectory('attack-access');
const keysDir = join(dir, 'authorized-keys');
let cacheKey: CacheKeyFiles;
let cache: BinaryCacheServer;
let peer: HostilePeer;
const agents: DaemonProcess[] = [];

async function sshKey(name: string): Promise<string> {
  await runCommand('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', `${name}@laptop`, '-f', join(dir, name)]);
  return (await fs.readFile(join(dir, `${name}.pub`), 'utf8')).trim();
}

function signedStatus(host: SimulatedHost): Status | null {
  const current = readCurrentStatus(peer.doc(statusDocName(host.host)));
  if (!current || current.signature.publicKey !== host.publicKey) return null;
  return verifyPayloadSignature('status', current.status, current.signature) ? current.status : null;
}

const opsFile = (): Promise<string> => fs.readFile(join(keysDir, 'ops'), 'utf8');

test.before(async () => {
  await fs.mkdir(join(dir, 'cache'), { recursive: true });
  cacheKey = await makeCacheKey(join(dir, 'keys'), 'attack-access-cache-1');
  cache = await serveBinaryCache(join(dir, 'cache'));
  peer = await startHostilePeer();
});

test.after(async () => {
  await Promise.all(agents.map((a) => a.stop('SIGKILL')));
  await peer?.close();
  await cache?.close();
  if (!process.env.OUTPOST_KEEP_TEST_DIR) removeDirectory(dir);
});

test('a relay cannot give back a revoked login key: forged, equivocating and older policies change nothing, not even for an agent that lost its trust state', async () => {
  const other = await sshKey('other');
  const person = await sshKey('person');
  const relayOwn = await sshKey('relay');
  const personBlob = person.split(' ')[1]!;
  const relayBlob = relayOwn.split(' ')[1]!;
  const login = (name: string, key: string) => ({ name, account: 'ops', sshKeys: [key], hosts: ['h1'] });
  const version = (base: Policy, n: number, logins: unknown[]): Policy =>
    policySchema.parse({ ...base, version: n, issuedAt: new Date().toISOString(), logins });
  const v1 = basePolicy(org, { logins: [login('other', other)] });
  const v2 = version(v1, 2, [login('other', other), login('person', person)]);
  const v3 = version(v1, 3, [login('other', other)]);
  for (const v of [v1, v2, v3]) appendPolicy(peer.doc(POLICY_DOC), signPolicy(v, org.root));

  const host = await prepareHost(dir, 'h1');
  const start = (): DaemonProcess => {
    const agent = startPolicyAgent(host, {
      coordinators: [peer.url],
      orgRoot: org.root.publicKey,
      substituter: cache.url,
      cacheKey: cacheKey.publicKey,
      extraArgs: ['--authorized-keys-dir', keysDir],
    });
    agents.push(agent);
    return agent;
  };
  const agent = start();
  await waitFor('the file of version 3', async () => (await opsFile().catch(() => '')).includes('version 3'), 30_000);
  const revoked = await opsFile();
  assert.not.match(revoked, personBlob);
  const unchanged = async (what: string): Promise<void> => {
    // Time enough for an agent without the defence to walk and write (it takes well under 1 s here).
    await new Promise((resolve) => setTimeout(resolve, 3000));
    assert.is(await opsFile(), revoked, `${what}: the file is as version 3 left it`);
    assert.is(signedStatus(host)?.access?.policyVersion, 3, `${what}: the signed status still names version 3`);
  };

  // A forged v4 (the relay's own signature, and an admin's: neither is the root) that gives the
  // person's key back and adds the relay's; an equivocating v3 signed the same way.
  const v4 = version(v3, 4, [login('other', other), login('person', person), login('relay', relayOwn)]);
  appendPolicy(peer.doc(POLICY_DOC), signPolicy(v4, mallory, org.alice));
  const v3Prime = version(v1, 3, [login('other', other), login('relay', relayOwn)]);
  appendPolicy(peer.doc(POLICY_DOC), signPolicy(v3Prime, mallory));
  // The agent has seen them (it refused v4) before the quiet time starts: a loaded machine may
  // take longer than that quiet time to deliver them.
  await waitFor(
    'the agent to refuse the forged v4',
    () => logEvents(agent, 'policy-refused').some((e) => e.version === 4),
    30_000,
    100,
  );
  await unchanged('forged v4 and v3');
  assert.ok(logEvents(agent, 'policy-refused').some((e) => e.version === 4));
  assert.not.match(await opsFile(), relayBlob);

  // The relay forgets v3 and everything after it, and serves the older versions only (it keeps
  // none of what the agent sends back).
  const connects = peer.connectsTo(POLICY_DOC);
  peer.acceptWrites(POLICY_DOC, false);
  const older = peer.reset(POLICY_DOC);
  appendPolicy(older, signPolicy(v1, org.root));
  appendPolicy(older, signPolicy(v2, org.root));
  await waitFor('the agent to sync the policy document afresh', () => peer.connectsTo(POLICY_DOC) > connects, 15_000);
  await unchanged('only v1 and v2 served');

  // Reinstalled: the agent's state directory is gone (its chain with it); the files and sshd's
  // config stay. It walks from the pinned root through what the relay serves: v2, which still
  // grants the person's key. The files were written from v3, so they stay.
  await agent.stop('SIGKILL');
  await fs.rm(host.stateDir, { recursive: true, force: true });
  const reinstalled = start();
  const status = await waitFor(
    'the reinstalled agent to walk to v2 and report the login keys it enforces',
    () => {
      const s = signedStatus(host);
      return s?.trust?.policyVersion === 2 && s.access ? s : null;
    },
    30_000,
    200,
  );
  assert.is(await opsFile(), revoked, 'the revoked key is not back');
  assert.is(status.access?.policyVersion, 3, 'the status says the files hold version 3');
  assert.match(String(status.access?.error), /holds the logins of policy version 3, newer than version 2/);
  assert.ok(logEvents(reinstalled, 'access-write-failed').length > 0);
});

test.run();
