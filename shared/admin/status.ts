import { z } from 'zod';
import { parseFlags, renderHelp, type CommandSpec } from '../cli/flags.js';
import { durationSchema } from '../cli/duration.js';
import { base64Key32Schema, hostIdSchema } from '../schemas/primitives.js';
import { readFleetView, type HostView } from './fleet-view.js';

export const statusCommand: CommandSpec = {
  name: 'status',
  summary: 'one row per host: desired and applied generation, phase, online, last result',
  usage: 'outpost status --coordinator URL [--host ID …] [--json]',
  flags: [
    { name: 'coordinator', kind: 'string', placeholder: 'URL', description: 'coordinator or relay, ws:// or wss://' },
    { name: 'host', kind: 'string', multiple: true, placeholder: 'ID', description: 'only these hosts', defaultText: 'all' },
    { name: 'admin-key', kind: 'string', multiple: true, placeholder: 'KEY', description: 'mark intents not signed by one of these admin keys as untrusted' },
    { name: 'timeout', kind: 'string', placeholder: 'DURATION', description: 'how long to wait for each document', defaultText: '15s' },
    { name: 'json', kind: 'boolean', description: 'print every host with its signed results as JSON, for scripts' },
  ],
  examples: ['outpost status --coordinator ws://127.0.0.1:8420', 'outpost status --coordinator ws://127.0.0.1:8420 --json | jq .hosts[0].lastResult'],
};

const statusOptionsSchema = z.object({
  coordinator: z.string().regex(/^wss?:\/\//, 'expected a ws:// or wss:// URL'),
  host: z.array(hostIdSchema).default([]),
  adminKey: z.array(base64Key32Schema).default([]),
  timeout: durationSchema.prefault('15s'),
  json: z.boolean().default(false),
});

function shortPath(path: string | undefined): string {
  if (!path) return '-';
  return path.replace(/^\/nix\/store\/([0-9a-z]{8})[0-9a-z]{24}-/, '$1…-');
}

export function renderStatusTable(views: HostView[]): string {
  const header = ['HOST', 'DESIRED', 'APPLIED', 'PHASE', 'ONLINE', 'LAST RESULT'];
  const rows = views.map((v) => [
    v.host,
    v.desired ? `${v.desired.generation} ${shortPath(v.desired.closure)}${v.desired.signatureValid ? '' : ' (BAD SIGNATURE)'}${v.desired.trustedSigner === false ? ' (UNTRUSTED SIGNER)' : ''}` : '-',
    v.applied ? `${v.applied.generation} ${shortPath(v.applied.closure)}` : '-',
    v.phase ?? '-',
    v.online ? 'yes' : v.lastSeen ? `no (seen ${v.lastSeen})` : 'no',
    v.lastResult ? `#${v.lastResult.seq} gen ${v.lastResult.generation} ${v.lastResult.outcome}${v.lastResult.outcome === 'applied' ? '' : `: ${v.lastResult.reason}`}${v.lastResult.signatureValid ? '' : ' (BAD SIGNATURE)'}` : '-',
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join('  ');
  return [line(header), ...rows.map(line)].join('\n');
}

export async function runStatusCommand(argv: string[]): Promise<number> {
  const parsed = parseFlags(statusCommand, argv, statusOptionsSchema);
  if (parsed.help) {
    console.log(renderHelp(statusCommand));
    return 0;
  }
  const options = parsed.value;
  const views = await readFleetView(options.coordinator, {
    timeoutMs: options.timeout * 1000,
    hosts: options.host,
    adminKeys: options.adminKey.length ? new Set(options.adminKey) : undefined,
  });
  if (options.json) console.log(JSON.stringify({ coordinator: options.coordinator, at: new Date().toISOString(), hosts: views }, null, 2));
  else console.log(views.length ? renderStatusTable(views) : 'no hosts yet: start an agent or deploy with `outpost deploy`');
  return 0;
}
