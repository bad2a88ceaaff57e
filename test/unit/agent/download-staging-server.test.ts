import { promises as fs } from 'node:fs';
import { get } from 'node:http';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { type FileFeed, startStagingServer } from '../../../agent/download/staging-server.js';
import { removeDirectory, temporaryDirectory } from '../../harness/processes.js';

// The staging directory served to Nix while files arrive: complete files from disk, files in
// progress as they reach the disk, a response cut when the file it follows is thrown away or
// given up, nothing outside the cache's file names.

const dir = temporaryDirectory('staging-server');
test.after(() => removeDirectory(dir));

const HASH = 'a'.repeat(32);
const OTHER = 'b'.repeat(32);

function fetchRaw(url: string): Promise<{ status: number; headers: Record<string, unknown>; body: Promise<Buffer> }> {
  return new Promise((resolve, reject) => {
    get(url, (response) => {
      const parts: Buffer[] = [];
      const body = new Promise<Buffer>((done, fail) => {
        response.on('data', (chunk: Buffer) => parts.push(chunk));
        response.on('end', () => done(Buffer.concat(parts)));
        response.on('error', fail);
        response.on('close', () => {
          if (!response.complete) fail(new Error('cut'));
        });
      });
      body.catch(() => undefined);
      resolve({ status: response.statusCode ?? 0, headers: response.headers, body });
    }).on('error', reject);
  });
}

async function setup() {
  await fs.mkdir(join(dir, 'nar'), { recursive: true });
  await fs.writeFile(join(dir, 'nix-cache-info'), 'StoreDir: /nix/store\n');
  await fs.writeFile(join(dir, `${HASH}.narinfo`), 'StorePath: /nix/store/x\n');
  const feeds = new Map<string, FileFeed>();
  const wanted: string[] = [];
  let waiters: (() => void)[] = [];
  const notify = (): void => {
    const woken = waiters;
    waiters = [];
    for (const wake of woken) wake();
  };
  const server = await startStagingServer(dir, {
    get: (hash) => feeds.get(hash),
    want: (hash) => void wanted.push(hash),
    changed: () => new Promise<void>((resolve) => waiters.push(resolve)),
  });
  return { feeds, wanted, notify, server };
}

test('cache files and complete NARs come from disk; anything else is 404', async () => {
  const { feeds, server } = await setup();
  try {
    await fs.writeFile(join(dir, 'nar', `${HASH}.nar`), 'complete bytes');
    feeds.set(HASH, { onDisk: 0, generation: 0, state: 'complete' });
    assert.is((await (await fetchRaw(`${server.url}/nix-cache-info`)).body).toString(), 'StoreDir: /nix/store\n');
    assert.is((await (await fetchRaw(`${server.url}/${HASH}.narinfo`)).body).toString(), 'StorePath: /nix/store/x\n');
    const nar = await fetchRaw(`${server.url}/nar/${HASH}.nar`);
    assert.is(nar.headers['content-length'], '14');
    assert.is((await nar.body).toString(), 'complete bytes');
    for (const path of [`/nar/${OTHER}.nar`, `/${OTHER}.narinfo`, '/../etc/passwd', `/nar/${HASH}.nar.part`, '/nar/']) {
      assert.is((await fetchRaw(`${server.url}${path}`)).status, 404, path);
    }
  } finally {
    server.close();
  }
});

test('a NAR in progress is followed as it reaches the disk, to its end', async () => {
  const { feeds, wanted, notify, server } = await setup();
  const part = join(dir, 'nar', `${OTHER}.nar.part`);
  try {
    const feed: FileFeed = { onDisk: 0, generation: 0, state: 'pending' };
    feeds.set(OTHER, feed);
    const response = await fetchRaw(`${server.url}/nar/${OTHER}.nar`);
    assert.is(response.status, 200);
    assert.equal(wanted, [OTHER], 'Nix waiting for it makes it the next file fetched');
    await fs.writeFile(part, 'first ');
    feed.onDisk = 6;
    notify();
    await new Promise((resolve) => setTimeout(resolve, 30));
    await fs.appendFile(part, 'second');
    feed.onDisk = 12;
    notify();
    await fs.rename(part, join(dir, 'nar', `${OTHER}.nar`));
    feed.state = 'complete';
    notify();
    assert.is((await response.body).toString(), 'first second');
  } finally {
    server.close();
  }
});

test('a NAR thrown away (restarted) or given up while followed: the response is cut, never continued with other bytes', async () => {
  const { feeds, notify, server } = await setup();
  const part = join(dir, 'nar', `${OTHER}.nar.part`);
  try {
    for (const ending of ['restarted', 'failed'] as const) {
      const feed: FileFeed = { onDisk: 0, generation: 0, state: 'pending' };
      feeds.set(OTHER, feed);
      await fs.writeFile(part, 'prefix');
      feed.onDisk = 6;
      const response = await fetchRaw(`${server.url}/nar/${OTHER}.nar`);
      await new Promise((resolve) => setTimeout(resolve, 30));
      if (ending === 'restarted') feed.generation += 1;
      else feed.state = 'failed';
      notify();
      const outcome = await response.body.then(
        () => 'ended',
        () => 'cut',
      );
      assert.is(outcome, 'cut', ending);
      await fs.rm(part, { force: true });
    }
    assert.is((await fetchRaw(`${server.url}/nar/${OTHER}.nar`)).status, 404, 'a failed file is not offered');
  } finally {
    server.close();
  }
});

test.run();
