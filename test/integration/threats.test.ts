import { promises as fs } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import * as Y from 'yjs';
import { checkNixSignatureConfig } from '../../agent/nix/nix-config.js';
import { realiseClosure } from '../../agent/pipeline/fetch.js';
import { startCoordinator } from '../../coordinator/server.js';
import { generateSigningKey } from '../../shared/crypto/keys.js';
import { signPayload, verifyPayloadSignature } from '../../shared/crypto/signatures.js';
import { intentsArray, readIntentEntries } from '../../shared/documents/desired.js';
import { fetchNarinfo, parseCacheKey, parseNarinfo, verifyNarinfo } from '../../shared/nix/narinfo.js';
import { openFleetTrustOnNode as openFleetTrust, trustFile } from '../../shared/node/fleet-trust.js';
import { createMemoryLogger } from '../../shared/node/log.js';
import type { Intent } from '../../shared/schemas/intent.js';
import { policySchema } from '../../shared/schemas/policy.js';
import type { Result } from '../../shared/schemas/report.js';
import { acceptTimestamp } from '../../shared/trust/fleet-trust.js';
import { walkPolicyChain } from '../../shared/trust/policy-chain.js';
import { verifyIntentUnderPolicy } from '../../shared/trust/policy-intent.js';
import { findResultAnomalies } from '../../shared/trust/result-replays.js';
import { signIntent } from '../../shared/trust/sign-intent.js';
import { intentDigest, type SelectionContext, selectIntent, verifyIntent } from '../../shared/trust/verify-intent.js';
import { serveBinaryCache } from '../harness/cache-server.js';
import { buildTestClosure, makeCacheKey, publishToCache, runCommand } from '../harness/nix-fixtures.js';
import { basePolicy, makeTestOrg, pushPolicy, signPolicy } from '../harness/policy-fixtures.js';
import { removeDirectory, temporaryDirectory, waitFor } from '../harness/processes.js';

// One test per item of the threat list in ../shared/reference/update-security.md, named after it.
// docs/threat-model.md maps each to Outpost's defence. Each asserts the attack's outcome, so
// removing the defence makes it fail.
const org = makeTestOrg();
const v1 = basePolicy(org);
const now = Date.now();

async function rejects(run: () => Promise<unknown>, pattern: RegExp): Promise<void> {
  try {
    await run();
  } catch (error) {
    assert.match((error as Error).message, pattern);
    return;
  }
  assert.unreachable(`expected a rejection matching ${pattern}`);
}
const closure = (c: string): string => `/nix/store/${c.repeat(32)}-nixos-system`;

function intent(overrides: Partial<Intent> = {}): Intent {
  return {
    kind: 'intent',
    host: 'h1',
    generation: 2,
    closure: closure('a'),
    action: 'switch',
    issuedAt: new Date(now - 1000).toISOString(),
    expiresAt: new Date(now + 3_600_000).toISOString(),
    issuer: 'test',
    policyVersion: 1,
    ...overrides,
  };
}

const policyContext = (floor = 1): SelectionContext => ({
  verify: (signed) => verifyIntentUnderPolicy(signed, { host: 'h1', chain: [v1], now }),
  floor: { epoch: 0, generation: floor },
  appliedDigest: null,
});

test('threat 1: unsigned, capability-less, below-threshold or double-counted intents are rejected', () => {
  const doc = new Y.Doc();
  intentsArray(doc).push([{ intent: intent(), signatures: [] }]);
  assert.is(readIntentEntries(doc).entries.length, 0, 'an unsigned intent never reaches verification');
  assert.is(readIntentEntries(doc).malformed.length, 1);
  const noCapability = selectIntent([signIntent(intent(), org.carol)], policyContext());
  assert.is(noCapability.chosen, null);
  assert.is(noCapability.refused[0]?.code, 'no-capability');
  const prod = signIntent(intent({ host: 'prod-1' }), org.alice);
  const twice = { ...prod, signatures: [prod.signatures[0]!, prod.signatures[0]!] };
  const verdict = verifyIntentUnderPolicy(twice, { host: 'prod-1', chain: [v1], now });
  assert.is(verdict.ok, false);
  if (!verdict.ok) assert.is(verdict.code, 'below-threshold');
});

