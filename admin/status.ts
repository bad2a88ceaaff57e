import { z } from 'zod';
import { runCommand } from '../cli/command.js';
import { durationSchema } from '../cli/duration.js';
import { defineCommand, option } from '../cli/options.js';
import type { SigningKey } from '../shared/crypto/keys.js';
import { readKeyFile } from '../shared/node/key-file.js';
import { base64Key32Schema, hostIdSchema } from '../shared/schemas/primitives.js';
import type { TrustStatus } from '../shared/schemas/report.js';
import { formatBytes } from '../shared/text/bytes.js';
import { sleep } from '../shared/time/sleep.js';
import { describeCoSignProgress } from '../shared/trust/co-signatures.js';
import { sshSessionsLine } from '../shared/views/ssh-sessions.js';
import { renderAppsTable } from './apps-render.js';
import { coordinatorOption, reachingCoordinator, type WithCoordinator } from './common-options.js';
import { type HostView, listHosts, readFleetView } from './fleet-view.js';
import { keyListSchema, resolvePublicKeys } from './policy-cli-kit.js';

export const statusCommand = defineCommand({
  name: 'status',
  summary: 'one row per host: desired and applied generation, phase, online, last result',
  usage: 'outpost status --coordinator URL [--key FILE] [--org-root KEY …] [--host ID …] [--apps] [--json] [--watch]',
  options: z.object({
    coordinator: coordinatorOption,
    host: option(z.array(hostIdSchema).default([]), {
      placeholder: 'ID',
      description: 'only these hosts',
      defaultText: 'all',
    }),
    key: option(z.string().min(1).optional(), {
      placeholder: 'FILE',
      description: 'your admin key file: proves who you are to a coordinator or relay run with --org-root (needs read)',
      common: 'key',
    }),
    orgRoot: option(keyListSchema, {
      placeholder: 'KEY',
      description:
        "pinned org root key (base64 or key file): count a host's status and results only when signed by the key enrollment binds to it",
      defaultText: 'none: host keys are unverified',
    }),
    adminKey: option(z.array(base64Key32Schema).default([]), {
      placeholder: 'KEY',
      description: 'mark intents not signed by one of these admin keys as untrusted',
    }),
    timeout: option(durationSchema.prefault('15s'), {
      placeholder: 'DURATION',
      description: 'how long to wait for each document',
      common: 'timeout',
    }),
    json: option(z.boolean().default(false), {
      description: 'print every host with its signed results as JSON, for scripts',
    }),
    apps: option(z.boolean().default(false), {
      description:
        "also list each host's application services (services.outpost-apps) with their state from the host's signed status",
    }),
    watch: option(z.boolean().default(false), {
      description: 'redraw as hosts move (on a terminal; in a pipe each change is printed once), until Ctrl-C',
    }),
    interval: option(durationSchema.prefault('2s'), {
      placeholder: 'DURATION',
      description: 'with --watch: how often the documents are read again',
    }),
  }),
  examples: [
    'outpost status --coordinator ws://127.0.0.1:8420',
    'outpost status --coordinator ws://127.0.0.1:8420 --json | jq .hosts[0].lastResult',
    'outpost status --coordinator ws://127.0.0.1:8420 --watch',
    'outpost status --coordinator ws://127.0.0.1:8420 --apps --host clinic-1',
    'outpost status --coordinator wss://fleet.example.org --key ~/.config/outpost/alice.key --org-root <root public key>',
  ],
});

function shortPath(path: string | undefined): string {
  if (!path) return '-';
  return path.replace(/^\/nix\/store\/([0-9a-z]{8})[0-9a-z]{24}-/, '$1…-');
}

