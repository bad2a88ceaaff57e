import { createPrivateKey, generateKeyPairSync, sign } from 'node:crypto';
import { existsSync, promises as fs } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'vite';
import { concatBytes, fromBase64, toBase64 } from '../../shared/crypto/encoding.js';
import type { SigningKey } from '../../shared/crypto/keys.js';
import { type Signature, type SignedKind, signedBytes, signPayload } from '../../shared/crypto/signatures.js';
import type { SignedIntent } from '../../shared/schemas/intent.js';
import type { SignedResult, SignedStatus, Status } from '../../shared/schemas/report.js';
import { intentDigest } from '../../shared/trust/verify-intent.js';
import { LAPTOP_VIEWPORT, launchChromium } from '../harness/browser.js';
import { basePolicy, makeTestOrg } from '../harness/policy-fixtures.js';
import type { BenchFixture, BenchResult } from './web-fixture.js';

// The web editor's fleet view with 1,000 hosts in Chromium at 1366×768: time to the first full
// render (every host's view built with the CLI's signature checks, the table painted) and the cost
// of live updates (k statuses changing within one frame), each against a peer in the same run:
// the same view rendering every row, and a rebuild of every host's view per update.
// Usage: node dist/test/bench/web.js [--hosts N] [--rounds R]
const args = process.argv.slice(2);
const option = (name: string, fallback: number): number => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : fallback;
};
const HOSTS = option('hosts', 1000);
const ROUNDS = option('rounds', 5);

function repoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) dir = dirname(dir);
  return dir;
}

// The fixture's thousands of signatures with Node's native Ed25519: the same bytes as signPayload
// (shared/crypto/signatures.ts) and, Ed25519 being deterministic, the same signatures, in a
// fraction of tweetnacl's time.
const PKCS8_ED25519_PREFIX = fromBase64('MC4CAQAwBQYDK2VwBCIEIA==');
const privateKeys = new WeakMap<SigningKey, ReturnType<typeof createPrivateKey>>();

function nativeKey(name: string): SigningKey {
  const pair = generateKeyPairSync('ed25519');
  const seed = new Uint8Array(pair.privateKey.export({ format: 'der', type: 'pkcs8' }).subarray(16));
  const publicKey = new Uint8Array(pair.publicKey.export({ format: 'der', type: 'spki' }).subarray(12));
  const key = { name, publicKey: toBase64(publicKey), secretKey: concatBytes([seed, publicKey]) };
  privateKeys.set(key, pair.privateKey);
  return key;
}

function nativeSign(kind: SignedKind, payload: unknown, key: SigningKey): Signature {
  let privateKey = privateKeys.get(key);
  if (!privateKey) {
    privateKey = createPrivateKey({
      key: Buffer.from(concatBytes([PKCS8_ED25519_PREFIX, key.secretKey.subarray(0, 32)])),
      format: 'der',
      type: 'pkcs8',
    });
    privateKeys.set(key, privateKey);
  }
  return { publicKey: key.publicKey, signature: toBase64(sign(null, signedBytes(kind, payload), privateKey)) };
}

function fixture(): BenchFixture {
  const org = makeTestOrg();
  const probe = nativeKey('probe');
  if (nativeSign('status', { probe: 1 }, probe).signature !== signPayload('status', { probe: 1 }, probe).signature)
    throw new Error("Node's Ed25519 and signPayload disagree: the fixture would not be what the CLI signs");
  // No group of the base policy holds these hosts: one admin signature suffices, as for most hosts.
  const policy = basePolicy(org);
  const now = Date.now();
  const closure = (n: number): string => `/nix/store/${'abcdfghijklmnpqrsvwxyz0123456789'}-nixos-system-bench-${n}`;
  const phases = ['applied', 'applied', 'applied', 'downloading', 'waiting-for-window', 'failed'] as const;
  const hosts: BenchFixture['hosts'] = [];
  const keys = new Map<string, SigningKey>();
  for (let i = 0; i < HOSTS; i++) {
    const host = `host-${String(i).padStart(4, '0')}`;
    const key = nativeKey(host);
    keys.set(host, key);
    const intentBody: SignedIntent['intent'] = {
      kind: 'intent',
      host,
      generation: 2,
      closure: closure(2),
      action: 'switch',
      issuedAt: new Date(now - 60_000).toISOString(),
      expiresAt: new Date(now + 86_400_000).toISOString(),
      issuer: 'alice',
      policyVersion: 1,
    };
    const intent: SignedIntent = { intent: intentBody, signatures: [nativeSign('intent', intentBody, org.alice)] };
    const status: Status = {
      kind: 'status',
      host,
      phase: phases[i % phases.length]!,
      applied: { generation: 1, closure: closure(1) },
      target: { generation: 2, closure: closure(2) },
      lastResultSeq: 1,
      agentVersion: '0.1.0',
      seq: 1,
      updatedAt: new Date(now).toISOString(),
    };
    const result: SignedResult['result'] = {
      kind: 'result',
      host,
      seq: 1,
      at: new Date(now - 30_000).toISOString(),
      outcome: 'applied',
      generation: 1,
      closure: closure(1),
      action: 'switch',
      intentDigest: intentDigest(intent),
      reason: '',
      outputTail: '',
    };
    hosts.push({
      host,
      hostKey: key.publicKey,
      intent,
      status: { status, signature: nativeSign('status', status, key) },
      result: { result, signature: nativeSign('result', result, key) },
    });
  }
  const updates: SignedStatus[] = [];
  const updateCount = ROUNDS * (1 + 10 + 100 + 1);
  for (let i = 0; i < updateCount; i++) {
    const base = hosts[(i * 7919) % hosts.length]!;
    const status: Status = {
      ...base.status.status,
      phase: 'downloading',
      progress: {
        pathsDone: i % 10,
        pathsTotal: 10,
        bytesDone: i * 1000,
        bytesTotal: 10_000_000,
        bytesPerSecond: 1_000_000,
        startedAt: new Date(now).toISOString(),
      },
      seq: 2 + i,
    };
    updates.push({ status, signature: nativeSign('status', status, keys.get(base.host)!) });
  }
  return { policy, hosts, updates };
}

