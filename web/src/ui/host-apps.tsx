import type { AppStatus } from '../../../shared/schemas/apps.js';
import { appNeedsAttention, appServicesCell, appStateCell } from '../../../shared/views/app-cells.js';

// The host's application services (services.outpost-apps, docs/apps.md) as its signed status
// reports them: one line per app, what is wrong in capitals, its containers on hover and below.
export function HostApps({ apps }: { apps: AppStatus[] | null | undefined }) {
  if (!apps || apps.length === 0) return null;
  return (
    <>
      <dt>apps</dt>
      <dd data-testid="host-apps">
        <ul class="apps">
          {apps.map((app) => (
            <li key={app.name} data-app={app.name} data-state={app.state}>
              <span class={appNeedsAttention(app) ? 'bad' : app.state === 'running' ? 'ok' : 'muted'}>
                {app.name} {appStateCell(app)}
              </span>{' '}
              <code title={app.rev}>{app.rev.slice(0, 12)}</code>{' '}
              <span class="muted" title={`since ${app.since}`}>
                {appServicesCell(app)}
              </span>
            </li>
          ))}
        </ul>
      </dd>
    </>
  );
}