test('threat 2: a replayed older intent is rejected as rollback; the same generation is a no-op', () => {
  const applied = signIntent(intent({ generation: 2 }), org.alice);
  const older = signIntent(intent({ generation: 1, closure: closure('b') }), org.alice);
  const selection = selectIntent([older, applied], { ...policyContext(2), appliedDigest: intentDigest(applied) });
  assert.is(selection.chosen, null);
  assert.equal(
    selection.refused.map((r) => [r.code, r.candidate.signed.intent.generation]),
    [['rollback', 1]],
  );
});

test('threat 3: withheld updates: without fresh signed timestamps the reader reports a freeze; expired intents are never installed', async () => {
  const dir = temporaryDirectory('freeze');
  const memory = createMemoryLogger('coordinator');
  const coordinator = await startCoordinator({
    dataDir: join(dir, 'db'),
    listen: '127.0.0.1',
    port: 0,
    maxPayload: 1 << 20,
    idleUnloadMs: 60_000,
    logger: memory.logger,
    orgRootKeys: [org.root.publicKey],
    timestampKey: org.timestamp,
    timestampIntervalMs: 100,
  });
  try {
    assert.is((await pushPolicy(coordinator.url, signPolicy(v1, org.root))).status, 200);
    const trust = await openFleetTrust({
      endpoints: [coordinator.url],
      identity: org.carol,
      orgRootKeys: [org.root.publicKey],
      stateDir: join(dir, 'reader'),
      freezeAfterMs: 800,
      logger: memory.logger,
    });
    await fs.mkdir(join(dir, 'reader'), { recursive: true });
    await waitFor(
      'fresh timestamps',
      () => trust.freshness().lastTimestampAt !== null && !trust.freshness().frozen,
      5000,
    );
    await coordinator.close(); // the way to fresh data is cut
    await waitFor('a freeze', () => trust.freshness().frozen, 5000);
    assert.match(trust.freshness().reason, /no fresh signed timestamp/);
    await trust.close();
  } finally {
    removeDirectory(dir);
  }
  const expired = verifyIntentUnderPolicy(
    signIntent(intent({ expiresAt: new Date(now - 1).toISOString() }), org.alice),
    { host: 'h1', chain: [v1], now },
  );
  assert.is(expired.ok, false);
  const forgedTimestamp = { kind: 'timestamp' as const, at: new Date().toISOString(), seq: 99, policyVersion: 1 };
  assert.not.ok(
    acceptTimestamp(
      { timestamp: forgedTimestamp, signature: signPayload('timestamp', forgedTimestamp, org.alice) },
      v1,
      null,
    ),
    'only timestamp keys count',
  );
});

test('threat 4: a compromised key that pushed a huge generation is recovered from by revoking it and raising the policy epoch', () => {
  const runaway = signIntent(intent({ generation: Number.MAX_SAFE_INTEGER }), org.alice);
  const dave = generateSigningKey('dave');
  const v2 = policySchema.parse({
    ...v1,
    version: 2,
    epoch: 1,
    revokedKeys: [org.alice.publicKey],
    admins: [...v1.admins.filter((a) => a.name !== 'alice'), { name: 'dave', keys: [dave.publicKey], roles: ['ops'] }],
  });
  const chain = walkPolicyChain([v1], new Set([org.root.publicKey]), [signPolicy(v2, org.root)]).chain;
  assert.equal(
    chain.map((p) => p.version),
    [1, 2],
  );
  const context: SelectionContext = {
    verify: (signed) => verifyIntentUnderPolicy(signed, { host: 'h1', chain, now }),
    floor: { epoch: 0, generation: Number.MAX_SAFE_INTEGER },
    appliedDigest: intentDigest(runaway),
    epochOf: (signed) => chain.find((p) => p.version === signed.intent.policyVersion)?.epoch ?? 0,
  };
  const recovery = signIntent(intent({ generation: 1, policyVersion: 2, closure: closure('c') }), dave);
  const selection = selectIntent([runaway, recovery], context);
  assert.is(selection.chosen?.signed, recovery, 'an epoch-1 intent ranks above the runaway generation');
  const again = signIntent(intent({ generation: Number.MAX_SAFE_INTEGER - 1, closure: closure('d') }), org.alice);
  assert.is(selectIntent([again], context).refused[0]?.code, 'unknown-signer', 'the revoked key cannot push again');
  const lowered = walkPolicyChain(chain, new Set([org.root.publicKey]), [
    signPolicy(v2, org.root),
    signPolicy(policySchema.parse({ ...v2, version: 3, epoch: 0 }), org.root),
  ]);
  assert.equal(
    lowered.chain.map((p) => p.version),
    [1, 2],
    'epochs never go down',
  );
});

