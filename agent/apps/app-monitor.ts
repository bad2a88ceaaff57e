import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { checkJsonBounds } from '../../shared/crypto/canonical.js';
import type { Logger } from '../../shared/log.js';
import { describeIssues } from '../../shared/node/json-file.js';
import { APP_LIMITS, type AppStatus, appNameSchema, gitRevSchema } from '../../shared/schemas/apps.js';
import { sleep } from '../../shared/time/sleep.js';
import { describeFailure, runCommand } from '../nix/run-command.js';
import { appStatusOf, type DeclaredApp, fitToBudget, keepSince, sameApps } from './app-state.js';
import { COMPOSE_PS_MAX_BYTES, type ComposePs, parseComposePs } from './compose-ps.js';

// Watches the apps the NixOS module declares (services.outpost-apps, docs/apps.md): on start and
// every interval it asks docker how each app's containers are and hands a changed picture to
// `publish` (the signed status). It only looks: systemd starts and stops the apps
// (outpost-app-NAME.service); the agent never runs `compose up` or `down`.

export interface AppsSettings {
  // The manifest the module writes (/etc/outpost/apps.json); read on every check, so a switch
  // that adds or removes an app is seen without restarting the agent.
  manifest: string;
  intervalMs: number;
  // The docker CLI (with the compose plugin).
  docker: string;
  // Per `docker compose ps`.
  timeoutMs: number;
}

const MANIFEST_MAX_BYTES = 256 * 1024;

