import type { AppService, AppStatus } from '../schemas/apps.js';

// How an app of a host's signed status reads, for `outpost status --apps` and the web editor's
// host page alike: what is wrong in capitals, containers problems first (as the agent lists them).

export function serviceCell(service: AppService): string {
  const health = service.health ? `, ${service.health}` : '';
  const exit = service.state === 'exited' ? ` ${service.exitCode ?? '?'}` : '';
  return `${service.name} ${service.state}${exit}${health}`;
}

// When the unit could not bring the declared commit up (no fetch while offline, a failed start),
// the containers run an older one, or none: said next to the state, so `rev` is never read as
// what runs.
export function deployedNote(app: AppStatus): string | null {
  if (app.deployedRev === undefined || app.deployedRev === app.rev) return null;
  return app.deployedRev === null
    ? `${app.rev.slice(0, 12)} NOT BROUGHT UP YET`
    : `${app.rev.slice(0, 12)} NOT BROUGHT UP: ${app.deployedRev.slice(0, 12)} runs`;
}

export function appNeedsAttention(app: AppStatus): boolean {
  return app.state === 'degraded' || app.state === 'unknown' || deployedNote(app) !== null;
}

export function appStateCell(app: AppStatus): string {
  const state = app.state === 'degraded' || app.state === 'unknown' ? app.state.toUpperCase() : app.state;
  const text = app.reason && app.state !== 'running' ? `${state}: ${app.reason}` : state;
  const note = deployedNote(app);
  return note ? `${text} (${note}; journalctl -u outpost-app-${app.name})` : text;
}

export function appServicesCell(app: AppStatus): string {
  const listed = app.services.map(serviceCell).join('; ');
  const omitted = app.servicesOmitted ? `${listed ? '; ' : ''}${app.servicesOmitted} more not listed` : '';
  return `${listed}${omitted}` || '-';
}

// "3 apps: 1 running, 1 degraded, 0 stopped, 1 unknown"
export function appsSummary(apps: AppStatus[]): string {
  const count = (state: AppStatus['state']): number => apps.filter((a) => a.state === state).length;
  return `${apps.length} app${apps.length === 1 ? '' : 's'}: ${count('running')} running, ${count('degraded')} degraded, ${count('stopped')} stopped, ${count('unknown')} unknown`;
}