// "42% 3/7 paths, 1.2 MiB/2.9 MiB, 300.0 KiB/s", with a bar in front on a terminal.
export function renderProgress(
  progress: NonNullable<HostView['progress']>,
  options: { bar: boolean; width?: number },
): string {
  const fraction =
    progress.bytesTotal > 0
      ? progress.bytesDone / progress.bytesTotal
      : progress.pathsTotal > 0
        ? progress.pathsDone / progress.pathsTotal
        : 1;
  const percent = Math.floor(Math.min(1, fraction) * 100);
  const width = options.width ?? 20;
  const filled = Math.round(Math.min(1, fraction) * width);
  const bar = options.bar ? `[${'#'.repeat(filled)}${'-'.repeat(width - filled)}] ` : '';
  const rate = progress.live ? `, ${formatBytes(progress.bytesPerSecond)}/s` : ' (last milestone)';
  return `${bar}${percent}% ${progress.pathsDone}/${progress.pathsTotal} paths, ${formatBytes(progress.bytesDone)}/${formatBytes(progress.bytesTotal)}${rate}`;
}

// Two causes, two fixes: a missing timestamp points at the link or the coordinator's timestamp key;
// a missing policy version points at a relay or coordinator withholding it (issue 11 #1).
export function frozenReason(trust: TrustStatus): string {
  if (trust.waitingForPolicyVersion !== undefined)
    return `FROZEN: waiting for policy v${trust.waitingForPolicyVersion}, which a signed timestamp names`;
  return `FROZEN: no fresh timestamp since ${trust.lastTimestampAt ?? 'ever'}`;
}

function phaseCell(view: HostView): string {
  if (view.unreadable) return 'NOT READABLE with this key';
  if (view.rejectedStatus) return `REJECTED STATUS (${view.rejectedStatus.reason})`;
  if (!view.phase) return '-';
  if (view.lock)
    return `${view.phase} (LOCKED since ${view.lock.since} by ${view.lock.by}${view.lock.reason ? `: ${view.lock.reason}` : ''})`;
  if (view.awaitingSignatures && view.phase !== 'downloading')
    return `${view.phase} (generation ${view.awaitingSignatures.generation} WAITS FOR SIGNATURES: ${view.awaitingSignatures.reason})`;
  if (view.trust?.frozen) return `${view.phase} (${frozenReason(view.trust)})`;
  if (view.phase === 'waiting-for-window' && view.window)
    return `${view.phase} (${view.window.waitingFor}; next ${view.window.nextStart ?? 'none within a week'})`;
  if (view.phase === 'downloading' && view.progress)
    return `${view.phase} ${renderProgress(view.progress, { bar: false }).split(' ')[0]}`;
  return view.phase;
}

// One line for the whole picture: how many hosts, by phase, online, and how many are where they
// should be (applied generation = desired generation).
export function summaryLine(views: HostView[]): string {
  const byPhase = new Map<string, number>();
  for (const v of views) {
    const phase = v.unreadable ? 'not readable' : (v.phase ?? 'no status');
    byPhase.set(phase, (byPhase.get(phase) ?? 0) + 1);
  }
  const phases = [...byPhase].sort((a, b) => b[1] - a[1]).map(([phase, n]) => `${n} ${phase}`);
  const current = views.filter((v) => v.desired && v.applied?.generation === v.desired.generation).length;
  const online = views.filter((v) => v.online).length;
  return `${views.length} host${views.length === 1 ? '' : 's'}: ${phases.join(', ') || 'none'}; ${current} at their desired generation; ${online} online`;
}

// A rollout intent shows whether the signed plan it names gives it: UNVERIFIED when the plan is
// not at hand, INVALID when the plan says otherwise (a coordinator or relay wrote it).
function rolloutNote(rollout: NonNullable<HostView['desired']>['rollout']): string {
  if (!rollout) return '';
  const where = `rollout ${rollout.id}, wave ${rollout.wave}`;
  if (rollout.verdict === 'valid') return ` (${where})`;
  return ` (${where}: ${rollout.verdict === 'invalid' ? 'INVALID' : 'UNVERIFIED'}: ${rollout.reason})`;
}

