import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { signEnrollment } from '../../admin/enroll-entries.js';
import { publishStatus } from '../../agent/pipeline/report.js';
import { generateSigningKey, keyFileFromSigningKey } from '../../shared/crypto/keys.js';
import { signPayload } from '../../shared/crypto/signatures.js';
import { readIntentEntries } from '../../shared/documents/desired.js';
import { desiredDocName, statusDocName } from '../../shared/documents/names.js';
import { readCurrentStatus } from '../../shared/documents/status.js';
import { connectDocument, type DocumentConnection, waitForSync } from '../../shared/node/connect.js';
import { writeKeyFile } from '../../shared/node/key-file.js';
import type { SignedIntent } from '../../shared/schemas/intent.js';
import type { Policy } from '../../shared/schemas/policy.js';
import { verifyIntentUnderPolicy } from '../../shared/trust/policy-intent.js';
import { startRelayProcess } from '../bench/relay-fixtures.js';
import {
  collectPageErrors,
  importKey,
  launchChromium,
  newLaptopContext,
  type PageLink,
  pageUrl,
  screenshot,
  startPageLink,
  unlock,
} from '../harness/browser.js';
import { type BinaryCacheServer, serveBinaryCache } from '../harness/cache-server.js';
import { prepareHost, profileTarget, type SimulatedHost, startAgentProcess } from '../harness/fleet.js';
import { TEST_AGENT_FLAGS } from '../harness/lifecycle-fleet.js';
import { makeCacheKey, publishToCache } from '../harness/nix-fixtures.js';
import { basePolicy, makeTestOrg, postJson, pushPolicy, signPolicy } from '../harness/policy-fixtures.js';
import {
  type DaemonProcess,
  removeDirectory,
  runCli,
  startCoordinatorProcess,
  temporaryDirectory,
  waitFor,
} from '../harness/processes.js';
import { buildSystemClosure } from '../harness/system-closures.js';

// Issue 14: the web editor in real Chromium against a real coordinator (with a pinned org root,
// a policy and signed timestamps) and a real agent applying real Nix closures. The page imports
// alice's key file, signs intents in the browser that the agent applies exactly like ones from
// `outpost deploy`, shows a status forged by a hostile writer (a relay of the policy writing h2's
// status document over the real protocol) as untrusted, keeps a rollback signed offline across a
// reload and delivers it when the link returns, unlocks nothing with a wrong passphrase, and
// refuses carol (read only) before signing.
const org = makeTestOrg();
const relayKey = generateSigningKey('relay-r1');
const forger = generateSigningKey('forger');
const h2Key = generateSigningKey('h2');
const PASSPHRASE = 'correct horse battery staple';
const dir = temporaryDirectory('web-editor');
let coordinator: DaemonProcess & { url: string; port: number };
// The page's only way to the coordinator; offline cuts it (harness/browser.ts, startPageLink).
let link: PageLink;
let cache: BinaryCacheServer;
let host: SimulatedHost;
let agent: DaemonProcess;
let policy: Policy;
const closures: string[] = [];
let browser: Browser;
let context: BrowserContext;
let page: Page;
let pageErrors: string[] = [];
const open: DocumentConnection[] = [];

// h1 runs one application service (docs/apps.md), seen through a stand-in docker.
async function standInApps(): Promise<string[]> {
  const docker = join(dir, 'docker');
  const container = { Service: 'web', State: 'running', Health: 'healthy', ExitCode: 0 };
  await fs.writeFile(docker, `#!/bin/sh\necho '${JSON.stringify(container)}'\n`, { mode: 0o755 });
  const manifest = join(dir, 'apps.json');
  await fs.writeFile(manifest, JSON.stringify({ version: 1, apps: [{ name: 'clinic', rev: 'a'.repeat(40) }] }));
  return ['--apps-manifest', manifest, '--apps-interval', '1', '--docker-command', docker];
}

function row(hostId: string) {
  return page.getByTestId(`row-${hostId}`);
}

