import type { RolloutView } from '../rollout/judge.js';
import { placeHosts } from '../rollout/plan.js';
import type { HostView } from './host-view.js';

// What `outpost rollout status` and the web editor's rollout view show (the CLI also prints it as
// JSON): every wave with its gate and hosts, failures with their reasons, and a summary line. Host states come from the rollout's evidence
// (host-signed, judged under the policy) and, for hosts of open waves without a result there yet,
// from their signed status documents.

export type HostState = 'succeeded' | 'failed' | 'in-progress' | 'waiting' | 'not-started';

export interface RolloutHostLine {
  host: string;
  state: HostState;
  detail: string;
  progress?: NonNullable<HostView['progress']>;
}

export interface RolloutReport {
  id: string;
  release: string;
  channel: string | null;
  plan: string;
  state: RolloutView['state'];
  halted: RolloutView['halted'];
  issuer: string;
  signers: string[];
  createdAt: string;
  expiresAt: string;
  paused: RolloutView['actions']['paused'];
  aborted: RolloutView['actions']['aborted'];
  waves: {
    number: number;
    name: string;
    open: boolean;
    reason: string;
    gate: RolloutView['plan']['waves'][number]['gate'];
    needed: number;
    successes: number;
    failures: number;
    soakEndsAt: string | null;
    approvalNeeded: boolean;
    approvedBy: string[];
    signersMissing: string[];
    hosts: RolloutHostLine[];
  }[];
  failures: { host: string; wave: string; outcome: string; reason: string }[];
  rejectedEvidence: RolloutView['rejectedEvidence'];
  summary: Record<HostState, number> & { hosts: number };
}

const short = (path: string): string => path.replace(/^\/nix\/store\/([0-9a-z]{8})[0-9a-z]{24}-/, '$1…-');

export function buildReport(view: RolloutView, statuses: ReadonlyMap<string, HostView>): RolloutReport {
  const { plan } = view;
  const placed = placeHosts(plan);
  const failures: RolloutReport['failures'] = [];
  const summary: RolloutReport['summary'] = {
    hosts: 0,
    succeeded: 0,
    failed: 0,
    'in-progress': 0,
    waiting: 0,
    'not-started': 0,
  };
  const waves = view.waves.map((wave) => {
    const proofs = new Map(wave.gate.failures.map((f) => [f.host, f]));
    const hosts = wave.hosts.map((host): RolloutHostLine => {
      const entry = placed.get(host)!.entry;
      const failure = proofs.get(host);
      const status = statuses.get(host);
      let line: RolloutHostLine;
      if (view.succeeded.get(wave.index)?.has(host))
        line = { host, state: 'succeeded', detail: `applied generation ${entry.generation} ${short(entry.closure)}` };
      else if (failure) {
        line = { host, state: 'failed', detail: `${failure.outcome}: ${failure.reason}` };
        failures.push({ host, wave: wave.name, outcome: failure.outcome, reason: failure.reason });
      } else if (!wave.open) line = { host, state: 'waiting', detail: 'its wave has not started' };
      else if (
        status?.phase &&
        status.target?.generation === entry.generation &&
        status.target.closure === entry.closure
      )
        line = {
          host,
          state: 'in-progress',
          detail: status.phase,
          ...(status.progress ? { progress: status.progress } : {}),
        };
      else if (status?.lastResult?.generation === entry.generation && status.lastResult.outcome !== 'applied')
        line = {
          host,
          state: 'failed',
          detail: `${status.lastResult.outcome}: ${status.lastResult.reason} (not yet in the evidence)`,
        };
      else
        line = {
          host,
          state: 'not-started',
          detail: status?.phase ? `${status.phase}${status.online ? '' : ', offline'}` : 'no status read',
        };
      summary[line.state] += 1;
      summary.hosts += 1;
      return line;
    });
    return {
      number: wave.index + 1,
      name: wave.name,
      open: wave.open,
      reason: wave.reason,
      gate: plan.waves[wave.index]!.gate,
      needed: wave.gate.needed,
      successes: wave.gate.successes,
      failures: wave.gate.failures.length,
      soakEndsAt: wave.gate.soakEndsAt === null ? null : new Date(wave.gate.soakEndsAt).toISOString(),
      approvalNeeded: wave.approvalNeeded,
      approvedBy: wave.approvedBy,
      signersMissing: wave.signersMissing,
      hosts,
    };
  });
  return {
    id: plan.id,
    release: plan.release,
    channel: plan.channel ?? null,
    plan: view.digest,
    state: view.state,
    halted: view.halted,
    issuer: plan.issuer,
    signers: view.signers,
    createdAt: plan.createdAt,
    expiresAt: plan.expiresAt,
    paused: view.actions.paused,
    aborted: view.actions.aborted,
    waves,
    failures,
    rejectedEvidence: view.rejectedEvidence,
    summary,
  };
}
