import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { webCommand } from '../../admin/web.js';
import { agentCommand } from '../../agent/options.js';
import { type Command, type OptionInfo, parseOptions } from '../../cli/options.js';
import { coordinatorCommand } from '../../coordinator/options.js';
import { relayCommand } from '../../relay/options.js';
import { removeDirectory, temporaryDirectory } from '../harness/processes.js';

// The NixOS modules (nix/modules/*.nix) must expose every flag of the daemons' CLIs, with a type
// that fits and the CLI's defaults, and must evaluate. nixpkgs itself is not reachable here, but
// an unmodified copy of its lib/ is, beside the repository (../shared/vendor/nixpkgs-lib, or
// $OUTPOST_NIXPKGS_LIB): nix/tests/eval-modules.nix evaluates every module with lib.evalModules
// and real lib.types against typed declarations of the NixOS options they set
// (nix/tests/nixos-options.nix). Without that copy the evaluation tests say "skipped" and
// what they looked for. The VM test (nix/tests/vm-test.nix) runs where nixpkgs is (docs/nixos.md).

interface NixType {
  name: string;
  description?: string;
  elemType?: NixType;
  values?: unknown[];
  pattern?: string;
}

interface NixOption {
  name: string;
  hasType: boolean;
  type: NixType;
  description: string | null;
  hasDefault: boolean;
  default: unknown;
  defaultIsPath: boolean;
  defaultText: unknown;
  hasExample: boolean;
}

interface RenderedUnit {
  script: string | null;
  restartIfChanged: boolean | null;
  stopIfChanged: boolean | null;
  unitConfig: Record<string, unknown>;
  serviceConfig: Record<string, unknown>;
  path: string[];
  argv: string[];
  services: string[];
  paths: string[];
  timers: string[];
  etc: string[];
  firewallPorts: number[];
  authorizedKeysFiles: string[];
  warnings: string[];
  failedAssertions: string[];
  // Every NixOS option value the module set, as evaluated (forced whole, so type-checked).
  nixos: {
    systemd: {
      services: Record<string, { wantedBy: string[]; after: string[]; description: string }>;
      paths: Record<string, unknown>;
      timers: Record<string, unknown>;
    };
  };
}

type RoleName = 'agent' | 'coordinator' | 'relay' | 'web';

interface RoleEval {
  command: string;
  optionPath: string;
  file: string;
  flags: { flag: string; option: string; ownDefault: string | null }[];
  pending: Record<string, string>;
  options: NixOption[];
  minimal: RenderedUnit;
  sample: RenderedUnit;
  // `sample` with the other side of exclusive options (agent: adminKeys instead of orgRootKeys).
  alternate: RenderedUnit;
}

interface ModuleEval {
  libFound: boolean;
  libDir: string | null;
  npmLock: Record<string, Record<string, string | null>>;
  // Present when the nixpkgs lib copy was found.
  libVersion?: string;
  roles?: Record<RoleName, RoleEval>;
  apps?: AppsEval;
  defaultModuleImports?: string[];
  flake?: {
    outputs: string[];
    packages: Record<string, string[]>;
    devShells: Record<string, string[]>;
    checks: Record<string, string[]>;
    nixosModules: Record<string, string>;
  };
}

// services.outpost-apps (nix/modules/apps.nix), rendered by eval-modules.nix's appsEval.
interface AppUnit {
  description: string;
  wantedBy: string[];
  after: string[];
  requires: string[];
  path: string[];
  environment: Record<string, string>;
  script: string;
  preStop: string;
  reload: string;
  reloadIfChanged: boolean;
  serviceConfig: Record<string, unknown>;
}

interface AppsRender {
  services: string[];
  units: Record<string, AppUnit>;
  manifest: { version: number; apps: { name: string; rev: string; repo: string; unit: string }[] } | null;
  agentArgv: string[];
  dockerEnabled: boolean;
  warnings: string[];
  failedAssertions: string[];
}

interface AppsEval {
  options: NixOption[];
  none: AppsRender;
  sample: AppsRender;
  refused: Record<'branch' | 'shortRev' | 'upperCase' | 'name', string[]>;
}

type WithLib = Required<ModuleEval>;

const SYSTEMS: Record<string, { os: string; cpu: string }> = {
  'x86_64-linux': { os: 'linux', cpu: 'x64' },
  'aarch64-linux': { os: 'linux', cpu: 'arm64' },
};

function findRepoRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!(existsSync(join(dir, 'flake.nix')) && existsSync(join(dir, 'package.json')))) {
    const parent = dirname(dir);
    if (parent === dir) throw new Error(`no flake.nix above ${fileURLToPath(import.meta.url)}`);
    dir = parent;
  }
  return dir;
}

const repo = findRepoRoot();

function run(command: string, args: string[]): { code: number; stdout: string; stderr: string } {
  const result = spawnSync(command, args, { cwd: repo, encoding: 'utf8', maxBuffer: 64 << 20 });
  if (result.error) {
    const hint =
      (result.error as NodeJS.ErrnoException).code === 'ENOENT'
        ? ' (install Nix; Debian: apt-get install nix-bin)'
        : '';
    throw new Error(`cannot run ${command}: ${result.error.message}${hint}`);
  }
  return { code: result.status ?? -1, stdout: result.stdout, stderr: result.stderr };
}

function nixFiles(dir: string): string[] {
  return readdirSync(dir)
    .flatMap((name) => {
      if (['node_modules', 'dist', '.git'].includes(name) || name.startsWith('result')) return [];
      const path = join(dir, name);
      if (statSync(path).isDirectory()) return nixFiles(path);
      return name.endsWith('.nix') ? [path] : [];
    })
    .sort();
}

