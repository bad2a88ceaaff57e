import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { z } from 'zod';
import { deployCommand } from '../../../admin/deploy.js';
import { statusCommand } from '../../../admin/status.js';
import { durationSchema } from '../../../cli/duration.js';
import {
  commandJson,
  defineCommand,
  option,
  parseOptions,
  readAdminConfig,
  renderHelp,
  UsageError,
} from '../../../cli/options.js';

// Common admin settings: flag > environment > admin config file, declared once in the kit and
// opted into per option; a bad file is named with its field and the fix.

const ROOT = `${'A'.repeat(43)}=`;
const ROOT2 = `${'B'.repeat(43)}=`;

const admin = defineCommand({
  name: 'sample',
  summary: 'an admin command for the kit test',
  usage: 'outpost sample [options]',
  options: z.object({
    coordinator: option(z.string().regex(/^wss?:\/\//, 'expected a ws:// or wss:// URL'), {
      placeholder: 'URL',
      description: 'the coordinator',
      common: 'coordinator',
    }),
    key: option(z.string().min(1).optional(), { placeholder: 'FILE', description: 'admin key', common: 'key' }),
    orgRoot: option(z.array(z.string().min(1)).default([]), {
      placeholder: 'KEY',
      description: 'org root',
      common: 'orgRoot',
    }),
    timeout: option(durationSchema.pipe(z.number().max(3600, 'must be at most an hour')).prefault('15s'), {
      placeholder: 'DURATION',
      description: 'wait',
      common: 'timeout',
    }),
    // The same name without opting in: never filled from the environment or the file.
    host: option(z.string().optional(), { placeholder: 'ID', description: 'a host' }),
  }),
});

// A sample with a `key` that is not the admin key (as `enroll request --key HOSTKEYFILE`).
const hostKeyCommand = defineCommand({
  name: 'hostkey',
  summary: 's',
  usage: 'u',
  options: z.object({ key: option(z.string().min(1), { placeholder: 'FILE', description: 'host key' }) }),
});

const dir = mkdtempSync(join(tmpdir(), 'outpost-admin-config-'));
let n = 0;
function configFile(content: unknown): string {
  const path = join(dir, `config-${n++}.json`);
  writeFileSync(path, typeof content === 'string' ? content : JSON.stringify(content));
  return path;
}

function parsed(argv: string[], env: Record<string, string>) {
  const result = parseOptions(admin, argv, env);
  if (result.help) throw new Error('help');
  return result.value;
}

function usageMessage(command: Parameters<typeof parseOptions>[0], argv: string[], env: Record<string, string>) {
  try {
    parseOptions(command, argv, env);
  } catch (error) {
    assert.instance(error, UsageError);
    return (error as Error).message;
  }
  assert.unreachable('accepted');
  return '';
}

test('flag > environment > config file, for every common setting', () => {
  const file = configFile({ coordinator: 'ws://file', key: 'admin.key', orgRoot: [ROOT], timeout: '2m' });
  const env = { OUTPOST_CONFIG: file };
  assert.equal(parsed([], env), {
    coordinator: 'ws://file',
    key: join(dir, 'admin.key'),
    orgRoot: [ROOT],
    timeout: 120,
  });
  const fromEnv = {
    ...env,
    OUTPOST_COORDINATOR: 'ws://env',
    OUTPOST_KEY: '/keys/env.key',
    OUTPOST_ORG_ROOT: `${ROOT}, ${ROOT2}`,
    OUTPOST_TIMEOUT: '30',
  };
  assert.equal(parsed([], fromEnv), {
    coordinator: 'ws://env',
    key: '/keys/env.key',
    orgRoot: [ROOT, ROOT2],
    timeout: 30,
  });
  assert.equal(
    parsed(['--coordinator', 'ws://flag', '--key', 'flag.key', '--org-root', ROOT2, '--timeout', '5s'], fromEnv),
    { coordinator: 'ws://flag', key: 'flag.key', orgRoot: [ROOT2], timeout: 5 },
  );
  // Mixed: each setting from its own best source.
  assert.equal(parsed(['--key', 'flag.key'], { ...env, OUTPOST_TIMEOUT: '7' }), {
    coordinator: 'ws://file',
    key: 'flag.key',
    orgRoot: [ROOT],
    timeout: 7,
  });
});

