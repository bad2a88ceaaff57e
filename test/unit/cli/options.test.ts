import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { z } from 'zod';
import { durationSchema } from '../../../cli/duration.js';
import {
  commandJson,
  defaultOf,
  defineCommand,
  describeOptions,
  logLevelSchema,
  option,
  parseOptions,
  renderHelp,
  secondsSchema,
  UsageError,
  urlSchema,
} from '../../../cli/options.js';

// The option kit: one zod object per command is the only declaration of its flags; parsing,
// --help, --help --json and defaults all come from it.

const sample = defineCommand({
  name: 'sample',
  summary: 'a command for the kit test',
  usage: 'outpost sample --url URL [options]',
  options: z
    .object({
      url: option(urlSchema(['ws:', 'wss:']), { description: 'where to connect', placeholder: 'URL' }),
      waitFor: option(secondsSchema().default(300), { description: 'how long to wait', placeholder: 'SECONDS' }),
      expires: option(durationSchema.prefault('7d'), { description: 'validity', placeholder: 'DURATION' }),
      tag: option(z.array(z.string().min(1)).default([]), { description: 'a tag', placeholder: 'TAG' }),
      peer: option(z.array(z.string()).min(1), { description: 'a peer', placeholder: 'PEER' }),
      mode: option(z.enum(['fast', 'slow']).default('fast'), { description: 'the mode', placeholder: 'MODE' }),
      count: option(z.coerce.number().int().min(1).max(9).optional(), {
        description: 'how many',
        placeholder: 'N',
        defaultText: 'as many as there are',
      }),
      logLevel: option(logLevelSchema.default('info'), {
        description: 'log level',
        placeholder: 'LEVEL',
        env: 'SAMPLE_LOG_LEVEL',
      }),
      dryRun: option(z.boolean().default(false), { description: 'change nothing' }),
    })
    .refine((o) => o.count === undefined || o.count <= o.peer.length, {
      path: ['count'],
      message: 'must not exceed the number of --peer flags',
    }),
});

const required = ['--url', 'ws://x', '--peer', 'p'];

function usageMessage(argv: string[], env: Record<string, string> = {}): string {
  try {
    parseOptions(sample, argv, env);
  } catch (error) {
    assert.instance(error, UsageError);
    return (error as Error).message;
  }
  assert.unreachable(`outpost sample ${argv.join(' ')} was accepted`);
  return '';
}

test('flags, types, repeatability, requiredness and defaults come from the schema', () => {
  const byName = Object.fromEntries(describeOptions(sample).map((o) => [o.name, o]));
  assert.equal(Object.keys(byName), [
    'url',
    'wait-for',
    'expires',
    'tag',
    'peer',
    'mode',
    'count',
    'log-level',
    'dry-run',
  ]);
  assert.is(byName.url!.type, 'string');
  assert.ok(byName.url!.required);
  assert.is(byName['wait-for']!.type, 'number');
  assert.is(byName['wait-for']!.default, 300);
  assert.not.ok(byName['wait-for']!.required);
  assert.is(byName.expires!.default, '7d', 'a prefault is shown as typed on the command line');
  assert.ok(byName.tag!.repeatable);
  assert.equal(byName.tag!.default, []);
  assert.ok(byName.peer!.repeatable && byName.peer!.required);
  assert.is(byName.mode!.type, 'enum');
  assert.equal(byName.mode!.values, ['fast', 'slow']);
  assert.is(byName.count!.type, 'integer');
  assert.is(byName.count!.default, undefined);
  assert.is(byName.count!.defaultText, 'as many as there are');
  assert.is(byName['log-level']!.env, 'SAMPLE_LOG_LEVEL');
  assert.is(byName['dry-run']!.type, 'boolean');
});

test('parsing applies defaults and converts values', () => {
  const parsed = parseOptions(sample, [...required, '--tag', 'a', '--tag', 'b', '--expires', '2h', '--dry-run'], {});
  assert.ok(!parsed.help);
  if (parsed.help) return;
  assert.equal(parsed.value, {
    url: 'ws://x',
    waitFor: 300,
    expires: 7200,
    tag: ['a', 'b'],
    peer: ['p'],
    mode: 'fast',
    logLevel: 'info',
    dryRun: true,
  });
  assert.is(defaultOf(sample.options.shape.expires), 7 * 86_400);
  assert.is(defaultOf(sample.options.shape.waitFor), 300);
  assert.throws(() => defaultOf(sample.options.shape.count), /no default/);
});