// nixpkgs' lib/ is test material beside the repository, never inside it.
const nixpkgsLib = process.env.OUTPOST_NIXPKGS_LIB ?? join(repo, '..', 'shared', 'vendor', 'nixpkgs-lib');
const libFound = existsSync(join(nixpkgsLib, 'lib', 'default.nix'));
const skipped = `skipped: nixpkgs lib not found at ${join(nixpkgsLib, 'lib')} (an unmodified copy of nixpkgs' lib/ beside the repository, or set OUTPOST_NIXPKGS_LIB to the folder holding lib/)`;

function evalModules(extra: string[] = []): { code: number; stdout: string; stderr: string } {
  return run('nix-instantiate', [
    '--eval',
    '--strict',
    '--json',
    '--readonly-mode',
    join(repo, 'nix/tests/eval-modules.nix'),
    '--argstr',
    'nixpkgsLib',
    libFound ? nixpkgsLib : '',
    ...extra,
  ]);
}

let cached: ModuleEval | undefined;
function evaluated(): ModuleEval {
  if (cached) return cached;
  const result = evalModules();
  if (result.code !== 0) throw new Error(`evaluating nix/tests/eval-modules.nix failed:\n${result.stderr}`);
  cached = JSON.parse(result.stdout) as ModuleEval;
  return cached;
}

// Registers a test that needs the module system; without the lib copy it is registered as
// skipped (uvu counts it so), and the reason is printed once.
if (!libFound) console.log(`nixos-module: ${skipped}`);
function withLib(name: string, body: (evaluation: WithLib) => void): void {
  if (!libFound) {
    test.skip(name, () => {});
    return;
  }
  test(name, () => {
    const evaluation = evaluated();
    assert.ok(evaluation.libFound && evaluation.roles, `eval-modules.nix did not load ${nixpkgsLib}`);
    body(evaluation as WithLib);
  });
}

// What the CLI itself says about its options: `outpost <command> --help --json`, from the built bin.
const cliCache = new Map<string, OptionInfo[]>();
function cliOptions(command: string): OptionInfo[] {
  const cached = cliCache.get(command);
  if (cached) return cached;
  const bin = fileURLToPath(new URL('../../cli/outpost.js', import.meta.url));
  const result = run(process.execPath, [bin, command, '--help', '--json']);
  if (result.code !== 0) throw new Error(`outpost ${command} --help --json failed:\n${result.stderr}`);
  const options = (JSON.parse(result.stdout) as { options: OptionInfo[] }).options;
  cliCache.set(command, options);
  return options;
}

// Splits a line produced by lib.escapeShellArgs back into words.
function shellWords(line: string): string[] {
  const words: string[] = [];
  let current = '';
  let inWord = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (c === "'") {
      const end = line.indexOf("'", i + 1);
      if (end < 0) throw new Error(`unterminated quote in: ${line}`);
      current += line.slice(i + 1, end);
      i = end;
      inWord = true;
    } else if (c === '\\' && i + 1 < line.length) {
      current += line[i + 1];
      i++;
      inWord = true;
    } else if (c === ' ' || c === '\t') {
      if (inWord) words.push(current);
      current = '';
      inWord = false;
    } else if (c === '"' || c === '$' || c === '`' || c === ';' || c === '|' || c === '&') {
      throw new Error(`unquoted ${c} on the command line: ${line}`);
    } else {
      current += c;
      inWord = true;
    }
  }
  if (inWord) words.push(current);
  return words;
}

// The `exec …/bin/outpost <command> …` line of a unit's script, as argv after the command.
function execArgs(unit: RenderedUnit, command: string): string[] {
  assert.ok(unit.script, 'the unit has a script');
  const lines = unit.script!.split('\n').filter((l) => l.trim().startsWith('exec '));
  assert.is(lines.length, 1, `one exec line in:\n${unit.script}`);
  const words = shellWords(lines[0]!.trim());
  assert.ok(words[1]?.endsWith('/bin/outpost'), `exec runs the outpost binary: ${lines[0]}`);
  assert.is(words[2], command, `exec runs 'outpost ${command}': ${lines[0]}`);
  return words.slice(3);
}

const unwrapNull = (t: NixType): NixType => (t.name === 'nullOr' && t.elemType ? unwrapNull(t.elemType) : t);

const NIX_INTEGER = /^(int|positiveInt|unsignedInt\d*|signedInt\d*|intBetween)$/;
const NIX_STRING = /^(str|strMatching|nonEmptyStr|singleLineStr)$/;

// Why a module option's (unwrapped, element) type cannot carry what the CLI's flag takes, if so.
function typeMismatch(cli: OptionInfo, nix: NixType): string | null {
  const shown = nix.name === 'strMatching' ? `strMatching ${nix.pattern}` : nix.name;
  switch (cli.type) {
    case 'boolean':
      return nix.name === 'bool' ? null : `a boolean flag, but the option is ${shown}`;
    case 'integer':
    case 'number':
      return NIX_INTEGER.test(nix.name) ? null : `a number, but the option is ${shown}`;
    case 'enum': {
      if (nix.name !== 'enum') return `one of ${cli.values!.join(', ')}, but the option is ${shown}`;
      const ours = [...(nix.values ?? [])].map(String).sort();
      const theirs = [...cli.values!].sort();
      return ours.join() === theirs.join()
        ? null
        : `one of ${theirs.join(', ')}, but the option's enum is ${ours.join(', ')}`;
    }
    default:
      return NIX_STRING.test(nix.name) ? null : `a string, but the option is ${shown}`;
  }
}

