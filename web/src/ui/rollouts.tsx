import { useEffect, useState } from 'preact/hooks';
import type * as Y from 'yjs';
import { readRolloutEntries, rolloutDocName } from '../../../shared/rollout/document.js';
import type { RolloutView } from '../../../shared/rollout/judge.js';
import type { ActionVerb, RolloutPlan } from '../../../shared/rollout/schemas.js';
import type { HostView } from '../../../shared/views/host-view.js';
import { abortRollbackTargets, mayActOnRollout, withPendingEntries } from '../../../shared/views/rollout-actions.js';
import {
  type JudgedRollout,
  judgeRolloutDocument,
  prepareRolloutDocument,
  previousJudgement,
  rolloutDocumentPrepared,
} from '../../../shared/views/rollout-judged.js';
import { buildReport, type RolloutReport } from '../../../shared/views/rollout-report.js';
import { rollbackTo } from '../sync/actions.js';
import { type AdminOutcome, cosignRolloutPlan, rolloutAction } from '../sync/admin-actions.js';
import { arriving } from '../sync/api-outbox.js';
import { listRolloutIds } from '../sync/rollout-ids.js';
import { clock } from './format.js';
import { useAction } from './hooks.js';
import { DeliveryNote, RefusedNote } from './outbox-notes.js';
import { CreateRollout } from './rollout-create.js';
import type { Session } from './session.js';

// Rollouts as `outpost rollout list` and `status` show them: each rollout document judged with the
// agents' own code (shared/rollout/judge.ts) under the policy walked from the pinned root, host
// states from their signed evidence and status; approve / pause / resume / abort and co-signing
// the plan as signed actions, the CLI's. Actions signed with no link wait in the API outbox and
// show, judged with the document, as not yet delivered.

const LIST_EVERY_MS = 10_000;
const NOT_IN_ROLLOUT_DOCUMENT =
  'the rollout document it serves does not hold it: not counted here; sign it again if it is still wanted';

// The rollout ids the server lists (remembered in IndexedDB, so the list is there offline).
function useRolloutIds(session: Session): string[] {
  const { sync } = session;
  const [ids, setIds] = useState<string[]>([]);
  useEffect(() => {
    let stopped = false;
    const load = async (): Promise<void> => {
      const listed = await listRolloutIds(sync);
      if (!stopped && listed) setIds(listed);
    };
    void load();
    const timer = setInterval(() => void load(), LIST_EVERY_MS);
    return () => {
      stopped = true;
      clearInterval(timer);
    };
  }, [sync]);
  return ids;
}

// Judged only once its signatures were checked ahead natively (prepareRolloutDocument); until
// then the previous judgement (or "checking") is shown, never a verdict made without checking.
// Actions signed in this page that wait for the server (or that it stored moments ago and the
// document does not show yet) are judged with the document, as if they had arrived.
function judge(session: Session, id: string, now: number): JudgedRollout {
  const doc = session.sync.fleetDocument(rolloutDocName(id));
  if (!rolloutDocumentPrepared(doc)) return previousJudgement(doc) ?? { ok: false, reason: 'checking signatures…' };
  const pending = {
    actions: session.apiOutbox
      .rolloutActions(id)
      .filter((p) => arriving(p, now))
      .map((p) => p.signed),
    cosignatures: session.apiOutbox
      .rolloutCosignatures(id)
      .filter((p) => arriving(p, now))
      .map((p) => p.signed),
  };
  return judgeRolloutDocument(doc, session.sync.authority()?.chain ?? [], now, pending);
}