test('threat 5: an intent for host B delivered to host A is rejected by the host binding', () => {
  const verdict = verifyIntentUnderPolicy(signIntent(intent({ host: 'h2' }), org.alice), {
    host: 'h1',
    chain: [v1],
    now,
  });
  assert.is(verdict.ok, false);
  if (!verdict.ok) assert.is(verdict.code, 'wrong-host');
});

let nixDir = '';
let cacheDir = '';
let cacheKey: Awaited<ReturnType<typeof makeCacheKey>>;
let closures: string[] = [];
test.before(async () => {
  nixDir = temporaryDirectory('threat-nix');
  cacheDir = join(nixDir, 'cache');
  cacheKey = await makeCacheKey(join(nixDir, 'keys'), 'threat-cache-1');
  const stamp = `${process.pid}-${Date.now()}`;
  closures = [
    await buildTestClosure({ name: 'threat-a', extraPaths: 1, uniqueness: `${stamp}-a` }),
    await buildTestClosure({ name: 'threat-b', extraPaths: 1, uniqueness: `${stamp}-b` }),
  ];
  for (const c of closures) await publishToCache(c, cacheDir, cacheKey.secretKeyFile);
});
test.after(() => removeDirectory(nixDir));

const narinfoPath = (storePath: string): string =>
  join(cacheDir, `${storePath.slice('/nix/store/'.length, '/nix/store/'.length + 32)}.narinfo`);

test('threat 6: a narinfo signed by an unknown key, or with altered References, is not accepted', async () => {
  const text = await fs.readFile(narinfoPath(closures[0]!), 'utf8');
  assert.ok(verifyNarinfo(parseNarinfo(text, 'a'), [cacheKey.publicKey]).ok);
  const unknown = verifyNarinfo(parseNarinfo(text, 'a'), [
    `other-1:${cacheKey.publicKey.split(':')[1]!.replace(/^./, (c) => (c === 'A' ? 'B' : 'A'))}`,
  ]);
  assert.is(unknown.ok, false);
  const altered = text.replace(/^References: .*$/m, `References: ${closures[1]!.slice('/nix/store/'.length)}`);
  const verdict = verifyNarinfo(parseNarinfo(altered, 'a'), [cacheKey.publicKey]);
  assert.is(verdict.ok, false);
  if (!verdict.ok) assert.match(verdict.reason, /does not verify/);
});

test("threat 7: a valid narinfo with swapped NAR bytes fails Nix's hash check; nothing is registered", async () => {
  const tampered = join(nixDir, 'tampered-cache');
  await fs.cp(cacheDir, tampered, { recursive: true });
  const narOf = async (storePath: string): Promise<string> =>
    join(tampered, /^URL: (.*)$/m.exec(await fs.readFile(narinfoPath(storePath), 'utf8'))![1]!);
  await fs.copyFile(await narOf(closures[1]!), await narOf(closures[0]!));
  const server = await serveBinaryCache(tampered);
  const root = join(nixDir, 'device');
  try {
    const fetched = await realiseClosure(closures[0]!, {
      store: root,
      substituters: [server.url],
      trustedCacheKeys: [cacheKey.publicKey],
      timeoutMs: 120_000,
    });
    assert.is(fetched.ok, false);
    if (!fetched.ok) assert.match(fetched.outputTail, /hash mismatch|NAR hash|size mismatch/i);
    // Nix may leave the unpacked bytes behind, but never registers them as a valid path.
    const validity = await runCommand('nix-store', ['--store', root, '--check-validity', closures[0]!]);
    assert.is.not(validity.code, 0, 'the tampered path is not registered as valid');
    assert.match(validity.stderr, /is not valid/);
  } finally {
    await server.close();
  }
});