async function coordinatorIntents(hostId: string): Promise<SignedIntent[]> {
  const reader = connectDocument(coordinator.url, desiredDocName(hostId), { identity: org.alice });
  try {
    await waitForSync(reader, 10_000);
    return readIntentEntries(reader.doc).entries.map((e) => e.signed);
  } finally {
    reader.close();
  }
}

async function openPage(): Promise<void> {
  page = await context.newPage();
  pageErrors = collectPageErrors(page);
  await page.goto(link.pageUrl);
}

// A route inside the page (hash navigation: the unlocked session stays).
async function go(route: string): Promise<void> {
  await page.evaluate((hash) => {
    location.hash = hash;
  }, route);
}

function failWith(message: string): string {
  return `${message}\npage errors:\n${pageErrors.join('\n') || '(none)'}`;
}

test.before(async () => {
  const started = Date.now();
  await writeKeyFile(join(dir, 'timestamp.key'), org.timestamp);
  await writeKeyFile(join(dir, 'alice.key'), org.alice);
  coordinator = await startCoordinatorProcess(join(dir, 'coordinator'), join(dir, 'coordinator.log'), 0, [
    '--org-root',
    org.root.publicKey,
    '--timestamp-key',
    join(dir, 'timestamp.key'),
    '--timestamp-interval',
    '1',
  ]);
  host = await prepareHost(dir, 'h1');
  const h1Key = JSON.parse(await fs.readFile(host.keyFile, 'utf8')) as { publicKey: string };
  policy = basePolicy(org, { relays: [{ name: 'r1', key: relayKey.publicKey, hosts: ['h2'], groups: [] }] });
  const pushed = await pushPolicy(coordinator.url, signPolicy(policy, org.root));
  assert.is(pushed.status, 200, pushed.body.error);
  for (const [hostId, hostKey] of [
    ['h1', h1Key.publicKey],
    ['h2', h2Key.publicKey],
  ] as const) {
    const approved = await postJson(
      coordinator.url,
      '/api/enroll/approve',
      signEnrollment(org.alice, { host: hostId, hostKey, policyVersion: 1 }, new Date()),
    );
    assert.is(approved.status, 200, approved.body.error);
  }
  const cacheKey = await makeCacheKey(join(dir, 'keys'), 'web-cache-1');
  for (const name of ['one', 'two']) {
    const closure = await buildSystemClosure({ name: `nixos-system-web-${name}` });
    await publishToCache(closure, join(dir, 'cache'), cacheKey.secretKeyFile);
    closures.push(closure);
  }
  cache = await serveBinaryCache(join(dir, 'cache'));
  agent = startAgentProcess(host, {
    coordinators: [coordinator.url],
    adminKeys: [],
    substituters: [cache.url],
    trustedCacheKeys: [cacheKey.publicKey],
    extraArgs: [
      ...TEST_AGENT_FLAGS,
      '--org-root',
      org.root.publicKey,
      '--backoff-base',
      '0.2',
      '--backoff-max',
      '1',
      ...(await standInApps()),
    ],
  });
  // h2 is enrolled but runs no agent: its status document is written only by the hostile relay.
  const relay = connectDocument(coordinator.url, statusDocName('h2'), { identity: relayKey });
  open.push(relay);
  await waitForSync(relay, 10_000);
  link = await startPageLink(coordinator.port);
  browser = await launchChromium();
  context = await newLaptopContext(browser);
  console.log(`setup took ${((Date.now() - started) / 1000).toFixed(1)} s`);
});

test.after(async () => {
  for (const c of open) c.close();
  await browser?.close();
  await link?.close();
  await agent?.stop('SIGKILL');
  await coordinator?.stop();
  await cache?.close();
  if (!process.env.OUTPOST_KEEP_TEST_DIR) removeDirectory(dir);
});

