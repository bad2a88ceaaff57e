import { promises as fs } from 'node:fs';
import { z } from 'zod';
import { type CommandGroup, runGroup, subcommand } from '../cli/command.js';
import { durationSchema } from '../cli/duration.js';
import { defineCommand, numberSchema, option } from '../cli/options.js';
import { formatHead, parseHead } from '../shared/audit/bundle.js';
import { headsFromKeptCheckpoints, policyChainOf } from '../shared/audit/checkpoint.js';
import { type AuditEvent, type AuditReport, auditHistory, hostTimeline } from '../shared/audit/history.js';
import type { LogHead } from '../shared/audit/log-chain.js';
import { documentAt } from '../shared/audit/show.js';
import type { SigningKey } from '../shared/crypto/keys.js';
import { useEd25519Verifier } from '../shared/crypto/signatures.js';
import { desiredDocName, statusDocName } from '../shared/documents/names.js';
import { auditInParallel } from '../shared/node/audit-workers.js';
import { nodeEd25519Verify } from '../shared/node/ed25519.js';
import { readKeyFile } from '../shared/node/key-file.js';
import type { SignedCheckpoint } from '../shared/schemas/checkpoint.js';
import { base64Key32Schema, hostIdSchema } from '../shared/schemas/primitives.js';
import {
  bundleOf,
  fetchCheckpoints,
  fetchDocumentLog,
  fetchHeads,
  fetchHistory,
  type LoadedHistory,
  readBundle,
  readKeptCheckpoints,
} from './audit-source.js';
import {
  coordinatorListSchema,
  reachingCoordinator,
  reachingOptionalCoordinator,
  type WithCoordinator,
  type WithOptionalCoordinator,
} from './common-options.js';

// `outpost audit`: read-only. Evidence comes from the coordinator's audit endpoint or from a
// bundle; every signature is checked here with the policy chain walked from --org-root, never
// taken from the coordinator (docs/audit.md).

const coordinatorOption = option(coordinatorListSchema.optional(), {
  placeholder: 'URL',
  description:
    'coordinator to read the log from, ws:// or wss:// (not needed with --bundle); repeat it for several of one fleet: the first that answers is used',
});
const keyOption = option(z.string().min(1).optional(), {
  placeholder: 'FILE',
  description:
    "your admin key file: proves who you are to a coordinator run with --org-root (needs 'audit' or 'read' on the hosts)",
});
const orgRootOption = option(z.array(base64Key32Schema).min(1), {
  placeholder: 'KEY',
  description: 'pinned org root public key: the policy chain is walked from it, as agents do',
});
const bundleOption = option(z.string().min(1).optional(), {
  placeholder: 'FILE',
  description: "read an exported bundle instead of a coordinator (works offline; 'outpost audit export')",
});
const timeoutOption = option(durationSchema.prefault('60s'), {
  placeholder: 'DURATION',
  description: 'how long to wait for each request to the coordinator',
});
const jsonOption = option(z.boolean().default(false), { description: 'print JSON, for tooling' });
const timeSchema = z
  .string()
  .refine((t) => !Number.isNaN(Date.parse(t)), 'expected a time such as 2025-06-01T12:00:00Z')
  .transform((t) => Date.parse(t));

const sourceRule = (o: { coordinator?: string[]; bundle?: string }): boolean =>
  (o.coordinator === undefined) !== (o.bundle === undefined);
const sourceMessage = { message: 'give --coordinator URL or --bundle FILE (one of them)', path: ['coordinator'] };

export const auditTimelineCommand = defineCommand({
  name: 'audit timeline',
  summary: 'every signed change that applied to a host, with signer, policy version and verification outcome',
  usage:
    'outpost audit timeline (--coordinator URL [--key FILE] | --bundle FILE) --org-root KEY --host ID [--from TIME] [--to TIME] [--json]',
  options: z
    .object({
      coordinator: coordinatorOption,
      key: keyOption,
      bundle: bundleOption,
      orgRoot: orgRootOption,
      host: option(hostIdSchema, { placeholder: 'ID', description: 'the host whose history to list' }),
      from: option(timeSchema.optional(), {
        placeholder: 'TIME',
        description: 'only events logged at or after this time',
      }),
      to: option(timeSchema.optional(), {
        placeholder: 'TIME',
        description: 'only events logged at or before this time',
      }),
      timeout: timeoutOption,
      json: jsonOption,
    })
    .refine(sourceRule, sourceMessage),
  examples: [
    'outpost audit timeline --coordinator wss://fleet.example.org --key auditor.key --org-root KEY --host clinic-1',
  ],
});

