import { useEffect, useMemo, useState } from 'preact/hooks';
import { readIntentEntries } from '../../../shared/documents/desired.js';
import type { ActionKind } from '../../../shared/schemas/action.js';
import type { ActivationAction } from '../../../shared/schemas/primitives.js';
import { describeCoSignProgress } from '../../../shared/trust/co-signatures.js';
import { alreadySigned, findProposal, mayApprove } from '../../../shared/views/co-sign.js';
import { hostTimeline, type TimelineEntry } from '../../../shared/views/host-timeline.js';
import type { HostView } from '../../../shared/views/host-view.js';
import { chooseRollbackTarget } from '../../../shared/views/rollback-target.js';
import { type ActionOutcome, approve, deploy, rollback } from '../sync/actions.js';
import { type RemoteActionOutcome, requestAction } from '../sync/remote-actions.js';
import { ago, bytes, clock, closureName, shortKey, until } from './format.js';
import { goToFleet, useAction } from './hooks.js';
import { HostApps } from './host-apps.js';
import { HostSshSessions } from './host-ssh.js';
import type { Session } from './session.js';

// One host: what it runs and reports (every signature checked), its timeline of intents and
// results with signature marks and delivery state, and deploy and rollback actions.
const VALIDITY: Record<string, number> = { '1 day': 86_400_000, '7 days': 7 * 86_400_000, '30 days': 30 * 86_400_000 };

function Mark({ mark, note }: { mark: TimelineEntry['mark']; note: string | null }) {
  const text =
    mark === 'trusted'
      ? '✓ signed'
      : mark === 'untrusted'
        ? '✗ UNTRUSTED'
        : mark === 'awaiting'
          ? '◐ awaits co-signatures'
          : '? unverified';
  return (
    <span class={`mark mark-${mark}`} title={note ?? undefined} data-testid="mark">
      {text}
    </span>
  );
}

function Delivery({ session, digest }: { session: Session; digest: string }) {
  const entry = session.outbox.entry(digest);
  if (!entry) return null;
  return entry.deliveredAt ? (
    <span class="delivery ok" data-testid="delivery" data-delivered="true">
      signed here · delivered {clock(entry.deliveredAt)}
    </span>
  ) : (
    <span class="delivery warn" data-testid="delivery" data-delivered="false">
      signed here · NOT YET DELIVERED (waits for the link)
    </span>
  );
}

// The admin a key belongs to under the policy in force (a label: whether the signature counts is
// the mark's business), or the key's start.
function adminName(session: Session, key: string): string {
  return (
    session.sync
      .authority()
      ?.chain.at(-1)
      ?.admins.find((a) => a.keys.includes(key))?.name ?? shortKey(key)
  );
}

function TimelineRow({ entry, session }: { entry: TimelineEntry; session: Session }) {
  if (entry.kind === 'intent')
    return (
      <li
        class={`event intent mark-${entry.mark}`}
        data-testid="timeline-entry"
        data-kind="intent"
        data-generation={entry.generation}
      >
        <span class="when">{clock(entry.at)}</span>
        <span class="what">
          intent: generation <b>{entry.generation}</b> {entry.action}{' '}
          <code title={entry.closure}>{closureName(entry.closure)}</code> by {entry.issuer}
          {entry.signers.length > 1 && (
            <span data-testid="signers">
              {' '}
              · {entry.signers.length} signatures ({entry.signers.map((k) => adminName(session, k)).join(', ')})
            </span>
          )}
        </span>
        <Mark mark={entry.mark} note={entry.note} />
        <Delivery session={session} digest={entry.digest} />
        {entry.note && <span class="note">{entry.note}</span>}
      </li>
    );
  return (
    <li
      class={`event result mark-${entry.mark}`}
      data-testid="timeline-entry"
      data-kind="result"
      data-outcome={entry.outcome}
    >
      <span class="when">{clock(entry.at)}</span>
      <span class="what">
        result #{entry.seq}: generation <b>{entry.generation}</b> <b>{entry.outcome}</b>{' '}
        <code title={entry.closure}>{closureName(entry.closure)}</code>
        {entry.reason && ` — ${entry.reason}`}
      </span>
      <Mark mark={entry.mark} note={entry.note} />
      {entry.note && entry.mark !== 'trusted' && <span class="note">{entry.note}</span>}
    </li>
  );
}

