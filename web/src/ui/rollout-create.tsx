import { useState } from 'preact/hooks';
import { type ActivationAction, activationActionSchema } from '../../../shared/schemas/primitives.js';
import type { AdminOutcome } from '../sync/admin-actions.js';
import { createRollout, previewRollout, type RolloutForm, type RolloutPreview } from '../sync/rollout-create.js';
import { ago, clock } from './format.js';
import { useAction } from './hooks.js';
import type { Session } from './session.js';

// The rollout list's "New rollout" panel: `outpost rollout create`'s inputs (a release manifest
// pasted or picked, a channel or wave lists, gate specs), the plan shown before it is signed —
// hosts per wave, gates, hosts left out, who else must sign — then signed here and submitted.

const MAX_FILE_BYTES = 16 * 1024 * 1024;

const EMPTY: RolloutForm = {
  manifestText: '',
  channel: '',
  waves: '',
  gates: '',
  id: '',
  action: 'switch',
  expiresDays: 60,
};

function gateText(gate: RolloutPreview['plan']['waves'][number]['gate']): string {
  return `${gate.minSuccessPercent}% success, ${gate.maxFailures === null ? 'any' : `at most ${gate.maxFailures}`} failures, soak ${gate.soakSeconds} s${gate.approval ? ', approval before it starts' : ''}`;
}

