import { useEffect, useState } from 'preact/hooks';
import type { Capability, Policy } from '../../../shared/schemas/policy.js';
import { draftProgress, policyDiff } from '../../../shared/views/policy-draft.js';
import {
  addAdmin,
  addGroup,
  addLogin,
  addRelay,
  addRole,
  addTimestampKey,
  type Edited,
  parseRootForm,
  removeAdmin,
  removeLogin,
  revokeKey,
  rotateRoot,
  setGroupWindows,
} from '../../../shared/views/policy-edit.js';
import {
  type DraftFile,
  loadDraft,
  pushDraft,
  readDraftText,
  saveDraft,
  signDraft,
  startDraft,
} from '../sync/policy-draft.js';
import type { Session } from './session.js';

// The policy page's draft of the next version: `outpost policy`'s edits (groups and their
// windows, admins, roles, logins, relays, timestamp keys, key revocation, root rotation), the diff against the version in force, signatures by root keys (this
// browser's unlocked key, or a draft file another root holder signed), and the push once readers
// would accept it. Kept in IndexedDB, so a draft survives reloads and is signed with no link.

const words = (text: string): string[] =>
  text
    .split(/[\s,]+/)
    .map((w) => w.trim())
    .filter(Boolean);

type Message = { ok: boolean; text: string } | null;

function Field(props: { label: string; name: string; value: string; set: (v: string) => void; size?: number }) {
  return (
    <label>
      {props.label}{' '}
      <input
        size={props.size ?? 12}
        value={props.value}
        data-testid={`draft-${props.name}`}
        onInput={(e) => props.set((e.target as HTMLInputElement).value)}
      />
    </label>
  );
}