// Who signed the newest intent and how many more are needed (the agents' count); approving adds
// this admin's signature to the same content, offered only when it would count.
function CoSignPanel(props: {
  session: Session;
  view: HostView;
  busy: boolean;
  onApprove: (generation: number) => void;
}) {
  const { session, view } = props;
  const desired = view.desired!;
  const chain = session.sync.authority()?.chain ?? [];
  const policy = chain.at(-1);
  const doc = session.sync.desiredDoc(view.host);
  // What `outpost approve` would approve: content some admin validly signed under the walked
  // policy (a relay or coordinator can write an intent, never a valid admin signature on it).
  const proposal = doc
    ? findProposal(readIntentEntries(doc).entries, view.host, chain, {
        generation: desired.generation,
        now: Date.now(),
      })
    : ({ ok: false, reason: 'the host document is not loaded' } as const);
  const progress = proposal.ok ? proposal.signing.progress : desired.coSigning!;
  const allowed = policy
    ? mayApprove(policy, session.signer.publicKey, view.host)
    : ({ ok: false, reason: 'no policy signed by the pinned org root is known' } as const);
  return (
    <div class="cosign" data-testid="cosign" data-missing={progress.missing}>
      <h3>Co-signing</h3>
      <p data-testid="cosign-progress">
        generation {desired.generation}: {describeCoSignProgress(progress)}
      </p>
      {!proposal.ok ? (
        <p class="bad" data-testid="cosign-hint">
          nothing to approve: {proposal.reason}
        </p>
      ) : progress.missing === 0 ? (
        <p class="ok">enough admins signed: the host applies it when it next syncs</p>
      ) : alreadySigned(proposal, session.signer.publicKey) ? (
        <p class="hint" data-testid="cosign-hint">
          you have signed it; it waits for the others
        </p>
      ) : allowed.ok ? (
        <button
          type="button"
          disabled={props.busy}
          data-testid="approve-button"
          onClick={() => props.onApprove(desired.generation)}
          title="Add your signature to the same intent (outpost approve)"
        >
          Approve (co-sign) generation {desired.generation}
        </button>
      ) : (
        <p class="hint" data-testid="cosign-hint">
          you cannot approve it: {allowed.reason}
        </p>
      )}
    </div>
  );
}

// An action is for now (docs/access.md): the host acts on it within the hour or never.
const ACTION_VALIDITY_MS = 3_600_000;

// Lock, unlock, check, collect and reboot, each a signed request the agent answers (the answers,
// signed by the host, are listed below the buttons). A reboot asks to be confirmed.
function RemoteActions({ session, view }: { session: Session; view: HostView }) {
  const { busy, outcome, run } = useAction<RemoteActionOutcome>();
  const [force, setForce] = useState(false);
  const [reason, setReason] = useState('');
  const [armed, setArmed] = useState(false);
  const act = (action: ActionKind): void => {
    setArmed(false);
    void run(() =>
      requestAction(
        { host: view.host, action, force: action === 'reboot' && force, reason, validForMs: ACTION_VALIDITY_MS },
        session.sync,
        session.signer,
      ),
    );
  };
  return (
    <div class="remote-actions" data-testid="remote-actions">
      <h3>Remote actions</h3>
      <label class="stack">
        Reason (optional; a lock shows it)
        <input
          value={reason}
          data-testid="action-reason"
          onInput={(e) => setReason((e.target as HTMLInputElement).value)}
        />
      </label>
      <div class="inline">
        {view.lock ? (
          <button type="button" disabled={busy} data-testid="action-unlock" onClick={() => act('unlock')}>
            Unlock
          </button>
        ) : (
          <button type="button" disabled={busy} data-testid="action-lock" onClick={() => act('lock')}>
            Lock
          </button>
        )}
        <button type="button" disabled={busy} data-testid="action-check" onClick={() => act('check')}>
          Run health checks
        </button>
        <button type="button" disabled={busy} data-testid="action-collect" onClick={() => act('collect')}>
          Collect diagnostics
        </button>
        {armed ? (
          <button
            type="button"
            disabled={busy}
            class="danger"
            data-testid="action-reboot-confirm"
            onClick={() => act('reboot')}
          >
            Confirm reboot of {view.host}
          </button>
        ) : (
          <button type="button" disabled={busy} data-testid="action-reboot" onClick={() => setArmed(true)}>
            Reboot…
          </button>
        )}
        <label>
          <input
            type="checkbox"
            checked={force}
            data-testid="action-force"
            onChange={(e) => setForce((e.target as HTMLInputElement).checked)}
          />{' '}
          reboot outside the reboot window
        </label>
      </div>
      {outcome && (
        <p class={outcome.ok ? 'ok' : 'error'} role="alert" data-testid="remote-action-message">
          {outcome.ok
            ? `signed ${outcome.request.action} (request ${outcome.request.id.slice(0, 8)}…, valid until ${clock(outcome.request.expiresAt)})${outcome.live ? '' : ' — offline: stored here, delivered when the link returns'}`
            : `refused: ${outcome.reason}`}
        </p>
      )}
      {view.actionResults && view.actionResults.length > 0 && (
        <ol class="action-results" data-testid="action-results">
          {view.actionResults.map((r) => (
            <li key={r.seq} data-testid="action-result" data-outcome={r.outcome} data-action={r.action}>
              #{r.seq} {r.action} {r.outcome}
              {r.code ? ` (${r.code})` : ''}: {r.reason} · {clock(r.at)}
              {r.hasBundle ? ' · bundle: outpost action collect' : ''}
            </li>
          ))}
        </ol>
      )}
    </div>
  );
}

