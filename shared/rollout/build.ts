import { z } from 'zod';
import type { Channel, Policy } from '../schemas/policy.js';
import { hostIdSchema, storePathSchema } from '../schemas/primitives.js';
import { DEFAULT_GATE, type Gate, MAX_PLAN_HOSTS, waveNameSchema } from './schemas.js';

// Authoring a plan (CLI, CI, a web editor): the release manifest CI writes, which hosts go into
// which wave, and gate specs. Pure functions; every error says what to change.

export const releaseManifestSchema = z
  .strictObject({
    release: z.string().min(1, 'give the release a name').max(128),
    hosts: z.record(hostIdSchema, storePathSchema),
  })
  .refine((m) => Object.keys(m.hosts).length > 0, { path: ['hosts'], message: 'the release names no host' })
  .refine((m) => Object.keys(m.hosts).length <= MAX_PLAN_HOSTS, {
    path: ['hosts'],
    message: `a release holds at most ${MAX_PLAN_HOSTS} hosts`,
  });
export type ReleaseManifest = z.infer<typeof releaseManifestSchema>;

export interface WaveSpec {
  name: string;
  // Host ids and @group names.
  members: string[];
}

export interface PlannedWaves {
  waves: { name: string; hosts: string[] }[];
  // Hosts of the release or channel left out, and why.
  skipped: { host: string; reason: string }[];
}

export class PlanningError extends Error {}

function groupMembers(policy: Policy, name: string, where: string): string[] {
  const group = policy.groups.find((g) => g.name === name);
  if (!group) throw new PlanningError(`${where}: no group ${name} in policy version ${policy.version}`);
  return group.hosts;
}

// A channel's hosts: its own hosts and groups, and those its waves name.
export function channelHosts(policy: Policy, channel: Channel): string[] {
  const hosts = new Set<string>();
  for (const part of [channel, ...(channel.waves ?? [])]) {
    for (const host of part.hosts ?? []) hosts.add(host);
    for (const group of part.groups ?? [])
      for (const host of groupMembers(policy, group, `channel ${channel.name}`)) hosts.add(host);
  }
  return [...hosts];
}

// "wave NAME=h1,h2,@group" → a WaveSpec.
export function parseWaveSpec(text: string): WaveSpec {
  const match = /^([^=]+)=(.*)$/.exec(text);
  if (!match)
    throw new PlanningError(
      `--wave ${JSON.stringify(text)}: expected NAME=HOST,HOST,@GROUP (e.g. first=relay-1,@canaries)`,
    );
  const name = waveNameSchema.safeParse(match[1]);
  if (!name.success) throw new PlanningError(`--wave ${JSON.stringify(text)}: ${name.error.issues[0]?.message}`);
  const members = match[2]!
    .split(',')
    .map((m) => m.trim())
    .filter(Boolean);
  if (!members.length) throw new PlanningError(`--wave ${name.data}: names no host or @group`);
  return { name: name.data, members };
}

// The default plan: first (about 10 %, at least one host), middle (about 30 %), final (the rest),
// in host-name order; fewer waves for one or two hosts.
export function defaultWaves(hosts: string[]): { name: string; hosts: string[] }[] {
  const sorted = [...hosts].sort();
  const n = sorted.length;
  if (n === 0) return [];
  if (n === 1) return [{ name: 'first', hosts: sorted }];
  if (n === 2)
    return [
      { name: 'first', hosts: [sorted[0]!] },
      { name: 'final', hosts: [sorted[1]!] },
    ];
  const first = Math.max(1, Math.round(n * 0.1));
  const middle = Math.max(1, Math.min(n - first - 1, Math.round(n * 0.3)));
  return [
    { name: 'first', hosts: sorted.slice(0, first) },
    { name: 'middle', hosts: sorted.slice(first, first + middle) },
    { name: 'final', hosts: sorted.slice(first + middle) },
  ];
}

