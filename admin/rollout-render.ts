import type { RolloutReport } from '../shared/views/rollout-report.js';
import { renderProgress } from './status.js';

export {
  buildReport,
  type HostState,
  type RolloutHostLine,
  type RolloutReport,
} from '../shared/views/rollout-report.js';

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
