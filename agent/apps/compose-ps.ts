import { z } from 'zod';
import { checkJsonBounds } from '../../shared/crypto/canonical.js';
import {
  APP_LIMITS,
  type AppService,
  type AppState,
  type ServiceState,
  serviceStateSchema,
} from '../../shared/schemas/apps.js';

// `docker compose -p NAME ps --all --format json`, read defensively: compose before 2.21 prints
// one JSON array, later versions one object per line (and nothing at all for no containers);
// fields come and go between versions. Whatever docker prints, the result is containers or a
// reason, never an exception.

// More than this is not a compose project's ps output (a few hundred bytes per container).
export const COMPOSE_PS_MAX_BYTES = 256 * 1024;
// Containers read per app; more are counted, not kept.
const MAX_CONTAINERS = 1000;
const PS_LIMITS = { maxDepth: 16, maxBytes: COMPOSE_PS_MAX_BYTES };

// The fields used, of the many docker prints; everything else is ignored, and a field of an
// unexpected type counts as absent (the container still counts, as 'unknown' if need be).
const text = z.string().optional().catch(undefined);
const containerSchema = z.looseObject({
  Service: text,
  Name: text,
  State: text,
  Health: text,
  ExitCode: z.number().optional().catch(undefined),
});

export type ComposePs = { ok: true; containers: AppService[]; omitted: number } | { ok: false; reason: string };

const bad = (reason: string): ComposePs => ({ ok: false, reason: reason.slice(0, APP_LIMITS.reason) });

function serviceState(raw: string | undefined): ServiceState {
  const parsed = serviceStateSchema.safeParse(raw?.trim().toLowerCase());
  return parsed.success ? parsed.data : 'unknown';
}

function toService(raw: z.infer<typeof containerSchema>): AppService {
  const name = (raw.Service || raw.Name || 'unnamed').slice(0, 128);
  const state = serviceState(raw.State);
  const health = raw.Health?.trim().toLowerCase().slice(0, 32);
  const exitCode =
    state === 'exited' && raw.ExitCode !== undefined && Number.isInteger(raw.ExitCode)
      ? Math.max(-1, Math.min(255, raw.ExitCode))
      : undefined;
  return {
    name,
    state,
    ...(health ? { health } : {}),
    ...(exitCode !== undefined ? { exitCode } : {}),
  };
}

function parseJson(text: string, where: string): { ok: true; value: unknown } | { ok: false; reason: string } {
  try {
    return { ok: true, value: JSON.parse(text) };
  } catch (error) {
    return { ok: false, reason: `${where} is not JSON (${(error as Error).message.slice(0, 100)})` };
  }
}

export function parseComposePs(output: string): ComposePs {
  if (output.length > COMPOSE_PS_MAX_BYTES)
    return bad(`docker compose ps printed more than ${COMPOSE_PS_MAX_BYTES} bytes; not read`);
  const trimmed = output.trim();
  if (trimmed === '') return { ok: true, containers: [], omitted: 0 };
  let values: unknown[];
  if (trimmed.startsWith('[')) {
    const parsed = parseJson(trimmed, 'the output');
    if (!parsed.ok) return bad(`docker compose ps: ${parsed.reason}`);
    if (!Array.isArray(parsed.value)) return bad('docker compose ps: the output is not a JSON array');
    values = parsed.value;
  } else {
    values = [];
    const lines = trimmed.split('\n');
    for (const [index, line] of lines.entries()) {
      if (line.trim() === '') continue;
      const parsed = parseJson(line, `line ${index + 1}`);
      if (!parsed.ok) return bad(`docker compose ps: ${parsed.reason}`);
      values.push(parsed.value);
    }
  }
  const containers: AppService[] = [];
  for (const [index, value] of values.entries()) {
    if (index >= MAX_CONTAINERS) break;
    const bounds = checkJsonBounds(value, PS_LIMITS);
    if (!bounds.ok) return bad(`docker compose ps: container ${index + 1}: ${bounds.reason}`);
    const parsed = containerSchema.safeParse(value);
    if (!parsed.success)
      return bad(
        `docker compose ps: container ${index + 1} is not a container (${parsed.error.issues[0]?.path.join('.')}: ${parsed.error.issues[0]?.message})`,
      );
    containers.push(toService(parsed.data));
  }
  containers.sort(compareServices);
  return { ok: true, containers, omitted: Math.max(0, values.length - MAX_CONTAINERS) };
}

const ORDER: Record<ServiceState, number> = {
  dead: 0,
  restarting: 1,
  exited: 2,
  paused: 3,
  unknown: 4,
  created: 5,
  removing: 6,
  running: 7,
};

// Whether a container says something is wrong. Exited with 0 is a one-shot service that finished
// (migrations, init); created or removing is compose at work.
export function serviceProblem(service: AppService): string | null {
  switch (service.state) {
    case 'running':
      return service.health === 'unhealthy' ? `${service.name} is unhealthy` : null;
    case 'exited':
      return service.exitCode === 0 ? null : `${service.name} exited with code ${service.exitCode ?? 'unknown'}`;
    case 'created':
    case 'removing':
      return null;
    default:
      return `${service.name} is ${service.state}`;
  }
}

// Problems first (they are what an admin looks for, and what is kept when the list is cut), then
// by name, so the same containers always give the same list whatever order docker printed.
export function compareServices(a: AppService, b: AppService): number {
  const problem = Number(serviceProblem(b) !== null) - Number(serviceProblem(a) !== null);
  if (problem !== 0) return problem;
  return ORDER[a.state] - ORDER[b.state] || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
}

// The app's state from its containers.
export function appStateOf(containers: AppService[]): { state: AppState; reason?: string } {
  const problems = containers.map(serviceProblem).filter((p): p is string => p !== null);
  const running = containers.some((c) => c.state === 'running');
  if (problems.length > 0) {
    const shown = problems.slice(0, 3).join('; ');
    const more = problems.length > 3 ? ` and ${problems.length - 3} more` : '';
    return { state: 'degraded', reason: `${shown}${more}`.slice(0, APP_LIMITS.reason) };
  }
  if (running) return { state: 'running' };
  return {
    state: 'stopped',
    reason: containers.length === 0 ? 'no containers' : 'no container runs (all finished with code 0)',
  };
}