export const auditShowCommand = defineCommand({
  name: 'audit show',
  summary: 'a document as it was at a moment (desired intents, status, results), rebuilt from its log',
  usage: 'outpost audit show (--coordinator URL [--key FILE] | --bundle FILE) --doc NAME --at TIME [--json]',
  options: z
    .object({
      coordinator: coordinatorOption,
      key: keyOption,
      bundle: bundleOption,
      doc: option(
        z
          .string()
          .regex(
            /^(hosts\/[a-z0-9][a-z0-9-]{0,62}\/(desired|status)|fleet\/[a-z0-9-]{1,63})$/,
            'expected hosts/<id>/desired, hosts/<id>/status or fleet/<name>',
          ),
        {
          placeholder: 'NAME',
          description: 'document to rebuild',
        },
      ),
      at: option(timeSchema, {
        placeholder: 'TIME',
        description: 'the moment (coordinator receive time) to rebuild it at',
      }),
      timeout: timeoutOption,
      json: jsonOption,
    })
    .refine(sourceRule, sourceMessage),
});

export const auditVerifyCommand = defineCommand({
  name: 'audit verify',
  summary: 'replay every document, check every signature under the policy in force, name anomalies (exit 1 on any)',
  usage:
    'outpost audit verify (--coordinator URL [--key FILE] | --bundle FILE) --org-root KEY (--all | --host ID …) [--head DOC@SEQ:HASH|FILE …] [--workers N] [--json]',
  options: z
    .object({
      coordinator: coordinatorOption,
      key: keyOption,
      bundle: bundleOption,
      orgRoot: orgRootOption,
      all: option(z.boolean().default(false), { description: 'every host (with --bundle: every host in it)' }),
      host: option(z.array(hostIdSchema).default([]), { placeholder: 'ID', description: 'only these hosts' }),
      head: option(z.array(z.string().min(1)).default([]), {
        placeholder: 'DOC@SEQ:HASH|FILE',
        description:
          "a log head kept earlier (DOC@SEQ:HASH, as 'outpost audit heads' prints), or a file of signed checkpoints an agent kept (<state-dir>/kept-checkpoints.jsonl): the history must still reach every head they name",
      }),
      workers: option(numberSchema('a number of threads').int().min(1).max(64).optional(), {
        placeholder: 'N',
        description: 'worker threads that replay and verify hosts in parallel',
        defaultText: 'the number of CPUs',
      }),
      timeout: timeoutOption,
      json: jsonOption,
    })
    .refine(sourceRule, sourceMessage)
    .refine((o) => !(o.all && o.host.length > 0) && (o.all || o.host.length > 0 || o.bundle !== undefined), {
      message: 'give --all or --host ID (not both)',
      path: ['all'],
    }),
  examples: [
    'outpost audit verify --coordinator wss://fleet.example.org --key auditor.key --org-root KEY --all',
    'outpost audit verify --bundle fleet-2025-06.json --org-root KEY --head hosts/clinic-1/status@812:<hash>',
    'outpost audit verify --coordinator wss://fleet.example.org --key auditor.key --org-root KEY --all --head clinic-1-kept-checkpoints.jsonl',
  ],
});

export const auditExportCommand = defineCommand({
  name: 'audit export',
  summary: 'write a self-contained bundle (log entries, policy chain, enrollment records) for offline verification',
  usage: 'outpost audit export --coordinator URL [--key FILE] --out FILE [--host ID …]',
  options: z.object({
    coordinator: option(coordinatorListSchema, {
      placeholder: 'URL',
      description:
        'coordinator to read the log from; repeat it for several of one fleet: the first that answers is used',
    }),
    key: keyOption,
    out: option(z.string().min(1), { placeholder: 'FILE', description: 'where to write the bundle (not overwritten)' }),
    host: option(z.array(hostIdSchema).default([]), {
      placeholder: 'ID',
      description: 'only these hosts',
      defaultText: 'all',
    }),
    timeout: timeoutOption,
  }),
});