// Which hosts go into which wave: explicit --wave specs, else the channel's waves, else the default
// plan; of the channel's hosts (with --channel) that the release names, else of the release's.
export function planWaves(input: {
  policy: Policy;
  manifest: ReleaseManifest;
  channel?: string;
  waves?: WaveSpec[];
}): PlannedWaves {
  const { policy, manifest } = input;
  const released = new Set(Object.keys(manifest.hosts));
  const skipped: PlannedWaves['skipped'] = [];
  let candidates: string[];
  let channel: Channel | undefined;
  if (input.channel !== undefined) {
    channel = policy.channels?.find((c) => c.name === input.channel);
    if (!channel)
      throw new PlanningError(
        `no channel ${input.channel} in policy version ${policy.version} (channels: ${(policy.channels ?? []).map((c) => c.name).join(', ') || 'none'}); add it to the policy, or give --wave lists`,
      );
    const members = channelHosts(policy, channel);
    candidates = members.filter((h) => released.has(h));
    for (const host of members)
      if (!released.has(host))
        skipped.push({ host, reason: `in channel ${channel.name}, not in release ${manifest.release}` });
    for (const host of released)
      if (!members.includes(host))
        skipped.push({ host, reason: `in release ${manifest.release}, not in channel ${channel.name}` });
  } else candidates = [...released];
  const candidateSet = new Set(candidates);
  let waves: { name: string; hosts: string[] }[];
  if (input.waves?.length) {
    const placed = new Map<string, string>();
    waves = input.waves.map((spec) => {
      const hosts: string[] = [];
      for (const member of spec.members) {
        const names = member.startsWith('@') ? groupMembers(policy, member.slice(1), `--wave ${spec.name}`) : [member];
        for (const host of names) {
          if (!hostIdSchema.safeParse(host).success)
            throw new PlanningError(`--wave ${spec.name}: ${JSON.stringify(host)} is not a host id`);
          const other = placed.get(host);
          // A group stands for its hosts not placed in an earlier wave; a host named twice is a mistake.
          if (other !== undefined && other !== spec.name && member.startsWith('@')) continue;
          if (other !== undefined && other !== spec.name)
            throw new PlanningError(`${host} is in wave ${other} and in wave ${spec.name}; a host is in one wave`);
          if (other === spec.name) continue;
          if (!candidateSet.has(host)) {
            if (member.startsWith('@')) continue;
            throw new PlanningError(
              `--wave ${spec.name}: ${host} is not ${channel ? `in channel ${channel.name} and ` : ''}in release ${manifest.release}`,
            );
          }
          placed.set(host, spec.name);
          hosts.push(host);
        }
      }
      return { name: spec.name, hosts };
    });
    for (const host of candidates) if (!placed.has(host)) skipped.push({ host, reason: 'in no --wave' });
  } else if (channel?.waves) {
    const placed = new Set<string>();
    waves = channel.waves.map((wave) => {
      const members = new Set(wave.hosts ?? []);
      for (const group of wave.groups ?? [])
        for (const host of groupMembers(policy, group, `channel ${channel!.name}, wave ${wave.name}`))
          members.add(host);
      const hosts = candidates.filter((h) => members.has(h) && !placed.has(h)).sort();
      for (const host of hosts) placed.add(host);
      return { name: wave.name, hosts };
    });
    // A channel host in no wave goes to the last one.
    const rest = candidates.filter((h) => !placed.has(h)).sort();
    waves.at(-1)!.hosts.push(...rest);
  } else waves = defaultWaves(candidates);
  const names = new Set<string>();
  for (const wave of waves) {
    if (names.has(wave.name)) throw new PlanningError(`two waves are named ${wave.name}`);
    names.add(wave.name);
  }
  const kept = waves.filter((w) => w.hosts.length > 0);
  if (!kept.length) throw new PlanningError(`no host of release ${manifest.release} is left to roll out to`);
  return { waves: kept, skipped };
}

const DURATION_UNITS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86_400, w: 604_800 };

// "success=90,failures=2,soak=30m,approval" (every wave) or "first:soak=2h" (one wave).
export function parseGateSpec(text: string): { wave: string | null; gate: Partial<Gate> } {
  const colon = /^([A-Za-z0-9][A-Za-z0-9._-]*):(.*)$/.exec(text);
  const wave = colon ? colon[1]! : null;
  const body = colon ? colon[2]! : text;
  const gate: Partial<Gate> = {};
  const fail = (why: string): never => {
    throw new PlanningError(
      `--gate ${JSON.stringify(text)}: ${why}; expected e.g. success=90,failures=2,soak=30m,approval or first:soak=2h`,
    );
  };
  for (const part of body
    .split(',')
    .map((p) => p.trim())
    .filter(Boolean)) {
    const [key, value] = part.split('=', 2) as [string, string | undefined];
    if (key === 'approval' && value === undefined) gate.approval = true;
    else if (key === 'approval')
      gate.approval =
        value === 'true' || value === 'yes'
          ? true
          : value === 'false' || value === 'no'
            ? false
            : fail('approval is yes or no');
    else if (key === 'success') {
      const n = Number(value);
      if (value === undefined || !Number.isFinite(n) || n < 0 || n > 100) fail('success is a percentage from 0 to 100');
      gate.minSuccessPercent = n;
    } else if (key === 'failures') {
      if (value === 'none' || value === 'any') gate.maxFailures = null;
      else {
        const n = Number(value);
        if (value === undefined || !Number.isInteger(n) || n < 0) fail('failures is a whole number, or "any"');
        gate.maxFailures = n;
      }
    } else if (key === 'soak') {
      const match = /^(\d+(?:\.\d+)?)([smhdw]?)$/.exec(value ?? '');
      if (!match) fail('soak is a duration such as 90s, 30m, 4h or 2d');
      gate.soakSeconds = Math.round(Number.parseFloat(match![1]!) * DURATION_UNITS[match![2] || 's']!);
    } else fail(`unknown setting ${JSON.stringify(key)}`);
  }
  return { wave, gate };
}

// The gate of each wave: defaults, then specs for every wave, then specs for that wave.
export function gatesFor(waveNames: string[], specs: { wave: string | null; gate: Partial<Gate> }[]): Gate[] {
  for (const spec of specs)
    if (spec.wave !== null && !waveNames.includes(spec.wave))
      throw new PlanningError(`--gate ${spec.wave}:…: there is no wave ${spec.wave} (waves: ${waveNames.join(', ')})`);
  return waveNames.map((name) => {
    let gate: Gate = { ...DEFAULT_GATE };
    for (const spec of specs) if (spec.wave === null) gate = { ...gate, ...spec.gate };
    for (const spec of specs) if (spec.wave === name) gate = { ...gate, ...spec.gate };
    return gate;
  });
}