function EditForms(props: { policy: Policy; ownKey: string; apply: (edit: (p: Policy) => Edited) => void }) {
  const [group, setGroup] = useState({ name: '', hosts: '', threshold: '1' });
  const [win, setWin] = useState({ name: '', maintenance: '', reboot: '', timeZone: '' });
  const [admin, setAdmin] = useState({ name: '', keys: '', roles: '' });
  const [role, setRole] = useState({ name: '', capabilities: '', hosts: '', groups: '' });
  const [login, setLogin] = useState({ name: '', account: '', sshKey: '', hosts: '', groups: '' });
  const [relay, setRelay] = useState({ name: '', key: '', hosts: '', groups: '' });
  const [timestampKey, setTimestampKey] = useState('');
  const [revoked, setRevoked] = useState('');
  const [root, setRoot] = useState({ keys: '', threshold: '' });
  const { apply } = props;
  return (
    <div class="stack">
      <div class="inline">
        <strong>Group</strong>
        <Field label="name" name="group-name" value={group.name} set={(name) => setGroup({ ...group, name })} />
        <Field
          label="hosts"
          name="group-hosts"
          size={24}
          value={group.hosts}
          set={(hosts) => setGroup({ ...group, hosts })}
        />
        <Field
          label="admins needed"
          name="group-threshold"
          size={3}
          value={group.threshold}
          set={(threshold) => setGroup({ ...group, threshold })}
        />
        <button
          type="button"
          data-testid="draft-group-save"
          onClick={() =>
            apply((p) =>
              addGroup(p, { name: group.name.trim(), hosts: words(group.hosts), threshold: Number(group.threshold) }),
            )
          }
        >
          Add or replace group
        </button>
      </div>
      <div class="inline">
        <strong>Windows</strong>
        <label>
          group{' '}
          <select
            value={win.name}
            data-testid="draft-windows-group"
            onChange={(e) => {
              const name = (e.target as HTMLSelectElement).value;
              const g = props.policy.groups.find((x) => x.name === name);
              setWin({
                name,
                maintenance: (g?.maintenanceWindows ?? []).join(', '),
                reboot: (g?.rebootWindows ?? []).join(', '),
                timeZone: g?.timeZone ?? '',
              });
            }}
          >
            <option value="">choose…</option>
            {props.policy.groups.map((g) => (
              <option key={g.name} value={g.name}>
                {g.name}
              </option>
            ))}
          </select>
        </label>
        <Field
          label="maintenance"
          name="windows-maintenance"
          size={22}
          value={win.maintenance}
          set={(maintenance) => setWin({ ...win, maintenance })}
        />
        <Field
          label="reboot"
          name="windows-reboot"
          size={16}
          value={win.reboot}
          set={(reboot) => setWin({ ...win, reboot })}
        />
        <Field
          label="time zone"
          name="windows-tz"
          value={win.timeZone}
          set={(timeZone) => setWin({ ...win, timeZone })}
        />
        <button
          type="button"
          data-testid="draft-windows-save"
          onClick={() =>
            apply((p) =>
              setGroupWindows(p, {
                name: win.name,
                // Windows hold spaces ("Tue 03:00-05:00"): they are separated by commas only.
                maintenanceWindows: win.maintenance
                  .split(',')
                  .map((w) => w.trim())
                  .filter(Boolean),
                rebootWindows: win.reboot
                  .split(',')
                  .map((w) => w.trim())
                  .filter(Boolean),
                ...(win.timeZone.trim() ? { timeZone: win.timeZone.trim() } : {}),
              }),
            )
          }
        >
          Set windows
        </button>
      </div>
      <div class="inline">
        <strong>Admin</strong>
        <Field label="name" name="admin-name" value={admin.name} set={(name) => setAdmin({ ...admin, name })} />
        <Field
          label="keys"
          name="admin-keys"
          size={24}
          value={admin.keys}
          set={(keys) => setAdmin({ ...admin, keys })}
        />
        <Field label="roles" name="admin-roles" value={admin.roles} set={(roles) => setAdmin({ ...admin, roles })} />
        <button
          type="button"
          data-testid="draft-admin-save"
          onClick={() =>
            apply((p) => addAdmin(p, { name: admin.name.trim(), keys: words(admin.keys), roles: words(admin.roles) }))
          }
        >
          Add to admin
        </button>
        <button
          type="button"
          data-testid="draft-admin-remove"
          onClick={() => apply((p) => removeAdmin(p, admin.name.trim()))}
        >
          Remove admin
        </button>
      </div>
      <div class="inline">
        <strong>Role</strong>
        <Field label="name" name="role-name" value={role.name} set={(name) => setRole({ ...role, name })} />
        <Field
          label="capabilities"
          name="role-capabilities"
          size={18}
          value={role.capabilities}
          set={(capabilities) => setRole({ ...role, capabilities })}
        />
        <Field label="hosts" name="role-hosts" value={role.hosts} set={(hosts) => setRole({ ...role, hosts })} />
        <Field label="groups" name="role-groups" value={role.groups} set={(groups) => setRole({ ...role, groups })} />
        <button
          type="button"
          data-testid="draft-role-save"
          onClick={() =>
            apply((p) =>
              addRole(p, {
                name: role.name.trim(),
                // Checked whole by the policy schema in addRole: an unknown name is refused there.
                capabilities: words(role.capabilities) as Capability[],
                hosts: words(role.hosts),
                groups: words(role.groups),
              }),
            )
          }
        >
          Add or replace role
        </button>
      </div>
      <div class="inline">
        <strong>Login</strong>
        <Field label="name" name="login-name" value={login.name} set={(name) => setLogin({ ...login, name })} />
        <Field
          label="account"
          name="login-account"
          size={8}
          value={login.account}
          set={(account) => setLogin({ ...login, account })}
        />
        <Field
          label="ssh key"
          name="login-key"
          size={24}
          value={login.sshKey}
          set={(sshKey) => setLogin({ ...login, sshKey })}
        />
        <Field
          label="hosts"
          name="login-hosts"
          size={10}
          value={login.hosts}
          set={(hosts) => setLogin({ ...login, hosts })}
        />
        <Field
          label="groups"
          name="login-groups"
          size={10}
          value={login.groups}
          set={(groups) => setLogin({ ...login, groups })}
        />
        <button
          type="button"
          data-testid="draft-login-save"
          onClick={() =>
            apply((p) =>
              addLogin(p, {
                name: login.name.trim(),
                account: login.account.trim(),
                // One OpenSSH public key a login here ("ssh-ed25519 AAAA… comment"); more with outpost policy.
                sshKeys: login.sshKey.trim() ? [login.sshKey.trim()] : [],
                hosts: words(login.hosts),
                groups: words(login.groups),
              }),
            )
          }
        >
          Add or replace login
        </button>
        <button
          type="button"
          data-testid="draft-login-remove"
          onClick={() => apply((p) => removeLogin(p, login.name.trim()))}
        >
          Remove login
        </button>
      </div>
      <div class="inline">
        <strong>Relay</strong>
        <Field label="name" name="relay-name" value={relay.name} set={(name) => setRelay({ ...relay, name })} />
        <Field label="key" name="relay-key" size={24} value={relay.key} set={(key) => setRelay({ ...relay, key })} />
        <Field
          label="hosts"
          name="relay-hosts"
          size={10}
          value={relay.hosts}
          set={(hosts) => setRelay({ ...relay, hosts })}
        />
        <Field
          label="groups"
          name="relay-groups"
          size={10}
          value={relay.groups}
          set={(groups) => setRelay({ ...relay, groups })}
        />
        <button
          type="button"
          data-testid="draft-relay-save"
          title="as 'outpost policy add-relay': the relay may carry these hosts' documents (what it carries stays signed end to end)"
          onClick={() =>
            apply((p) =>
              addRelay(p, {
                name: relay.name.trim(),
                key: relay.key.trim(),
                hosts: words(relay.hosts),
                groups: words(relay.groups),
              }),
            )
          }
        >
          Add or replace relay
        </button>
      </div>
      <div class="inline">
        <strong>Timestamp key</strong>
        <Field label="key" name="timestamp-key" size={24} value={timestampKey} set={setTimestampKey} />
        <button
          type="button"
          data-testid="draft-timestamp-save"
          title="as 'outpost policy add-timestamp-key': an online key (the coordinator's --timestamp-key) that can sign freshness timestamps and nothing else"
          onClick={() => apply((p) => addTimestampKey(p, timestampKey.trim()))}
        >
          Add timestamp key
        </button>
      </div>
      <div class="inline">
        <strong>Revoke key</strong>
        <Field label="key" name="revoke-key" size={24} value={revoked} set={setRevoked} />
        <button
          type="button"
          data-testid="draft-revoke-save"
          title="as 'outpost policy revoke-key': the key loses every power (admin, relay, timestamp) and never counts again, even for intents naming an older version"
          onClick={() =>
            apply((p) => {
              const edited = revokeKey(p, revoked.trim());
              return revoked.trim() === props.ownKey
                ? { ...edited, notes: [...edited.notes, 'this is the key unlocked in this browser'] }
                : edited;
            })
          }
        >
          Revoke
        </button>
      </div>
      <div class="inline">
        <strong>Root</strong>
        <Field
          label="new root keys"
          name="root-keys"
          size={30}
          value={root.keys}
          set={(keys) => setRoot({ ...root, keys })}
        />
        <Field
          label="threshold"
          name="root-threshold"
          size={3}
          value={root.threshold}
          set={(threshold) => setRoot({ ...root, threshold })}
        />
        <button
          type="button"
          data-testid="draft-root-save"
          title="as 'outpost policy rotate-root': the version must then be signed by the threshold of the current root AND of the new one"
          onClick={() => apply((p) => rotateRoot(p, parseRootForm(root.keys, root.threshold, p.root)))}
        >
          Replace the root
        </button>
      </div>
    </div>
  );
}