export const auditHeadsCommand = defineCommand({
  name: 'audit heads',
  summary: 'print every document log head (DOC@SEQ:HASH); keep them to check a later bundle against',
  usage: 'outpost audit heads --coordinator URL [--key FILE] [--json]',
  options: z.object({
    coordinator: option(coordinatorListSchema, {
      placeholder: 'URL',
      description: 'coordinator to ask; repeat it for several of one fleet: the first that answers is used',
    }),
    key: keyOption,
    timeout: timeoutOption,
    json: jsonOption,
  }),
});

async function identity(path: string | undefined): Promise<SigningKey | null> {
  return path === undefined ? null : readKeyFile(path);
}

async function load(
  o: { coordinator?: string | undefined; bundle?: string | undefined; key?: string | undefined; timeout: number },
  hosts: readonly string[],
): Promise<LoadedHistory> {
  useEd25519Verifier(nodeEd25519Verify);
  if (o.bundle !== undefined) return readBundle(o.bundle);
  return fetchHistory(o.coordinator!, hosts, await identity(o.key), o.timeout * 1000);
}

const iso = (ms: number): string => new Date(ms).toISOString();

export function renderEvent(e: AuditEvent): string {
  const signers = e.signers.length
    ? e.signers
        .map((s) => `${s.name ?? `${s.key.slice(0, 12)}…`}${s.signatureValid ? '' : ' (BAD SIGNATURE)'}`)
        .join('+')
    : '-';
  return [
    iso(e.receivedAt),
    `${e.document}#${e.logSeq}`,
    e.kind,
    `policy v${e.policyVersion ?? '-'}`,
    `by ${signers}`,
    e.verified ? 'ok' : `REFUSED (${e.outcome})`,
    e.summary,
  ].join('  ');
}

export function renderAnomalies(report: AuditReport): string[] {
  return report.anomalies.map(
    (a) =>
      `ANOMALY ${a.code}: ${a.detail} [${a.document}${a.logSeq === null ? '' : `#${a.logSeq}`}${a.receivedAt === null ? '' : ` at ${iso(a.receivedAt)}`}]`,
  );
}

async function timeline(o: WithOptionalCoordinator<z.output<typeof auditTimelineCommand.options>>): Promise<number> {
  const history = await load(o, [o.host]);
  const report = auditHistory(history.source, { orgRootKeys: o.orgRoot, hosts: [o.host] });
  const events = hostTimeline(report, o.host, o.from, o.to);
  if (o.json) console.log(JSON.stringify({ host: o.host, events, anomalies: report.anomalies }, null, 2));
  else {
    console.log(events.length ? events.map(renderEvent).join('\n') : `no logged events for ${o.host} in that period`);
    for (const line of renderAnomalies(report)) console.log(line);
  }
  return 0;
}

async function show(o: WithOptionalCoordinator<z.output<typeof auditShowCommand.options>>): Promise<number> {
  useEd25519Verifier(nodeEd25519Verify);
  const entries =
    o.bundle !== undefined
      ? ((await readBundle(o.bundle)).byDocument.get(o.doc) ?? [])
      : await fetchDocumentLog(o.coordinator!, o.doc, await identity(o.key), o.timeout * 1000);
  const state = documentAt(o.doc, entries, o.at);
  console.log(JSON.stringify({ ...state, at: iso(state.at) }, null, o.json ? 2 : 2));
  return 0;
}

