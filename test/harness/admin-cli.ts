import { promises as fs } from 'node:fs';
import { signEnrollToken } from '../../admin/enroll-entries.js';
import type { HostView } from '../../admin/fleet-view.js';
import type { RolloutReport } from '../../admin/rollout-render.js';
import type { SigningKey } from '../../shared/crypto/keys.js';
import type { TestOrg } from './policy-fixtures.js';
import { runCli } from './processes.js';

// The `outpost` command lines integration tests and benches run as an admin would, written once:
// which server, as whom, trusting which org root.
export interface AdminTarget {
  coordinator: string;
  // The admin's key file; none for a reader that only pins the org root.
  key?: string;
  orgRoot?: string;
}

export function targetArgs(target: AdminTarget): string[] {
  return [
    '--coordinator',
    target.coordinator,
    ...(target.key === undefined ? [] : ['--key', target.key]),
    ...(target.orgRoot === undefined ? [] : ['--org-root', target.orgRoot]),
  ];
}

// A coordinator that pins the org root and signs freshness checkpoints every 0.5 s.
export function checkpointingCoordinatorArgs(org: TestOrg, timestampKeyFile: string): string[] {
  return ['--org-root', org.root.publicKey, '--timestamp-key', timestampKeyFile, '--timestamp-interval', '0.5'];
}

// `outpost status --host HOST --json`: the host's view, null when the server holds no such host.
// Throws with the command's stderr when it fails.
export async function hostStatus(target: AdminTarget, host: string): Promise<HostView | null> {
  const result = await runCli(['status', ...targetArgs(target), '--host', host, '--json']);
  if (result.code !== 0) throw new Error(`outpost status failed: ${result.stderr}`);
  return (JSON.parse(result.stdout) as { hosts: HostView[] }).hosts.find((h) => h.host === host) ?? null;
}

// `outpost rollout status ID --json`: the rollout's report. Throws with the command's stderr when it fails.
export async function rolloutStatus(target: AdminTarget, id: string): Promise<RolloutReport> {
  const result = await runCli(['rollout', 'status', id, '--json', ...targetArgs(target)]);
  if (result.code !== 0) throw new Error(`outpost rollout status failed: ${result.stderr}`);
  return JSON.parse(result.stdout) as RolloutReport;
}

// `outpost deploy` of one closure to one host.
export function deployArgs(target: AdminTarget, host: string, closure: string): string[] {
  return ['deploy', ...targetArgs(target), '--host', host, '--closure', closure];
}

// `outpost bundle create` at HQ for some hosts, with their closures from a signed cache when given.
export function bundleCreateArgs(
  target: AdminTarget,
  hosts: string[],
  out: string,
  cache?: { url: string; trustedKey: string },
): string[] {
  return [
    'bundle',
    'create',
    ...targetArgs(target),
    ...hosts.flatMap((h) => ['--host', h]),
    ...(cache === undefined ? [] : ['--cache', cache.url, '--trusted-cache-key', cache.trustedKey]),
    '--out',
    out,
  ];
}

// An enrollment token for `host` under policy version 1, valid for an hour, written where the
// agent's --enroll-token reads it (owner-only, as an operator would copy it).
export async function writeEnrollToken(file: string, admin: SigningKey, host: string): Promise<void> {
  const token = signEnrollToken(admin, {
    host,
    expiresAt: new Date(Date.now() + 3_600_000).toISOString(),
    policyVersion: 1,
  });
  await fs.writeFile(file, JSON.stringify(token), { mode: 0o600 });
}