export function HostPage(props: { session: Session; host: string; now: number }) {
  const { session, host, now } = props;
  const { sync } = session;
  const view: HostView | null = sync.hostView(host);
  const [closure, setClosure] = useState('');
  const [action, setAction] = useState<ActivationAction>('switch');
  const [validity, setValidity] = useState('7 days');
  const { busy, outcome, run } = useAction<ActionOutcome>();

  useEffect(() => {
    sync.addHost(host);
    const onKey = (event: KeyboardEvent): void => {
      const typing = event.target instanceof HTMLInputElement || event.target instanceof HTMLSelectElement;
      if (event.key === 'Escape' && !typing) goToFleet();
    };
    window.addEventListener('keydown', onKey);
    return () => window.removeEventListener('keydown', onKey);
  }, [host, sync]);

  const authority = sync.authority();
  const desiredDoc = sync.desiredDoc(host);
  const timeline = useMemo(
    () =>
      view && desiredDoc
        ? hostTimeline(host, desiredDoc, view, authority, Date.now(), sync.rolloutDocuments(host))
        : [],
    [view, desiredDoc, authority, host, sync],
  );
  if (!view || !desiredDoc)
    return (
      <section class="host" data-testid="host-view">
        <p>Loading {host}…</p>
      </section>
    );
  const rollbackTarget = chooseRollbackTarget(view);

  const validForMs = VALIDITY[validity]!;

  return (
    <section class="host" data-testid="host-view" aria-label={`Host ${host}`}>
      <div class="host-head">
        <button type="button" onClick={goToFleet} title="Back to the fleet (Escape)">
          ← Fleet
        </button>
        <h2>{host}</h2>
        <span class={view.online ? 'pill ok' : 'pill'}>
          {view.online ? 'online' : `offline · last seen ${ago(view.lastSeen, now)}`}
        </span>
      </div>
      <div class="host-grid">
        <dl class="facts" data-testid="host-facts">
          <dt>phase</dt>
          <dd data-testid="host-phase">
            {view.rejectedStatus ? (
              <span class="bad" data-testid="untrusted-status">
                ✗ UNTRUSTED status (signed by {shortKey(view.rejectedStatus.signer)}): {view.rejectedStatus.reason}
              </span>
            ) : (
              (view.phase ?? '—')
            )}
          </dd>
          <dt>applied</dt>
          <dd data-testid="host-applied">
            {view.applied ? (
              <>
                generation {view.applied.generation} <code>{closureName(view.applied.closure)}</code>
              </>
            ) : (
              '—'
            )}
          </dd>
          <dt>desired</dt>
          <dd>
            {view.desired ? (
              <>
                generation {view.desired.generation} {view.desired.action}{' '}
                <code>{closureName(view.desired.closure)}</code> by {view.desired.issuer}
                {view.desired.coSigning &&
                view.desired.coSigning.missing > 0 &&
                view.desired.coSigning.signed.length > 0 &&
                view.desired.signatureValid ? (
                  <span class="warn" data-testid="desired-awaiting">
                    {' '}
                    ◐ awaits co-signatures: {describeCoSignProgress(view.desired.coSigning)}
                  </span>
                ) : (
                  (view.desired.trustedSigner === false || !view.desired.signatureValid) && (
                    <span class="bad">
                      {' '}
                      ✗ untrusted{view.desired.untrustedBecause ? `: ${view.desired.untrustedBecause}` : ''}
                    </span>
                  )
                )}
              </>
            ) : (
              '—'
            )}
          </dd>
          {view.progress && view.phase === 'downloading' && (
            <>
              <dt>download</dt>
              <dd data-testid="host-progress">
                {bytes(view.progress.bytesDone)} of {bytes(view.progress.bytesTotal)} ({view.progress.pathsDone}/
                {view.progress.pathsTotal} paths, {bytes(view.progress.bytesPerSecond)}/s)
                {view.progress.live ? ' live' : ' (last report)'}
              </dd>
            </>
          )}
          {view.window && (
            <>
              <dt>window</dt>
              <dd>
                waits for {view.window.waitingFor} ({view.window.windows}), {until(view.window.nextStart, now)}
              </dd>
            </>
          )}
          {view.lock && (
            <>
              <dt>lock</dt>
              <dd class="bad" data-testid="host-lock">
                LOCKED since {clock(view.lock.since)} by {view.lock.by}
                {view.lock.reason ? `: ${view.lock.reason}` : ''} — no new generation until unlocked
              </dd>
            </>
          )}
          <dt>agent trust</dt>
          <dd>
            {view.trust
              ? `${view.trust.mode} ${view.trust.policyVersion ? `v${view.trust.policyVersion}` : ''}${view.trust.frozen ? ` · FROZEN: ${view.trust.reason ?? ''}` : ''}`
              : '—'}
          </dd>
          <dt>host key</dt>
          <dd>
            {view.hostKeys === 'enrollment' ? (
              view.enrolledKey ? (
                <span title={view.enrolledKey}>enrolled {shortKey(view.enrolledKey)}</span>
              ) : (
                <span class="bad">not enrolled: nothing it reports counts</span>
              )
            ) : (
              <span class="bad">UNVERIFIED: no org root pinned</span>
            )}
          </dd>
          <HostApps apps={view.apps} />
          <HostSshSessions sessions={view.sshSessions} />
        </dl>
        <div class="actions">
          {view.desired?.coSigning && (
            <CoSignPanel
              session={session}
              view={view}
              busy={busy}
              onApprove={(generation) =>
                void run(() => approve(host, generation, sync, session.outbox, session.signer))
              }
            />
          )}
          <form
            onSubmit={(e) => {
              e.preventDefault();
              void run(() => deploy({ host, closure, action, validForMs }, sync, session, session.signer));
            }}
          >
            <h3>Deploy</h3>
            <label class="stack">
              Closure (already in the signed binary cache)
              <input
                value={closure}
                placeholder="/nix/store/…-nixos-system-…"
                data-testid="deploy-closure"
                onInput={(e) => setClosure((e.target as HTMLInputElement).value)}
              />
            </label>
            <div class="inline">
              <label>
                Action{' '}
                <select
                  value={action}
                  onChange={(e) => setAction((e.target as HTMLSelectElement).value as ActivationAction)}
                >
                  <option>switch</option>
                  <option>boot</option>
                  <option>test</option>
                </select>
              </label>
              <label>
                Valid for{' '}
                <select value={validity} onChange={(e) => setValidity((e.target as HTMLSelectElement).value)}>
                  {Object.keys(VALIDITY).map((v) => (
                    <option key={v}>{v}</option>
                  ))}
                </select>
              </label>
              <button type="submit" disabled={busy} data-testid="deploy-button">
                Sign and deploy
              </button>
            </div>
          </form>
          <div class="rollback">
            <h3>Roll back</h3>
            <p class="hint" data-testid="rollback-target">
              {rollbackTarget.ok
                ? `to the closure of generation ${rollbackTarget.generation}: ${closureName(rollbackTarget.closure)}, as a new generation`
                : rollbackTarget.reason}
            </p>
            <button
              type="button"
              disabled={busy || !rollbackTarget.ok}
              data-testid="rollback-button"
              onClick={() => void run(() => rollback(view, { action, validForMs }, sync, session, session.signer))}
            >
              Sign rollback
            </button>
          </div>
          <RemoteActions session={session} view={view} />
          {outcome && (
            <p class={outcome.ok ? 'ok' : 'error'} role="alert" data-testid="action-message">
              {outcome.ok
                ? `${outcome.entry.action === 'approve' ? 'approved' : 'signed'} generation ${outcome.entry.signed.intent.generation}${sync.desiredLive(host) ? '' : ' — offline: it waits here, marked not yet delivered, and merges when the link returns'}`
                : `refused: ${outcome.reason}`}
            </p>
          )}
        </div>
      </div>
      <h3>Timeline</h3>
      <ol class="timeline" data-testid="timeline">
        {timeline
          .slice()
          .reverse()
          .map((entry) => (
            <TimelineRow
              key={entry.kind === 'intent' ? entry.digest : `r${entry.seq}-${entry.at}`}
              entry={entry}
              session={session}
            />
          ))}
        {timeline.length === 0 && <li class="muted">nothing yet</li>}
      </ol>
    </section>
  );
}
