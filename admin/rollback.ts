import { z } from 'zod';
import { durationSchema } from '../cli/duration.js';
import { type CommandSpec, parseFlags, renderHelp } from '../cli/flags.js';
import { useIdentity } from '../shared/node/connect.js';
import { readKeyFile } from '../shared/node/key-file.js';
import { activationActionSchema, generationSchema, hostIdSchema } from '../shared/schemas/primitives.js';
import { deployCommand } from './deploy.js';
import { type HostView, readHostView } from './fleet-view.js';
import { submitIntent } from './submit-intent.js';

// A manual rollback is a new, signed intent with the next generation number whose closure is one
// the host applied before. The anti-rollback floor never moves down: the host moves *forward* to
// a generation that happens to run old code, and the audit trail says who asked for it.
function deployFlags(...names: string[]): CommandSpec['flags'] {
  return names.map((name) => {
    const flag = deployCommand.flags.find((f) => f.name === name);
    if (!flag) throw new Error(`outpost deploy has no --${name} flag to share`);
    return flag;
  });
}

export const rollbackCommand: CommandSpec = {
  name: 'rollback',
  summary: 'return a host to its previous (or a named) applied generation, as a new signed intent',
  usage: 'outpost rollback --coordinator URL --key FILE --host ID [--to-generation N] [options]',
  // The flags it shares with deploy mean the same; only what to roll back to is its own.
  flags: [
    ...deployFlags('coordinator', 'key'),
    { name: 'host', kind: 'string', placeholder: 'ID', description: 'host to roll back' },
    {
      name: 'to-generation',
      kind: 'string',
      placeholder: 'N',
      description: 'an earlier generation the host applied (its signed results say which)',
      defaultText: 'the one applied before the current one',
    },
    ...deployFlags('action', 'expires', 'timeout', 'policy-version', 'json'),
  ],
  examples: [
    'outpost rollback --coordinator wss://fleet.example.org --key ~/.config/outpost/alice.key --host clinic-1',
    'outpost rollback … --host clinic-1 --to-generation 12',
  ],
};

const rollbackOptionsSchema = z.object({
  coordinator: z.string().regex(/^wss?:\/\//, 'expected a ws:// or wss:// URL'),
  key: z.string().min(1, 'give your admin key file'),
  host: hostIdSchema,
  toGeneration: z.coerce.number().pipe(generationSchema).optional(),
  action: activationActionSchema.default('switch'),
  expires: durationSchema.prefault('7d'),
  timeout: durationSchema.prefault('30s'),
  policyVersion: z.coerce.number().int().positive().optional(),
  json: z.boolean().default(false),
});

export type RollbackTarget = { ok: true; generation: number; closure: string } | { ok: false; reason: string };

// Picks what to return to from the host's own signed results (only ones whose signature verifies
// with the host's status key count): a generation the host reported `applied`.
export function chooseRollbackTarget(
  view: Pick<HostView, 'host' | 'applied' | 'results'>,
  toGeneration?: number,
): RollbackTarget {
  const applied = view.results
    .filter((r) => r.signatureValid && r.result.outcome === 'applied')
    .map((r) => r.result)
    .sort((a, b) => a.seq - b.seq);
  const known = applied.map((r) => r.generation).join(', ') || 'none';
  if (toGeneration !== undefined) {
    const named = applied.filter((r) => r.generation === toGeneration).pop();
    if (!named)
      return {
        ok: false,
        reason: `${view.host} never reported generation ${toGeneration} as applied (applied: ${known}); name one of those with --to-generation`,
      };
    if (view.applied && named.closure === view.applied.closure)
      return {
        ok: false,
        reason: `${view.host} already runs the closure of generation ${toGeneration} (as generation ${view.applied.generation})`,
      };
    return { ok: true, generation: named.generation, closure: named.closure };
  }
  if (!view.applied)
    return { ok: false, reason: `${view.host} reports no applied generation yet; there is nothing to roll back from` };
  const current = view.applied;
  const before = applied.filter((r) => r.generation < current.generation && r.closure !== current.closure).pop();
  if (!before)
    return {
      ok: false,
      reason: `${view.host} has applied no earlier generation with another closure (applied: ${known})`,
    };
  return { ok: true, generation: before.generation, closure: before.closure };
}

export async function runRollbackCommand(argv: string[]): Promise<number> {
  const parsed = parseFlags(rollbackCommand, argv, rollbackOptionsSchema);
  if (parsed.help) {
    console.log(renderHelp(rollbackCommand));
    return 0;
  }
  const options = parsed.value;
  const key = await readKeyFile(options.key);
  useIdentity(key);
  const view = await readHostView(options.coordinator, options.host, { timeoutMs: options.timeout * 1000 });
  const target = chooseRollbackTarget(view, options.toGeneration);
  if (!target.ok) {
    console.error(`outpost rollback: ${target.reason}`);
    return 1;
  }
  const { signed, digest } = await submitIntent(
    options.coordinator,
    {
      host: options.host,
      closure: target.closure,
      action: options.action,
      validForSeconds: options.expires,
      policyVersion: options.policyVersion,
    },
    key,
    options.timeout * 1000,
  );
  if (options.json) {
    console.log(JSON.stringify({ ...signed, digest, rollbackTo: target.generation }));
  } else {
    console.log(
      `stored: ${signed.intent.host} → generation ${signed.intent.generation} (${signed.intent.action}), the closure of generation ${target.generation}: ${signed.intent.closure}`,
    );
    console.log(`signed by ${key.name}; follow it with 'outpost status --coordinator ${options.coordinator}'`);
  }
  return 0;
}
