import { existsSync, promises as fs } from 'node:fs';
import { join } from 'node:path';
import { type Browser, type BrowserContext, chromium, type Page } from 'playwright-core';
import { z } from 'zod';
import { startFaultProxy } from './fault-proxy.js';
import { type DaemonProcess, startListeningDaemon } from './processes.js';

// Real Chromium (Debian's package, driven by playwright-core; nothing is downloaded) for the web
// editor's tests and benchmark. OUTPOST_CHROMIUM points elsewhere.
export const CHROMIUM = process.env.OUTPOST_CHROMIUM ?? '/usr/bin/chromium';
// The laptop the views are made for.
export const LAPTOP_VIEWPORT = { width: 1366, height: 768 };

export async function launchChromium(): Promise<Browser> {
  if (!existsSync(CHROMIUM))
    throw new Error(
      `no Chromium at ${CHROMIUM}: install Debian's (apt-get install -y chromium) or set OUTPOST_CHROMIUM to a Chromium binary`,
    );
  return chromium.launch({ executablePath: CHROMIUM, args: ['--disable-gpu', '--no-first-run'] });
}

// For hunting races between what the page shows and what the server holds (docs/web.md, "Looking
// for races"): latency each way on the page's link (startPageLink) and a hold on each POST the page
// sends to the API. Both off unless set.
const delaySchema = z.coerce.number().int().min(0).max(60_000);
function delayFromEnv(name: string): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return 0;
  const parsed = delaySchema.safeParse(raw);
  if (!parsed.success) throw new Error(`${name}=${raw}: expected whole milliseconds from 0 to 60000, or unset`);
  return parsed.data;
}
const PAGE_LINK_DELAY_MS = delayFromEnv('OUTPOST_TEST_PAGE_LINK_DELAY_MS');
const PAGE_POST_HOLD_MS = delayFromEnv('OUTPOST_TEST_PAGE_POST_HOLD_MS');

export async function newLaptopContext(browser: Browser): Promise<BrowserContext> {
  const context = await browser.newContext({ viewport: LAPTOP_VIEWPORT, serviceWorkers: 'allow' });
  // A test's own page.route for the same request takes precedence over this one.
  if (PAGE_POST_HOLD_MS)
    await context.route('**/api/**', async (route) => {
      if (route.request().method() === 'POST') await new Promise((resolve) => setTimeout(resolve, PAGE_POST_HOLD_MS));
      await route.continue();
    });
  return context;
}

// http://127.0.0.1:PORT/ of a coordinator or relay's ws:// URL.
export function pageUrl(serverUrl: string): string {
  return `${serverUrl.replace(/^ws(s?):/, 'http$1:').replace(/\/+$/, '')}/`;
}

// The page's link to its server, as a laptop has one: a TCP proxy the test controls. Offline is
// both halves of a real outage: no byte gets through (the proxy resets every connection and
// refuses new ones) and the browser says so (Chromium's offline emulation: navigator.onLine and
// the events the page reacts to). The emulation alone is no outage: it covers neither WebSockets
// nor a service worker's fetches, and across an offline reload it lapses for a moment: a page that
// POSTs whenever navigator.onLine is true, reloaded 40 times with the context offline (served by
// its service worker, as the editor is), fired 'online' in 2 new documents and both POSTs reached
// the server, and Playwright reported neither request. That is how entries signed offline were
// found on the coordinator right after an offline reload (web-editor-offline, three times).
export interface PageLink {
  // Where the page is opened: http://127.0.0.1:PORT/ of the proxy.
  pageUrl: string;
  // Cut before the browser is told (nothing slips out while it reacts); restored before it is
  // told it is back (what it sends on 'online' gets through).
  setOffline(context: BrowserContext, offline: boolean): Promise<void>;
  close(): Promise<void>;
}

export async function startPageLink(serverPort: number): Promise<PageLink> {
  const proxy = await startFaultProxy(serverPort);
  proxy.delay(PAGE_LINK_DELAY_MS);
  return {
    pageUrl: pageUrl(proxy.url()),
    async setOffline(context, offline) {
      if (offline) proxy.cut();
      else {
        proxy.restore();
        proxy.delay(PAGE_LINK_DELAY_MS);
      }
      await context.setOffline(offline);
    },
    close: () => proxy.close(),
  };
}

// Where screenshots for docs/ go when OUTPOST_WEB_SCREENSHOTS names a directory (see docs/web.md);
// tests take none otherwise.
export async function screenshot(page: Page, name: string): Promise<void> {
  const dir = process.env.OUTPOST_WEB_SCREENSHOTS;
  if (!dir) return;
  await fs.mkdir(dir, { recursive: true });
  await page.screenshot({ path: join(dir, `${name}.png`) });
}

// Messages the page logged (console errors, uncaught exceptions), for failure output.
export function collectPageErrors(page: Page): string[] {
  const errors: string[] = [];
  page.on('console', (message) => {
    if (message.type() === 'error') errors.push(`console: ${message.text()}`);
  });
  page.on('pageerror', (error) => errors.push(`pageerror: ${error.message}`));
  return errors;
}

// The editor's setup form: import a key file, choose a passphrase, pin the org root.
export async function importKey(page: Page, keyFileText: string, passphrase: string, orgRoot: string): Promise<void> {
  await page.getByTestId('key-text').fill(keyFileText);
  await page.getByTestId('passphrase').fill(passphrase);
  await page.getByTestId('passphrase-repeat').fill(passphrase);
  await page.getByTestId('org-root').fill(orgRoot);
  await page.getByTestId('store-key').click();
  await page.getByTestId('unlock').waitFor();
}

// Unlocks the key with this public key (the first stored one when omitted).
export async function unlock(page: Page, passphrase: string, publicKey?: string): Promise<void> {
  await page.getByTestId('unlock').waitFor();
  if (publicKey) await page.locator('[data-testid=unlock] select').selectOption(publicKey);
  await page.getByTestId('unlock-passphrase').fill(passphrase);
  await page.getByTestId('unlock-button').click();
}

// `outpost web` as a real process on a free port, given one or several coordinators.
export function startOutpostWeb(
  coordinatorUrls: readonly string[],
  logFile: string,
): Promise<DaemonProcess & { url: string; port: number }> {
  return startListeningDaemon(
    'outpost web',
    ['web', ...coordinatorUrls.flatMap((url) => ['--coordinator', url]), '--port', '0'],
    logFile,
  );
}

// Signs and sends a deploy of `closure` to `host` from the unlocked web editor, expected to be
// `generation`, and waits until the page shows it delivered (stored by the coordinator it is
// connected to).
export async function deployFromPage(
  page: Page,
  target: { host: string; closure: string; generation: number },
  failWith: (message: string) => string,
): Promise<void> {
  const { host, closure, generation } = target;
  await page.evaluate((id) => {
    location.hash = `#/host/${id}`;
  }, host);
  await page.getByTestId('host-view').waitFor();
  await page.getByTestId('deploy-closure').fill(closure);
  await page.getByTestId('deploy-button').click();
  await page.getByTestId('action-message').waitFor();
  const message = String(await page.getByTestId('action-message').textContent());
  if (!message.includes(`signed generation ${generation}`))
    throw new Error(failWith(`deploy of generation ${generation} was not signed: ${message}`));
  await page.locator(`[data-generation="${generation}"] [data-delivered=true]`).waitFor({ timeout: 30_000 });
}
