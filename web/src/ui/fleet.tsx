import { useEffect, useLayoutEffect, useMemo, useRef, useState } from 'preact/hooks';
import { channelHosts } from '../../../shared/rollout/build.js';
import type { Channel, Policy } from '../../../shared/schemas/policy.js';
import { relayServesHost } from '../../../shared/trust/capabilities.js';
import type { HostView } from '../../../shared/views/host-view.js';
import { ago, bytes, until } from './format.js';
import { goToHost } from './hooks.js';

// Every host in one table: only the rows in view are rendered (a fixed row height makes the
// window a slice), so 1,000 hosts cost what 25 do. Keyboard: / filters, arrows move, Enter opens.
export const ROW_HEIGHT = 30;
const OVERSCAN = 6;

export function phaseOf(view: HostView): string {
  if (view.unreadable) return 'unreadable';
  if (view.rejectedStatus) return 'untrusted';
  return view.phase ?? 'unknown';
}

function matches(view: HostView, needle: string): boolean {
  if (!needle) return true;
  const haystack = [
    view.host,
    phaseOf(view),
    view.applied?.closure ?? '',
    view.desired?.closure ?? '',
    view.online ? 'online' : 'offline',
    view.trust?.frozen ? 'frozen' : '',
  ]
    .join(' ')
    .toLowerCase();
  return needle
    .toLowerCase()
    .split(/\s+/)
    .every((word) => haystack.includes(word));
}

function DesiredCell({ view }: { view: HostView }) {
  const desired = view.desired;
  if (!desired) return <span class="muted">—</span>;
  const untrusted = !desired.signatureValid || desired.trustedSigner === false;
  return (
    <span
      class={untrusted ? 'bad' : ''}
      title={`${desired.closure}\nissued by ${desired.issuer}${desired.untrustedBecause ? `\nUNTRUSTED: ${desired.untrustedBecause}` : ''}`}
    >
      {desired.generation}
      {untrusted ? ' ✗ untrusted' : ''}
    </span>
  );
}

function PhaseCell({ view }: { view: HostView }) {
  if (view.unreadable)
    return (
      <span class="bad" title={view.unreadable}>
        unreadable
      </span>
    );
  if (view.rejectedStatus)
    return (
      <span class="bad" title={view.rejectedStatus.reason} data-testid="untrusted-status">
        ✗ UNTRUSTED status
      </span>
    );
  // Without the policy from the pinned root (none pinned, or none received yet), a status is
  // checked only against its own signer: it could be anyone's, and the row says so.
  const unverified = view.hostKeys === 'unverified' && view.phase !== null;
  return (
    <span
      class={`phase phase-${view.phase ?? 'unknown'}`}
      title={unverified ? "UNVERIFIED: the host's key is not checked (no policy from the pinned org root)" : undefined}
    >
      {unverified ? '? ' : ''}
      {view.phase ?? '—'}
    </span>
  );
}

function ProgressCell({ view }: { view: HostView }) {
  const p = view.progress;
  if (!p || view.phase !== 'downloading') return <span class="muted">—</span>;
  const fraction = p.bytesTotal > 0 ? p.bytesDone / p.bytesTotal : 0;
  return (
    <span class="progress" title={`${p.pathsDone}/${p.pathsTotal} paths, ${bytes(p.bytesPerSecond)}/s`}>
      <span class="bar">
        <span class="fill" style={{ width: `${Math.round(fraction * 100)}%` }} />
      </span>
      {Math.round(fraction * 100)}% of {bytes(p.bytesTotal)}
      {p.live ? '' : ' (reported)'}
    </span>
  );
}

function Row({ view, now, active, top }: { view: HostView; now: number; active: boolean; top: number }) {
  const last = view.lastResult;
  return (
    <tr
      class={`row${active ? ' active' : ''}${view.rejectedStatus || view.rejectedResults.count ? ' has-untrusted' : ''}`}
      id={`host-row-${view.host}`}
      aria-selected={active}
      data-testid={`row-${view.host}`}
      data-phase={phaseOf(view)}
      style={{ transform: `translateY(${top}px)` }}
    >
      <td class="c-host">
        <a href={`#/host/${view.host}`} tabIndex={-1}>
          {view.host}
        </a>
      </td>
      <td class="c-gen">
        <DesiredCell view={view} />
      </td>
      <td class="c-gen" title={view.applied?.closure}>
        {view.applied?.generation ?? '—'}
      </td>
      <td class="c-phase">
        <PhaseCell view={view} />
      </td>
      <td class="c-online">
        {view.online ? <span class="ok">● online</span> : <span class="muted">○ {ago(view.lastSeen, now)}</span>}
      </td>
      <td class="c-progress">
        <ProgressCell view={view} />
      </td>
      <td class="c-window" title={view.window?.windows}>
        {view.window ? `${view.window.waitingFor} ${until(view.window.nextStart, now)}` : ''}
      </td>
      <td class="c-freeze" title={view.trust?.reason}>
        {view.trust?.frozen ? <span class="bad">FROZEN</span> : view.trust ? `v${view.trust.policyVersion ?? '—'}` : ''}
      </td>
      <td class="c-result" title={last?.reason || last?.closure}>
        {last ? `#${last.seq} gen ${last.generation} ${last.outcome}` : <span class="muted">—</span>}
        {view.rejectedResults.count > 0 && (
          <span class="bad" title={view.rejectedResults.firstReason ?? ''}>
            {' '}
            +{view.rejectedResults.count} ✗ untrusted
          </span>
        )}
      </td>
    </tr>
  );
}

