import { ENROLLMENT_DOC, readEnrollments, readEnrollRequests } from '../../../shared/documents/fleet.js';
import { enrollmentState } from '../../../shared/trust/enrollment.js';
import { mayEnroll, pendingRequests } from '../../../shared/views/enrollment-view.js';
import { type AdminOutcome, approveEnrollment } from '../sync/admin-actions.js';
import { arriving } from '../sync/api-outbox.js';
import { clock } from './format.js';
import { useAction } from './hooks.js';
import { RefusedNote } from './outbox-notes.js';
import type { Session } from './session.js';

// Enrollment as `outpost enroll list` shows it: hosts bound (by an admin's approval or a token)
// and requests waiting, each request's proof of its key checked here; approving signs the
// binding in the browser as `outpost enroll approve` does. Compare the key with the host's own
// (its console prints it) before approving: whoever holds the approved key speaks for the host.
export function EnrollmentPage(props: { session: Session; now: number }) {
  const { session } = props;
  const { busy, outcome, run } = useAction<AdminOutcome>();
  const authority = session.sync.authority();
  const policy = authority?.chain.at(-1) ?? null;
  if (!policy)
    return (
      <section class="admin-page" data-testid="enrollment-view">
        <h2>Enrollment</h2>
        <p class="muted">no policy signed by the pinned org root is known yet: requests cannot be checked against it</p>
      </section>
    );
  const doc = session.sync.fleetDocument(ENROLLMENT_DOC);
  const requests = readEnrollRequests(doc);
  // Approvals signed here that the document does not hold yet (waiting for the link, or stored
  // moments ago) count as if they had arrived (enrollmentState checks each against the policy
  // again), marked not yet delivered.
  const stored = readEnrollments(doc);
  const storedSignatures = new Set(stored.flatMap((e) => e.signatures.map((s) => s.signature)));
  const notStored = session.apiOutbox
    .enrollments()
    .filter((p) => !storedSignatures.has(p.signed.signatures[0]!.signature));
  const waiting = notStored.filter((p) => arriving(p, props.now));
  // The server answered 200 but, past the grace, the document it serves does not hold them: not
  // counted (the host shows unbound), and said so rather than dropped without a word.
  const pastGrace = notStored.filter((p) => !arriving(p, props.now));
  const state = enrollmentState(policy, [...stored, ...waiting.map((p) => p.signed)], requests);
  // One that a later approval (or a token) made moot is not shown.
  const lost = pastGrace.filter(
    (p) => state.bindings.get(p.signed.enrollment.host)?.hostKey !== p.signed.enrollment.hostKey,
  );
  const waitingFor = (host: string, hostKey: string) =>
    waiting.find((p) => p.signed.enrollment.host === host && p.signed.enrollment.hostKey === hostKey);
  const refused = session.apiOutbox.refused().filter((e) => e.kind === 'enrollment');
  const pending = pendingRequests(
    requests,
    (host, hostKey) => state.bindings.get(host)?.hostKey === hostKey,
    policy,
    state,
  );
  const bound = [...state.bindings.values()].sort((a, b) => a.host.localeCompare(b.host));
  const approve = (request: { host: string; hostKey: string }): Promise<void> =>
    run(() => approveEnrollment(session.sync, session.signer, session.apiOutbox, request));
  return (
    <section class="admin-page" data-testid="enrollment-view" aria-label="Enrollment">
      <h2>Enrollment</h2>
      <h3>Pending requests ({pending.length})</h3>
      {pending.length === 0 ? (
        <p class="muted">none: a host asks with 'outpost enroll request'</p>
      ) : (
        <table class="plain">
          <thead>
            <tr>
              <th>host</th>
              <th>key it proved (compare with the host's)</th>
              <th>asked</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {pending.map((request) => {
              const allowed = mayEnroll(policy, session.signer.publicKey, request.host);
              const already = state.bindings.get(request.host);
              return (
                <tr key={`${request.host} ${request.hostKey}`} data-testid={`pending-${request.host}`}>
                  <td>{request.host}</td>
                  <td>
                    <code>{request.hostKey}</code>
                    {already && (
                      <span class="bad"> · {request.host} is bound to another key now: approving rebinds it</span>
                    )}
                    {request.tokenProblem && <span class="note"> · token: {request.tokenProblem}</span>}
                  </td>
                  <td>{clock(request.requestedAt)}</td>
                  <td>
                    {allowed.ok ? (
                      <button
                        type="button"
                        disabled={busy}
                        data-testid={`enroll-approve-${request.host}`}
                        onClick={() => void approve(request)}
                      >
                        Approve
                      </button>
                    ) : (
                      <span class="hint" data-testid={`enroll-refused-${request.host}`}>
                        {allowed.reason}
                      </span>
                    )}
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      )}
      {outcome && (
        <p class={outcome.ok ? 'ok' : 'error'} role="alert" data-testid="enroll-message">
          {outcome.ok ? outcome.message : `refused: ${outcome.reason}`}
        </p>
      )}
      {refused.map((entry) => (
        <RefusedNote key={entry.id} entry={entry} outbox={session.apiOutbox} testId="enroll-refused" block />
      ))}
      {lost.map((p) => (
        <p key={p.signed.signatures[0]!.signature} class="bad" data-testid="enroll-lost">
          the enrollment of {p.signed.enrollment.host} (key <code>{p.signed.enrollment.hostKey.slice(0, 12)}…</code>):
          the server answered that it stored it at {clock(p.deliveredAt ?? '')}, but the enrollment document it serves
          does not hold it: not counted here; approve it again if it is still wanted
        </p>
      ))}
      {state.conflicts.length > 0 && (
        <p class="bad">
          {state.conflicts.length} token(s) presented for a key other than the bound one (first:{' '}
          {state.conflicts[0]!.host})
        </p>
      )}
      <h3>Bound hosts ({bound.length})</h3>
      <table class="plain" data-testid="bound-hosts">
        <tbody>
          {bound.map((binding) => {
            const notYet = waitingFor(binding.host, binding.hostKey);
            return (
              <tr
                key={binding.host}
                data-testid={`bound-${binding.host}`}
                data-delivered={notYet ? String(notYet.deliveredAt !== null) : 'true'}
              >
                <td>
                  <a href={`#/host/${binding.host}`}>{binding.host}</a>
                </td>
                <td>
                  <code>{binding.hostKey}</code>
                </td>
                <td>
                  {binding.via}
                  {notYet && notYet.deliveredAt === null && (
                    <strong class="warn"> · NOT YET DELIVERED: signed here, sent when the link returns</strong>
                  )}
                </td>
              </tr>
            );
          })}
        </tbody>
      </table>
    </section>
  );
}