// A value as it lands on the command line, to compare defaults the way the CLI will see them.
const words = (value: unknown): string[] =>
  Array.isArray(value)
    ? value.map(String)
    : typeof value === 'boolean'
      ? value
        ? ['true']
        : []
      : value === null || value === undefined
        ? []
        : [String(value)];

// Every problem between a CLI's options (`--help --json`) and a module's option → flag table.
function flagProblems(roleName: RoleName, command: string, role: RoleEval): string[] {
  const problems: string[] = [];
  const cliFlags = cliOptions(command);
  const mapped = new Map(role.flags.map((e) => [e.flag, e]));
  const options = new Map(role.options.map((o) => [o.name, o]));
  const cli = new Set(cliFlags.map((f) => f.name));
  const rendered = new Set(
    [role.sample, role.alternate]
      .flatMap((unit) => execArgs(unit, role.command))
      .filter((w) => w.startsWith('--'))
      .map((w) => w.slice(2)),
  );
  const where = `${role.optionPath} (${relative(repo, role.file)})`;
  for (const flag of cliFlags) {
    const entry = mapped.get(flag.name);
    if (!entry) {
      problems.push(
        `'outpost ${command} --${flag.name}' is not exposed by ${where}: declare an option and add { flag = "${flag.name}"; option = "…"; } to roles.${roleName}.flags in nix/lib/flags.nix`,
      );
      continue;
    }
    const option = entry.option;
    const id = `${role.optionPath}.${option}`;
    if (flag.name in role.pending) {
      problems.push(
        `'outpost ${command}' accepts --${flag.name} now, but nix/lib/flags.nix still lists it as pending (${role.pending[flag.name]}): remove it from roles.${roleName}.pending`,
      );
      continue;
    }
    const declared = options.get(option);
    if (!declared) {
      problems.push(`--${flag.name} maps to ${id}, which ${where} does not declare`);
      continue;
    }
    const type = unwrapNull(declared.type);
    if (flag.repeatable && type.name !== 'listOf')
      problems.push(`--${flag.name} is repeatable but ${id} is ${type.name}, not a list`);
    if (!flag.repeatable && ['listOf', 'bool'].includes(type.name) && flag.type !== 'boolean')
      problems.push(`--${flag.name} takes one value but ${id} is ${type.name}`);
    const valueType = flag.repeatable && type.elemType ? unwrapNull(type.elemType) : type;
    const mismatch = typeMismatch(flag, valueType);
    if (mismatch) problems.push(`--${flag.name} takes ${mismatch} (${id})`);
    if (!rendered.has(flag.name))
      problems.push(
        `${where} never puts --${flag.name} on the command line, even with every option set (sample and alternate)`,
      );
    // Defaults: null leaves the flag out, so the CLI's own default applies; any other default
    // must be the CLI's, unless flags.nix says why the module differs.
    if (!declared.hasDefault || declared.default === null) continue;
    const moduleWords = words(declared.default);
    const differs =
      flag.default !== undefined
        ? moduleWords.join('\0') !== words(flag.default).join('\0')
        : !flag.required && moduleWords.length > 0;
    const cliDefault = flag.default !== undefined ? JSON.stringify(flag.default) : (flag.defaultText ?? 'no default');
    if (differs && !entry.ownDefault)
      problems.push(
        `${id} defaults to ${JSON.stringify(declared.default)}, but 'outpost ${command} --${flag.name}' defaults to ${cliDefault}: make them equal, or say why the module differs with ownDefault in roles.${roleName}.flags (nix/lib/flags.nix)`,
      );
    if (!differs && entry.ownDefault)
      problems.push(
        `nix/lib/flags.nix says ${id} has its own default (${entry.ownDefault}), but it is the CLI's (${cliDefault}): remove ownDefault`,
      );
  }
  for (const entry of role.flags) {
    if (!options.has(entry.option))
      problems.push(
        `nix/lib/flags.nix maps --${entry.flag} to ${role.optionPath}.${entry.option}, which is not declared`,
      );
    if (!cli.has(entry.flag) && !(entry.flag in role.pending)) {
      problems.push(
        `${where} passes --${entry.flag}, which 'outpost ${command}' does not accept (the service would not start): remove it, or list it in roles.${roleName}.pending with the issue that adds it`,
      );
    }
  }
  for (const [flag, reason] of Object.entries(role.pending)) {
    if (!/\bissue \d+\b/.test(reason))
      problems.push(`pending flag --${flag} must name the issue that adds it (got "${reason}")`);
    if (rendered.has(flag))
      problems.push(`pending flag --${flag} is on the command line, but the CLI rejects unknown flags`);
  }
  return problems;
}

test('every .nix file in the repository parses (nix-instantiate --parse)', () => {
  const files = nixFiles(repo);
  for (const expected of [
    'flake.nix',
    'nix/package.nix',
    'nix/modules/agent.nix',
    'nix/modules/coordinator.nix',
    'nix/modules/relay.nix',
    'nix/modules/web.nix',
    'nix/modules/apps.nix',
    'nix/tests/vm-test.nix',
  ]) {
    assert.ok(files.includes(join(repo, expected)), `${expected} exists`);
  }
  const failures = files.flatMap((file) => {
    const result = run('nix-instantiate', ['--parse', file]);
    return result.code === 0 ? [] : [`${relative(repo, file)}: ${result.stderr.trim()}`];
  });
  assert.equal(failures, [], failures.join('\n'));
});