test('import a key; a wrong passphrase unlocks nothing; the right one opens the live fleet', async () => {
  await openPage();
  await page.getByTestId('setup').waitFor();
  await screenshot(page, 'web-setup');
  await importKey(page, JSON.stringify(keyFileFromSigningKey(org.alice)), PASSPHRASE, org.root.publicKey);
  // The key is stored encrypted: nothing of the secret is in IndexedDB in the clear.
  const stored = await page.evaluate(
    () =>
      new Promise<string>((resolve, reject) => {
        const req = indexedDB.open('outpost-editor');
        req.onsuccess = () => {
          const all = req.result.transaction('keys').objectStore('keys').getAll();
          all.onsuccess = () => resolve(JSON.stringify(all.result));
          all.onerror = () => reject(all.error);
        };
      }),
  );
  assert.not.ok(stored.includes(keyFileFromSigningKey(org.alice).secretKey), 'the secret is not stored in the clear');
  assert.ok(stored.includes('AES-GCM'));

  await unlock(page, 'not the passphrase');
  const refusal = await page.getByTestId('unlock-message').textContent();
  assert.match(String(refusal), /wrong passphrase: nothing was unlocked/);
  assert.is(await page.getByTestId('fleet-view').count(), 0, 'no session opened');

  await unlock(page, PASSPHRASE);
  await page.getByTestId('fleet-view').waitFor();
  await page.locator('[data-testid=connection][data-live=true]').waitFor({ timeout: 20_000 });
  await row('h1').waitFor({ timeout: 20_000 });
  await row('h2').waitFor();
  assert.match(String(await page.getByTestId('trust').textContent()), /policy v1/);
  // Chromium has Ed25519 in WebCrypto: the page signs with it (checked against tweetnacl below).
  assert.match(String(await page.locator('header .who').textContent()), /signs with WebCrypto Ed25519/);
});

test('deploy from the page: the agent verifies the browser-signed intent and the row reaches applied live', async () => {
  await go('#/host/h1');
  await page.getByTestId('host-view').waitFor();
  await page.getByTestId('deploy-closure').fill(closures[0]!);
  await page.getByTestId('deploy-button').click();
  const message = page.getByTestId('action-message');
  await message.waitFor();
  assert.match(String(await message.textContent()), /signed generation 1/, failWith('deploy was not signed'));
  await page.locator('[data-generation="1"] [data-delivered=true]').waitFor({ timeout: 20_000 });
  // What the page signed is what the CLI signs: tweetnacl over the same canonical bytes gives the
  // same signature (Ed25519 is deterministic), and it verifies under the policy as agents check it.
  const [signed] = await coordinatorIntents('h1');
  assert.ok(signed);
  assert.is(signed!.signatures[0]!.signature, signPayload('intent', signed!.intent, org.alice).signature);
  assert.equal(verifyIntentUnderPolicy(signed!, { host: 'h1', chain: [policy], now: Date.now() }), {
    ok: true,
    counted: [signed!.signatures[0]!],
  });
  await go('#/');
  await page.locator('[data-testid=row-h1][data-phase=applied]').waitFor({ timeout: 90_000 });
  assert.is(await profileTarget(host), closures[0]);
  const text = String(await row('h1').textContent());
  assert.match(text, /gen 1 applied/);
});

