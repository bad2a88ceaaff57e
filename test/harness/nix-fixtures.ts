import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import nacl from 'tweetnacl';
import { fromBase64 } from '../../shared/crypto/encoding.js';
import { narinfoFingerprint, parseCacheKey } from '../../shared/nix/narinfo.js';

// Real Nix store paths, keys and binary caches for tests, the demo and benchmarks. nixpkgs is
// not available, so closures are plain `derivation`s built by /bin/sh from host tools.

export interface CommandResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export function runCommand(
  command: string,
  args: string[],
  options: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env: { ...process.env, ...options.env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 300_000);
    child.on('error', (error) => {
      clearTimeout(timer);
      reject(new Error(`cannot run ${command}: ${error.message}`));
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

async function runOrThrow(
  command: string,
  args: string[],
  options: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<string> {
  const result = await runCommand(command, args, options);
  if (result.code !== 0) {
    throw new Error(`${command} ${args.join(' ')} exited with ${result.code}:\n${result.stderr.trim()}`);
  }
  return result.stdout;
}

// Without this every Nix command first spends seconds retrying cache.nixos.org, which is not
// reachable here (and tests must never depend on it).
const OFFLINE = ['--option', 'substituters', ''];
const NIX_COMMAND = ['--extra-experimental-features', 'nix-command'];

export interface CacheKeyFiles {
  secretKeyFile: string;
  publicKeyFile: string;
  // "name:base64", as it goes into trusted-public-keys.
  publicKey: string;
}

export async function makeCacheKey(dir: string, name: string): Promise<CacheKeyFiles> {
  await fs.mkdir(dir, { recursive: true });
  const secretKeyFile = join(dir, `${name}.secret`);
  const publicKeyFile = join(dir, `${name}.public`);
  await runOrThrow('nix-store', ['--generate-binary-cache-key', name, secretKeyFile, publicKeyFile]);
  await fs.chmod(secretKeyFile, 0o600);
  return { secretKeyFile, publicKeyFile, publicKey: (await fs.readFile(publicKeyFile, 'utf8')).trim() };
}

export interface TestClosureOptions {
  name: string;
  // Body of bin/switch-to-configuration (after "#!/bin/sh"); $OUTPOST_SYSTEM holds the
  // closure's own store path and $1 the action (switch/boot/test).
  switchScript?: string;
  // Number of extra store paths the closure depends on, each a file of payloadBytes bytes.
  extraPaths?: number;
  payloadBytes?: number;
  // Different strings give different store paths for otherwise equal closures.
  uniqueness?: string;
}

// What a real switch-to-configuration would do, reduced to a line tests can read back.
export const DEFAULT_SWITCH_SCRIPT = [
  'if [ -n "$OUTPOST_TEST_ACTIVATION_LOG" ]; then',
  '  echo "$1 $OUTPOST_SYSTEM" >> "$OUTPOST_TEST_ACTIVATION_LOG"',
  'fi',
  'exit 0',
].join('\n');

// Parameters reach Nix as JSON through builtins.fromJSON, so no test string ever needs escaping
// as a Nix literal. The top-level output lists its payload paths in a file, which is what makes
// Nix record them as references.
const CLOSURE_EXPRESSION = `
let
  params = builtins.fromJSON (builtins.readFile ./params.json);
  common = {
    system = builtins.currentSystem;
    builder = "/bin/sh";
    PATH = "/bin:/usr/bin";
    inherit (params) uniqueness;
  };
  payload = index: derivation (common // {
    name = "\${params.name}-payload-\${toString index}";
    payloadBytes = toString params.payloadBytes;
    args = [ "-c" "head -c \\"$payloadBytes\\" /dev/zero | tr '\\\\0' x > \\"$out\\"" ];
  });
in derivation (common // {
  inherit (params) name switchScript;
  payloads = builtins.genList payload params.extraPaths;
  args = [ "-c" ''
    set -e
    mkdir -p "$out/bin"
    : > "$out/payloads"
    for p in $payloads; do echo "$p" >> "$out/payloads"; done
    { echo '#!/bin/sh'; echo "OUTPOST_SYSTEM=$out"; printf '%s\\n' "$switchScript"; } > "$out/bin/switch-to-configuration"
    chmod 755 "$out/bin/switch-to-configuration"
  '' ];
})
`;

export async function buildTestClosure(options: TestClosureOptions): Promise<string> {
  if (!/^[A-Za-z0-9+\-._?=]{1,150}$/.test(options.name))
    throw new Error(`closure name ${JSON.stringify(options.name)} is not a valid store path name`);
  const params = {
    name: options.name,
    switchScript: options.switchScript ?? DEFAULT_SWITCH_SCRIPT,
    extraPaths: options.extraPaths ?? 0,
    payloadBytes: options.payloadBytes ?? 1024,
    uniqueness: options.uniqueness ?? '',
  };
  const dir = await fs.mkdtemp(join(tmpdir(), 'outpost-closure-'));
  try {
    await fs.writeFile(join(dir, 'params.json'), JSON.stringify(params));
    await fs.writeFile(join(dir, 'default.nix'), CLOSURE_EXPRESSION);
    const stdout = await runOrThrow('nix-build', ['--no-out-link', ...OFFLINE, join(dir, 'default.nix')]);
    return stdout.trim();
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}

// Signs the whole closure in the local store and copies it, uncompressed (fast, and NAR files
// stay readable in tests), into a file:// binary cache that serveBinaryCache can serve.
export async function publishToCache(storePath: string, cacheDir: string, secretKeyFile: string): Promise<void> {
  await fs.mkdir(cacheDir, { recursive: true });
  const paths = (await runOrThrow('nix-store', ['-qR', storePath])).split('\n').filter(Boolean);
  const narinfoOf = (path: string): string =>
    join(cacheDir, `${path.slice('/nix/store/'.length, '/nix/store/'.length + 32)}.narinfo`);
  const existed = new Set<string>();
  for (const path of paths) if (await fs.stat(narinfoOf(path)).catch(() => null)) existed.add(path);
  await runOrThrow('nix', [...NIX_COMMAND, 'store', 'sign', ...OFFLINE, '-k', secretKeyFile, '-r', storePath]);
  await runOrThrow('nix', [
    ...NIX_COMMAND,
    'copy',
    ...OFFLINE,
    '--to',
    `file://${cacheDir}?compression=none`,
    storePath,
  ]);
  // The machine's one /nix/store keeps every signature every earlier test run added to a path
  // (each run makes a new cache key, under the same name), and `nix copy` publishes them all:
  // after enough runs a narinfo has more Sig lines than agents accept (64). The cache gets the
  // signature of this run's key only, as a freshly built path would have; narinfos this cache
  // already held are left as they were.
  const key = parseCacheKey(await fs.readFile(secretKeyFile.replace(/\.secret$/, '.public'), 'utf8'));
  for (const path of paths) {
    if (existed.has(path)) continue;
    const file = narinfoOf(path);
    const text = await fs.readFile(file, 'utf8').catch(() => null);
    if (text === null) continue;
    const field = (name: string): string => text.match(new RegExp(`^${name}: (.*)$`, 'm'))?.[1] ?? '';
    const fingerprint = new TextEncoder().encode(
      narinfoFingerprint({
        storePath: field('StorePath'),
        narHash: field('NarHash'),
        narSize: Number(field('NarSize')),
        references: field('References').split(' ').filter(Boolean),
      }),
    );
    const ours = (line: string): boolean => {
      const [name, signature] = line.slice('Sig: '.length).split(':');
      return name === key.name && nacl.sign.detached.verify(fingerprint, fromBase64(signature ?? ''), key.publicKey);
    };
    const kept = text.split('\n').filter((line) => !line.startsWith('Sig: ') || ours(line));
    await fs.writeFile(file, kept.join('\n'));
  }
}

export interface InstallFromCacheOptions {
  // Root of a chroot store: files land under <storeRoot>/nix/store.
  storeRoot: string;
  storePath: string;
  substituterUrl: string;
  trustedPublicKeys: string[];
  timeoutMs?: number;
}

// What a device does: realise a path from the cache into its own store, trusting only the given
// keys. Returns the result instead of throwing, since tests also expect refusals.
export function installFromCache(options: InstallFromCacheOptions): Promise<CommandResult> {
  return runCommand(
    'nix-store',
    [
      '--store',
      options.storeRoot,
      '-r',
      options.storePath,
      '--option',
      'substituters',
      options.substituterUrl,
      '--option',
      'trusted-public-keys',
      options.trustedPublicKeys.join(' '),
      // Tests reuse ports across runs; a cached "not found" from an earlier server would lie.
      '--option',
      'narinfo-cache-negative-ttl',
      '0',
      '--option',
      'narinfo-cache-positive-ttl',
      '0',
      '--option',
      'connect-timeout',
      '5',
    ],
    { timeoutMs: options.timeoutMs ?? 120_000 },
  );
}