async function verify(o: WithOptionalCoordinator<z.output<typeof auditVerifyCommand.options>>): Promise<number> {
  const history = await load(o, o.host);
  // Verifying nothing is not a pass: a host named but absent is a typo or the wrong source.
  const empty = o.host.filter((host) =>
    [desiredDocName(host), statusDocName(host)].every((d) => (history.byDocument.get(d) ?? []).length === 0),
  );
  if (empty.length) {
    console.error(
      `outpost audit verify: no logged history for ${empty.join(', ')} in ${o.bundle ?? o.coordinator} (neither hosts/<id>/desired nor hosts/<id>/status has an entry); check the host name`,
    );
    return 1;
  }
  const keptHeads = o.head.map((h) => parseHead(h)).filter((h): h is LogHead => h !== null);
  // Files of signed checkpoints: each is checked against the heads the coordinator (or the
  // bundle) says it signed, and those heads are then kept heads like the ones given bare.
  const kept: SignedCheckpoint[] = [];
  for (const file of o.head.filter((h) => parseHead(h) === null)) kept.push(...(await readKeptCheckpoints(file)));
  const fromCheckpoints = kept.length
    ? headsFromKeptCheckpoints(
        kept,
        policyChainOf(history.source, o.orgRoot),
        o.bundle !== undefined
          ? (history.checkpoints ?? null)
          : await fetchCheckpoints(o.coordinator!, await identity(o.key), o.timeout * 1000),
      )
    : { heads: [], anomalies: [] };
  const report = await auditInParallel(history.source, {
    orgRootKeys: o.orgRoot,
    ...(o.host.length ? { hosts: o.host } : {}),
    keptHeads: [...keptHeads, ...fromCheckpoints.heads],
    keepEvents: false,
    ...(o.workers === undefined ? {} : { workers: o.workers }),
  });
  report.anomalies.unshift(...fromCheckpoints.anomalies);
  const summary = {
    documents: report.documents,
    entries: report.entries,
    signedEntries: report.signedEntries,
    policyVersions: report.policyVersions.map((v) => ({ version: v.version, since: iso(v.since) })),
    heads: report.heads.map(formatHead),
    anomalies: report.anomalies,
    ok: report.anomalies.length === 0,
  };
  if (o.json) console.log(JSON.stringify(summary, null, 2));
  else {
    for (const line of renderAnomalies(report)) console.log(line);
    console.log(
      `${summary.ok ? 'verified' : 'ANOMALIES FOUND'}: ${report.documents} documents, ${report.entries} log entries, ${report.signedEntries} signed entries, policy versions ${report.policyVersions.map((v) => v.version).join(', ') || 'none'}, ${report.anomalies.length} anomalies`,
    );
  }
  return summary.ok ? 0 : 1;
}

async function exportBundle(o: WithCoordinator<z.output<typeof auditExportCommand.options>>): Promise<number> {
  const key = await identity(o.key);
  const history = await fetchHistory(o.coordinator, o.host, key, o.timeout * 1000);
  // The heads behind the coordinator's signed checkpoints, so kept checkpoints can be checked
  // offline; only a key that may audit every host gets them.
  try {
    history.checkpoints = await fetchCheckpoints(o.coordinator, key, o.timeout * 1000);
  } catch (error) {
    console.error(
      `note: the bundle has no checkpoints, so kept checkpoints cannot be checked against it offline: ${(error as Error).message}`,
    );
  }
  const bundle = bundleOf(history, o.coordinator);
  const handle = await fs.open(o.out, 'wx').catch((error: NodeJS.ErrnoException) => {
    throw new Error(
      error.code === 'EEXIST' ? `${o.out} exists; choose another --out` : `cannot write ${o.out}: ${error.message}`,
    );
  });
  try {
    await handle.writeFile(JSON.stringify(bundle));
    await handle.sync();
  } finally {
    await handle.close();
  }
  const entries = bundle.documents.reduce((n, d) => n + d.entries.length, 0);
  console.log(
    `wrote ${o.out}: ${bundle.documents.length} documents, ${entries} log entries; verify it with 'outpost audit verify --bundle ${o.out} --org-root KEY'`,
  );
  return 0;
}

async function heads(o: WithCoordinator<z.output<typeof auditHeadsCommand.options>>): Promise<number> {
  const list = await fetchHeads(o.coordinator, await identity(o.key), o.timeout * 1000);
  console.log(o.json ? JSON.stringify({ heads: list }, null, 2) : list.map(formatHead).join('\n'));
  return 0;
}

export const auditCommandGroup: CommandGroup = {
  name: 'audit',
  summary: 'replay and verify the fleet history: timelines, documents at a moment, anomalies, offline bundles',
  subcommands: [
    subcommand(auditTimelineCommand, reachingOptionalCoordinator(timeline)),
    subcommand(auditShowCommand, reachingOptionalCoordinator(show)),
    subcommand(auditVerifyCommand, reachingOptionalCoordinator(verify)),
    subcommand(auditExportCommand, reachingCoordinator(exportBundle)),
    subcommand(auditHeadsCommand, reachingCoordinator(heads)),
  ],
  notes: ["Times are the coordinator's receive times: they order the log but prove nothing (docs/audit.md)."],
};

export function runAuditCommand(argv: string[]): Promise<number> {
  return runGroup(auditCommandGroup, argv);
}