test('threat 8: an old closure, still validly signed by the cache, is refused by the monotonic generation', () => {
  const old = signIntent(intent({ generation: 1, closure: closures[0] ?? closure('d') }), org.alice);
  const selection = selectIntent([old], policyContext(5));
  assert.is(selection.refused[0]?.code, 'rollback');
});

test('threat 9: a Nix with require-sigs = false or a trusted substituter makes the agent refuse to start', async () => {
  const previous = process.env.NIX_CONFIG;
  process.env.NIX_CONFIG = 'require-sigs = false';
  try {
    await rejects(() => checkNixSignatureConfig(['http://127.0.0.1:1']), /require-sigs = false/);
  } finally {
    if (previous === undefined) delete process.env.NIX_CONFIG;
    else process.env.NIX_CONFIG = previous;
  }
  await rejects(() => checkNixSignatureConfig(['http://127.0.0.1:1?trusted=1']), /marked trusted/);
  await checkNixSignatureConfig(['http://127.0.0.1:1']);
});

test('threat 10: malformed signatures, wrong lengths and duplicate key names give clean errors, never crashes', () => {
  const signed = signIntent(intent(), org.alice);
  for (const signature of ['', 'AAAA', 'A'.repeat(200), '!'.repeat(88)]) {
    assert.not.ok(verifyPayloadSignature('intent', signed.intent, { publicKey: org.alice.publicKey, signature }));
  }
  assert.is(
    verifyIntent(
      { ...signed, signatures: [{ publicKey: org.alice.publicKey, signature: `${'B'.repeat(86)}==` }] },
      { host: 'h1', trustedAdminKeys: new Set([org.alice.publicKey]), now },
    ).ok,
    false,
  );
  assert.throws(() => parseCacheKey('name:not-base64!'));
  const text = `StorePath: ${closure('a')}\nURL: nar/x.nar\nCompression: none\nNarHash: sha256:${'0'.repeat(52)}\nNarSize: 1\nReferences: \nSig: broken\n`;
  const verdict = verifyNarinfo(parseNarinfo(text, 'threat-10'), [
    cacheKey.publicKey,
    cacheKey.publicKey.replace(/.$/, (c) => (c === '=' ? '=' : c)),
  ]);
  assert.is(verdict.ok, false);
  const duplicateNames = verifyNarinfo(parseNarinfo(text, 'threat-10'), [
    cacheKey.publicKey,
    `${cacheKey.publicKey.split(':')[0]}:${generateSigningKey('x').publicKey}`,
  ]);
  assert.is(duplicateNames.ok, false);
  assert.not.ok(
    policySchema.safeParse({ ...v1, admins: [...v1.admins, { name: 'copy', keys: [org.alice.publicKey], roles: [] }] })
      .success,
    'one key for two admins is refused',
  );
});

