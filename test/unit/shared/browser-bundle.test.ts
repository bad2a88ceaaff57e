import { randomBytes, webcrypto } from 'node:crypto';
import { existsSync, promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createContext, runInContext } from 'node:vm';
import { build } from 'esbuild';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { SignedIntent } from '../../../shared/schemas/intent.js';
import { signIntent } from '../../../shared/trust/sign-intent.js';
import { verifyIntent } from '../../../shared/trust/verify-intent.js';
import { buildTestClosure, makeCacheKey, publishToCache } from '../../harness/nix-fixtures.js';
import { basePolicy, makeTestOrg, signPolicy } from '../../harness/policy-fixtures.js';

// shared/ bundled for platform browser (esbuild fails on any Node built-in) and run in a context
// that has Web APIs only: no process, Buffer, require or node:*. Signing, intent and policy
// verification and narinfo verification must work there, and agree with the Node build.

function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) dir = dirname(dir);
  return dir;
}

type Core = typeof import('../../browser/core-entry.js');

async function loadBrowserCore(): Promise<Core> {
  const result = await build({
    entryPoints: [join(repoRoot(), 'test', 'browser', 'core-entry.ts')],
    bundle: true,
    platform: 'browser',
    format: 'iife',
    globalName: 'outpostCore',
    write: false,
    logLevel: 'silent',
  });
  assert.equal(result.errors, []);
  const code = result.outputFiles[0]!.text;
  const encoder = new TextEncoder();
  const decoder = new TextDecoder();
  const context = createContext({
    encodeUtf8: (text: string) => encoder.encode(text),
    decodeUtf8: (bytes: Uint8Array) => decoder.decode(bytes),
    atob,
    btoa,
    crypto: webcrypto,
    console,
  });
  (context as { self: unknown }).self = context;
  // A browser's TextEncoder returns its own realm's Uint8Array (tweetnacl checks instanceof), so
  // the context gets encoders that copy into its realm rather than Node's objects.
  runInContext(
    `globalThis.TextEncoder = class { encode(text) { return new Uint8Array(encodeUtf8(text)); } };
     globalThis.TextDecoder = class { decode(bytes) { return decodeUtf8(bytes); } };`,
    context,
  );
  assert.is(runInContext('typeof process + typeof Buffer + typeof require', context), 'undefinedundefinedundefined');
  runInContext(code, context);
  return (context as { outpostCore: Core }).outpostCore;
}

// Values cross between the two realms as JSON, as they do between a browser and the network.
const viaJson = <T>(value: T): T => JSON.parse(JSON.stringify(value)) as T;

let core: Core;
test.before(async () => {
  core = await loadBrowserCore();
});

test('signatures made and checked in the browser bundle', () => {
  assert.equal(viaJson(core.signAndVerify('hello')), { valid: true, tamperedValid: false });
});

test('an intent signed by Node verifies in the browser under a signed policy, and one signed in the browser verifies in Node', () => {
  const org = makeTestOrg();
  const policy = signPolicy(basePolicy(org), org.root);
  const now = Date.now();
  const intent = {
    kind: 'intent' as const,
    host: 'h1',
    closure: '/nix/store/00000000000000000000000000000000-nixos-system-h1',
    generation: 7,
    action: 'switch' as const,
    issuedAt: new Date(now).toISOString(),
    expiresAt: new Date(now + 3_600_000).toISOString(),
    issuer: 'alice',
    policyVersion: 1,
  };
  const fromNode = signIntent(intent, org.alice);
  const underPolicy = viaJson(
    core.verifyIntentUnderSignedPolicies(viaJson(fromNode), 'h1', [org.root.publicKey], [viaJson(policy)], now),
  );
  assert.equal(underPolicy, { chainVersions: [1], verdict: { ok: true, counted: fromNode.signatures } });
  const byCarol = signIntent(intent, org.carol);
  const refused = viaJson(
    core.verifyIntentUnderSignedPolicies(viaJson(byCarol), 'h1', [org.root.publicKey], [viaJson(policy)], now),
  );
  assert.is(refused.verdict.ok, false, 'read-only carol cannot deploy, in the browser too');

  const browserKey = core.newKey('browser-admin');
  const fromBrowser = viaJson(core.signIntentInBrowser(viaJson(intent), browserKey)) as SignedIntent;
  assert.equal(verifyIntent(fromBrowser, { host: 'h1', trustedAdminKeys: new Set([browserKey.publicKey]), now }), {
    ok: true,
    counted: fromBrowser.signatures,
  });
  assert.equal(viaJson(core.verifyIntentWithAdminKeys(fromBrowser, 'h2', [browserKey.publicKey], now)).ok, false);
  assert.is(core.checkPolicySchema(viaJson(policy.policy)), true);
});

test('a narinfo signed by real Nix verifies in the browser bundle; a changed one does not', async () => {
  const root = await fs.mkdtemp(join(tmpdir(), 'outpost-browser-bundle-'));
  try {
    const key = await makeCacheKey(join(root, 'keys'), 'outpost-browser-cache-1');
    const system = await buildTestClosure({
      name: 'outpost-browser-bundle-system',
      extraPaths: 1,
      payloadBytes: 64,
      uniqueness: randomBytes(8).toString('hex'),
    });
    const cacheDir = join(root, 'cache');
    await publishToCache(system, cacheDir, key.secretKeyFile);
    const hashPart = system.slice('/nix/store/'.length, '/nix/store/'.length + 32);
    const text = await fs.readFile(join(cacheDir, `${hashPart}.narinfo`), 'utf8');
    assert.equal(viaJson(core.verifyNarinfoText(text, key.publicKey)), {
      ok: true,
      keyName: 'outpost-browser-cache-1',
    });
    const changed = text.replace(/^NarSize: (\d+)$/m, (_, n: string) => `NarSize: ${Number(n) + 1}`);
    assert.equal(viaJson(core.verifyNarinfoText(changed, key.publicKey)).ok, false);
  } finally {
    await fs.rm(root, { recursive: true, force: true });
  }
});

test.run();
