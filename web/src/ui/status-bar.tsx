import { MAX_FOLLOWED_HOSTS } from '../sync/fleet-sync.js';
import { ago, clock } from './format.js';
import type { Session } from './session.js';

// Whether the page is connected and how old its view is, its trust in the policy, the key in use
// and what waits to be delivered: always visible.
export function StatusBar(props: { session: Session; now: number; onLock: () => void }) {
  const { sync, outbox, apiOutbox, signer } = props.session;
  const connections = sync.connections();
  const live = connections.allLive;
  const readable = connections.documents - connections.refused.length;
  const online = navigator.onLine;
  const freshness = sync.freshness();
  const policy = sync.authority()?.chain.at(-1);
  const pending = outbox.pending().length + apiOutbox.pending().length;
  const refused = apiOutbox.refused().length;
  let link: string;
  let linkClass: string;
  if (live) {
    link = `Connected · live (${connections.live} documents)`;
    linkClass = 'ok';
  } else if (connections.live > 0) {
    link = `Reconnecting · ${connections.live} of ${readable} documents live`;
    linkClass = 'warn';
  } else {
    link = online ? 'Not connected · retrying' : 'Offline (this browser has no link)';
    linkClass = 'bad';
  }
  const staleness = live
    ? null
    : sync.lastLiveAt === null
      ? 'no live view yet: showing what this browser stored'
      : `view as of ${clock(sync.lastLiveAt)} (${ago(sync.lastLiveAt, props.now)})`;
  return (
    <header class="status-bar">
      <a class="brand" href="#/">
        Outpost
      </a>
      <span class={`pill ${linkClass}`} data-testid="connection" data-live={String(live)}>
        {link}
      </span>
      {staleness && (
        <span class="pill warn" data-testid="staleness">
          {staleness}
        </span>
      )}
      {connections.refused.length > 0 && (
        <span class="pill bad" title={connections.refused.map((r) => `${r.document}: ${r.reason}`).join('\n')}>
          {connections.refused.length} document(s) refused to this key
        </span>
      )}
      <span
        class={`pill ${sync.orgRootKeys.length === 0 || freshness?.frozen ? 'bad' : 'ok'}`}
        data-testid="trust"
        title={freshness?.frozen ? freshness.reason : undefined}
      >
        {sync.orgRootKeys.length === 0
          ? 'UNVERIFIED: no org root pinned'
          : !policy
            ? 'no policy signed by the pinned root yet'
            : `policy v${policy.version}${freshness?.frozen ? ' · STALE: no fresh signed timestamp' : ' · fresh'}`}
      </span>
      {sync.hostsNotFollowed > 0 && (
        <span class="pill bad" title={`the page follows at most ${MAX_FOLLOWED_HOSTS} hosts`}>
          {sync.hostsNotFollowed} more hosts not shown
        </span>
      )}
      {pending > 0 && (
        <span class="pill warn" data-testid="pending-count">
          {pending} signed action{pending > 1 ? 's' : ''} not yet delivered
        </span>
      )}
      {refused > 0 && (
        <span class="pill bad" data-testid="refused-count" title="shown on the rollout and enrollment pages with why">
          {refused} signed action{refused > 1 ? 's' : ''} refused by the server
        </span>
      )}
      <span class="spacer" />
      <span class="who" title={signer.publicKey}>
        {signer.name} · signs with {signer.engine === 'webcrypto' ? 'WebCrypto Ed25519' : 'tweetnacl'}
      </span>
      <button type="button" onClick={props.onLock} data-testid="lock">
        Lock
      </button>
    </header>
  );
}