export function PolicyDraft(props: { session: Session; current: Policy }) {
  const { session, current } = props;
  const { sync, signer } = session;
  const [draft, setDraftState] = useState<DraftFile | null>(null);
  const [message, setMessage] = useState<Message>(null);
  const [busy, setBusy] = useState(false);
  const [pasted, setPasted] = useState('');
  useEffect(() => {
    void loadDraft(sync).then((saved) => setDraftState(saved));
  }, [sync]);
  const setDraft = async (next: DraftFile | null, text: Message): Promise<void> => {
    await saveDraft(sync, next);
    setDraftState(next);
    setMessage(text);
  };
  const apply = (edit: (p: Policy) => Edited): void => {
    if (!draft) return;
    try {
      const edited = edit(draft.policy);
      // An edit changes the content: signatures made before it no longer verify (as the CLI clears them).
      void setDraft(
        { policy: edited.policy, signatures: [] },
        {
          ok: true,
          text: `${edited.summary}${draft.signatures.length ? '; the signatures made before this edit were dropped' : ''}${edited.notes.length ? ` — ${edited.notes.join('; ')}` : ''}`,
        },
      );
    } catch (error) {
      setMessage({ ok: false, text: `refused: ${(error as Error).message}` });
    }
  };
  const run = async (work: () => Promise<void>): Promise<void> => {
    setBusy(true);
    try {
      await work();
    } finally {
      setBusy(false);
    }
  };
  const stale = draft && draft.policy.version !== current.version + 1;
  const progress = draft && !stale ? draftProgress(current, draft) : null;
  const changes = draft ? policyDiff(current, draft.policy) : [];
  const download = draft
    ? `data:application/json;charset=utf-8,${encodeURIComponent(`${JSON.stringify(draft, null, 2)}\n`)}`
    : '';
  return (
    <details class="policy-draft" data-testid="policy-draft" open={draft !== null || message !== null}>
      <summary>Draft of version {current.version + 1}</summary>
      <p class="hint">
        Edited here as with <code>outpost policy</code>, kept in this browser. A policy version counts only when{' '}
        {current.root.threshold} of version {current.version}'s root keys (and the threshold of its own root) sign it:
        unlock a root key to sign here, or download the file for the root holders (<code>outpost policy sign</code>) and
        paste it back. Signing works offline; pushing needs the link.
      </p>
      {!draft ? (
        <div class="inline">
          <button
            type="button"
            data-testid="draft-start"
            onClick={() => void setDraft(startDraft(current, new Date()), null)}
          >
            Start a draft of version {current.version + 1}
          </button>
        </div>
      ) : stale ? (
        <p class="bad">
          this draft is version {draft.policy.version}, but version {current.version} is in force: discard it and start
          again{' '}
          <button type="button" data-testid="draft-discard" onClick={() => void setDraft(null, null)}>
            Discard
          </button>
        </p>
      ) : (
        <>
          <EditForms policy={draft.policy} ownKey={signer.publicKey} apply={apply} />
          <h3>Changes against version {current.version}</h3>
          {changes.length === 0 ? (
            <p class="muted" data-testid="draft-diff">
              no change yet
            </p>
          ) : (
            <ul data-testid="draft-diff">
              {changes.map((c) => (
                <li key={`${c.section} ${c.name}`} class={`diff-${c.change}`} data-change={c.change}>
                  {c.change === 'added' ? '+' : c.change === 'removed' ? '−' : '~'} {c.section} {c.name}
                  {c.detail ? `: ${c.detail}` : ''}
                </li>
              ))}
            </ul>
          )}
          {progress && (
            <p data-testid="draft-signatures" data-accepted={String(progress.verdict.ok)}>
              signed by {progress.previousRoot.signed} of {progress.previousRoot.threshold} needed of version{' '}
              {current.version}'s root, {progress.ownRoot.signed} of {progress.ownRoot.threshold} of its own;{' '}
              {progress.verdict.ok ? 'readers will accept it' : `not yet: ${progress.verdict.reason}`}
              {progress.invalid.length ? `; ${progress.invalid.length} signature(s) do not verify` : ''}
            </p>
          )}
          <div class="inline">
            <button
              type="button"
              disabled={busy || changes.length === 0}
              data-testid="draft-sign"
              onClick={() =>
                void run(async () => {
                  const signed = await signDraft(sync, signer, draft);
                  if (signed.ok) await setDraft(signed.draft, { ok: true, text: `signed by ${signer.name}` });
                  else setMessage({ ok: false, text: `refused: ${signed.reason}` });
                })
              }
            >
              Sign with this key
            </button>
            <button
              type="button"
              disabled={busy || !progress?.verdict.ok}
              data-testid="draft-push"
              onClick={() =>
                void run(async () => {
                  const pushed = await pushDraft(sync, draft);
                  if (pushed.ok) await setDraft(null, { ok: true, text: pushed.message });
                  else setMessage({ ok: false, text: `refused: ${pushed.reason}` });
                })
              }
            >
              Push version {draft.policy.version}
            </button>
            <a href={download} download={`policy-v${draft.policy.version}.json`} data-testid="draft-download">
              Download the draft file
            </a>
            <button type="button" data-testid="draft-discard" onClick={() => void setDraft(null, null)}>
              Discard
            </button>
          </div>
        </>
      )}
      <label class="stack">
        Or paste a draft file (from outpost policy or another browser; its signatures are kept)
        <textarea
          rows={2}
          value={pasted}
          data-testid="draft-paste"
          onInput={(e) => setPasted((e.target as HTMLTextAreaElement).value)}
        />
      </label>
      <div class="inline">
        <button
          type="button"
          data-testid="draft-import"
          onClick={() => {
            const read = readDraftText(pasted);
            if (!read.ok) setMessage({ ok: false, text: `refused: ${read.reason}` });
            else void setDraft(read.draft, { ok: true, text: `draft version ${read.draft.policy.version} loaded` });
          }}
        >
          Load the pasted draft
        </button>
      </div>
      {message && (
        <p class={message.ok ? 'ok' : 'error'} role="alert" data-testid="draft-message">
          {message.text}
        </p>
      )}
    </details>
  );
}
