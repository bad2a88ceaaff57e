import { z } from 'zod';
import { runCommand } from '../cli/command.js';
import { defineCommand, option } from '../cli/options.js';
import { POLICY_DOC } from '../shared/documents/fleet.js';
import { readKeyFile } from '../shared/node/key-file.js';
import { generationSchema, hostIdSchema } from '../shared/schemas/primitives.js';
import { chooseRollbackTarget } from '../shared/views/rollback-target.js';
import { reachingCoordinator, type WithCoordinator } from './common-options.js';
import { deployCommand } from './deploy.js';
import { readHostKeyAuthority, readHostView } from './fleet-view.js';
import { keyListSchema, resolvePublicKeys } from './policy-cli-kit.js';
import { highestStoredVersion, readDocuments } from './policy-remote.js';
import { refusedOrSubmitted, submitIntent } from './submit-intent.js';

// A manual rollback is a new, signed intent with the next generation number whose closure is one
// the host applied before. The anti-rollback floor never moves down: the host moves *forward* to
// a generation that happens to run old code, and the audit trail says who asked for it.
// The options it shares with deploy are deploy's own declarations; only what to roll back to is
// its own.
const deployOption = deployCommand.options.shape;

// The choice of target is shared with the web editor.
export { chooseRollbackTarget, type RollbackTarget } from '../shared/views/rollback-target.js';

export const rollbackCommand = defineCommand({
  name: 'rollback',
  summary: 'return a host to its previous (or a named) applied generation, as a new signed intent',
  usage: 'outpost rollback --coordinator URL --key FILE --host ID [--to-generation N] [options]',
  options: z.object({
    coordinator: deployOption.coordinator,
    key: deployOption.key,
    host: option(hostIdSchema, { placeholder: 'ID', description: 'host to roll back' }),
    toGeneration: option(z.coerce.number().pipe(generationSchema).optional(), {
      placeholder: 'N',
      description: 'an earlier generation the host applied (its signed results say which)',
      defaultText: 'the one applied before the current one',
    }),
    action: deployOption.action,
    expires: deployOption.expires,
    timeout: deployOption.timeout,
    policyVersion: deployOption.policyVersion,
    json: deployOption.json,
    orgRoot: option(keyListSchema, {
      placeholder: 'KEY',
      description:
        "pinned org root key (base64 or key file): only results signed by the host's enrolled key choose the target",
    }),
  }),
  examples: [
    'outpost rollback --coordinator wss://fleet.example.org --key ~/.config/outpost/alice.key --host clinic-1',
    'outpost rollback … --host clinic-1 --to-generation 12',
  ],
});

export function runRollbackCommand(argv: string[]): Promise<number> {
  return runCommand(rollbackCommand, argv, reachingCoordinator(rollback));
}

async function rollback(options: WithCoordinator<z.output<typeof rollbackCommand.options>>): Promise<number> {
  const key = await readKeyFile(options.key);
  const timeoutMs = options.timeout * 1000;
  const orgRoot = await resolvePublicKeys(rollbackCommand, 'org-root', options.orgRoot);
  // The target comes from the host's results: under a policy they count only when signed by the
  // key enrollment binds to the host, or a relay could pick the closure this admin signs.
  const authority = orgRoot.length ? await readHostKeyAuthority(options.coordinator, orgRoot, key, timeoutMs) : null;
  if (!authority) {
    const version = highestStoredVersion(
      (await readDocuments(options.coordinator, [POLICY_DOC], key, timeoutMs))(POLICY_DOC),
    );
    if (version !== undefined) {
      console.error(
        `outpost rollback: ${options.coordinator} holds fleet policy version ${version}: give --org-root ROOT-KEY, so that only results signed by ${options.host}'s enrolled key choose the closure you sign`,
      );
      return 1;
    }
  }
  const view = await readHostView(options.coordinator, options.host, { timeoutMs, authority, identity: key });
  if (view.unreadable) {
    console.error(`outpost rollback: ${view.unreadable}`);
    return 1;
  }
  const target = chooseRollbackTarget(view, options.toGeneration);
  if (!target.ok) {
    console.error(`outpost rollback: ${target.reason}`);
    return 1;
  }
  const submitted = await refusedOrSubmitted('rollback', () =>
    submitIntent(
      options.coordinator,
      {
        host: options.host,
        closure: target.closure,
        action: options.action,
        validForSeconds: options.expires,
        policyVersion: options.policyVersion,
        ...(authority ? { chain: authority.chain } : {}),
      },
      key,
      options.timeout * 1000,
    ),
  );
  if (!submitted) return 1;
  const { signed, digest } = submitted;
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