// What the policy says about where hosts belong: its groups, its channels (their hosts as
// `outpost rollout create --channel` takes them), and the relays (sites) serving them.
export interface FleetScopes {
  groups: { name: string; hosts: ReadonlySet<string> }[];
  channels: { name: string; hosts: ReadonlySet<string> }[];
  sites: { name: string; serves: (host: string) => boolean }[];
}

const NO_SCOPES: FleetScopes = { groups: [], channels: [], sites: [] };

function channelMembers(policy: Policy, channel: Channel): ReadonlySet<string> {
  try {
    return new Set(channelHosts(policy, channel));
  } catch {
    // A channel naming a group the policy lacks selects nothing (rollout create says why).
    return new Set();
  }
}

export function scopesOf(policy: Policy | undefined): FleetScopes {
  if (!policy) return NO_SCOPES;
  return {
    groups: policy.groups.map((g) => ({ name: g.name, hosts: new Set(g.hosts) })),
    channels: (policy.channels ?? []).map((c) => ({ name: c.name, hosts: channelMembers(policy, c) })),
    sites: policy.relays.map((r) => ({ name: r.name, serves: (host: string) => relayServesHost(policy, r.key, host) })),
  };
}

export function FleetView(props: { views: HostView[]; now: number; scopes?: FleetScopes }) {
  const [filter, setFilter] = useState('');
  const [phase, setPhase] = useState<string | null>(null);
  const [group, setGroup] = useState('');
  const [site, setSite] = useState('');
  const [channel, setChannel] = useState('');
  const scopes = props.scopes ?? NO_SCOPES;
  const [scrollTop, setScrollTop] = useState(0);
  const [height, setHeight] = useState(600);
  const [active, setActive] = useState(0);
  const scroller = useRef<HTMLTableSectionElement>(null);
  const filterInput = useRef<HTMLInputElement>(null);

  const counts = useMemo(() => {
    const byPhase = new Map<string, number>();
    for (const view of props.views) byPhase.set(phaseOf(view), (byPhase.get(phaseOf(view)) ?? 0) + 1);
    return [...byPhase].sort(([a], [b]) => (a < b ? -1 : 1));
  }, [props.views]);
  const shown = useMemo(() => {
    const inGroup = scopes.groups.find((g) => g.name === group);
    const atSite = scopes.sites.find((s) => s.name === site);
    const inChannel = scopes.channels.find((c) => c.name === channel);
    return props.views.filter(
      (v) =>
        (phase === null || phaseOf(v) === phase) &&
        (!inGroup || inGroup.hosts.has(v.host)) &&
        (!inChannel || inChannel.hosts.has(v.host)) &&
        (!atSite || atSite.serves(v.host)) &&
        matches(v, filter.trim()),
    );
  }, [props.views, filter, phase, group, channel, site, scopes]);

  useLayoutEffect(() => {
    const element = scroller.current;
    if (!element) return;
    const observer = new ResizeObserver(() => setHeight(element.clientHeight));
    observer.observe(element);
    setHeight(element.clientHeight);
    return () => observer.disconnect();
  }, []);

  useEffect(() => {
    const onKey = (event: KeyboardEvent): void => {
      const typing = event.target instanceof HTMLInputElement || event.target instanceof HTMLTextAreaElement;
      if (event.key === '/' && !typing) {
        event.preventDefault();
        filterInput.current?.focus();
      }
    };
    window.addEventListener('keydown', onKey);
    return () => window.removeEventListener('keydown', onKey);
  }, []);

  const clampedActive = Math.min(active, Math.max(0, shown.length - 1));
  const moveTo = (index: number): void => {
    const next = Math.max(0, Math.min(shown.length - 1, index));
    setActive(next);
    const element = scroller.current;
    if (!element) return;
    const top = next * ROW_HEIGHT;
    if (top < element.scrollTop) element.scrollTop = top;
    else if (top + ROW_HEIGHT > element.scrollTop + element.clientHeight)
      element.scrollTop = top + ROW_HEIGHT - element.clientHeight;
  };
  const onKeyDown = (event: KeyboardEvent): void => {
    const page = Math.max(1, Math.floor(height / ROW_HEIGHT) - 1);
    const moves: Record<string, number> = {
      ArrowDown: clampedActive + 1,
      ArrowUp: clampedActive - 1,
      PageDown: clampedActive + page,
      PageUp: clampedActive - page,
      Home: 0,
      End: shown.length - 1,
    };
    if (event.key in moves) {
      event.preventDefault();
      moveTo(moves[event.key]!);
    } else if (event.key === 'Enter' && shown[clampedActive]) {
      goToHost(shown[clampedActive]!.host);
    }
  };

  const first = Math.max(0, Math.floor(scrollTop / ROW_HEIGHT) - OVERSCAN);
  const last = Math.min(shown.length, Math.ceil((scrollTop + height) / ROW_HEIGHT) + OVERSCAN);
  const visible = shown.slice(first, last);

  return (
    <section class="fleet" data-testid="fleet-view" aria-label="Fleet">
      <div class="toolbar">
        <input
          ref={filterInput}
          type="search"
          placeholder="Filter hosts (press /): name, phase, closure, online, frozen"
          value={filter}
          data-testid="filter"
          onInput={(e) => setFilter((e.target as HTMLInputElement).value)}
          onKeyDown={(e) => {
            if (e.key === 'ArrowDown' || e.key === 'Enter') {
              e.preventDefault();
              scroller.current?.focus();
            }
          }}
        />
        <ScopeFilter label="group" names={scopes.groups} value={group} onChange={setGroup} />
        <ScopeFilter label="channel" names={scopes.channels} value={channel} onChange={setChannel} />
        <ScopeFilter label="site" names={scopes.sites} value={site} onChange={setSite} />
        <fieldset class="counts" aria-label="Hosts by phase">
          <button type="button" class={phase === null ? 'chip on' : 'chip'} onClick={() => setPhase(null)}>
            all {props.views.length}
          </button>
          {counts.map(([name, count]) => (
            <button
              type="button"
              key={name}
              class={`chip phase-${name}${phase === name ? ' on' : ''}`}
              data-testid={`count-${name}`}
              onClick={() => setPhase(phase === name ? null : name)}
            >
              {name} {count}
            </button>
          ))}
        </fieldset>
        <span class="muted">
          {shown.length} shown · rendering {visible.length}
        </span>
      </div>
      <table class="fleet-table" aria-label="Hosts" aria-rowcount={shown.length}>
        <thead>
          <tr class="table-head">
            <th class="c-host">host</th>
            <th class="c-gen">desired</th>
            <th class="c-gen">applied</th>
            <th class="c-phase">phase</th>
            <th class="c-online">online / last seen</th>
            <th class="c-progress">download</th>
            <th class="c-window">window wait</th>
            <th class="c-freeze">trust</th>
            <th class="c-result">last result</th>
          </tr>
        </thead>
        {/* The rows' keyboard: focus the scrolling body (Tab, or arrow down from the filter), then
            arrows, Page Up/Down, Home/End move the selected row, Enter opens the host. */}
        <tbody
          class="table-body"
          ref={scroller}
          // biome-ignore lint/a11y/noNoninteractiveTabindex: a scrolling region must take keyboard focus (WCAG 2.1.1)
          tabIndex={0}
          data-testid="fleet-table"
          onScroll={(e) => setScrollTop((e.target as HTMLElement).scrollTop)}
          onKeyDown={onKeyDown}
        >
          <tr class="spacer-rows" style={{ height: `${shown.length * ROW_HEIGHT}px` }} />
          {visible.map((view, i) => (
            <Row
              key={view.host}
              view={view}
              now={props.now}
              active={first + i === clampedActive}
              top={(first + i) * ROW_HEIGHT}
            />
          ))}
        </tbody>
      </table>
      {shown.length === 0 && (
        <p class="empty">
          {props.views.length === 0
            ? 'No hosts yet: start an agent, or deploy with outpost deploy.'
            : 'No host matches the filter.'}
        </p>
      )}
    </section>
  );
}

// One of the fleet's scope filters (group, channel, site): shown only when the policy names some.
function ScopeFilter(props: {
  label: string;
  names: readonly { name: string }[];
  value: string;
  onChange: (value: string) => void;
}) {
  if (props.names.length === 0) return null;
  return (
    <label>
      {props.label}{' '}
      <select
        value={props.value}
        data-testid={`${props.label}-filter`}
        onChange={(e) => props.onChange((e.target as HTMLSelectElement).value)}
      >
        <option value="">all</option>
        {props.names.map((n) => (
          <option key={n.name}>{n.name}</option>
        ))}
      </select>
    </label>
  );
}
