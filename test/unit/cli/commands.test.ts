import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { z } from 'zod';
import { actionCommandGroup } from '../../../admin/action.js';
import { approveCommand } from '../../../admin/approve.js';
import { auditCommandGroup } from '../../../admin/audit.js';
import { bundleCommandGroup } from '../../../admin/bundle.js';
import { deployCommand } from '../../../admin/deploy.js';
import { enrollCommandGroup } from '../../../admin/enroll.js';
import { keygenCommand } from '../../../admin/keygen.js';
import { policyCommandGroup } from '../../../admin/policy.js';
import { rollbackCommand } from '../../../admin/rollback.js';
import { rolloutCommandGroup } from '../../../admin/rollout.js';
import { sshCommand } from '../../../admin/ssh.js';
import { statusCommand } from '../../../admin/status.js';
import { webCommand } from '../../../admin/web.js';
import { agentCommand } from '../../../agent/options.js';
import {
  type Command,
  commandJson,
  describeOptions,
  parseOptions,
  renderHelp,
  UsageError,
} from '../../../cli/options.js';
import { coordinatorCommand } from '../../../coordinator/options.js';
import { relayCommand } from '../../../relay/options.js';

// Every real command of `outpost`, checked against the rules of the option kit: flag errors in
// our words (issue 11: no "Invalid input: expected string, received undefined"), defaults the
// flag itself accepts, usage lines that name real flags.

const commands: Command[] = [
  agentCommand,
  coordinatorCommand,
  relayCommand,
  deployCommand,
  rollbackCommand,
  statusCommand,
  keygenCommand,
  ...policyCommandGroup.subcommands.map((s) => s.command),
  ...enrollCommandGroup.subcommands.map((s) => s.command),
  ...auditCommandGroup.subcommands.map((s) => s.command),
  approveCommand,
  sshCommand,
  webCommand,
  ...rolloutCommandGroup.subcommands.map((s) => s.command),
  ...actionCommandGroup.subcommands.map((s) => s.command),
  ...bundleCommandGroup.subcommands.map((s) => s.command),
];

const ZOD_WORDING = /Invalid input|Invalid option|Invalid string|Too small|Too big|received undefined|expected string,/;

function usageError(command: Command, argv: string[]): string | null {
  try {
    parseOptions(command, argv, {});
    return null;
  } catch (error) {
    assert.instance(error, UsageError, `outpost ${command.name} ${argv.join(' ')} threw ${String(error)}`);
    return (error as Error).message;
  }
}

test('all commands are here, each with a distinct name', () => {
  const names = commands.map((c) => c.name);
  assert.is(new Set(names).size, names.length);
  for (const name of ['agent', 'coordinator', 'relay', 'deploy', 'rollback', 'status', 'keygen', 'policy sign'])
    assert.ok(names.includes(name), `outpost ${name} is checked`);
  assert.ok(names.some((n) => n.startsWith('enroll ')));
});

// $OUTPOST_COORDINATOR and the config file may hold several coordinators (docs/scale-out.md): an
// option fed from them that took one URL would get the list joined into one string.
test('every --coordinator of an admin command takes several coordinators, from flags, environment or file', () => {
  for (const command of commands) {
    for (const option of commandJson(command, {}).options.filter((o) => o.name === 'coordinator'))
      assert.ok(option.repeatable, `outpost ${command.name} --coordinator takes one URL only`);
  }
});

test('missing flags are named with what to give, never in zod wording', () => {
  for (const command of commands) {
    const message = usageError(command, []);
    if (message === null) continue; // nothing required (coordinator, relay needs --upstream)
    assert.not.match(message, ZOD_WORDING, message);
    const problems = message.includes('\n') ? message.split('\n').slice(1, -1) : [message];
    for (const line of problems) assert.match(line, /--[a-z-]+: \S/, `outpost ${command.name}: ${line}`);
  }
  assert.match(usageError(agentCommand, []) ?? '', /--host: missing: give --host ID — this host's id/);
});

test('a nonsense value for any flag is refused in our words, naming the flag', () => {
  for (const command of commands) {
    for (const option of describeOptions(command)) {
      if (option.type === 'boolean') continue;
      const message = usageError(command, [`--${option.name}`, '%%nonsense%%']) ?? '';
      assert.not.match(message, ZOD_WORDING, `outpost ${command.name} --${option.name}: ${message}`);
    }
  }
});

test('every declared default is a value its flag accepts, meaning the same', () => {
  for (const command of commands) {
    const shape = command.options.shape as Record<string, z.ZodType>;
    for (const option of describeOptions(command)) {
      if (option.default === undefined) continue;
      const schema = shape[option.key]!;
      const asTyped = Array.isArray(option.default)
        ? option.default.map(String)
        : option.type === 'boolean'
          ? option.default
          : String(option.default);
      const parsed = schema.safeParse(asTyped);
      assert.ok(parsed.success, `outpost ${command.name} --${option.name} refuses its own default ${asTyped}`);
      assert.equal(parsed.data, schema.parse(undefined), `outpost ${command.name} --${option.name}`);
    }
  }
});

test('help: every option has a description and a value name; usage lines name only real flags', () => {
  for (const command of commands) {
    const options = describeOptions(command);
    const names = new Set(options.map((o) => o.name));
    for (const option of options) {
      assert.ok(option.description.length >= 5, `outpost ${command.name} --${option.name} has a description`);
      if (option.type !== 'boolean')
        assert.ok(option.placeholder, `outpost ${command.name} --${option.name} names its value in --help`);
    }
    for (const [, flag] of command.usage.matchAll(/--([a-z][a-z-]*)/g))
      assert.ok(names.has(flag!), `outpost ${command.name}: usage names --${flag}, which it does not have`);
    const help = renderHelp(command);
    for (const name of names) assert.ok(help.includes(`--${name}`), `outpost ${command.name} --help lists --${name}`);
  }
});

test('the agent runs with the defaults its flags declare when built without the CLI', async () => {
  const { DEFAULT_DOWNLOAD, DEFAULT_HEALTH } = await import('../../../agent/config.js');
  const parsed = agentCommand.options.shape;
  assert.is(DEFAULT_DOWNLOAD.minBytesPerSecond, parsed.minThroughput.parse(undefined));
  assert.is(DEFAULT_DOWNLOAD.maxClosureBytes, 64 * 2 ** 30);
  assert.is(DEFAULT_DOWNLOAD.throughputWindowMs, parsed.throughputWindow.parse(undefined) * 1000);
  assert.is(DEFAULT_HEALTH.confirmTimeoutMs, parsed.confirmTimeout.parse(undefined) * 1000);
  assert.is(DEFAULT_HEALTH.requireSystemRunning, 'auto');
});

test.run();