export const appsManifestSchema = z
  .looseObject({
    version: z.literal(1),
    apps: z
      .array(
        z.looseObject({
          name: appNameSchema,
          rev: gitRevSchema,
          directory: z.string().regex(/^\//, 'an absolute path').max(4096).optional(),
        }),
      )
      .max(APP_LIMITS.apps, `at most ${APP_LIMITS.apps} apps per host`),
  })
  .refine((m) => new Set(m.apps.map((a) => a.name)).size === m.apps.length, {
    message: 'app names must be unique',
    path: ['apps'],
  });

export async function readAppsManifest(
  path: string,
): Promise<{ ok: true; apps: DeclaredApp[] } | { ok: false; reason: string }> {
  const fix = 'it is written by the NixOS module (services.outpost-apps); check --apps-manifest';
  let text: string;
  try {
    const handle = await fs.open(path, 'r');
    try {
      const { size } = await handle.stat();
      if (size > MANIFEST_MAX_BYTES)
        return { ok: false, reason: `${path} is larger than ${MANIFEST_MAX_BYTES} bytes; ${fix}` };
      text = await handle.readFile('utf8');
    } finally {
      await handle.close();
    }
  } catch (error) {
    return { ok: false, reason: `cannot read ${path}: ${(error as Error).message}; ${fix}` };
  }
  let json: unknown;
  try {
    json = JSON.parse(text.slice(0, MANIFEST_MAX_BYTES));
  } catch (error) {
    return { ok: false, reason: `${path} is not JSON (${(error as Error).message}); ${fix}` };
  }
  const bounds = checkJsonBounds(json, { maxDepth: 16, maxBytes: MANIFEST_MAX_BYTES });
  if (!bounds.ok) return { ok: false, reason: `${path}: ${bounds.reason}; ${fix}` };
  const parsed = appsManifestSchema.safeParse(json);
  if (!parsed.success) return { ok: false, reason: `${path} is invalid: ${describeIssues(parsed.error)}; ${fix}` };
  return {
    ok: true,
    apps: parsed.data.apps.map(({ name, rev, directory }) => ({ name, rev, ...(directory ? { directory } : {}) })),
  };
}

// The commit the app's unit last brought up (nix/modules/apps.nix writes it after `up`): null when
// there is none (never started) or it is not a commit id; undefined when the manifest names no
// directory.
export async function readDeployedRev(app: DeclaredApp): Promise<string | null | undefined> {
  if (!app.directory) return undefined;
  try {
    const handle = await fs.open(join(app.directory, '.git', 'outpost-deployed-rev'), 'r');
    try {
      const buffer = Buffer.alloc(64);
      const { bytesRead } = await handle.read(buffer, 0, buffer.length, 0);
      const parsed = gitRevSchema.safeParse(buffer.subarray(0, bytesRead).toString('utf8').trim());
      return parsed.success ? parsed.data : null;
    } finally {
      await handle.close();
    }
  } catch {
    return null;
  }
}

// One `docker compose ps`: containers, or why there is no answer (docker missing, daemon down,
// timeout, garbage). Never throws.
export async function composePs(settings: AppsSettings, app: string, signal?: AbortSignal): Promise<ComposePs> {
  const what = `${settings.docker} compose -p ${app} ps`;
  const outcome = await runCommand(settings.docker, ['compose', '-p', app, 'ps', '--all', '--format', 'json'], {
    timeoutMs: settings.timeoutMs,
    stdoutLimit: COMPOSE_PS_MAX_BYTES,
    keepBytes: 1024,
    ...(signal ? { signal } : {}),
  });
  if (outcome.stdoutOverflow)
    return { ok: false, reason: `${what} printed more than ${COMPOSE_PS_MAX_BYTES} bytes; not read` };
  if (outcome.code !== 0 || outcome.timedOut) {
    // What it said: the first line (usually the error) and the last (usually the hint).
    const lines = outcome.outputTail
      .split('\n')
      .map((l) => l.trim())
      .filter(Boolean);
    const said = (lines.length > 2 ? [lines[0], lines.at(-1)] : lines).join(' … ').slice(-300);
    // A negative code is Node's: the command never started (not installed, not executable).
    const failure =
      outcome.code !== null && outcome.code < 0
        ? `cannot run ${settings.docker} (install docker with its compose plugin, or set --docker-command)`
        : describeFailure(what, outcome, settings.timeoutMs);
    return { ok: false, reason: `${failure}${said ? `: ${said}` : ''}`.slice(0, APP_LIMITS.reason) };
  }
  return parseComposePs(outcome.stdout ?? '');
}

export interface AppMonitor {
  // The apps as last published (null before the first check that read the manifest).
  current(): AppStatus[] | null;
  stop(): Promise<void>;
}

export function startAppMonitor(
  settings: AppsSettings,
  // initial: the apps as last published (before a restart), so an unchanged picture is not
  // published again and keeps its `since`.
  deps: {
    logger: Logger;
    now: () => number;
    publish: (apps: AppStatus[]) => Promise<void>;
    initial?: AppStatus[] | null;
  },
): AppMonitor {
  const { logger } = deps;
  const abort = new AbortController();
  let current: AppStatus[] | null = deps.initial ?? null;
  let lastManifestProblem: string | null = null;

  const check = async (): Promise<void> => {
    const manifest = await readAppsManifest(settings.manifest);
    if (!manifest.ok) {
      // The last picture stays: an unreadable manifest says nothing about the apps.
      if (manifest.reason !== lastManifestProblem)
        logger.warn({ event: 'apps-manifest-unreadable', manifest: settings.manifest }, manifest.reason);
      lastManifestProblem = manifest.reason;
      return;
    }
    lastManifestProblem = null;
    const seen: AppStatus[] = [];
    for (const app of manifest.apps) {
      const ps = await composePs(settings, app.name, abort.signal);
      if (abort.signal.aborted) return;
      seen.push(appStatusOf(app, ps, new Date(deps.now()).toISOString(), await readDeployedRev(app)));
    }
    const next = fitToBudget(keepSince(seen, current));
    if (sameApps(next, current)) return;
    const before = new Map((current ?? []).map((a) => [a.name, a.state]));
    for (const app of next)
      if (before.get(app.name) !== app.state)
        logger[app.state === 'running' || app.state === 'stopped' ? 'info' : 'warn'](
          { event: 'app-state', app: app.name, rev: app.rev, state: app.state, reason: app.reason },
          `app ${app.name}: ${app.state}${app.reason ? ` (${app.reason})` : ''}`,
        );
    await deps.publish(next);
    current = next;
  };

  const loop = (async () => {
    while (!abort.signal.aborted) {
      try {
        await check();
      } catch (error) {
        logger.warn({ event: 'apps-check-failed', err: error }, 'cannot check the apps; trying again next interval');
      }
      await sleep(settings.intervalMs, abort.signal);
    }
  })();

  return {
    current: () => current,
    async stop() {
      abort.abort();
      await loop;
    },
  };
}
