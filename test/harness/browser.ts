import { existsSync, promises as fs } from 'node:fs';
import { join } from 'node:path';
import { type Browser, type BrowserContext, chromium, type Page } from 'playwright-core';

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

export async function newLaptopContext(browser: Browser): Promise<BrowserContext> {
  return browser.newContext({ viewport: LAPTOP_VIEWPORT, serviceWorkers: 'allow' });
}

// http://127.0.0.1:PORT/ of a coordinator or relay's ws:// URL.
export function pageUrl(serverUrl: string): string {
  return `${serverUrl.replace(/^ws(s?):/, 'http$1:').replace(/\/+$/, '')}/`;
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