const TYPES: Record<string, string> = {
  '.html': 'text/html',
  '.js': 'text/javascript',
  '.css': 'text/css',
  '.json': 'application/json',
};

async function main(): Promise<void> {
  const root = repoRoot();
  const out = await fs.mkdtemp(join(tmpdir(), 'outpost-web-bench-'));
  try {
    await build({
      configFile: false,
      root: join(root, 'web', 'bench'),
      logLevel: 'warn',
      publicDir: false,
      oxc: { jsx: { runtime: 'automatic', importSource: 'preact' } },
      build: { outDir: out, emptyOutDir: true, target: 'es2022' },
    });
    const signingStarted = Date.now();
    await fs.writeFile(join(out, 'fixture.json'), JSON.stringify(fixture()));
    console.log(`fixture: ${HOSTS} hosts signed in Node in ${((Date.now() - signingStarted) / 1000).toFixed(1)} s`);
    const server = createServer((req, res) => {
      const name = (req.url ?? '/').split('?')[0] === '/' ? 'index.html' : (req.url ?? '').slice(1).split('?')[0]!;
      // Only files directly in the build directory or its assets/, never a path with dots.
      if (!/^(assets\/)?[\w.-]+$/.test(name) || name.includes('..')) return void res.writeHead(404).end();
      fs.readFile(join(out, name)).then(
        (body) => res.writeHead(200, { 'content-type': TYPES[extname(name)] ?? 'text/plain' }).end(body),
        () => res.writeHead(404).end(),
      );
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
    const browser = await launchChromium();
    try {
      const page = await browser.newPage({ viewport: LAPTOP_VIEWPORT });
      page.on('console', (message) => console.log(`  page: ${message.text()}`));
      await page.goto(url);
      const result = await page.evaluate(
        async ({ rounds }) => {
          const data = (await (await fetch('/fixture.json')).json()) as BenchFixture;
          const bench = (
            window as unknown as { outpostBench: { run(f: BenchFixture, r: number): Promise<BenchResult> } }
          ).outpostBench;
          return bench.run(data, rounds);
        },
        { rounds: ROUNDS },
      );
      report(result);
      // The fleet view as the benchmark leaves it (1,000 hosts, some downloading), for docs/web.md.
      const shots = process.env.OUTPOST_WEB_SCREENSHOTS;
      if (shots) await page.screenshot({ path: join(shots, 'web-fleet-1000.png') });
    } finally {
      await browser.close();
      server.close();
    }
  } finally {
    await fs.rm(out, { recursive: true, force: true });
  }
}

function report(r: BenchResult): void {
  const ms = (n: number): string => `${n.toFixed(1)} ms`;
  console.log(`web fleet view, ${r.hosts} hosts, Chromium at ${LAPTOP_VIEWPORT.width}×${LAPTOP_VIEWPORT.height}`);
  console.log(
    `  first full render, cold (every signature checked, every view built, painted): ${ms(r.firstRenderMs)} (${r.firstRenderRows} rows in the DOM)`,
  );
  console.log(
    `  again with verdicts known: ${ms(r.warmRenderMs)}; with every row rendered (peer): ${ms(r.peerFirstRenderMs)} (${r.peerRows} rows), ratio ${(r.peerFirstRenderMs / r.warmRenderMs).toFixed(2)}x`,
  );
  for (const u of r.updates)
    console.log(
      `  ${String(u.batch).padStart(3)} status update(s) in one frame: ${ms(u.msPerFrame)} to paint, ${ms(u.msPerUpdate)} per update (${u.rounds} rounds)`,
    );
  const one = r.updates.find((u) => u.batch === 1)!;
  console.log(
    `  1 update rebuilding every view (peer): ${ms(r.peerUpdateMs)}, ratio ${(r.peerUpdateMs / one.msPerFrame).toFixed(1)}x the batcher's`,
  );
  console.log(JSON.stringify(r));
}

main().catch((error: Error) => {
  console.error(`web bench failed: ${error.stack ?? error.message}`);
  process.exit(1);
});