test('several coordinators: repeated flags, a list in the environment or in the config file', () => {
  const coordinators = (argv: string[], env: Record<string, string>) => {
    const result = parseOptions(statusCommand, argv, env);
    if (result.help) throw new Error('help');
    return result.value.coordinator;
  };
  const home = { HOME: join(dir, 'nobody') };
  assert.equal(coordinators(['--coordinator', 'ws://a', '--coordinator', 'wss://b'], home), ['ws://a', 'wss://b']);
  assert.equal(coordinators([], { ...home, OUTPOST_COORDINATOR: 'ws://a, wss://b' }), ['ws://a', 'wss://b']);
  assert.equal(coordinators([], { OUTPOST_CONFIG: configFile({ coordinator: ['ws://a', 'wss://b'] }) }), [
    'ws://a',
    'wss://b',
  ]);
  assert.equal(coordinators([], { OUTPOST_CONFIG: configFile({ coordinator: 'ws://one' }) }), ['ws://one']);
  const many = Array.from({ length: 9 }, (_, i) => ['--coordinator', `ws://c${i}`]).flat();
  assert.match(usageMessage(statusCommand, many, home), /--coordinator: at most 8 coordinators/);
  assert.match(
    usageMessage(statusCommand, [], { OUTPOST_CONFIG: configFile({ coordinator: ['ws://a', 'http://b'] }) }),
    /expected a ws:\/\/ or wss:\/\/ URL/,
  );
});

test('the default file is $XDG_CONFIG_HOME/outpost/config.json, else ~/.config/outpost/config.json', () => {
  const xdg = join(dir, 'xdg');
  mkdirSync(join(xdg, 'outpost'), { recursive: true });
  writeFileSync(join(xdg, 'outpost', 'config.json'), JSON.stringify({ coordinator: 'ws://xdg', timeout: 9 }));
  const home = join(dir, 'home');
  mkdirSync(join(home, '.config', 'outpost'), { recursive: true });
  writeFileSync(
    join(home, '.config', 'outpost', 'config.json'),
    JSON.stringify({ coordinator: 'ws://home', key: '~/a.key' }),
  );
  assert.is(parsed([], { XDG_CONFIG_HOME: xdg, HOME: home }).coordinator, 'ws://xdg');
  assert.is(parsed([], { XDG_CONFIG_HOME: xdg, HOME: home }).timeout, 9);
  assert.is(parsed([], { HOME: home }).coordinator, 'ws://home');
  assert.is(parsed([], { HOME: home }).key, join(home, 'a.key'), '~/ is the home folder');
  // No file at the default place is no config at all.
  assert.match(usageMessage(admin, [], { HOME: join(dir, 'nobody') }), /--coordinator: missing/);
});

test('a setting not opted in is never filled from the environment or the file', () => {
  const file = configFile({ coordinator: 'ws://file', key: '/keys/admin.key' });
  const env = { OUTPOST_CONFIG: file, OUTPOST_KEY: '/keys/admin.key' };
  assert.match(usageMessage(hostKeyCommand, [], env), /--key: missing/);
  assert.is(parsed([], env).host, undefined);
});