export function CreateRollout(props: { session: Session; rolloutIds: readonly string[] }) {
  const { session } = props;
  const [form, setForm] = useState<RolloutForm>(EMPTY);
  const [preview, setPreview] = useState<RolloutPreview | null>(null);
  const [problem, setProblem] = useState<string | null>(null);
  const { busy, outcome, run } = useAction<AdminOutcome>();
  const policy = session.sync.authority()?.chain.at(-1);
  const set = (change: Partial<RolloutForm>): void => {
    setForm({ ...form, ...change });
    // Any change makes the shown plan stale: it must be previewed again before signing.
    setPreview(null);
  };
  const pick = async (file: File | undefined): Promise<void> => {
    if (!file) return;
    if (file.size > MAX_FILE_BYTES) {
      setProblem(`${file.name}: ${file.size} bytes, more than 16 MiB`);
      return;
    }
    set({ manifestText: await file.text() });
  };
  const showPlan = (): void => {
    const waiting = session.apiOutbox.rolloutPlans().map((p) => p.signed.plan);
    const result = previewRollout(session.sync, session.signer.publicKey, form, props.rolloutIds, Date.now(), waiting);
    setPreview(result.ok ? result.preview : null);
    setProblem(result.ok ? null : result.reason);
  };
  return (
    <details class="create-rollout" data-testid="create-rollout">
      <summary>New rollout from a release manifest</summary>
      <p class="hint">
        As <code>outpost rollout create</code>: the plan is signed here with your key and handed to the server, which
        delivers each wave when its gate opens. With no link the plan is made from what this browser stored and waits
        here until the link returns; the server then checks it as any plan.
      </p>
      <div class="create-grid">
        <label class="stack">
          Release manifest (JSON: {'{"release": NAME, "hosts": {HOST: CLOSURE}}'})
          <textarea
            rows={5}
            value={form.manifestText}
            data-testid="manifest"
            onInput={(e) => set({ manifestText: (e.target as HTMLTextAreaElement).value })}
          />
          <input
            type="file"
            accept="application/json,.json"
            aria-label="Pick a release manifest file"
            data-testid="manifest-file"
            onChange={(e) => void pick((e.target as HTMLInputElement).files?.[0])}
          />
        </label>
        <div class="stack">
          <label class="stack">
            Channel
            <select
              value={form.channel}
              data-testid="rollout-channel"
              onChange={(e) => set({ channel: (e.target as HTMLSelectElement).value })}
            >
              <option value="">none: the release's hosts</option>
              {(policy?.channels ?? []).map((c) => (
                <option key={c.name} value={c.name}>
                  {c.name}
                </option>
              ))}
            </select>
          </label>
          <label class="stack">
            Waves, one a line: NAME=HOST,HOST,@GROUP (empty: the channel's, else first/middle/final)
            <textarea
              rows={2}
              value={form.waves}
              data-testid="rollout-waves"
              onInput={(e) => set({ waves: (e.target as HTMLTextAreaElement).value })}
            />
          </label>
          <label class="stack">
            Gates, one a line: success=90,failures=2,soak=30m,approval or WAVE:soak=2h
            <textarea
              rows={2}
              value={form.gates}
              data-testid="rollout-gates"
              onInput={(e) => set({ gates: (e.target as HTMLTextAreaElement).value })}
            />
          </label>
          <div class="inline">
            <label>
              Id{' '}
              <input
                size={14}
                value={form.id}
                placeholder="release-xxxxxx"
                data-testid="rollout-id"
                onInput={(e) => set({ id: (e.target as HTMLInputElement).value })}
              />
            </label>
            <label>
              Action{' '}
              <select
                value={form.action}
                onChange={(e) => set({ action: (e.target as HTMLSelectElement).value as ActivationAction })}
              >
                {activationActionSchema.options.map((a) => (
                  <option key={a} value={a}>
                    {a}
                  </option>
                ))}
              </select>
            </label>
            <label>
              Valid for{' '}
              <input
                type="number"
                min={1}
                max={365}
                style="width: 4.5em"
                value={form.expiresDays}
                onInput={(e) => set({ expiresDays: Number((e.target as HTMLInputElement).value) })}
              />{' '}
              days
            </label>
          </div>
        </div>
      </div>
      <div class="inline">
        <button type="button" disabled={busy} data-testid="rollout-preview" onClick={showPlan}>
          Show the plan
        </button>
        <button
          type="button"
          disabled={busy || !preview}
          title={preview ? 'signed by you, as outpost rollout create' : 'show the plan first'}
          data-testid="rollout-create"
          onClick={() =>
            preview && void run(() => createRollout(session.sync, session.signer, session.apiOutbox, preview))
          }
        >
          Sign and create
        </button>
      </div>
      {problem && (
        <p class="error" role="alert" data-testid="rollout-create-message">
          refused: {problem}
        </p>
      )}
      {outcome && (
        <p class={outcome.ok ? 'ok' : 'error'} role="alert" data-testid="rollout-create-message">
          {outcome.ok ? (
            <>
              {outcome.message} — <a href={`#/rollouts/${preview?.plan.id ?? ''}`}>follow it</a>
            </>
          ) : (
            `refused: ${outcome.reason}`
          )}
        </p>
      )}
      {preview && (
        <div data-testid="rollout-plan-preview">
          <p>
            Rollout <strong>{preview.plan.id}</strong> of {preview.plan.release}
            {preview.plan.channel ? ` (channel ${preview.plan.channel})` : ''}, {preview.plan.action}, issued by{' '}
            {preview.plan.issuer} under policy {preview.plan.policyVersion}, valid until {clock(preview.plan.expiresAt)}
          </p>
          <table class="plain">
            <thead>
              <tr>
                <th>wave</th>
                <th>hosts</th>
                <th>gate</th>
              </tr>
            </thead>
            <tbody>
              {preview.plan.waves.map((wave, i) => (
                <tr key={wave.name} data-testid={`plan-wave-${i + 1}`}>
                  <td>
                    {i + 1} {wave.name}
                  </td>
                  <td>{wave.hosts.map((h) => `${h.host} (gen ${h.generation})`).join(', ')}</td>
                  <td>{gateText(wave.gate)}</td>
                </tr>
              ))}
            </tbody>
          </table>
          {preview.planned.skipped.length > 0 && (
            <p class="hint" data-testid="plan-skipped">
              left out:{' '}
              {preview.planned.skipped
                .slice(0, 10)
                .map((s) => `${s.host} (${s.reason})`)
                .join('; ')}
              {preview.planned.skipped.length > 10 ? ` and ${preview.planned.skipped.length - 10} more` : ''}
            </p>
          )}
          {preview.offline && (
            <p class="warn" data-testid="plan-offline">
              NO LINK: planned from the documents this browser stored,{' '}
              {preview.offline.asOf === null
                ? 'never seen live here'
                : `as of ${clock(preview.offline.asOf)} (${ago(preview.offline.asOf, Date.now())})`}
              . Hosts enrolled since are missing from it, and a deploy or rollout made since may have taken a generation
              it names: the server refuses the plan then (make it again). Signed, it waits in this browser, NOT YET
              DELIVERED, and is sent when the link returns.
            </p>
          )}
          <p class={preview.needs.length ? 'warn' : 'ok'} data-testid="plan-needs">
            {preview.needs.length
              ? `your signature is not enough for ${preview.needs.length} host(s): ${preview.needs[0]!.reason}; after you sign, another admin co-signs the plan on its page`
              : 'your signature is enough for every host'}
          </p>
        </div>
      )}
    </details>
  );
}
