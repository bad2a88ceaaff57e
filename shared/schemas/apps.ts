import { z } from 'zod';
import { isoTimeSchema } from './primitives.js';

// Application services (services.outpost-apps.<name>, docs/apps.md): what the agent reports about
// each declared app in its signed status. systemd runs the apps; the agent only looks at them
// (`docker compose -p NAME ps`) and says what it saw.

// An app's name is its compose project name and part of its unit name (outpost-app-NAME), so it
// follows compose's rule for project names.
export const appNameSchema = z
  .string()
  .regex(
    /^[a-z0-9][a-z0-9_-]{0,62}$/,
    'app names are 1-63 lowercase letters, digits, dashes or underscores, starting with a letter or digit (a compose project name)',
  );

// A full git commit id: what every site runs is what was reviewed, never a moving branch.
export const gitRevSchema = z
  .string()
  .regex(/^[0-9a-f]{40}$/, 'expected a full 40-hex git commit id (not a branch or tag)');

// What this agent writes: bounds that keep a status with every app inside the status entry limit
// (64 KiB, shared/documents/entries.ts) with room to spare; the agent trims services beyond them.
export const APP_LIMITS = {
  apps: 32,
  servicesPerApp: 32,
  reason: 500,
  // The apps part of a status stays below this many bytes of JSON (agent/apps/app-state.ts).
  statusBytes: 32 * 1024,
} as const;

// What readers accept: twice what this agent writes, so a newer agent that lists more does not
// make an older reader refuse its whole status (the entry's own 64 KiB limit still holds).
const READ_LIMITS = { apps: 2 * APP_LIMITS.apps, services: 2 * APP_LIMITS.servicesPerApp, reason: 1000 };

// A container's state as docker names it; anything newer or garbled is 'unknown'.
export const serviceStateSchema = z.enum([
  'running',
  'restarting',
  'paused',
  'exited',
  'dead',
  'created',
  'removing',
  'unknown',
]);
export type ServiceState = z.infer<typeof serviceStateSchema>;

// One container of the app (a service scaled to two shows twice).
export const appServiceSchema = z.looseObject({
  name: z.string().min(1).max(128),
  state: serviceStateSchema,
  // Docker's health check verdict when the service has one (healthy, unhealthy, starting).
  health: z.string().max(32).optional(),
  // For an exited container: its exit code.
  exitCode: z.number().int().min(-1).max(255).optional(),
});
export type AppService = z.infer<typeof appServiceSchema>;

// running: something runs and nothing is wrong; degraded: something exited with an error,
// restarts, is unhealthy or dead; stopped: no container runs and none failed (never started, or
// `down`); unknown: docker could not be asked or did not answer sensibly (`reason` says why).
export const appStateSchema = z.enum(['running', 'degraded', 'stopped', 'unknown']);
export type AppState = z.infer<typeof appStateSchema>;

export const appStatusSchema = z.looseObject({
  name: appNameSchema,
  // The commit the host's configuration declares (services.outpost-apps.NAME.rev).
  rev: gitRevSchema,
  // The commit the unit last brought up (null: none yet). Differs from rev while a new commit
  // could not be fetched or started: the containers then run the older one.
  deployedRev: gitRevSchema.nullable().optional(),
  state: appStateSchema,
  reason: z.string().max(READ_LIMITS.reason).optional(),
  services: z.array(appServiceSchema).max(READ_LIMITS.services),
  // Containers beyond servicesPerApp (or cut to keep the status small): counted, not listed.
  servicesOmitted: z.number().int().positive().optional(),
  // When the agent first saw this state (a check that finds the same state changes nothing, so
  // the status is not rewritten every interval).
  since: isoTimeSchema,
});
export type AppStatus = z.infer<typeof appStatusSchema>;

export const appsStatusSchema = z.array(appStatusSchema).max(READ_LIMITS.apps);
