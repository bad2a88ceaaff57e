import {
  gatesFor,
  PlanningError,
  parseGateSpec,
  parseWaveSpec,
  planWaves,
  type ReleaseManifest,
  releaseManifestSchema,
} from '../rollout/build.js';
import type { RolloutPlan } from '../rollout/schemas.js';
import { rolloutPlanSchema } from '../rollout/schemas.js';
import { planSignersForHost } from '../rollout/verify.js';
import type { Policy } from '../schemas/policy.js';
import type { ActivationAction } from '../schemas/primitives.js';
import { adminForKey, capabilitiesFor } from '../trust/capabilities.js';

// The admin's side of a new rollout, shared by `outpost rollout create` and the web editor: the
// release manifest read with its bounds, waves and gates from the same specs, the refusals made
// before anything is signed (not an admin, no 'deploy' on some host, a host not enrolled), the
// plan both sign, and who still has to sign it where a group needs several admins.

export type Drafted<T> = { ok: true; value: T } | { ok: false; reason: string };

// A manifest is a few bytes a host; 16 MiB is far above the largest plan (10,000 hosts).
export const MAX_MANIFEST_BYTES = 16 * 1024 * 1024;
const EXPECTED = 'expected {"release": "NAME", "hosts": {"HOST": "/nix/store/…"}}';

// `where` names the manifest in errors (a file path, "the pasted manifest").
export function parseReleaseManifest(text: string, where: string): Drafted<ReleaseManifest> {
  if (text.length > MAX_MANIFEST_BYTES)
    return { ok: false, reason: `${where}: ${text.length} characters, more than 16 MiB` };
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    return { ok: false, reason: `${where}: not JSON (${(error as Error).message}); ${EXPECTED}` };
  }
  const parsed = releaseManifestSchema.safeParse(json);
  if (!parsed.success)
    return {
      ok: false,
      reason: `${where}: ${parsed.error.issues
        .slice(0, 5)
        .map((i) => `${i.path.join('.') || 'manifest'}: ${i.message}`)
        .join('; ')}; ${EXPECTED}`,
    };
  return { ok: true, value: parsed.data };
}

// A rollout id from the release name: 1-38 of a-z, 0-9, - (the caller adds a random suffix).
export function rolloutSlug(text: string): string {
  return (
    text
      .toLowerCase()
      .replace(/[^a-z0-9-]+/g, '-')
      .replace(/^-+|-+$/g, '')
      .slice(0, 38) || 'rollout'
  );
}

export interface RolloutRequest {
  manifest: ReleaseManifest;
  channel?: string;
  // `--wave NAME=HOST,HOST,@GROUP` and `--gate SPEC` as the CLI takes them.
  waves: string[];
  gates: string[];
}

export interface PlannedRollout {
  waves: { name: string; hosts: string[] }[];
  gates: RolloutPlan['waves'][number]['gate'][];
  skipped: { host: string; reason: string }[];
}

// Which hosts go in which wave and each wave's gate; a mistake in a spec is a reason, not a throw.
export function planRollout(policy: Policy, request: RolloutRequest): Drafted<PlannedRollout> {
  try {
    const planned = planWaves({
      policy,
      manifest: request.manifest,
      ...(request.channel !== undefined ? { channel: request.channel } : {}),
      waves: request.waves.map(parseWaveSpec),
    });
    const gates = gatesFor(
      planned.waves.map((w) => w.name),
      request.gates.map(parseGateSpec),
    );
    return { ok: true, value: { waves: planned.waves, gates, skipped: planned.skipped } };
  } catch (error) {
    if (error instanceof PlanningError) return { ok: false, reason: error.message };
    throw error;
  }
}

const listed = (hosts: string[]): string =>
  `${hosts.slice(0, 10).join(', ')}${hosts.length > 10 ? ` and ${hosts.length - 10} more` : ''}`;

// Checked before anything is signed: agents (and the coordinator) refuse a plan whose issuer
// lacks 'deploy' on any of its hosts, or that names a host without an enrolled key.
export function mayCreateRollout(
  policy: Policy,
  publicKey: string,
  hosts: string[],
  enrolled: (host: string) => string | undefined,
): Drafted<{ admin: string }> {
  const admin = adminForKey(policy, publicKey);
  if (!admin)
    return {
      ok: false,
      reason: `your key ${publicKey.slice(0, 12)}… is not an admin key under policy version ${policy.version}${policy.revokedKeys.includes(publicKey) ? ' (it is revoked)' : ''}`,
    };
  const lacking = hosts.filter((h) => !capabilitiesFor(policy, admin, h).has('deploy'));
  if (lacking.length)
    return {
      ok: false,
      reason: `admin ${admin.name} lacks 'deploy' for ${listed(lacking)}; leave them out (--wave) or ask an admin who has it`,
    };
  const unbound = hosts.filter((h) => enrolled(h) === undefined);
  if (unbound.length)
    return {
      ok: false,
      reason: `not enrolled: ${listed(unbound)}; enroll them ('outpost enroll approve') or leave them out (--wave)`,
    };
  return { ok: true, value: { admin: admin.name } };
}

export interface PlanInput {
  id: string;
  manifest: ReleaseManifest;
  channel?: string;
  action: ActivationAction;
  issuer: string;
  issuerKey: string;
  policyVersion: number;
  now: number;
  expiresInSeconds: number;
  planned: PlannedRollout;
  enrolled: (host: string) => string | undefined;
  // The highest generation issued to each host (its desired document and the rollouts held);
  // the plan gives each host the next one.
  highest: (host: string) => number;
}

export function buildRolloutPlan(input: PlanInput): RolloutPlan {
  return rolloutPlanSchema.parse({
    kind: 'rollout-plan',
    id: input.id,
    release: input.manifest.release,
    ...(input.channel !== undefined ? { channel: input.channel } : {}),
    action: input.action,
    issuer: input.issuer,
    issuerKey: input.issuerKey,
    policyVersion: input.policyVersion,
    createdAt: new Date(input.now).toISOString(),
    expiresAt: new Date(input.now + input.expiresInSeconds * 1000).toISOString(),
    waves: input.planned.waves.map((wave, index) => ({
      name: wave.name,
      gate: input.planned.gates[index]!,
      hosts: wave.hosts.map((host) => ({
        host,
        key: input.enrolled(host)!,
        closure: input.manifest.hosts[host]!,
        generation: input.highest(host) + 1,
      })),
    })),
  });
}

// Who still has to sign, per host whose group's threshold these signers do not meet yet.
export function planSignatureNeeds(
  plan: RolloutPlan,
  keys: string[],
  chain: Policy[],
): { host: string; reason: string }[] {
  const needs: { host: string; reason: string }[] = [];
  for (const wave of plan.waves)
    for (const entry of wave.hosts) {
      const verdict = planSignersForHost(plan, keys, chain, entry.host);
      if (!verdict.ok) needs.push({ host: entry.host, reason: verdict.reason });
    }
  return needs;
}