test('a bad config file is named with the field and the fix', () => {
  const cases: [unknown, RegExp][] = [
    ['{ "coordinator": ', /config file .*config-\d+\.json: not JSON/],
    [[1, 2], /config file .*: expected a JSON object/],
    [{ coordinator: 'http://x' }, /config file .*: field coordinator: expected a ws:\/\/ or wss:\/\/ URL/],
    [{ orgRoot: 'AAAA' }, /field orgRoot: expected a list of pinned org root keys/],
    [{ orgRoot: [ROOT, ''] }, /field orgRoot\[1\]: expected a base64 public key or a key file/],
    [{ timeout: 'soon' }, /field timeout: expected a duration/],
    [{ coordinater: 'ws://x' }, /unknown field coordinater; the known fields are coordinator, key, orgRoot, timeout/],
    ['x'.repeat(70_000), /more than 65536/],
  ];
  for (const [content, expected] of cases) {
    const path = configFile(content);
    const message = usageMessage(admin, [], { OUTPOST_CONFIG: path });
    assert.match(message, expected, message);
    assert.ok(message.startsWith(`outpost sample: config file ${path}`), message);
    assert.match(message, /fix it, or point \$OUTPOST_CONFIG at another file/);
  }
  assert.match(
    usageMessage(admin, [], { OUTPOST_CONFIG: join(dir, 'missing.json') }),
    /config file .*missing\.json \(from \$OUTPOST_CONFIG\) does not exist/,
  );
  const tooLong = configFile({ timeout: 40 * 86_400 });
  assert.match(usageMessage(admin, [], { OUTPOST_CONFIG: tooLong }), /field timeout: must be at most 30 days/);
  // Org root entries that are not keys are key files, relative to the config file's folder.
  const path = configFile({ coordinator: 'ws://x', orgRoot: [ROOT, 'root.pub'] });
  assert.equal(readAdminConfig({ OUTPOST_CONFIG: path })?.values, {
    coordinator: 'ws://x',
    orgRoot: [ROOT, join(dir, 'root.pub')],
  });
});

test('a broken file does not stop a call that names every common setting itself', () => {
  const env = { OUTPOST_CONFIG: configFile('not json'), OUTPOST_ORG_ROOT: ROOT };
  const value = parsed(['--coordinator', 'ws://x', '--key', 'k', '--timeout', '1'], env);
  assert.is(value.coordinator, 'ws://x');
  assert.equal(value.orgRoot, [ROOT]);
});

test('a wrong environment value names its variable', () => {
  assert.match(
    usageMessage(admin, [], { OUTPOST_COORDINATOR: 'http://x', HOME: join(dir, 'nobody') }),
    /--coordinator \(from \$OUTPOST_COORDINATOR\): expected a ws:\/\/ or wss:\/\/ URL/,
  );
  // A file value that passes the file's checks but not the command's is named as the source.
  const path = configFile({ coordinator: 'ws://x', timeout: '2h' });
  assert.match(
    usageMessage(admin, [], { OUTPOST_CONFIG: path }),
    new RegExp(`--timeout \\(from config file ${path.replace(/[.]/g, '\\.')}, field timeout\\)`),
  );
});

test('--help and --help --json show each source: flag, environment variable, config field and file', () => {
  const env = { HOME: '/home/alice' };
  for (const command of [admin, statusCommand, deployCommand]) {
    const help = renderHelp(command, env);
    assert.match(
      help,
      /^ {2}--coordinator URL +.*\((repeatable; )?env: OUTPOST_COORDINATOR; config: coordinator\)$/m,
      help,
    );
    assert.match(help, /--key FILE +.*\(env: OUTPOST_KEY; config: key/);
    assert.match(help, /--timeout DURATION +.*\(env: OUTPOST_TIMEOUT; config: timeout; default: /);
    assert.match(help, /admin config file, \/home\/alice\/\.config\/outpost\/config\.json/);
    assert.match(help, /A flag wins over its environment variable, which wins over the file/);
    const json = commandJson(command, env);
    const coordinator = json.options.find((o) => o.name === 'coordinator')!;
    assert.is(coordinator.env, 'OUTPOST_COORDINATOR');
    assert.is(coordinator.configField, 'coordinator');
    assert.equal(json.configFile, {
      path: '/home/alice/.config/outpost/config.json',
      precedence: ['flag', 'environment', 'config file'],
    });
  }
  assert.match(
    renderHelp(admin, {}),
    /--org-root KEY +org root \(repeatable; env: OUTPOST_ORG_ROOT; config: orgRoot\)/,
  );
  assert.not.match(renderHelp(hostKeyCommand, env), /config/);
  assert.is(commandJson(hostKeyCommand, env).configFile, undefined);
});

test.after(() => rmSync(dir, { recursive: true, force: true }));

test.run();
