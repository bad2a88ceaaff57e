import type { RolloutView } from '../shared/rollout/judge.js';
import { placeHosts } from '../shared/rollout/plan.js';
import type { HostView } from './fleet-view.js';
import { renderProgress } from './status.js';

// What `outpost rollout status` shows (and prints as JSON): every wave with its gate and hosts,
// failures with their reasons, and a summary line. Host states come from the rollout's evidence
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

const gateText = (w: RolloutReport['waves'][number]): string => {
  const parts = [`${w.successes}/${w.needed} proven`];
  if (w.failures) parts.push(`${w.failures} failed`);
  if (w.gate.soakSeconds)
    parts.push(`soak ${formatSeconds(w.gate.soakSeconds)}${w.soakEndsAt ? ` until ${w.soakEndsAt}` : ''}`);
  return parts.join(', ');
};

export function formatSeconds(seconds: number): string {
  if (seconds % 86_400 === 0) return `${seconds / 86_400}d`;
  if (seconds % 3600 === 0) return `${seconds / 3600}h`;
  if (seconds % 60 === 0) return `${seconds / 60}m`;
  return `${seconds}s`;
}

export function renderReport(
  report: RolloutReport,
  options: { progressBars?: boolean; maxHostsPerWave?: number } = {},
): string {
  const lines = [
    `rollout ${report.id} of ${report.release}${report.channel ? ` (channel ${report.channel})` : ''}: ${report.state.toUpperCase()}${report.halted ? ` — ${report.halted.reason}` : ''}`,
    `  plan ${report.plan.slice(0, 12)}…, signed by ${report.signers.join(', ') || 'nobody who counts'}; created ${report.createdAt}, expires ${report.expiresAt}`,
  ];
  if (report.paused)
    lines.push(
      `  PAUSED by ${report.paused.by} at ${report.paused.at}${report.paused.reason ? `: ${report.paused.reason}` : ''}`,
    );
  if (report.aborted)
    lines.push(
      `  ABORTED by ${report.aborted.by} at ${report.aborted.at}${report.aborted.reason ? `: ${report.aborted.reason}` : ''}`,
    );
  const limit = options.maxHostsPerWave ?? 50;
  for (const wave of report.waves) {
    lines.push(
      '',
      `WAVE ${wave.number} ${wave.name}: ${wave.hosts.length} hosts, ${wave.open ? 'OPEN' : wave.reason}; gate ${gateText(wave)}${wave.gate.approval ? `, approval for wave ${wave.number + 1}${wave.approvedBy.length ? ` by ${wave.approvedBy.join(', ')}` : ''}` : ''}`,
    );
    const width = Math.max(4, ...wave.hosts.map((h) => h.host.length));
    for (const host of wave.hosts.slice(0, limit)) {
      lines.push(`  ${host.host.padEnd(width)}  ${host.state.padEnd(11)}  ${host.detail}`);
      if (host.progress)
        lines.push(`  ${' '.repeat(width)}  ${renderProgress(host.progress, { bar: options.progressBars ?? false })}`);
    }
    if (wave.hosts.length > limit) lines.push(`  … and ${wave.hosts.length - limit} more (--json lists all)`);
  }
  if (report.failures.length) {
    lines.push('', 'FAILURES');
    for (const f of report.failures) lines.push(`  ${f.host} (wave ${f.wave}): ${f.outcome}: ${f.reason}`);
  }
  if (report.rejectedEvidence.length)
    lines.push(
      '',
      `${report.rejectedEvidence.length} results in the evidence do not count (first: ${report.rejectedEvidence[0]!.host}: ${report.rejectedEvidence[0]!.reason})`,
    );
  const s = report.summary;
  lines.push(
    '',
    `${s.succeeded}/${s.hosts} succeeded, ${s.failed} failed, ${s['in-progress']} in progress, ${s['not-started']} not started, ${s.waiting} waiting — ${report.state}`,
  );
  return lines.join('\n');
}
