import { POLICY_DOC, readPolicies } from '../../../shared/documents/fleet.js';
import type { Group } from '../../../shared/schemas/policy.js';
import { policyRootSigners } from '../../../shared/views/policy-signers.js';
import { clock, shortKey } from './format.js';
import { PolicyDraft } from './policy-draft.js';
import type { Session } from './session.js';

// The policy in force, read only: the version walked from the pinned org root (the agents' walk,
// never the server's word), who signed it, and its admins, roles, groups, relays, logins and keys.
// Drafts of the next version are edited and signed in policy-draft.tsx.
const list = (items: readonly string[]): string => (items.length ? items.join(', ') : '—');

function windows(group: Group): string {
  const parts = [
    group.maintenanceWindows?.length ? `maintenance ${group.maintenanceWindows.join(', ')}` : '',
    group.rebootWindows?.length ? `reboot ${group.rebootWindows.join(', ')}` : '',
  ].filter(Boolean);
  if (!parts.length) return '—';
  return `${parts.join('; ')} (${group.timeZone ?? "each host's local time"})`;
}

// "ssh-ed25519 AAAAC3Nz…Iatk alice@laptop": type, the blob's ends, the comment.
function sshKeyLabel(text: string): string {
  const [type = '', blob = '', ...comment] = text.split(' ');
  return `${type} ${blob.length > 20 ? `${blob.slice(0, 8)}…${blob.slice(-6)}` : blob}${comment.length ? ` ${comment.join(' ')}` : ''}`;
}

// The header row of one of the policy's tables.
function Columns({ names }: { names: readonly string[] }) {
  return (
    <thead>
      <tr>
        {names.map((name) => (
          <th key={name}>{name}</th>
        ))}
      </tr>
    </thead>
  );
}

// The row an empty table shows instead of nothing.
function NoneRow() {
  return (
    <tr>
      <td class="muted">none</td>
    </tr>
  );
}

function Key({ value }: { value: string }) {
  return (
    <code title={value} class="key">
      {shortKey(value)}
    </code>
  );
}

export function PolicyPage(props: { session: Session }) {
  const { sync } = props.session;
  const chain = sync.authority()?.chain ?? [];
  const policy = chain.at(-1);
  if (!policy)
    return (
      <section class="admin-page" data-testid="policy-view">
        <h2>Policy</h2>
        <p class="muted">
          {sync.orgRootKeys.length === 0
            ? 'no org root is pinned: no policy can be trusted'
            : 'no policy signed by the pinned org root has arrived yet'}
        </p>
      </section>
    );
  const previous = chain.at(-2);
  const { signers, invalid } = policyRootSigners(readPolicies(sync.fleetDocument(POLICY_DOC)), policy, previous);
  const pinned = new Set(sync.orgRootKeys);
  const me = props.session.signer.publicKey;
  return (
    <section class="admin-page" data-testid="policy-view" aria-label="Policy">
      <h2>
        Policy version <span data-testid="policy-version">{policy.version}</span>
      </h2>
      <p>
        epoch {policy.epoch}, issued {clock(policy.issuedAt)}; walked from the pinned org root through versions{' '}
        {chain[0]!.version}..{policy.version}.
      </p>
      <PolicyDraft session={props.session} current={policy} />
      <h3>Signed by</h3>
      <p class="hint">
        {policy.root.threshold} of this version's {policy.root.keys.length} root keys must sign
        {previous ? `, and ${previous.root.threshold} of version ${previous.version}'s` : ''}.
      </p>
      <table class="plain" data-testid="policy-signers">
        <tbody>
          {signers.map((s) => (
            <tr key={s.key} data-testid="policy-signer" data-signed={String(s.signed)}>
              <td>
                <Key value={s.key} />
                {pinned.has(s.key) && ' (pinned here)'}
              </td>
              <td>root key of {s.of.join(' and ')}</td>
              <td class={s.signed ? 'ok' : 'muted'}>{s.signed ? '✓ signed' : 'did not sign'}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {invalid > 0 && (
        <p class="bad">
          {invalid} signature(s) on stored copies do not verify over this content (they count for nothing)
        </p>
      )}
      <h3>Admins</h3>
      <table class="plain" data-testid="policy-admins">
        <Columns names={['admin', 'roles', 'keys']} />
        <tbody>
          {policy.admins.map((admin) => (
            <tr key={admin.name} data-testid={`policy-admin-${admin.name}`}>
              <td>
                {admin.name}
                {admin.keys.includes(me) && ' (you)'}
              </td>
              <td>{list(admin.roles)}</td>
              <td>
                {admin.keys.map((k) => (
                  <span key={k}>
                    <Key value={k} />
                    {policy.revokedKeys.includes(k) && <span class="bad"> revoked</span>}{' '}
                  </span>
                ))}
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <h3>Roles</h3>
      <table class="plain" data-testid="policy-roles">
        <Columns names={['role', 'capabilities', 'hosts', 'groups']} />
        <tbody>
          {policy.roles.map((role) => (
            <tr key={role.name} data-testid={`policy-role-${role.name}`}>
              <td>{role.name}</td>
              <td>{list(role.capabilities)}</td>
              <td>{list(role.hosts)}</td>
              <td>{list(role.groups)}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <h3>Groups</h3>
      <table class="plain" data-testid="policy-groups">
        <Columns names={['group', 'admins who must sign', 'hosts', 'windows']} />
        <tbody>
          {policy.groups.map((group) => (
            <tr key={group.name} data-testid={`policy-group-${group.name}`}>
              <td>{group.name}</td>
              <td>{group.threshold}</td>
              <td>{list(group.hosts)}</td>
              <td>{windows(group)}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <h3>Relays</h3>
      <table class="plain">
        <tbody>
          {policy.relays.map((relay) => (
            <tr key={relay.name}>
              <td>{relay.name}</td>
              <td>
                <Key value={relay.key} />
              </td>
              <td>hosts: {list(relay.hosts)}</td>
              <td>groups: {list(relay.groups)}</td>
            </tr>
          ))}
          {policy.relays.length === 0 && <NoneRow />}
        </tbody>
      </table>
      <h3>Logins</h3>
      <table class="plain" data-testid="policy-logins">
        <Columns names={['login', 'account', 'hosts', 'groups', 'SSH keys']} />
        <tbody>
          {(policy.logins ?? []).map((login) => (
            <tr key={login.name} data-testid={`policy-login-${login.name}`}>
              <td>{login.name}</td>
              <td>{login.account}</td>
              <td>{list(login.hosts ?? [])}</td>
              <td>{list(login.groups ?? [])}</td>
              <td>
                {login.sshKeys.map((key) => (
                  <div key={key}>
                    <code>{sshKeyLabel(key)}</code>
                  </div>
                ))}
              </td>
            </tr>
          ))}
          {(policy.logins ?? []).length === 0 && <NoneRow />}
        </tbody>
      </table>
      <h3>Keys</h3>
      <dl class="facts">
        <dt>timestamp</dt>
        <dd>{policy.timestampKeys.length ? policy.timestampKeys.map((k) => <Key key={k} value={k} />) : '—'}</dd>
        <dt>revoked</dt>
        <dd>{policy.revokedKeys.length ? policy.revokedKeys.map((k) => <Key key={k} value={k} />) : '—'}</dd>
      </dl>
    </section>
  );
}
