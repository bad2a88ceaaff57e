import { canonicalJson } from '../crypto/canonical.js';
import { sha256Hex } from '../crypto/encoding.js';
import { type AccessStatus, type Login, parseSshPublicKey } from '../schemas/logins.js';
import type { Policy } from '../schemas/policy.js';
import { groupsOfHost } from './capabilities.js';

// What the policy in force lets people do on one host with SSH: per local account, the keys that
// log in as it (docs/access.md). The agent writes exactly this (agent/access.ts); `outpost status`
// computes it again from the policy it verified to compare with the digest the agent reports.

export interface AccountKey {
  // The login (person) the key belongs to.
  login: string;
  // '<type> <base64>', as authorized_keys holds it.
  key: string;
  comment: string | null;
}

export interface AccountAccess {
  account: string;
  keys: AccountKey[];
}

export function loginCoversHost(login: Login, host: string, hostGroups: ReadonlySet<string>): boolean {
  const hosts = login.hosts ?? [];
  return hosts.includes('*') || hosts.includes(host) || (login.groups ?? []).some((g) => hostGroups.has(g));
}

// Accounts sorted by name, keys in policy order; a key given twice for one account is written
// once (its first login names it). Keys of a type this version does not know grant nothing.
export function loginsForHost(policy: Policy | undefined, host: string): AccountAccess[] {
  if (!policy?.logins) return [];
  const hostGroups = new Set(groupsOfHost(policy, host));
  const byAccount = new Map<string, AccountKey[]>();
  for (const login of policy.logins) {
    if (!loginCoversHost(login, host, hostGroups)) continue;
    const keys = byAccount.get(login.account) ?? [];
    for (const text of login.sshKeys) {
      const parsed = parseSshPublicKey(text);
      if (!parsed.ok || !parsed.key.known || keys.some((k) => k.key === parsed.key.key)) continue;
      keys.push({ login: login.name, key: parsed.key.key, comment: parsed.key.comment });
    }
    byAccount.set(login.account, keys);
  }
  return [...byAccount.entries()]
    .filter(([, keys]) => keys.length > 0)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([account, keys]) => ({ account, keys }));
}

// Over the keys only (not comments or login names): the same keys give the same digest.
export function accessDigest(access: AccountAccess[]): string {
  return sha256Hex(canonicalJson(access.map((a) => [a.account, a.keys.map((k) => k.key)])));
}

export function accessSummary(policyVersion: number, access: AccountAccess[]): AccessStatus {
  return {
    policyVersion,
    accounts: Object.fromEntries(access.map((a) => [a.account, a.keys.length])),
    digest: accessDigest(access),
  };
}

// The authorized_keys file of one account: a header sshd skips, then per key a comment line
// naming its login and the key line itself (no options: the policy cannot carry any).
export function authorizedKeysText(policyVersion: number, access: AccountAccess): string {
  const lines = [
    `# written by outpost agent from signed policy version ${policyVersion}; edits are replaced at the next policy version`,
  ];
  for (const key of access.keys)
    lines.push(`# login ${key.login}`, key.comment ? `${key.key} ${key.comment}` : key.key);
  return `${lines.join('\n')}\n`;
}

// Whether the status an agent signed matches what the policy version it names gives the host.
export function accessMatchesPolicy(
  status: AccessStatus,
  chain: Policy[],
  host: string,
): { verdict: 'matches' | 'differs' | 'unknown-version'; expected: string | null } {
  const policy = chain.find((p) => p.version === status.policyVersion);
  if (!policy) return { verdict: 'unknown-version', expected: null };
  const expected = accessDigest(loginsForHost(policy, host));
  return { verdict: expected === status.digest ? 'matches' : 'differs', expected };
}