test('threat 11: an endless narinfo is cut at its byte cap (messages above --max-payload: see coordinator-protocol)', async () => {
  const server = createServer((_req, res) => {
    res.writeHead(200);
    const chunk = Buffer.alloc(64 * 1024, 'A');
    const pump = (): void => {
      while (res.write(chunk));
      res.once('drain', pump);
    };
    pump();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    await rejects(
      () =>
        fetchNarinfo(`http://127.0.0.1:${(server.address() as AddressInfo).port}`, closure('a'), {
          maxBytes: 100_000,
          timeoutMs: 10_000,
        }),
      /100000|bytes|cap|large/i,
    );
  } finally {
    server.closeAllConnections();
    server.close();
  }
});

test('threat 12: a slow-drip narinfo is aborted by the overall deadline (closure downloads: see agent lifecycle tests)', async () => {
  const server = createServer((_req, res) => {
    res.writeHead(200);
    const drip = setInterval(() => res.write('S'), 100);
    res.on('close', () => clearInterval(drip));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const started = Date.now();
  try {
    await rejects(
      () =>
        fetchNarinfo(`http://127.0.0.1:${(server.address() as AddressInfo).port}`, closure('a'), { timeoutMs: 700 }),
      /./,
    );
    assert.ok(Date.now() - started < 5000, 'the deadline covers the whole body, not each byte');
  } finally {
    server.closeAllConnections();
    server.close();
  }
});

test("threat 13: the reader's clock never moves backwards across restarts; a clock in the future only blocks", async () => {
  const dir = temporaryDirectory('clock');
  try {
    const future = Date.now() + 86_400_000;
    await fs.writeFile(
      trustFile(dir),
      JSON.stringify({ version: 1, chain: [v1], timeFloor: future, lastTimestamp: null }),
    );
    const trust = await openFleetTrust({
      endpoints: ['ws://127.0.0.1:9'],
      identity: null,
      orgRootKeys: [org.root.publicKey],
      stateDir: dir,
      freezeAfterMs: 1000,
      logger: createMemoryLogger('x').logger,
    });
    assert.ok(trust.now() >= future, 'time restored from the persisted floor, not the wall clock');
    const verdict = trust.verifier('h1')(signIntent(intent(), org.alice));
    assert.is(
      verdict.ok,
      false,
      'with the clock ahead, a fresh intent looks expired: denial of service, never an install',
    );
    await trust.close();
  } finally {
    removeDirectory(dir);
  }
});

test('threat 15: equivocation (two intents, one generation) is rejected deterministically, whichever arrives first', () => {
  const a = signIntent(intent({ generation: 4, closure: closure('g') }), org.alice);
  const b = signIntent(intent({ generation: 4, closure: closure('h') }), org.alice);
  for (const order of [
    [a, b],
    [b, a],
  ]) {
    const selection = selectIntent(order, policyContext());
    assert.is(selection.chosen, null);
    assert.equal(
      selection.refused.map((r) => r.code),
      ['equivocation', 'equivocation'],
    );
  }
});

test('threat 16: a replayed result is detected by its sequence number', () => {
  const host = generateSigningKey('h1');
  const result = (seq: number): Result => ({
    kind: 'result',
    host: 'h1',
    seq,
    at: new Date().toISOString(),
    outcome: 'applied',
    generation: seq,
    closure: closure('a'),
    action: 'switch',
    intentDigest: 'a'.repeat(64),
    reason: '',
    outputTail: '',
  });
  const signed = [result(1), result(2)].map((r) => ({ result: r, signature: signPayload('result', r, host) }));
  assert.equal(findResultAnomalies(signed, host.publicKey), []);
  const replayed = findResultAnomalies([...signed, signed[0]!], host.publicKey);
  assert.equal(
    replayed.map((a) => a.problem),
    ['replayed'],
  );
  const third = result(3);
  const forged = { result: third, signature: signPayload('result', third, generateSigningKey('mallory')) };
  assert.equal(
    findResultAnomalies([forged], host.publicKey).map((a) => a.problem),
    ['foreign-key'],
  );
});

test('threat 17: fewer than the threshold of compromised keys cannot install; a long-offline reader walks N → N+k', () => {
  const stolen = signIntent(intent({ host: 'prod-1' }), org.bob);
  assert.is(verifyIntentUnderPolicy(stolen, { host: 'prod-1', chain: [v1], now }).ok, false);
  const root2 = generateSigningKey('root-2');
  const v2 = { ...v1, version: 2 };
  const v3 = { ...v1, version: 3, root: { keys: [root2.publicKey], threshold: 1 } };
  const v4 = { ...v3, version: 4, admins: v1.admins.filter((a) => a.name !== 'bob') };
  const walk = walkPolicyChain([v1], new Set([org.root.publicKey]), [
    signPolicy(v4, root2),
    signPolicy(v2, org.root),
    signPolicy(v3, org.root, root2),
  ]);
  assert.equal(
    walk.chain.map((p) => p.version),
    [1, 2, 3, 4],
  );
  assert.is(
    walk.chain.at(-1)!.admins.some((a) => a.name === 'bob'),
    false,
    'ends trusting the right keys',
  );
});

test.run();
