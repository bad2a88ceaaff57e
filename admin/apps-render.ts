import type { AppService, AppStatus } from '../shared/schemas/apps.js';
import type { HostView } from '../shared/views/host-view.js';

// `outpost status --apps`: one row per application service of each host, from the host's signed
// status (docs/apps.md). What is wrong is in capitals, as in the host table.

function serviceCell(service: AppService): string {
  const health = service.health ? `, ${service.health}` : '';
  const exit = service.state === 'exited' ? ` ${service.exitCode ?? '?'}` : '';
  return `${service.name} ${service.state}${exit}${health}`;
}

export function appStateCell(app: AppStatus): string {
  const state = app.state === 'running' || app.state === 'stopped' ? app.state : app.state.toUpperCase();
  return app.reason && app.state !== 'running' ? `${state}: ${app.reason}` : state;
}

export function appServicesCell(app: AppStatus): string {
  const listed = app.services.map(serviceCell).join('; ');
  const omitted = app.servicesOmitted ? `${listed ? '; ' : ''}${app.servicesOmitted} more not listed` : '';
  return `${listed}${omitted}` || '-';
}

export function renderAppsTable(views: HostView[]): string {
  const header = ['HOST', 'APP', 'REV', 'STATE', 'SINCE', 'CONTAINERS'];
  const rows: string[][] = [];
  const silent: string[] = [];
  for (const view of views) {
    const apps = view.apps ?? [];
    if (apps.length === 0) {
      silent.push(view.host);
      continue;
    }
    const offline = view.online ? '' : ' (host offline: as last reported)';
    for (const app of apps)
      rows.push([
        view.host,
        app.name,
        app.rev.slice(0, 12),
        `${appStateCell(app)}${offline}`,
        app.since,
        appServicesCell(app),
      ]);
  }
  const lines: string[] = [];
  if (rows.length) {
    const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
    const line = (cells: string[]): string =>
      cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join('  ');
    lines.push(line(header), ...rows.map(line));
  }
  if (silent.length)
    lines.push(
      `${lines.length ? '\n' : ''}no apps reported by ${silent.join(', ')} (none declared in services.outpost-apps, an agent without --apps-manifest, or a status not readable or not counted)`,
    );
  const apps = views.flatMap((v) => v.apps ?? []);
  const count = (state: AppStatus['state']): number => apps.filter((a) => a.state === state).length;
  lines.push(
    '',
    `${apps.length} app${apps.length === 1 ? '' : 's'}: ${count('running')} running, ${count('degraded')} degraded, ${count('stopped')} stopped, ${count('unknown')} unknown`,
  );
  return lines.join('\n');
}
