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

// Several coordinators of one fleet, for options of their own (one source among others).
export const coordinatorListSchema = z
  .array(coordinatorUrlSchema)
  .min(1, 'give the coordinator URL, ws:// or wss://')
  .max(MAX_COORDINATOR_URLS, `at most ${MAX_COORDINATOR_URLS} coordinators`);

export const coordinatorOption = option(coordinatorListSchema, {
  placeholder: 'URL',
  description:
    'the coordinator or a relay, ws:// or wss://; repeat it for several coordinators of one fleet: the first that answers is used',
  common: 'coordinator',
});

// A command's options once one coordinator of the list was reached.
export type WithCoordinator<T> = Omit<T, 'coordinator'> & { coordinator: string };
export type WithOptionalCoordinator<T> = Omit<T, 'coordinator'> & { coordinator?: string | undefined };

// The command's --timeout, when shorter, bounds each probe.
function probeTimeoutMs(timeout: number | undefined): number {
  return Math.min(timeout === undefined ? Infinity : timeout * 1000, COORDINATOR_PROBE_TIMEOUT_MS);
}

// Wraps a command's action: the list given with --coordinator becomes the first coordinator that
// answers (each waited for at most 5 s).
export function reachingCoordinator<T extends { coordinator: string[]; timeout?: number }>(
  action: (options: WithCoordinator<T>) => Promise<number>,
): (options: T) => Promise<number> {
  return async (options) =>
    action({ ...options, coordinator: await reachCoordinator(options.coordinator, probeTimeoutMs(options.timeout)) });
}

// The same where --coordinator is one source among others (`audit --bundle`, `bundle
// --relay-data-dir`, `policy show --policy`): without it the action runs as given.
export function reachingOptionalCoordinator<T extends { coordinator?: string[] | undefined; timeout?: number }>(
  action: (options: WithOptionalCoordinator<T>) => Promise<number>,
): (options: T) => Promise<number> {
  return async (options) => {
    const list = options.coordinator;
    const coordinator = list === undefined ? undefined : await reachCoordinator(list, probeTimeoutMs(options.timeout));
    return action({ ...options, coordinator });
  };
}

const ADMIN_KEY_HELP = 'your admin key file (outpost keygen): it signs, and proves who you are to the coordinator';

// A command may say more about what the key must be allowed to do (`outpost ssh`: a role granting ssh).
export function adminKeyOption(description: OptionMeta['description'] = ADMIN_KEY_HELP) {
  return option(fileSchema('your admin key file'), { placeholder: 'FILE', description, common: 'key' });
}
