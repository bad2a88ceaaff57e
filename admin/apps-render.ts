import { appServicesCell, appStateCell, appsSummary } from '../shared/views/app-cells.js';
import type { HostView } from '../shared/views/host-view.js';

// `outpost status --apps`: one row per application service of each host, from the host's signed
// status (docs/apps.md); the cells read as on the web editor's host page (shared/views/app-cells.ts).

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
  lines.push('', appsSummary(views.flatMap((v) => v.apps ?? [])));
  return lines.join('\n');
}