// This page's signed actions on the rollout that the document does not hold yet, and those the
// server refused (with its reason, until dismissed).
function OutboxActions(props: { session: Session; id: string; now: number }) {
  const { session, id, now } = props;
  const stored = readRolloutEntries(session.sync.fleetDocument(rolloutDocName(id)));
  const held = new Set([...stored.actions, ...stored.cosignatures].map((a) => a.signature.signature));
  const waiting = session.apiOutbox.rolloutActions(id).filter((p) => !held.has(p.signed.signature.signature));
  const cosigning = session.apiOutbox.rolloutCosignatures(id).filter((p) => !held.has(p.signed.signature.signature));
  const refused = session.apiOutbox
    .refused()
    .filter(
      (e) =>
        (e.kind === 'rollout-action' && e.signed.action.rollout === id) ||
        (e.kind === 'rollout-cosignature' && e.rollout === id),
    );
  if (!waiting.length && !cosigning.length && !refused.length) return null;
  return (
    <ul class="outbox" aria-label="Signed here, not in the rollout document yet">
      {waiting.map((p) => (
        <li
          key={p.signed.signature.signature}
          data-testid="rollout-pending"
          data-delivered={String(p.deliveredAt !== null)}
        >
          {p.signed.action.verb}
          {p.signed.action.wave !== undefined ? ` wave ${p.signed.action.wave}` : ''} (#{p.signed.action.seq}) signed by{' '}
          {p.signed.action.issuer} at {clock(p.signed.action.at)}:{' '}
          <DeliveryNote waiting={p} now={now} missing={NOT_IN_ROLLOUT_DOCUMENT} />
        </li>
      ))}
      {cosigning.map((p) => (
        <li
          key={p.signed.signature.signature}
          data-testid="rollout-pending"
          data-delivered={String(p.deliveredAt !== null)}
        >
          your signature on the plan: <DeliveryNote waiting={p} now={now} missing={NOT_IN_ROLLOUT_DOCUMENT} />
        </li>
      ))}
      {refused.map((entry) => (
        <RefusedNote key={entry.id} entry={entry} outbox={session.apiOutbox} testId="rollout-refused" />
      ))}
    </ul>
  );
}

// Rollouts created here with no link that the server does not list yet: waiting for the link
// (NOT YET DELIVERED), stored moments ago, stored by the server's word but missing from what it
// serves after the grace (said so, as for actions), or refused with the server's reason.
function WaitingPlans(props: { session: Session; ids: readonly string[]; now: number }) {
  const { session, ids, now } = props;
  const held = (id: string, signature: string): boolean =>
    ids.includes(id) &&
    readRolloutEntries(session.sync.fleetDocument(rolloutDocName(id))).plans.some(
      (p) => p.signature.signature === signature,
    );
  const waiting = session.apiOutbox.rolloutPlans().filter((p) => !held(p.signed.plan.id, p.signed.signature.signature));
  const refused = session.apiOutbox.refused().filter((e) => e.kind === 'rollout-plan');
  if (!waiting.length && !refused.length) return null;
  return (
    <ul class="outbox" aria-label="Rollouts signed here, not at the server yet">
      {waiting.map((p) => {
        const { plan } = p.signed;
        return (
          <li
            key={p.signed.signature.signature}
            data-testid="plan-pending"
            data-delivered={String(p.deliveredAt !== null)}
          >
            rollout <strong>{plan.id}</strong> of {plan.release}: {plan.waves.length} waves,{' '}
            {plan.waves.reduce((n, w) => n + w.hosts.length, 0)} hosts, signed by {plan.issuer} at{' '}
            {clock(plan.createdAt)}, planned from this browser's view{' '}
            {p.plannedFrom === null ? '(never live here)' : `as of ${clock(p.plannedFrom)}`}:{' '}
            <DeliveryNote
              waiting={p}
              now={now}
              missing="it serves no such rollout: create it again if it is still wanted"
            />
          </li>
        );
      })}
      {refused.map((entry) => (
        <RefusedNote key={entry.id} entry={entry} outbox={session.apiOutbox} testId="plan-refused" />
      ))}
    </ul>
  );
}

const preparing = new WeakSet<Y.Doc>();

// After each render: documents that changed since their signatures were checked are checked
// again (only entries not seen before cost a verification), then the view redraws.
function usePreparedRollouts(session: Session, ids: readonly string[]): void {
  const [, redraw] = useState(0);
  useEffect(() => {
    for (const id of ids) {
      const doc = session.sync.fleetDocument(rolloutDocName(id));
      if (rolloutDocumentPrepared(doc) || preparing.has(doc)) continue;
      preparing.add(doc);
      void prepareRolloutDocument(doc).finally(() => {
        preparing.delete(doc);
        redraw((n) => n + 1);
      });
    }
  });
}

export function RolloutList(props: { session: Session; now: number }) {
  const ids = useRolloutIds(props.session);
  usePreparedRollouts(props.session, ids);
  return (
    <section class="admin-page" data-testid="rollouts-view" aria-label="Rollouts">
      <h2>Rollouts</h2>
      <CreateRollout session={props.session} rolloutIds={ids} />
      <WaitingPlans session={props.session} ids={ids} now={props.now} />
      {ids.length === 0 ? (
        <p class="muted">no rollouts yet: create one above, or with 'outpost rollout create'</p>
      ) : (
        <table class="plain">
          <thead>
            <tr>
              <th>rollout</th>
              <th>release</th>
              <th>state</th>
              <th>waves</th>
              <th>hosts</th>
              <th>issuer</th>
              <th>created</th>
            </tr>
          </thead>
          <tbody>
            {[...ids].reverse().map((id) => {
              const judged = judge(props.session, id, props.now);
              return (
                <tr key={id} data-testid={`rollout-row-${id}`} data-state={judged.ok ? judged.view.state : 'unknown'}>
                  <td>
                    <a href={`#/rollouts/${id}`}>{id}</a>
                  </td>
                  {judged.ok ? (
                    <>
                      <td>{judged.view.plan.release}</td>
                      <td class={`state-${judged.view.state}`}>{judged.view.state}</td>
                      <td>{judged.view.plan.waves.length}</td>
                      <td>{judged.view.plan.waves.reduce((n, w) => n + w.hosts.length, 0)}</td>
                      <td>{judged.view.plan.issuer}</td>
                      <td>{clock(judged.view.plan.createdAt)}</td>
                    </>
                  ) : (
                    <td colSpan={6} class="muted">
                      {judged.reason}
                    </td>
                  )}
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
    </section>
  );
}

function ActionButton(props: {
  session: Session;
  view: RolloutView;
  verb: ActionVerb;
  wave?: number;
  label: string;
  busy: boolean;
  run: (verb: ActionVerb, wave?: number) => void;
}) {
  const policy = props.session.sync.authority()?.chain.at(-1);
  const allowed = policy
    ? mayActOnRollout(policy, props.session.signer.publicKey, props.view.plan, props.verb, props.wave)
    : ({ ok: false, reason: 'no policy known' } as const);
  return (
    <button
      type="button"
      disabled={props.busy || !allowed.ok}
      title={allowed.ok ? `signed by you, as 'outpost rollout ${props.verb}'` : allowed.reason}
      data-testid={`rollout-${props.verb}${props.wave ? `-${props.wave}` : ''}`}
      onClick={() => props.run(props.verb, props.wave)}
    >
      {props.label}
    </button>
  );
}

// The rollback's intents wait for co-signers or the link like any intent; the abort itself waits
// in the API outbox when there is no link.
const ROLLBACK_VALID_MS = 7 * 86_400_000;

async function rollBackAfterAbort(session: Session, plan: RolloutPlan, aborted: string): Promise<AdminOutcome> {
  const done: string[] = [];
  const notDone: string[] = [];
  for (const back of abortRollbackTargets(plan, (host) => session.sync.hostView(host))) {
    if (!back.ok) {
      notDone.push(`${back.host}: ${back.reason}`);
      continue;
    }
    const outcome = await rollbackTo(
      back.host,
      back.closure,
      { action: plan.action, validForMs: ROLLBACK_VALID_MS },
      session.sync,
      session,
      session.signer,
    );
    if (outcome.ok)
      done.push(`${back.host} back to ${back.closure} as generation ${outcome.entry.signed.intent.generation}`);
    else notDone.push(`${back.host}: ${outcome.reason}`);
  }
  const rolled = done.length ? `; rolled back (signed): ${done.join('; ')}` : '; no host ran it, nothing to roll back';
  return notDone.length
    ? { ok: false, reason: `${aborted}${rolled}; NOT rolled back: ${notDone.join('; ')}` }
    : { ok: true, message: `${aborted}${rolled}` };
}

function hostStatuses(session: Session, report: RolloutView): Map<string, HostView> {
  const statuses = new Map<string, HostView>();
  for (const wave of report.waves)
    if (wave.open)
      for (const host of wave.hosts) {
        const view = session.sync.hostView(host);
        if (view) statuses.set(host, view);
      }
  return statuses;
}

export function RolloutPage(props: { session: Session; id: string; now: number }) {
  const { session, id, now } = props;
  const { busy, outcome, run: act } = useAction<AdminOutcome>();
  const [reason, setReason] = useState('');
  const [withRollback, setWithRollback] = useState(false);
  usePreparedRollouts(session, [id]);
  const judged = judge(session, id, now);
  if (!judged.ok)
    return (
      <section class="admin-page" data-testid="rollout-view">
        <p>
          <a href="#/rollouts">← Rollouts</a>
        </p>
        <h2>Rollout {id}</h2>
        <p class="muted">{judged.reason}</p>
      </section>
    );
  const { view } = judged;
  const report: RolloutReport = buildReport(view, hostStatuses(session, view));
  // The document with this page's actions that wait for the link: a new action's sequence number
  // goes above them.
  const entries = () =>
    withPendingEntries(readRolloutEntries(session.sync.fleetDocument(rolloutDocName(id))), {
      actions: session.apiOutbox.rolloutActions(id).map((p) => p.signed),
      cosignatures: session.apiOutbox.rolloutCosignatures(id).map((p) => p.signed),
    });
  const run = (verb: ActionVerb, wave?: number): void => {
    const backTo = verb === 'abort' && withRollback;
    if (
      verb === 'abort' &&
      !confirm(
        `Abort rollout ${id} for good? Hosts that have not started drop it.${backTo ? ' Hosts that run it are rolled back to what they ran before.' : ''}`,
      )
    )
      return;
    const extra = { ...(wave !== undefined ? { wave } : {}), ...(reason.trim() ? { reason: reason.trim() } : {}) };
    void act(async () => {
      const outcome = await rolloutAction(
        session.sync,
        session.signer,
        view.plan,
        entries(),
        verb,
        session.apiOutbox,
        extra,
      );
      return outcome.ok && backTo ? rollBackAfterAbort(session, view.plan, outcome.message) : outcome;
    });
  };
  const final = view.state === 'aborted' || view.state === 'complete' || view.state === 'expired';
  const unsignedWaves = report.waves.filter((w) => w.signersMissing.length > 0);
  const buttons = { session, view, busy, run };
  return (
    <section class="admin-page" data-testid="rollout-view" data-state={view.state} aria-label={`Rollout ${id}`}>
      <p>
        <a href="#/rollouts">← Rollouts</a>
      </p>
      <h2>
        Rollout {id} <span class={`pill state-${view.state}`}>{view.state.toUpperCase()}</span>
      </h2>
      <dl class="facts">
        <dt>release</dt>
        <dd>
          {report.release}
          {report.channel ? ` (channel ${report.channel})` : ''}
        </dd>
        <dt>plan</dt>
        <dd data-testid="rollout-signers">
          <code title={report.plan}>{report.plan.slice(0, 12)}…</code> signed by{' '}
          {report.signers.join(', ') || 'nobody who counts'}; created {clock(report.createdAt)}, expires{' '}
          {clock(report.expiresAt)}
        </dd>
        {report.halted && (
          <>
            <dt>halted</dt>
            <dd class="bad">
              wave {report.halted.wave}: {report.halted.reason}
            </dd>
          </>
        )}
        {report.paused && (
          <>
            <dt>paused</dt>
            <dd data-testid="rollout-paused">
              by {report.paused.by} at {clock(report.paused.at)}
              {report.paused.reason ? `: ${report.paused.reason}` : ''}
            </dd>
          </>
        )}
        {report.aborted && (
          <>
            <dt>aborted</dt>
            <dd data-testid="rollout-aborted">
              by {report.aborted.by} at {clock(report.aborted.at)}
              {report.aborted.reason ? `: ${report.aborted.reason}` : ''}
            </dd>
          </>
        )}
        {view.actions.rejected.length > 0 && (
          <>
            <dt>not counted</dt>
            <dd class="bad">
              {view.actions.rejected.length} action(s): {view.actions.rejected[0]!.verb}:{' '}
              {view.actions.rejected[0]!.reason}
            </dd>
          </>
        )}
      </dl>
      {!final && (
        <div class="inline rollout-actions">
          <label>
            Reason (shown to everyone){' '}
            <input
              value={reason}
              maxLength={500}
              data-testid="rollout-reason"
              onInput={(e) => setReason((e.target as HTMLInputElement).value)}
            />
          </label>
          {view.actions.paused ? (
            <ActionButton {...buttons} verb="resume" label="Resume" />
          ) : (
            <ActionButton {...buttons} verb="pause" label="Pause" />
          )}
          <ActionButton {...buttons} verb="abort" label={withRollback ? 'Abort and roll back' : 'Abort'} />
          <label title="as 'outpost rollout abort --rollback': an intent back to the closure each host ran before, chosen from its own signed results">
            <input
              type="checkbox"
              checked={withRollback}
              data-testid="rollout-abort-rollback"
              onChange={(e) => setWithRollback((e.target as HTMLInputElement).checked)}
            />{' '}
            also roll back hosts that run it
          </label>
          {unsignedWaves.length > 0 && (
            <button
              type="button"
              disabled={busy}
              data-testid="rollout-cosign"
              onClick={() =>
                void act(() => cosignRolloutPlan(session.sync, session.signer, view.plan, entries(), session.apiOutbox))
              }
            >
              Co-sign the plan
            </button>
          )}
        </div>
      )}
      <OutboxActions session={session} id={id} now={now} />
      {outcome && (
        <p class={outcome.ok ? 'ok' : 'error'} role="alert" data-testid="rollout-message">
          {outcome.ok ? outcome.message : `refused: ${outcome.reason}`}
        </p>
      )}
      {report.waves.map((wave) => (
        <div class="wave" key={wave.name} data-testid={`wave-${wave.number}`} data-open={String(wave.open)}>
          <h3>
            Wave {wave.number} {wave.name}: {wave.hosts.length} host{wave.hosts.length === 1 ? '' : 's'},{' '}
            {wave.open ? 'OPEN' : wave.reason}
          </h3>
          <p class="hint" data-testid={`gate-${wave.number}`}>
            gate: {wave.successes}/{wave.needed} proven
            {wave.failures ? `, ${wave.failures} failed` : ''}
            {wave.gate.soakSeconds
              ? `, soak ${wave.gate.soakSeconds} s${wave.soakEndsAt ? ` until ${clock(wave.soakEndsAt)}` : ''}`
              : ''}
            {wave.approvalNeeded &&
              `; its start needs an approval${wave.approvedBy.length ? `: approved by ${wave.approvedBy.join(', ')}` : ''}`}
            {wave.signersMissing.length > 0 && `; plan not signed enough for ${wave.signersMissing.length} hosts`}
          </p>
          {wave.approvalNeeded && wave.approvedBy.length === 0 && !final && (
            <ActionButton {...buttons} verb="approve" wave={wave.number} label={`Approve wave ${wave.number}`} />
          )}
          <table class="plain">
            <tbody>
              {wave.hosts.map((host) => (
                <tr key={host.host} data-testid={`rollout-host-${host.host}`} data-state={host.state}>
                  <td>
                    <a href={`#/host/${host.host}`}>{host.host}</a>
                  </td>
                  <td>{host.state}</td>
                  <td>{host.detail}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      ))}
      {report.rejectedEvidence.length > 0 && (
        <p class="bad">
          {report.rejectedEvidence.length} results in the evidence do not count (first:{' '}
          {report.rejectedEvidence[0]!.host}: {report.rejectedEvidence[0]!.reason})
        </p>
      )}
      <p data-testid="rollout-summary">
        {report.summary.succeeded}/{report.summary.hosts} succeeded, {report.summary.failed} failed,{' '}
        {report.summary['in-progress']} in progress, {report.summary['not-started']} not started,{' '}
        {report.summary.waiting} waiting
      </p>
    </section>
  );
}
