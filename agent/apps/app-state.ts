import { canonicalJson } from '../../shared/crypto/canonical.js';
import { APP_LIMITS, type AppService, type AppStatus } from '../../shared/schemas/apps.js';
import { appStateOf, type ComposePs } from './compose-ps.js';

// From what docker said about each declared app to the `apps` of the signed status: bounded, in
// a stable order, and with `since` kept while nothing changes, so a check that finds the same
// state does not rewrite the status.

export interface DeclaredApp {
  name: string;
  rev: string;
  // The app's checkout (the manifest's `directory`), where the unit records what it brought up.
  directory?: string;
}

// One app's status from its `docker compose ps` (parsed, or why it could not be) and the commit
// the unit last brought up (undefined: not known, the manifest names no directory).
export function appStatusOf(app: DeclaredApp, ps: ComposePs, at: string, deployedRev?: string | null): AppStatus {
  const deployed = deployedRev === undefined ? {} : { deployedRev };
  if (!ps.ok)
    return { name: app.name, rev: app.rev, ...deployed, state: 'unknown', reason: ps.reason, services: [], since: at };
  const { state, reason } = appStateOf(ps.containers);
  const services = ps.containers.slice(0, APP_LIMITS.servicesPerApp);
  const omitted = ps.containers.length - services.length + ps.omitted;
  return {
    name: app.name,
    rev: app.rev,
    ...deployed,
    state,
    ...(reason ? { reason } : {}),
    services,
    ...(omitted > 0 ? { servicesOmitted: omitted } : {}),
    since: at,
  };
}

function withoutSince(app: AppStatus): string {
  const { since: _since, ...rest } = app;
  return canonicalJson(rest);
}

// An app whose content is unchanged keeps the time it was first seen so.
export function keepSince(next: AppStatus[], previous: readonly AppStatus[] | null): AppStatus[] {
  const before = new Map((previous ?? []).map((a) => [a.name, a]));
  return next.map((app) => {
    const old = before.get(app.name);
    return old && withoutSince(old) === withoutSince(app) ? { ...app, since: old.since } : app;
  });
}

function cut(app: AppStatus, keep: number): AppStatus {
  if (app.services.length <= keep) return app;
  const services: AppService[] = app.services.slice(0, keep);
  return { ...app, services, servicesOmitted: (app.servicesOmitted ?? 0) + app.services.length - keep };
}

// Keeps the apps within APP_LIMITS.statusBytes of JSON by listing fewer containers per app (the
// lists are sorted problems first, so what is wrong stays listed). With no containers listed, 32
// apps with the longest reasons still fit.
export function fitToBudget(apps: AppStatus[], budget: number = APP_LIMITS.statusBytes): AppStatus[] {
  let fitted = apps.slice(0, APP_LIMITS.apps);
  for (const keep of [APP_LIMITS.servicesPerApp, 16, 8, 4, 2, 1, 0]) {
    fitted = fitted.map((app) => cut(app, keep));
    if (canonicalJson(fitted).length <= budget) return fitted;
  }
  return fitted;
}

export function sameApps(a: readonly AppStatus[] | null, b: readonly AppStatus[] | null): boolean {
  return canonicalJson(a ?? null) === canonicalJson(b ?? null);
}