withLib('the modules evaluate with lib.evalModules, with minimal settings and with every option set', ({ roles }) => {
  for (const [name, role] of Object.entries(roles)) {
    assert.equal(role.minimal.failedAssertions, [], `${name}: assertions fail with enable + required options`);
    assert.equal(role.minimal.warnings, [], `${name}: warnings with enable + required options`);
    assert.equal(role.sample.failedAssertions, [], `${name}: assertions fail with every option set`);
    assert.ok(role.minimal.services.includes(`outpost-${name}`), `${name}: defines systemd.services.outpost-${name}`);
    const unit = role.minimal.nixos.systemd.services[`outpost-${name}`]!;
    assert.ok(unit.wantedBy.includes('multi-user.target'), `${name}: started at boot`);
    assert.ok(unit.after.includes('network-online.target'), `${name}: after the network is up`);
    assert.ok(unit.description.length > 10, `${name}: the unit has a description`);
    // The script renders exactly the mapped flags (extraArgs is empty in both configurations).
    assert.equal(execArgs(role.minimal, role.command), role.minimal.argv, `${name}: ExecStart uses flags.argsFor`);
    assert.equal(execArgs(role.sample, role.command), role.sample.argv, `${name}: ExecStart uses flags.argsFor`);
  }
});

withLib(
  'sshAccess: off by default; on, the agent gets --authorized-keys-dir and sshd reads DIR/%u; it needs the fleet policy',
  ({ roles }) => {
    const { minimal, sample } = roles.agent;
    assert.not.ok(minimal.argv.includes('--authorized-keys-dir'), 'off by default');
    assert.equal(minimal.authorizedKeysFiles, []);
    const dir = sample.argv[sample.argv.indexOf('--authorized-keys-dir') + 1];
    assert.is(dir, '/etc/ssh/outpost-authorized-keys', 'the option example, set in the sample');
    assert.equal(sample.authorizedKeysFiles, [`${dir}/%u`]);
    const tmpfiles = (sample.nixos.systemd as unknown as { tmpfiles: { rules: string[] } }).tmpfiles.rules;
    assert.ok(tmpfiles.includes(`d ${dir} 0755 root root -`), tmpfiles.join('\n'));
    // With the default directory, and refused without the fleet policy (adminKeys instead).
    const probe = (settings: string) =>
      JSON.parse(evalModules(['--arg', 'probe', `{ role = "agent"; settings = ${settings}; }`]).stdout) as {
        probe: string[];
        probeFailedAssertions: string[];
      };
    const enabled = probe(`{ sshAccess.enable = true; orgRootKeys = [ "${'m'.repeat(43)}=" ]; }`);
    assert.equal(enabled.probeFailedAssertions, []);
    assert.ok(enabled.probe.join(' ').includes('--authorized-keys-dir /var/lib/outpost-ssh-access'));
    const noPolicy = probe(
      '{ sshAccess.enable = true; orgRootKeys = [ ]; adminKeys = [ "X/L1G2uWjtGN5PBhrQqweSaWIXB3D+QvRjLzDCrHl2g=" ]; }',
    );
    assert.ok(
      noPolicy.probeFailedAssertions.some((m) => /sshAccess\.enable needs orgRootKeys/.test(m)),
      noPolicy.probeFailedAssertions.join('\n'),
    );
  },
);