export function renderStatusTable(views: HostView[], options: { progressBars?: boolean } = {}): string {
  const header = ['HOST', 'DESIRED', 'APPLIED', 'PHASE', 'ONLINE', 'LAST RESULT'];
  const rows = views.map((v) => [
    v.host,
    v.desired
      ? `${v.desired.generation} ${shortPath(v.desired.closure)}${rolloutNote(v.desired.rollout)}${v.desired.signatureValid || v.desired.rollout ? '' : ' (BAD SIGNATURE)'}${v.desired.trustedSigner === false ? ' (UNTRUSTED SIGNER)' : ''}`
      : '-',
    v.applied ? `${v.applied.generation} ${shortPath(v.applied.closure)}` : '-',
    phaseCell(v),
    v.online ? 'yes' : v.lastSeen ? `no (seen ${v.lastSeen})` : 'no',
    `${
      v.lastResult
        ? `#${v.lastResult.seq} gen ${v.lastResult.generation} ${v.lastResult.outcome}${v.lastResult.outcome === 'applied' ? '' : `: ${v.lastResult.reason}`}${v.lastResult.signatureValid ? '' : ' (BAD SIGNATURE)'}`
        : '-'
    }${v.rejectedResults.count ? ` (${v.rejectedResults.count} REJECTED: ${v.rejectedResults.firstReason})` : ''}`,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]): string =>
    cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join('  ');
  const lines = [line(header)];
  rows.forEach((row, i) => {
    lines.push(line(row));
    const progress = views[i]!.progress;
    // The whole picture of a download on its own line: a bar on a terminal, plain text in pipes.
    if (views[i]!.phase === 'downloading' && progress)
      lines.push(`  ${renderProgress(progress, { bar: options.progressBars ?? false })}`);
    const ssh = sshSessionsLine(views[i]!.sshSessions);
    if (ssh) lines.push(`  ${ssh}`);
  });
  lines.push('', summaryLine(views));
  const failed = views.filter((v) => v.lastResult && v.lastResult.outcome !== 'applied' && !v.unreadable);
  if (failed.length) {
    lines.push('', 'FAILURES (the newest result of each host that did not apply):');
    for (const v of failed)
      lines.push(
        `  ${v.host} generation ${v.lastResult!.generation} ${v.lastResult!.outcome}: ${v.lastResult!.reason}`,
      );
  }
  const pending = views.filter((v) => v.desired?.coSigning && v.desired.coSigning.missing > 0);
  if (pending.length) {
    lines.push('', 'AWAITING CO-SIGNATURES (outpost approve --host ID --generation N):');
    for (const v of pending)
      lines.push(`  ${v.host} generation ${v.desired!.generation}: ${describeCoSignProgress(v.desired!.coSigning!)}`);
  }
  const withAccess = views.filter((v) => v.access);
  if (withAccess.length) {
    lines.push('', 'LOGIN KEYS (what each agent writes for sshd, from its signed status):');
    for (const v of withAccess) lines.push(`  ${v.host}: ${describeAccess(v.access!)}`);
  }
  if (views.some((v) => v.hostKeys === 'unverified')) lines.push('', UNVERIFIED_NOTE);
  return lines.join('\n');
}

// "policy v3: ops 2 keys, deploy 1 key (matches policy v3)"; a digest that is not what the policy
// gives the host is named loudly: the host's files were written from something else.
export function describeAccess(access: NonNullable<HostView['access']>): string {
  const accounts = Object.entries(access.accounts)
    .map(([account, n]) => `${account} ${n} key${n === 1 ? '' : 's'}`)
    .join(', ');
  const check = access.check
    ? access.check.verdict === 'matches'
      ? ` (matches policy v${access.policyVersion})`
      : access.check.verdict === 'differs'
        ? ` (DIFFERS from what policy v${access.policyVersion} gives this host: digest ${access.digest.slice(0, 12)}…, expected ${access.check.expected?.slice(0, 12)}…)`
        : ` (policy v${access.policyVersion} is not in the chain this command verified)`
    : ` (digest ${access.digest.slice(0, 12)}…, unchecked without --org-root)`;
  return `policy v${access.policyVersion}: ${accounts || 'no account'}${check}${access.error ? `; LAST WRITE FAILED: ${access.error}` : ''}`;
}

const UNVERIFIED_NOTE =
  "host keys UNVERIFIED: without --org-root, a status or result is checked only against the key that signed it, so a relay or the coordinator could have written it; give --org-root ROOT-KEY (and --key) to check them against the host's enrolled key";

export function runStatusCommand(argv: string[]): Promise<number> {
  return runCommand(statusCommand, argv, reachingCoordinator(status));
}

function fleetViewOptions(
  options: WithCoordinator<z.output<typeof statusCommand.options>>,
  orgRoot: string[],
  identity: SigningKey | null,
): Parameters<typeof readFleetView>[1] {
  return {
    timeoutMs: options.timeout * 1000,
    hosts: options.host,
    adminKeys: options.adminKey.length ? new Set(options.adminKey) : undefined,
    orgRoot,
    identity,
  };
}

async function status(options: WithCoordinator<z.output<typeof statusCommand.options>>): Promise<number> {
  const orgRoot = await resolvePublicKeys(statusCommand, 'org-root', options.orgRoot);
  const identity = options.key === undefined ? null : await readKeyFile(options.key);
  if (options.watch) return watchStatus(options, orgRoot, identity);
  const views = await readFleetView(options.coordinator, fleetViewOptions(options, orgRoot, identity));
  const hostKeys = orgRoot.length ? 'enrollment' : 'unverified';
  // A host asked for by name must exist (the coordinator lists it, or holds something for it) and
  // be readable; the whole-fleet listing is what the coordinator lists for this key.
  const empty = options.host.length ? views.filter((v) => !v.found).map((v) => v.host) : [];
  const known = empty.length
    ? await listHosts(options.coordinator, options.timeout * 1000, identity).catch(() => null)
    : null;
  const missing = empty.filter((h) => !known?.includes(h));
  const shown = views.filter((v) => !missing.includes(v.host));
  if (options.json)
    console.log(
      JSON.stringify(
        { coordinator: options.coordinator, at: new Date().toISOString(), hostKeys, hosts: shown },
        null,
        2,
      ),
    );
  else if (shown.length)
    console.log(
      `${renderStatusTable(shown, { progressBars: process.stdout.isTTY === true })}${options.apps ? `\n\n${renderAppsTable(shown)}` : ''}`,
    );
  else if (!missing.length) console.log('no hosts yet: start an agent or deploy with `outpost deploy`');
  if (missing.length)
    console.error(
      `outpost status: no such host: ${missing.join(', ')}; ${options.coordinator} holds no intent, status, result${orgRoot.length ? ' or enrollment' : ''} for ${missing.length > 1 ? 'them' : 'it'}${known ? ` (hosts it knows: ${known.join(', ') || 'none'})` : ''}. Check the host id, or run outpost status without --host to list all`,
    );
  const unreadable = options.host.length ? views.filter((v) => v.unreadable) : [];
  for (const v of unreadable) console.error(`outpost status: ${v.host}: ${v.unreadable}`);
  return missing.length || unreadable.length ? 1 : 0;
}

// --watch: read the fleet again every --interval and redraw when anything changed. A read that
// fails (the coordinator restarting, a link down) is shown and retried, never the end of the watch.
async function watchStatus(
  options: WithCoordinator<z.output<typeof statusCommand.options>>,
  orgRoot: string[],
  identity: SigningKey | null,
): Promise<number> {
  const abort = new AbortController();
  const onSignal = (): void => abort.abort();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const terminal = process.stdout.isTTY === true && !options.json;
  let previous = '';
  try {
    while (!abort.signal.aborted) {
      let text: string;
      try {
        const views = await readFleetView(options.coordinator, fleetViewOptions(options, orgRoot, identity));
        const shown = views.filter((v) => v.found || !options.host.length);
        text = options.json
          ? JSON.stringify({ coordinator: options.coordinator, hosts: shown })
          : `${renderStatusTable(shown, { progressBars: terminal })}${options.apps ? `\n\n${renderAppsTable(shown)}` : ''}`;
      } catch (error) {
        text = `outpost status: cannot read ${options.coordinator} now (${(error as Error).message}); trying again every ${options.interval} s`;
      }
      if (text !== previous) {
        // On a terminal the screen is redrawn; in a pipe each change is printed once.
        if (terminal) process.stdout.write('\x1b[H\x1b[2J');
        console.log(options.json || terminal ? text : `${new Date().toISOString()}\n${text}\n---`);
        previous = text;
      }
      await sleep(options.interval * 1000, abort.signal).catch(() => undefined);
    }
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  return 0;
}
