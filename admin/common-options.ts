import { z } from 'zod';
import { type OptionMeta, option } from '../cli/options.js';
import { coordinatorUrlSchema, fileSchema } from './policy-cli-kit.js';
import { COORDINATOR_PROBE_TIMEOUT_MS, reachCoordinator } from './reach.js';

// The two options nearly every admin command takes, declared once: where to connect and which
// admin key signs and proves who you are. Both fall back to $OUTPOST_COORDINATOR / $OUTPOST_KEY
// and the admin config file (cli/options.ts commonSettings).

// Several coordinators of one fleet (docs/scale-out.md) may be given: the command uses the first
// that answers. A bound keeps a typo'd list from probing for minutes.
export const MAX_COORDINATOR_URLS = 8;

export const coordinatorOption = option(
  z
    .array(coordinatorUrlSchema)
    .min(1, 'give the coordinator URL, ws:// or wss://')
    .max(MAX_COORDINATOR_URLS, `at most ${MAX_COORDINATOR_URLS} coordinators`),
  {
    placeholder: 'URL',
    description:
      'the coordinator or a relay, ws:// or wss://; repeat it for several coordinators of one fleet: the first that answers is used',
    common: 'coordinator',
  },
);

// A command's options once one coordinator of the list was reached.
export type WithCoordinator<T> = Omit<T, 'coordinator'> & { coordinator: string };

// Wraps a command's action: the list given with --coordinator becomes the first coordinator that
// answers (each waited for at most the command's --timeout, up to 5 s).
export function reachingCoordinator<T extends { coordinator: string[]; timeout?: number }>(
  action: (options: WithCoordinator<T>) => Promise<number>,
): (options: T) => Promise<number> {
  return async (options) => {
    const timeoutMs = Math.min(
      options.timeout === undefined ? Infinity : options.timeout * 1000,
      COORDINATOR_PROBE_TIMEOUT_MS,
    );
    const coordinator = await reachCoordinator(options.coordinator, timeoutMs);
    return action({ ...options, coordinator });
  };
}

const ADMIN_KEY_HELP = 'your admin key file (outpost keygen): it signs, and proves who you are to the coordinator';

// A command may say more about what the key must be allowed to do (`outpost ssh`: a role granting ssh).
export function adminKeyOption(description: OptionMeta['description'] = ADMIN_KEY_HELP) {
  return option(fileSchema('your admin key file'), { placeholder: 'FILE', description, common: 'key' });
}