test('--help wins, and --help --json asks for the JSON form', () => {
  assert.equal(parseOptions(sample, ['--help'], {}), { help: true, json: false });
  assert.equal(parseOptions(sample, ['--url', 'nonsense', '--help', '--json'], {}), { help: true, json: true });
  assert.match(usageMessage([...required, '--json']), /--json goes with --help here/);
});

test('the help text lists every flag with placeholder, repeatability and default', () => {
  const help = renderHelp(sample);
  assert.ok(
    help.startsWith('outpost sample — a command for the kit test\n\nUsage: outpost sample --url URL [options]'),
  );
  assert.match(help, /^ {2}--url URL +where to connect$/m);
  assert.match(help, /^ {2}--wait-for SECONDS +how long to wait \(default: 300\)$/m);
  assert.match(help, /^ {2}--expires DURATION +validity \(default: 7d\)$/m);
  assert.match(help, /^ {2}--tag TAG +a tag \(repeatable\)$/m);
  assert.match(help, /^ {2}--count N +how many \(default: as many as there are\)$/m);
  assert.match(help, /^ {2}--log-level LEVEL +log level \(env: SAMPLE_LOG_LEVEL; default: info\)$/m);
  assert.match(help, /^ {2}--dry-run +change nothing$/m);
  assert.match(help, /^ {2}--help +show this help/m);
  const json = commandJson(sample);
  assert.is(json.command, 'sample');
  assert.is(json.options.length, 9);
  assert.equal(JSON.parse(JSON.stringify(json)), json, 'the JSON form survives a round trip');
});

test('missing and invalid flags are named with the fix, never in zod wording', () => {
  const cases: [string[], RegExp][] = [
    [
      [],
      /2 problems:\n {2}--url: missing: give --url URL — where to connect\n {2}--peer: missing: give --peer PEER — a peer\n/,
    ],
    [['--url', 'http://x', '--peer', 'p'], /--url: expected a URL starting with ws:\/\/ or wss:\/\//],
    [[...required, '--wait-for', 'soon'], /--wait-for: expected a number of seconds/],
    [[...required, '--wait-for', '0'], /--wait-for: must be more than 0, got "0"/],
    [[...required, '--mode', 'warp'], /--mode: expected one of fast, slow; got "warp"/],
    [[...required, '--count', '12'], /--count: must be at most 9, got "12"/],
    [[...required, '--count', '1.5'], /--count: .*"1\.5"/],
    [[...required, '--count', '2'], /--count: must not exceed the number of --peer flags/],
    [[...required, '--tag', ''], /--tag: must not be empty/],
    [[...required, '--expires', 'forever'], /--expires: expected a duration/],
    [[...required, '--bogus'], /Unknown option '--bogus'/],
    [[...required, '--url'], /--url: needs a value: give --url URL — where to connect/],
    [['--peer', '--url', 'ws://x'], /'--peer' argument is ambiguous/],
  ];
  for (const [argv, expected] of cases) {
    const message = usageMessage(argv);
    assert.match(message, expected, message);
    assert.ok(message.startsWith('outpost sample: '), message);
    assert.ok(message.endsWith("Run 'outpost sample --help' for the options."), message);
    if (!message.includes('\n')) assert.match(message, /^outpost sample: .+\. Run 'outpost/, 'one problem, one line');
    assert.not.match(message, /Invalid input|Invalid option|Too small|Too big|received undefined|Invalid string/);
  }
});

test('an environment variable fills a flag that is not given, and is named when it is wrong', () => {
  const parsed = parseOptions(sample, required, { SAMPLE_LOG_LEVEL: 'debug' });
  assert.ok(!parsed.help && parsed.value.logLevel === 'debug');
  const flagWins = parseOptions(sample, [...required, '--log-level', 'warn'], { SAMPLE_LOG_LEVEL: 'debug' });
  assert.ok(!flagWins.help && flagWins.value.logLevel === 'warn');
  assert.match(
    usageMessage(required, { SAMPLE_LOG_LEVEL: 'loud' }),
    /--log-level \(from \$SAMPLE_LOG_LEVEL\): expected trace/,
  );
});

test('an option declared without metadata is refused when the command is defined', () => {
  assert.throws(
    () => defineCommand({ name: 'bad', summary: 's', usage: 'u', options: z.object({ bare: z.string() }) }),
    /option bare has no description/,
  );
});

test('a schema shared by two options keeps a description for each', () => {
  const shared = z.string();
  const command = defineCommand({
    name: 'shared',
    summary: 's',
    usage: 'u',
    options: z.object({
      a: option(shared, { description: 'first' }),
      b: option(shared, { description: 'second' }),
    }),
  });
  assert.equal(
    describeOptions(command).map((o) => o.description),
    ['first', 'second'],
  );
});

test.run();
