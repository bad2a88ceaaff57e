import type { Policy } from '../shared/schemas/policy.js';
import type { SignatureTally } from '../shared/views/policy-draft.js';
import { describeGroupWindows, hasWindows } from './group-windows.js';

// Human-readable policy for `outpost policy show`. Keys are printed whole: operators compare
// them with what a colleague or a host read out to them.
const list = (items: string[]): string => (items.length ? items.join(', ') : '-');

function section(title: string, rows: string[]): string[] {
  return [`${title}:`, ...(rows.length ? rows.map((r) => `  ${r}`) : ['  (none)'])];
}

export function renderPolicy(policy: Policy): string[] {
  return [
    `policy version ${policy.version} (epoch ${policy.epoch}), issued ${policy.issuedAt}`,
    ...section(
      `root (${policy.root.threshold} of ${policy.root.keys.length} must sign the next version)`,
      policy.root.keys,
    ),
    ...section(
      'admins',
      policy.admins.map((a) => `${a.name}  roles: ${list(a.roles)}  keys: ${list(a.keys)}`),
    ),
    ...section(
      'roles',
      policy.roles.map(
        (r) => `${r.name}  ${r.capabilities.join(', ')}  hosts: ${list(r.hosts)}  groups: ${list(r.groups)}`,
      ),
    ),
    ...section(
      'groups',
      policy.groups.map(
        (g) =>
          `${g.name}  threshold ${g.threshold}  hosts: ${list(g.hosts)}${hasWindows(g) || g.timeZone ? `  windows: ${describeGroupWindows(g)}` : ''}`,
      ),
    ),
    ...section(
      'relays',
      policy.relays.map((r) => `${r.name}  key: ${r.key}  hosts: ${list(r.hosts)}  groups: ${list(r.groups)}`),
    ),
    ...section(
      'logins',
      (policy.logins ?? []).flatMap((l) => [
        `${l.name}  account: ${l.account}  hosts: ${list(l.hosts ?? [])}  groups: ${list(l.groups ?? [])}`,
        ...l.sshKeys.map((k) => `  ${k}`),
      ]),
    ),
    ...section('timestamp keys', policy.timestampKeys),
    ...section('revoked keys', policy.revokedKeys),
  ];
}

export { type SignatureTally, tallySignatures } from '../shared/views/policy-draft.js';

export function renderTally(tally: SignatureTally): string[] {
  const lines = [
    `signatures: ${tally.signatures}; ${tally.ownRoot.signed} of this version's root keys signed, ${tally.ownRoot.threshold} needed`,
  ];
  for (const key of tally.invalid)
    lines.push(`  signature by ${key} does NOT verify over this content (made before an edit?)`);
  return lines;
}