withLib('a value of the wrong type, or an option NixOS does not have, fails the evaluation', () => {
  const probe = (role: RoleName, settings: string) =>
    evalModules(['--arg', 'probe', `{ role = "${role}"; settings = ${settings}; }`]);
  const accepted = probe('agent', '{ fetchTimeout = 7200; }');
  assert.is(accepted.code, 0, accepted.stderr);
  assert.ok((JSON.parse(accepted.stdout) as { probe: string[] }).probe.join(' ').includes('--fetch-timeout 7200'));
  const cases: [RoleName, string, RegExp][] = [
    ['agent', '{ fetchTimeout = "soon"; }', /services\.outpost-agent\.fetchTimeout' is not of type `positive integer/],
    [
      'agent',
      '{ maintenanceWindows = [ "Tuesday 3-5" ]; }',
      /maintenanceWindows\."\[definition 1-entry 1\]"' is not of type `string matching the pattern/,
    ],
    [
      'coordinator',
      '{ port = 70000; }',
      /services\.outpost-coordinator\.port' is not of type `16 bit unsigned integer/,
    ],
    ['relay', '{ logLevel = "loud"; }', /services\.outpost-relay\.logLevel' is not of type `one of "trace"/],
    ['relay', '{ upstream = [ "wss://x" ]; }', /option `services\.outpost-relay\.upstream' does not exist/],
  ];
  for (const [role, settings, expected] of cases) {
    const result = probe(role, settings);
    assert.is.not(result.code, 0, `${role} ${settings} was accepted`);
    assert.match(result.stderr, expected);
  }
});

withLib('every option has a type and a description; options without a default have an example', ({ roles }) => {
  for (const [name, role] of Object.entries(roles)) {
    assert.ok(role.options.length > 3, `${name}: options found`);
    for (const option of role.options) {
      const id = `${role.optionPath}.${option.name}`;
      assert.ok(option.hasType && option.type.name !== '<not a type>', `${id} has a type`);
      assert.type(option.description, 'string', `${id} has a description`);
      assert.ok(option.description!.trim().length >= 10, `${id} has a real description`);
      if (!option.hasDefault) assert.ok(option.hasExample, `${id} has no default, so it needs an example`);
    }
  }
});

withLib('key files and state are path strings read at run time, never Nix paths copied to the store', ({ roles }) => {
  const keyFile = roles.agent.options.find((o) => o.name === 'keyFile');
  assert.ok(keyFile, 'services.outpost-agent.keyFile exists');
  assert.is(keyFile!.default, '/var/lib/outpost-agent/host.key');
  for (const [_name, role] of Object.entries(roles)) {
    for (const option of role.options) {
      const id = `${role.optionPath}.${option.name}`;
      assert.not.ok(
        option.defaultIsPath,
        `${id}: the default is a Nix path literal, which would be copied into the store`,
      );
      if (/(key|secret|token|password).*file|file$|dir$/i.test(option.name)) {
        assert.ok(
          ['str', 'strMatching'].includes(unwrapNull(option.type).name),
          `${id} is a string option (types.path would accept path literals), got ${option.type.name}`,
        );
        if (typeof option.default === 'string')
          assert.not.ok(option.default.startsWith('/nix/store'), `${id} defaults into the store`);
      }
    }
  }
});

const daemons: [RoleName, Command][] = [
  ['agent', agentCommand],
  ['coordinator', coordinatorCommand],
  ['relay', relayCommand],
  ['web', webCommand],
];

for (const [name, command] of daemons) {
  withLib(
    `every ${name} CLI flag is reachable from a module option of a fitting type, with the CLI's default`,
    ({ roles }) => {
      const problems = flagProblems(name, command.name, roles[name]);
      assert.equal(problems, [], problems.join('\n'));
    },
  );
}

test("--help --json lists every declared option with the CLI's defaults", () => {
  const agent = new Map(cliOptions('agent').map((o) => [o.name, o]));
  assert.is(agent.size, Object.keys(agentCommand.options.shape).length);
  assert.is(agent.get('min-throughput')?.default, 256);
  assert.is(agent.get('max-closure-size')?.default, '64G');
  assert.equal(agent.get('log-level')?.values, ['trace', 'debug', 'info', 'warn', 'error']);
  assert.ok(agent.get('coordinator')?.repeatable && agent.get('coordinator')?.required);
  assert.is(cliOptions('relay').find((o) => o.name === 'port')?.default, 8421);
});

withLib("the modules' command lines are accepted by the CLI's own parser", ({ roles }) => {
  for (const [name, command] of daemons) {
    for (const config of ['minimal', 'sample', 'alternate'] as const) {
      const argv = roles[name][config].argv;
      try {
        parseOptions(command, argv, {});
      } catch (error) {
        assert.unreachable(
          `${name} (${config}): outpost ${command.name} ${argv.join(' ')}\n  → ${(error as Error).message}`,
        );
      }
    }
  }
});

withLib('pending options produce warnings instead of flags', ({ roles }) => {
  for (const role of Object.values(roles)) {
    for (const [flag] of Object.entries(role.pending)) {
      const option = role.flags.find((e) => e.flag === flag)?.option;
      assert.ok(option, `pending --${flag} has an option`);
      assert.ok(
        role.sample.warnings.some((w) => w.includes(`${role.optionPath}.${option}`) && w.includes(`--${flag}`)),
        `setting ${option} warns`,
      );
    }
  }
});

withLib('agent unit: root, not restarted by the switch it performs, restarts itself afterwards', ({ roles }) => {
  const unit = roles.agent.minimal;
  assert.is(unit.restartIfChanged, false, 'restartIfChanged = false');
  assert.is(unit.stopIfChanged, false, 'stopIfChanged = false');
  assert.is(unit.unitConfig['X-StopOnRemoval'], false);
  assert.not.ok(unit.serviceConfig.DynamicUser, 'the agent needs root');
  assert.is(unit.serviceConfig.StateDirectory, 'outpost-agent');
  assert.is(unit.serviceConfig.StandardError, 'journal');
  assert.ok(
    unit.path.some((p) => p.endsWith('-nix')),
    'Nix is on the PATH',
  );
  assert.ok(unit.services.includes('outpost-agent-upgrade'), 'outpost-agent-upgrade.service exists');
  assert.ok(unit.paths.includes('outpost-agent-upgrade'), 'outpost-agent-upgrade.path exists');
  assert.ok(unit.timers.includes('outpost-agent-upgrade'), 'outpost-agent-upgrade.timer exists');
  assert.ok(unit.etc.includes('outpost/agent.fingerprint'), 'the active system carries the agent fingerprint');
  const script = unit.script!;
  assert.ok(
    /echo [0-9a-f]{64} > \/run\/outpost-agent\/running/.test(script),
    'the agent records what it was started with',
  );
  assert.ok(script.indexOf('/run/outpost-agent/running') < script.indexOf('exec '), 'before exec');
  assert.ok(
    script.includes('keygen --out /var/lib/outpost-agent/host.key'),
    'the host key is created with outpost keygen',
  );
});

withLib(
  'coordinator and relay units: transient user, hardened, state in StateDirectory, logs to the journal',
  ({ roles }) => {
    for (const name of ['coordinator', 'relay'] as const) {
      const config = roles[name].minimal.serviceConfig;
      const expected: Record<string, unknown> = {
        DynamicUser: true,
        NoNewPrivileges: true,
        ProtectSystem: 'strict',
        ProtectHome: true,
        PrivateTmp: true,
        PrivateDevices: true,
        RestrictSUIDSGID: true,
        StateDirectory: `outpost-${name}`,
        StandardError: 'journal',
      };
      for (const [key, value] of Object.entries(expected)) assert.is(config[key], value, `${name}: ${key}`);
      assert.equal(config.CapabilityBoundingSet, [''], `${name}: no capabilities on an unprivileged port`);
      assert.not.ok(roles[name].minimal.restartIfChanged === false, `${name}: restarted normally on change`);
      assert.equal(roles[name].minimal.firewallPorts, [], `${name}: the firewall stays closed by default`);
      assert.equal(roles[name].sample.firewallPorts.length, 1, `${name}: openFirewall opens the port`);
    }
  },
);

withLib(
  "outpost web's unit: loopback only, hardened with no state, the extra CA through NODE_EXTRA_CA_CERTS",
  ({ roles }) => {
    const { minimal, sample } = roles.web;
    assert.equal(minimal.argv, [
      '--coordinator',
      'wss://fleet.example.org',
      '--listen',
      '127.0.0.1',
      '--port',
      '8430',
      '--max-connections',
      '512',
      '--log-level',
      'info',
    ]);
    const config = minimal.serviceConfig;
    for (const [key, value] of Object.entries({
      DynamicUser: true,
      ProtectSystem: 'strict',
      ProtectHome: true,
      NoNewPrivileges: true,
    }))
      assert.is(config[key], value, `web: ${key}`);
    assert.is(config.StateDirectory, undefined, 'web: no state');
    assert.equal(minimal.firewallPorts, [], 'web: never opens the firewall');
    type Env = { environment: Record<string, string> };
    const env = (unit: RenderedUnit) => (unit.nixos.systemd.services['outpost-web'] as unknown as Env).environment;
    assert.is(env(minimal).NODE_EXTRA_CA_CERTS, undefined);
    assert.is(env(sample).NODE_EXTRA_CA_CERTS, '/etc/ssl/fleet-ca.pem');
    // Another address than loopback is refused by the option's type, as `outpost web` refuses it.
    const probe = (settings: string) => evalModules(['--arg', 'probe', `{ role = "web"; settings = ${settings}; }`]);
    for (const address of ['0.0.0.0', '10.0.0.1', '::']) {
      const refused = probe(`{ listen = "${address}"; }`);
      assert.is.not(refused.code, 0, `listen = ${address} was accepted`);
      assert.match(refused.stderr, /services\.outpost-web\.listen' is not of type `string matching the pattern/);
    }
    const v6 = probe('{ listen = "::1"; port = 9000; }');
    assert.is(v6.code, 0, v6.stderr);
    assert.ok((JSON.parse(v6.stdout) as { probe: string[] }).probe.join(' ').includes('--listen ::1 --port 9000'));
    const badUrl = probe('{ coordinators = [ "https://fleet.example.org" ]; }');
    assert.is.not(badUrl.code, 0, 'an https:// coordinator was accepted');
    // Several coordinators of one fleet: one --coordinator each, in order.
    const several = probe('{ coordinators = [ "wss://a.example.org" "wss://b.example.org" ]; }');
    assert.is(several.code, 0, several.stderr);
    assert.ok(
      (JSON.parse(several.stdout) as { probe: string[] }).probe
        .join(' ')
        .includes('--coordinator wss://a.example.org --coordinator wss://b.example.org'),
      several.stdout,
    );
    // The option's old name, one URL, still works (NixOS warns that it changed).
    const old = probe('{ coordinator = "wss://old.example.org"; }');
    assert.is(old.code, 0, old.stderr);
    assert.ok(
      (JSON.parse(old.stdout) as { probe: string[] }).probe.join(' ').includes('--coordinator wss://old.example.org'),
      old.stdout,
    );
    const badInList = probe('{ coordinators = [ "wss://a.example.org" "https://b.example.org" ]; }');
    assert.is.not(badInList.code, 0, 'an https:// coordinator in a list was accepted');
  },
);

withLib(
  'flake outputs: package, modules, dev shell and the VM test for each Linux system',
  ({ flake, defaultModuleImports }) => {
    for (const system of Object.keys(SYSTEMS)) {
      assert.ok(flake.packages[system]?.includes('default'), `packages.${system}.default`);
      assert.ok(flake.devShells[system]?.includes('default'), `devShells.${system}.default`);
      assert.ok(flake.checks[system]?.includes('vm-test'), `checks.${system}.vm-test`);
    }
    for (const name of ['agent', 'coordinator', 'relay', 'web', 'apps']) {
      assert.is(relative(repo, flake.nixosModules[name] ?? ''), `nix/modules/${name}.nix`, `nixosModules.${name}`);
      assert.ok(
        defaultModuleImports.some((m) => relative(repo, m) === `nix/modules/${name}.nix`),
        `nixosModules.default imports ${name}`,
      );
    }
    assert.is(relative(repo, flake.nixosModules.default ?? ''), 'nix/modules/default.nix');
  },
);

test('the package fetches every dependency from the lockfile, pinned by its integrity hash', () => {
  const lock = JSON.parse(readFileSync(join(repo, 'package-lock.json'), 'utf8')) as {
    packages: Record<
      string,
      {
        version?: string;
        integrity?: string;
        resolved?: string;
        name?: string;
        link?: boolean;
        inBundle?: boolean;
        optional?: boolean;
        devOptional?: boolean;
        os?: string[];
        cpu?: string[];
      }
    >;
  };
  const fits = (allowed: string[] | undefined, value: string): boolean =>
    !allowed ||
    (!allowed.includes(`!${value}`) &&
      (allowed.filter((a) => !a.startsWith('!')).length === 0 || allowed.includes(value)));
  const { npmLock } = evaluated();
  for (const [system, platform] of Object.entries(SYSTEMS)) {
    const resolved = npmLock[system]!;
    for (const [path, entry] of Object.entries(lock.packages)) {
      if (path === '' || entry.link || entry.inBundle) continue;
      const name = entry.name ?? path.split('node_modules/').pop()!;
      const otherPlatform =
        (entry.optional || entry.devOptional) && !(fits(entry.os, platform.os) && fits(entry.cpu, platform.cpu));
      const expected =
        entry.resolved ??
        (otherPlatform ? null : `https://registry.npmjs.org/${name}/-/${name.split('/').pop()}-${entry.version}.tgz`);
      assert.is(resolved[path], expected, `${system}: ${path}`);
      if (expected) assert.ok(entry.integrity, `${path} has an integrity hash`);
    }
  }
});

withLib('docs/nixos.md documents every option and how to run the VM test', ({ roles, apps }) => {
  const docs = readFileSync(join(repo, 'docs/nixos.md'), 'utf8');
  for (const role of Object.values(roles)) {
    for (const option of role.options)
      assert.ok(
        new RegExp(`\\b${option.name}\\b`).test(docs),
        `docs/nixos.md mentions ${role.optionPath}.${option.name}`,
      );
  }
  for (const option of apps.options)
    assert.ok(
      new RegExp(`\\b${option.name}\\b`).test(docs),
      `docs/nixos.md mentions services.outpost-apps.<name>.${option.name}`,
    );
  assert.ok(docs.includes('nix build .#checks.x86_64-linux.vm-test'), 'docs say how to run the VM test');
  assert.ok(docs.includes('config.system.build.toplevel'), 'docs show the CI flow');
});

withLib(
  'apps module: each app is a hardened oneshot unit that fetches the pinned commit and runs compose',
  ({ apps }) => {
    const { sample } = apps;
    assert.equal(sample.failedAssertions, [], 'two apps, one with every option set, evaluate');
    assert.equal(sample.warnings, []);
    assert.ok(sample.dockerEnabled, 'docker is enabled when an app is declared');
    assert.ok(sample.services.includes('outpost-app-clinic') && sample.services.includes('outpost-app-notes'));
    const unit = sample.units['outpost-app-clinic']!;
    const rev = '4b825dc642cb6eb9a060e54bf8d69288fbee4904';
    assert.ok(unit.wantedBy.includes('multi-user.target'), 'started at boot');
    assert.ok(unit.requires.includes('docker.service') && unit.after.includes('docker.service'), 'after docker');
    assert.ok(unit.after.includes('network-online.target'));
    assert.ok(unit.path.some((p) => p.includes('git')) && unit.path.some((p) => p.includes('docker')));
    const script = unit.script;
    const order = [
      'transfer.fsckObjects=true',
      `fetch --quiet origin ${rev}`,
      `checkout --quiet --force ${rev}`,
      'rev-parse HEAD',
      './scripts/render-config.sh',
      'docker load --quiet --input /nix/store/00000000000000000000000000000000-docker-image-clinic-api.tar.gz',
      'up -d --remove-orphans',
      `echo ${rev} > /var/lib/outpost-apps/clinic/.git/outpost-deployed-rev`,
    ].map((needle) => {
      assert.ok(script.includes(needle), `the start script has ${needle}:\n${script}`);
      return script.indexOf(needle);
    });
    assert.equal(
      order,
      [...order].sort((a, b) => a - b),
      'fetch, check, pre-compose, load, up: in that order',
    );
    assert.ok(
      script.includes(
        'docker compose -p clinic --project-directory /var/lib/outpost-apps/clinic -f /var/lib/outpost-apps/clinic/docker-compose.yml -f /var/lib/outpost-apps/clinic/docker-compose.site.yml --env-file "$CREDENTIALS_DIRECTORY/env" up -d --remove-orphans',
      ),
      script,
    );
    assert.ok(unit.preStop.includes('docker compose -p clinic') && unit.preStop.endsWith('down --remove-orphans'));
    assert.is(unit.reload, unit.script, 'a changed configuration is applied with up, not down + up');
    assert.is(unit.reloadIfChanged, true);
    // Secrets: through LoadCredential, never their content or a store path on the command line.
    const config = unit.serviceConfig;
    assert.equal(config.LoadCredential, [
      'env:/run/secrets/clinic-app.env',
      'ssh-key:/run/secrets/clinic-app-deploy-key',
    ]);
    assert.not.ok(script.includes('/run/secrets/'), 'the secret paths are read by systemd, not by the script');
    const expected: Record<string, unknown> = {
      Type: 'oneshot',
      RemainAfterExit: true,
      User: 'root',
      DynamicUser: false,
      NoNewPrivileges: true,
      ProtectSystem: 'strict',
      ProtectHome: true,
      PrivateTmp: true,
      PrivateDevices: true,
      RestrictSUIDSGID: true,
      StateDirectory: 'outpost-apps/clinic',
      StandardError: 'journal',
      Restart: 'on-failure',
    };
    for (const [key, value] of Object.entries(expected)) assert.is(config[key], value, `outpost-app-clinic: ${key}`);
    assert.equal(config.RestrictAddressFamilies, ['AF_INET', 'AF_INET6', 'AF_UNIX']);
    const notes = sample.units['outpost-app-notes']!;
    assert.not.ok(notes.script.includes('--env-file') || notes.script.includes('docker load'), 'only what is declared');
    assert.not.ok('LoadCredential' in notes.serviceConfig && (notes.serviceConfig.LoadCredential as unknown[]).length);
  },
);

withLib('apps module: the manifest names every app and its commit, and the agent is told to read it', ({ apps }) => {
  const { sample, none } = apps;
  assert.equal(
    sample.manifest?.apps.map((a) => [a.name, a.rev, a.unit]),
    [
      ['clinic', '4b825dc642cb6eb9a060e54bf8d69288fbee4904', 'outpost-app-clinic.service'],
      ['notes', '0123456789abcdef0123456789abcdef01234567', 'outpost-app-notes.service'],
    ],
  );
  const argv = sample.agentArgv.join(' ');
  assert.ok(argv.includes('--apps-manifest /etc/outpost/apps.json'), argv);
  assert.match(argv, /--docker-command \/nix\/store\/[0-9a-z]{32}-docker\/bin\/docker/);
  parseOptions(agentCommand, sample.agentArgv, {});
  // Nothing declared: no unit, no manifest, docker left alone, the agent watches nothing.
  assert.equal(Object.keys(none.units), []);
  assert.is(none.manifest, null);
  assert.is(none.dockerEnabled, false);
  assert.not.ok(none.agentArgv.includes('--apps-manifest'));
});

withLib('apps module: a branch, a tag, a short or upper-case commit id, or a bad name is refused', ({ apps }) => {
  for (const [what, messages] of Object.entries(apps.refused)) {
    assert.is(messages.length, 1, `${what}: one failed assertion (${messages.join(' | ')})`);
  }
  assert.match(apps.refused.branch[0]!, /services\.outpost-apps\.clinic\.rev = "main": give the full 40-hex commit id/);
  assert.match(apps.refused.shortRev[0]!, /rev = "4b825dc": give the full 40-hex commit id/);
  assert.match(apps.refused.upperCase[0]!, /full 40-hex commit id/);
  assert.match(apps.refused.name[0]!, /services\.outpost-apps\.Clinic App: app names are/);
});

withLib('apps module: every option has a type and a description; secret files are path strings', ({ apps }) => {
  assert.equal(apps.options.map((o) => o.name).sort(), [
    'composeFiles',
    'envFile',
    'images',
    'preCompose',
    'repo',
    'rev',
    'sshKeyFile',
  ]);
  for (const option of apps.options) {
    const id = `services.outpost-apps.<name>.${option.name}`;
    assert.ok(option.hasType && option.type.name !== '<not a type>', `${id} has a type`);
    assert.ok((option.description ?? '').trim().length >= 10, `${id} has a real description`);
    if (!option.hasDefault) assert.ok(option.hasExample, `${id} has no default, so it needs an example`);
    assert.not.ok(option.defaultIsPath, `${id}: a Nix path default would be copied into the store`);
    if (/file$/i.test(option.name))
      assert.ok(['str', 'strMatching'].includes(unwrapNull(option.type).name), `${id} is a string option`);
  }
});

withLib('apps module: the start script runs only the pinned commit (real git, a stand-in docker)', () => {
  const dir = temporaryDirectory('apps-script');
  try {
    const git = (cwd: string, ...args: string[]): string => {
      const result = spawnSync('git', ['-c', 'user.name=t', '-c', 'user.email=t@example.org', ...args], {
        cwd,
        encoding: 'utf8',
      });
      assert.is(result.status, 0, `git ${args.join(' ')}: ${result.stderr}`);
      return result.stdout.trim();
    };
    // The team's repository: the reviewed commit, then the branch moves on.
    const origin = join(dir, 'origin');
    mkdirSync(origin);
    git(origin, 'init', '--quiet', '--initial-branch', 'main');
    writeFileSync(join(origin, 'docker-compose.yml'), 'services:\n  web:\n    image: nginx:1.27\n');
    git(origin, 'add', '.');
    git(origin, 'commit', '--quiet', '-m', 'reviewed');
    const reviewed = git(origin, 'rev-parse', 'HEAD');
    writeFileSync(join(origin, 'docker-compose.yml'), 'services:\n  web:\n    image: evil:latest\n');
    git(origin, 'commit', '--quiet', '-am', 'not reviewed');
    // A stand-in docker that records its arguments.
    const bin = join(dir, 'bin');
    mkdirSync(bin);
    const calls = join(dir, 'docker-calls');
    writeFileSync(join(bin, 'docker'), `#!/bin/sh\necho "$*" >> ${calls}\n`);
    chmodSync(join(bin, 'docker'), 0o755);
    const start = (rev: string): { code: number | null; stderr: string } => {
      const probe = evalModules([
        '--arg',
        'appProbe',
        `{ repo = "${origin}"; rev = "${rev}"; preCompose = "echo prepared > prepared.txt"; }`,
      ]);
      assert.is(probe.code, 0, probe.stderr);
      const { script } = (JSON.parse(probe.stdout) as { appProbe: { script: string } }).appProbe;
      const result = spawnSync('bash', ['-c', script.replaceAll('/var/lib/outpost-apps', join(dir, 'state'))], {
        encoding: 'utf8',
        env: { PATH: `${bin}:${process.env.PATH}`, HOME: dir },
      });
      return { code: result.status, stderr: result.stderr };
    };
    const first = start(reviewed);
    assert.is(first.code, 0, first.stderr);
    const checkout = join(dir, 'state', 'probe');
    assert.is(git(checkout, 'rev-parse', 'HEAD'), reviewed, 'the checkout is the pinned commit, not the branch head');
    assert.match(readFileSync(join(checkout, 'docker-compose.yml'), 'utf8'), /nginx:1\.27/);
    assert.ok(existsSync(join(checkout, 'prepared.txt')), 'preCompose ran in the checkout');
    const deployed = join(checkout, '.git', 'outpost-deployed-rev');
    assert.is(readFileSync(deployed, 'utf8').trim(), reviewed, 'what was brought up is recorded for the agent');
    assert.equal(readFileSync(calls, 'utf8').trim().split('\n'), [
      `compose -p probe --project-directory ${join(dir, 'state', 'probe')} -f ${join(dir, 'state', 'probe', 'docker-compose.yml')} up -d --remove-orphans`,
    ]);
    // A commit the repository does not have: the start fails before compose runs.
    const missing = start('f'.repeat(40));
    assert.is.not(missing.code, 0, 'an unknown commit fails the start');
    assert.is(readFileSync(calls, 'utf8').trim().split('\n').length, 1, 'compose did not run');
    assert.is(git(checkout, 'rev-parse', 'HEAD'), reviewed, 'the previous checkout is untouched');
    assert.is(readFileSync(deployed, 'utf8').trim(), reviewed, 'and the agent still reports the commit that runs');
  } finally {
    removeDirectory(dir);
  }
});

test.run();