test('a status forged by a hostile writer (a relay of the policy) is shown as untrusted, never as fact', async () => {
  const relay = open[0]!;
  publishStatus(
    relay.doc,
    {
      kind: 'status',
      host: 'h2',
      phase: 'applied',
      applied: { generation: 99, closure: `/nix/store/${'b'.repeat(32)}-nixos-system-patched` },
      target: null,
      lastResultSeq: null,
      agentVersion: '0.1.0',
      apps: [
        {
          name: 'clinic',
          rev: 'f'.repeat(40),
          state: 'running',
          services: [{ name: 'forged-web', state: 'running' }],
          since: new Date().toISOString(),
        },
      ],
      sshSessions: [
        {
          nonce: 'e'.repeat(32),
          admin: 'forged-admin',
          key: forger.publicKey,
          openedAt: new Date().toISOString(),
          closedAt: null,
          bytesIn: 0,
          bytesOut: 0,
        },
      ],
    },
    1,
    forger,
  );
  await waitFor('the coordinator to store the forged status', async () => {
    const reader = connectDocument(coordinator.url, statusDocName('h2'), { identity: org.alice });
    try {
      await waitForSync(reader, 5_000);
      return readCurrentStatus(reader.doc)?.signature.publicKey === forger.publicKey;
    } finally {
      reader.close();
    }
  });
  await page.locator('[data-testid=row-h2][data-phase=untrusted]').waitFor({ timeout: 20_000 });
  const text = String(await row('h2').textContent());
  assert.match(text, /UNTRUSTED status/);
  assert.not.match(text, /99/, 'nothing the forged status claims is shown');
  await screenshot(page, 'web-fleet');
  // The policy's sites: relay r1 serves h2 only.
  await page.getByTestId('site-filter').selectOption('r1');
  await page.waitForFunction(() => document.querySelectorAll('[data-testid^=row-]').length === 1);
  assert.is(await page.locator('[data-testid^=row-]').getAttribute('data-testid'), 'row-h2');
  await page.getByTestId('site-filter').selectOption('');
  await page.waitForFunction(() => document.querySelectorAll('[data-testid^=row-]').length === 2);
  // From the keyboard: / focuses the filter, ↓ moves into the table, Enter opens the selected host.
  await page.keyboard.press('/');
  await page.keyboard.type('untrusted');
  await page.waitForFunction(() => document.querySelectorAll('[data-testid^=row-]').length === 1);
  assert.is(await page.locator('[data-testid^=row-]').getAttribute('data-testid'), 'row-h2');
  await page.keyboard.press('ArrowDown');
  await page.keyboard.press('Enter');
  await page.getByTestId('host-view').waitFor();
  assert.match(page.url(), /#\/host\/h2$/);
  const phase = String(await page.getByTestId('host-phase').textContent());
  assert.match(phase, /UNTRUSTED status .*not h2's enrolled key/);
  assert.not.match(String(await page.getByTestId('host-applied').textContent()), /99|patched/);
  assert.is(await page.getByTestId('host-apps').count(), 0, 'no apps from a status h2 did not sign');
  assert.is(await page.getByTestId('host-ssh-sessions').count(), 0, 'no ssh sessions from a status h2 did not sign');
});

test('offline: a rollback signed with no link survives a reload, merges when the link returns, and the agent applies it', async () => {
  const deployed = await runCli([
    'deploy',
    '--coordinator',
    coordinator.url,
    '--key',
    join(dir, 'alice.key'),
    '--host',
    'h1',
    '--closure',
    closures[1]!,
  ]);
  assert.is(deployed.code, 0, deployed.stderr);
  await go('#/host/h1');
  await page.locator('[data-testid=host-apps] [data-app=clinic][data-state=running]').waitFor({ timeout: 20_000 });
  assert.match(
    String(await page.getByTestId('host-apps').textContent()),
    /clinic running aaaaaaaaaaaa web running, healthy/,
  );
  await page.locator('[data-testid=timeline-entry][data-kind=result][data-outcome=applied]').nth(1).waitFor({
    timeout: 90_000,
  });
  await page.getByTestId('rollback-target').filter({ hasText: 'generation 1' }).waitFor();
  await screenshot(page, 'web-host');

  await link.setOffline(context, true);
  await page.locator('[data-testid=connection][data-live=false]').waitFor({ timeout: 20_000 });
  await page.getByTestId('rollback-button').click();
  const message = page.getByTestId('action-message');
  await message.waitFor();
  assert.match(String(await message.textContent()), /signed generation 3 — offline/, failWith('rollback not signed'));
  await page.locator('[data-generation="3"] [data-delivered=false]').waitFor();

  await page.reload();
  await unlock(page, PASSPHRASE);
  await page.getByTestId('host-view').waitFor();
  await page.locator('[data-generation="3"] [data-delivered=false]').waitFor({ timeout: 10_000 });
  assert.is(await page.locator('[data-generation="3"]').count(), 1, 'the offline intent is there once');
  assert.match(String(await page.getByTestId('staleness').textContent()), /view as of/);
  await screenshot(page, 'web-offline');
  assert.not.ok(
    (await coordinatorIntents('h1')).some((s) => s.intent.generation === 3),
    'nothing reached the coordinator while offline',
  );

  await link.setOffline(context, false);
  await page.locator('[data-generation="3"] [data-delivered=true]').waitFor({ timeout: 30_000 });
  const delivered = (await coordinatorIntents('h1')).find((s) => s.intent.generation === 3);
  assert.is(delivered?.intent.closure, closures[0], 'the rollback names the closure of generation 1');
  await waitFor(
    'the agent to apply the rollback',
    async () => (await profileTarget(host)) === closures[0],
    90_000,
    500,
  );
  await page
    .locator('[data-testid=timeline-entry][data-kind=result][data-outcome=applied]', { hasText: 'generation 3' })
    .waitFor({ timeout: 30_000 });
});

test('an admin without deploy (carol, read only) gets a clear refusal before anything is signed', async () => {
  const before = (await coordinatorIntents('h1')).length;
  await page.getByTestId('lock').click();
  await page.getByText('Add another key').click();
  await importKey(page, JSON.stringify(keyFileFromSigningKey(org.carol)), PASSPHRASE, org.root.publicKey);
  await unlock(page, PASSPHRASE, org.carol.publicKey);
  await go('#/host/h1');
  await page.getByTestId('host-view').waitFor();
  await page
    .locator('[data-testid=connection][data-live=true]')
    .waitFor({ timeout: 20_000 })
    .catch(async (error: Error) => {
      throw new Error(
        failWith(`${error.message}
status bar: ${await page.locator('header').textContent()}`),
      );
    });
  await page.getByTestId('deploy-closure').fill(closures[1]!);
  await page.getByTestId('deploy-button').click();
  const message = String(await page.getByTestId('action-message').textContent());
  assert.match(message, /refused: admin carol lacks 'deploy' for host h1 under policy 1.*nothing was signed/);
  const outbox = await page.evaluate(
    () =>
      new Promise<number>((resolve) => {
        const req = indexedDB.open('outpost-editor');
        req.onsuccess = () => {
          const all = req.result.transaction('outbox').objectStore('outbox').getAll();
          all.onsuccess = () =>
            resolve(
              (all.result as { signed: { intent: { issuer: string } } }[]).filter(
                (e) => e.signed.intent.issuer === 'carol',
              ).length,
            );
        };
      }),
  );
  assert.is(outbox, 0, 'nothing signed by carol waits in the outbox');
  await new Promise((resolve) => setTimeout(resolve, 500));
  assert.is((await coordinatorIntents('h1')).length, before, 'nothing reached the coordinator');
});

test('a relay serves the same editor at / (for a site whose uplink is down)', async () => {
  await writeKeyFile(join(dir, 'relay.key'), relayKey);
  const relay = await startRelayProcess(join(dir, 'relay'), join(dir, 'relay.log'), [coordinator.url], {
    extra: ['--key', join(dir, 'relay.key'), '--org-root', org.root.publicKey],
  });
  try {
    const [fromRelay, fromCoordinator] = await Promise.all(
      [relay.url, coordinator.url].map(async (url) => {
        const response = await fetch(pageUrl(url));
        return { status: response.status, type: response.headers.get('content-type'), body: await response.text() };
      }),
    );
    assert.is(fromRelay!.status, 200);
    assert.match(String(fromRelay!.type), /text\/html/);
    assert.is(fromRelay!.body, fromCoordinator!.body, 'the same build');
    const script = /src="(\/assets\/[^"]+\.js)"/.exec(fromRelay!.body)?.[1];
    assert.ok(script);
    assert.is((await fetch(`${pageUrl(relay.url).slice(0, -1)}${script}`)).status, 200);
  } finally {
    await relay.stop();
  }
});

test.run();
