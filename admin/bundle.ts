import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, promises as fs } from 'node:fs';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import * as Y from 'yjs';
import { z } from 'zod';
import { type CommandGroup, runGroup, subcommand } from '../cli/command.js';
import { durationSchema } from '../cli/duration.js';
import { bytesSchema, defineCommand, option, urlSchema } from '../cli/options.js';
import {
  type BundleOutcome,
  type DataDirAccess,
  holds,
  MISSING_DEPENDENCIES_REASON,
  missingDependencies,
  type ReturnData,
} from '../shared/bundle/apply.js';
import {
  BUNDLE_FORMAT_VERSION,
  type BundleCacheFile,
  type BundleDocument,
  type BundleManifest,
  bundleFileSize,
  bundleManifestSchema,
  MAX_DOCUMENTS,
  MAX_RETURN_DATA_BYTES,
  MAX_RETURN_DATA_LINE_BYTES,
  RETURN_BUNDLE_PATH,
  RETURN_DATA_PATH,
  returnDataDocumentSchema,
  returnDataEndSchema,
  type SiteState,
  signReturnManifest,
  siteStateSchema,
} from '../shared/bundle/format.js';
import { siteHosts } from '../shared/bundle/site.js';
import { fromBase64, toBase64 } from '../shared/crypto/encoding.js';
import type { SigningKey } from '../shared/crypto/keys.js';
import { readIntentEntries } from '../shared/documents/desired.js';
import { ENROLLMENT_DOC, POLICY_DOC, TIMESTAMP_DOC } from '../shared/documents/fleet.js';
import { itemsFirst } from '../shared/documents/history-forward.js';
import { desiredDocName, documentGarbageCollects, parseDocName } from '../shared/documents/names.js';
import { type EntrySource, openBundleFile, readBundleEntries, writeBundleFile } from '../shared/node/bundle-file.js';
import { connectDocument, type DocumentConnection, proofHeaders } from '../shared/node/connect.js';
import { writeFileDurably } from '../shared/node/durable-file.js';
import { readKeyFile } from '../shared/node/key-file.js';
import { hostIdSchema } from '../shared/schemas/primitives.js';
import { fetchAuthHeaders, httpBaseFromWs } from '../shared/sync/reconnect.js';
import { formatBytes } from '../shared/text/bytes.js';
import { fetchDocumentLog } from './audit-source.js';
import { cacheHolds, checkCacheFiles, planCacheFiles } from './bundle-cache.js';
import { serveCacheCommand } from './bundle-serve.js';
import { coordinatorListSchema, reachingOptionalCoordinator, type WithOptionalCoordinator } from './common-options.js';
import { readHostKeyAuthority } from './fleet-view.js';
import { keyListSchema, resolvePublicKeys } from './policy-cli-kit.js';
import { readDocuments, syncOrRefusal } from './policy-remote.js';

// `outpost bundle` (issue 16, docs/sneakernet.md): carry document updates and closures to a
// site with no link on a USB stick, and the site's statuses back. `create` reads what a key may
// read from a coordinator (and the closures from the org's cache) and writes one file; `apply`
// checks every hash and every narinfo signature in it first, then writes the updates into a
// server at the site and the cache files where the site's agents fetch from. `create --return`
// at the site reads a stopped relay's documents for HQ. Nothing in a bundle is trusted: intents,
// policies, checkpoints, statuses and results inside are signed, and every reader verifies them.

// The fleet documents a site needs to verify what the hosts' documents say: the signed policy
// chain, the enrollment records binding host keys, and the signed log checkpoints (freshness).
const FLEET_DOCUMENTS = [POLICY_DOC, ENROLLMENT_DOC, TIMESTAMP_DOC];
const MAX_STATE_FILE_BYTES = 64 * 1024 * 1024;

const timeoutOption = option(durationSchema.prefault('30s'), {
  placeholder: 'DURATION',
  description: 'how long to wait for the server',
  common: 'timeout',
});
// --since: an ISO 8601 UTC time, as ms; a bad value names the flag and the format (cli/options.ts).
const SINCE_FORMAT = 'expected an ISO 8601 UTC time such as 2026-06-01T12:00:00Z';
const sinceSchema = z
  .string()
  .max(64, SINCE_FORMAT)
  .pipe(z.iso.datetime({ offset: false, error: SINCE_FORMAT }))
  .transform((text) => Date.parse(text))
  .refine((ms) => !Number.isNaN(ms), { error: SINCE_FORMAT });
const cacheKeySchema = z
  .string()
  .regex(/^[A-Za-z0-9._-]+:[A-Za-z0-9+/]{43}=$/, 'expected NAME:BASE64KEY, as in trusted-public-keys');

const createSpec = defineCommand({
  name: 'bundle create',
  summary: 'write what a site with no link is missing (updates, closures) into one file, or with --return its results',
  usage:
    'outpost bundle create --coordinator URL --key FILE (--host ID | --relay NAME --org-root KEY | --group NAME --org-root KEY)… [--cache URL --trusted-cache-key NAME:KEY] [--since-state FILE] [--since TIME] [--site-has FILE] --out FILE [--max-size BYTES]\n       outpost bundle create --return (--coordinator RELAY-URL | --relay-data-dir DIR) --key RELAY-KEY --out FILE',
  options: z
    .object({
      return: option(z.boolean().default(false), {
        description:
          "at the site: write the site's status documents and what it holds (state vectors, cached store paths) for HQ, from the running site relay (--coordinator its URL, proved with its own --key) or a stopped one's --relay-data-dir",
      }),
      relayDataDir: option(z.string().min(1).optional(), {
        placeholder: 'DIR',
        description: "with --return: the --data-dir of the site's relay, stopped (instead of --coordinator)",
      }),
      coordinator: option(coordinatorListSchema.optional(), {
        placeholder: 'URL',
        description:
          "coordinator or relay, ws:// or wss:// (at HQ; several of one fleet: the first that answers); with --return the site relay's own URL, running (on its machine: ws://127.0.0.1:PORT)",
        common: 'coordinator',
      }),
      key: option(z.string().min(1).optional(), {
        placeholder: 'FILE',
        description:
          "your admin key file (outpost keygen): it must be allowed to read the hosts' documents; with --return the site relay's key file (its --key), which signs the return bundle so a running coordinator at HQ can take it",
        common: 'key',
      }),
      host: option(z.array(hostIdSchema).max(MAX_DOCUMENTS).default([]), {
        placeholder: 'ID',
        description:
          "a host of the site (repeat for each): its desired document, and its newest intent's closure with --cache, go in the bundle",
      }),
      relay: option(z.array(z.string().min(1).max(128)).max(100).default([]), {
        placeholder: 'NAME',
        description:
          'a site relay by its name (or key) in the policy: the hosts and groups the policy gives it go in the bundle (needs --org-root; combines with --host and --group)',
      }),
      group: option(z.array(z.string().min(1).max(128)).max(100).default([]), {
        placeholder: 'NAME',
        description:
          'a policy group: its members go in the bundle (needs --org-root; combines with --host and --relay)',
      }),
      orgRoot: option(keyListSchema, {
        placeholder: 'KEY',
        description:
          'pinned org root key (base64 or key file): --relay and --group are read from the policy walked from it, never from what the coordinator says unverified',
        common: 'orgRoot',
      }),
      cache: option(urlSchema(['http:', 'https:']).optional(), {
        placeholder: 'URL',
        description:
          "the org's binary cache: the narinfos and NARs of each host's newest closure (its whole closure) go in the bundle",
      }),
      trustedCacheKey: option(z.array(cacheKeySchema).default([]), {
        placeholder: 'NAME:KEY',
        description: "with --cache: the cache's public key (as the agents pin it); every narinfo must verify",
      }),
      sinceState: option(z.string().min(1).optional(), {
        placeholder: 'FILE',
        description:
          "the site state file (bundle apply --save-site-state of its last return bundle): carry only what the site lacks beyond its documents' state vectors; for a document the file names it wins over --since",
        defaultText: 'everything (the whole state of each document)',
      }),
      since: option(sinceSchema.optional(), {
        placeholder: 'TIME',
        description:
          "carry only the updates HQ's log received after TIME (ISO 8601 UTC, e.g. 2026-06-01T12:00:00Z): the site is taken to hold everything logged until then; for documents --since-state names, its state vector is used instead",
        defaultText: 'everything (the whole state of each document)',
      }),
      siteHas: option(z.string().min(1).optional(), {
        placeholder: 'FILE',
        description: "the site state file: leave out the store paths it lists (the site's relay has them)",
      }),
      out: option(z.string().min(1, 'give the file to write with --out'), {
        placeholder: 'FILE',
        description: 'the bundle file to write (on the stick)',
      }),
      maxSize: option(bytesSchema().optional(), {
        placeholder: 'BYTES',
        description: 'refuse (and write nothing) if the bundle would be larger: the free space on the stick',
      }),
      timeout: timeoutOption,
    })
    .refine((o) => !o.return || (o.relayDataDir === undefined) !== (o.coordinator === undefined), {
      path: ['relayDataDir'],
      message:
        "--return reads the site's relay: give the running relay's --coordinator URL (with its own --key), or the --relay-data-dir DIR of a stopped one; not both",
    })
    .refine((o) => !o.return || o.coordinator === undefined || o.key !== undefined, {
      path: ['key'],
      message:
        "--return --coordinator URL: give the relay's own key file with --key (the one its --key option names); the running relay answers only to it",
    })
    .refine((o) => !o.return || o.since === undefined, {
      path: ['since'],
      message: '--since is for bundles made at HQ; a return bundle carries the whole state of each status document',
    })
    .refine(
      (o) =>
        o.return ||
        (o.coordinator !== undefined && o.key !== undefined && o.host.length + o.relay.length + o.group.length > 0),
      {
        path: ['coordinator'],
        message:
          'give --coordinator URL, --key FILE and the site: --host ID, --relay NAME or --group NAME (or --return at the site)',
      },
    )
    .refine((o) => o.return || (o.relay.length === 0 && o.group.length === 0) || o.orgRoot.length > 0, {
      path: ['orgRoot'],
      message:
        '--relay and --group are resolved from the verified policy: give the pinned --org-root KEY (or name the hosts with --host)',
    })
    .refine((o) => o.cache === undefined || o.trustedCacheKey.length > 0, {
      path: ['trustedCacheKey'],
      message: "--cache needs the cache's --trusted-cache-key NAME:KEY (the key the agents pin)",
    }),
  examples: [
    'outpost bundle create --coordinator wss://fleet.example.org --key ~/.config/outpost/alice.key --host clinic-1 --host clinic-2 --cache https://cache.example.org --trusted-cache-key cache.example.org-1:AbC…= --site-has clinic.site-state.json --out /media/usb/clinic.outpost-bundle --max-size 4000000000',
    'outpost bundle create --coordinator wss://fleet.example.org --key ~/.config/outpost/alice.key --org-root ~/.config/outpost/org-root.pub --relay clinic-relay --cache https://cache.example.org --trusted-cache-key cache.example.org-1:AbC…= --out /media/usb/clinic.outpost-bundle',
    'outpost bundle create --coordinator wss://fleet.example.org --key ~/.config/outpost/alice.key --relay clinic-relay --org-root ~/.config/outpost/org-root.pub --since 2026-06-01T00:00:00Z --out /media/usb/clinic.outpost-bundle',
    'outpost bundle create --return --coordinator ws://127.0.0.1:8081 --key /var/lib/outpost-relay/relay.key --out /media/usb/clinic-return.outpost-bundle',
    'systemctl stop outpost-relay && outpost bundle create --return --relay-data-dir /var/lib/outpost-relay --key /var/lib/outpost-relay/relay.key --out /media/usb/clinic-return.outpost-bundle; systemctl start outpost-relay',
  ],
});

async function readSiteState(path: string | undefined, flag: string): Promise<SiteState | null> {
  if (!path) return null;
  const stat = await fs.stat(path).catch((error: Error) => {
    throw new Error(`${flag} ${path} cannot be read (${error.message})`);
  });
  if (stat.size > MAX_STATE_FILE_BYTES)
    throw new Error(`${flag} ${path} is ${stat.size} bytes, more than ${MAX_STATE_FILE_BYTES}: is it the right file?`);
  let raw: unknown;
  try {
    raw = JSON.parse(await fs.readFile(path, 'utf8'));
  } catch (error) {
    throw new Error(`${flag} ${path} is not JSON (${(error as Error).message})`);
  }
  const parsed = siteStateSchema.safeParse(raw);
  if (!parsed.success)
    throw new Error(
      `${flag} ${path}: expected {"documents": {"<name>": "<base64 state vector>"}, "storePaths": ["/nix/store/…"]} (${parsed.error.issues[0]?.path.join('.')}: ${parsed.error.issues[0]?.message}); bundle apply --save-site-state writes it`,
    );
  for (const [name, text] of Object.entries(parsed.data.documents)) {
    try {
      Y.decodeStateVector(fromBase64(text));
    } catch (error) {
      throw new Error(`${flag} ${path}: the state vector of ${name} is not base64 Yjs (${(error as Error).message})`);
    }
  }
  return parsed.data;
}

// The closure each host's newest intent (highest generation) names. Signatures are not judged
// here: an intent HQ's readers would refuse is refused at the site as well; carrying its closure
// costs only bytes.
function newestClosures(doc: (name: string) => Y.Doc, hosts: readonly string[]): Map<string, string[]> {
  const closures = new Map<string, string[]>();
  for (const host of hosts) {
    const entries = readIntentEntries(doc(desiredDocName(host))).entries;
    const newest = entries.reduce<(typeof entries)[number] | null>(
      (best, e) => (!best || e.signed.intent.generation > best.signed.intent.generation ? e : best),
      null,
    );
    if (!newest) continue;
    const closure = newest.signed.intent.closure;
    closures.set(closure, [...(closures.get(closure) ?? []), host]);
  }
  return closures;
}

function documentEntry(name: string, update: Uint8Array, full: boolean): BundleDocument {
  return { type: 'document', name, sha256: sha256(update), bytes: update.length, full };
}

function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

// The manifest of a bundle being made; one over the format's bounds names the bound.
function buildManifest(fields: Record<string, unknown>): BundleManifest {
  const parsed = bundleManifestSchema.safeParse({
    format: 'outpost-bundle',
    version: BUNDLE_FORMAT_VERSION,
    ...fields,
  });
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new Error(
      `the bundle would break a bound of the format (${issue.path.join('.')}: ${issue.message}); bundle fewer hosts at a time`,
    );
  }
  return parsed.data;
}

async function writeChecked(
  out: string,
  manifest: BundleManifest,
  sources: EntrySource[],
  maxSize: number | undefined,
  what: string,
): Promise<number> {
  const size = bundleFileSize(manifest);
  console.log(`${what}: ${size} bytes (${formatBytes(size)})`);
  if (maxSize !== undefined && size > maxSize) {
    console.error(
      `outpost bundle create: the bundle would be ${size} bytes, more than --max-size ${maxSize}; nothing was written. Use a larger stick, fewer --host, --since-state or --site-has`,
    );
    return 1;
  }
  await writeBundleFile(out, manifest, sources);
  console.log(`wrote ${out}`);
  return 0;
}

// The site's hosts: --host as given, plus those of --relay and --group under the policy walked
// from the pinned org root (a coordinator cannot widen or narrow the site by lying about it).
async function resolveSite(o: CreateOptions, key: SigningKey): Promise<string[] | null> {
  if (o.relay.length === 0 && o.group.length === 0) return [...new Set(o.host)].sort();
  const orgRoot = await resolvePublicKeys(createSpec, 'org-root', o.orgRoot);
  const authority = await readHostKeyAuthority(o.coordinator!, orgRoot, key, o.timeout * 1000);
  const site = siteHosts(authority.chain.at(-1)!, authority.bindings.keys(), {
    hosts: o.host,
    relays: o.relay,
    groups: o.group,
  });
  if (!site.ok) {
    console.error(`outpost bundle create: ${site.reason}; nothing was written`);
    return null;
  }
  for (const note of site.notes) console.log(`  ${note}`);
  return site.hosts;
}

// The state vector of `name` as HQ's log held it at `time`: the entries it received until then,
// read through the audit endpoint (the admin's key proof; `read` or `audit` on the host). The
// updates after it are what a --since bundle carries; the log never drops an entry, so nothing
// logged after `time` is left out. Entries are judged by the time each carries, not their order,
// as the coordinator's clock may have stepped back.
async function vectorAtTime(
  url: string,
  name: string,
  key: SigningKey,
  time: number,
  timeoutMs: number,
): Promise<Uint8Array> {
  const entries = await fetchDocumentLog(url, name, key, timeoutMs).catch((error: Error) => {
    throw new Error(`--since: cannot read the update log of ${name} (${error.message})`);
  });
  const doc = new Y.Doc({ gc: documentGarbageCollects(name) });
  for (const entry of entries) if (entry.receivedAt <= time) Y.applyUpdate(doc, entry.update);
  const vector = Y.encodeStateVector(doc);
  doc.destroy();
  return vector;
}

function sinceNote(o: CreateOptions): string {
  const since = o.since === undefined ? null : new Date(o.since).toISOString();
  if (o.sinceState && since)
    return ` (only what ${o.sinceState} lacks; for documents it does not name, updates since ${since})`;
  if (o.sinceState) return ` (only what ${o.sinceState} lacks)`;
  return since ? ` (only updates since ${since})` : '';
}

async function createToSite(o: CreateOptions): Promise<number> {
  const key = await readKeyFile(o.key!);
  const since = await readSiteState(o.sinceState, '--since-state');
  const siteHas = await readSiteState(o.siteHas, '--site-has');
  const hosts = await resolveSite(o, key);
  if (!hosts) return 1;
  const names = [...FLEET_DOCUMENTS, ...hosts.map(desiredDocName)];
  const doc = await readDocuments(o.coordinator!, names, key, o.timeout * 1000);
  // What the site is taken to hold of each document: its reported state vector (--since-state),
  // else what HQ's log held at --since, else nothing (the whole state goes).
  const vectors = new Map<string, Uint8Array>();
  for (const name of names) {
    const reported = since?.documents[name];
    if (reported) vectors.set(name, fromBase64(reported));
    else if (o.since !== undefined)
      vectors.set(name, await vectorAtTime(o.coordinator!, name, key, o.since, o.timeout * 1000));
  }
  const documents = names.map((name) => {
    const vector = vectors.get(name);
    const update = vector ? Y.encodeStateAsUpdate(doc(name), vector) : Y.encodeStateAsUpdate(doc(name));
    return { entry: documentEntry(name, update, !vector), source: { bytes: update } as EntrySource };
  });
  const files: { entry: BundleCacheFile; source: EntrySource }[] = [];
  let closureNote = '';
  if (o.cache) {
    const closures = newestClosures(doc, hosts);
    const plan = await planCacheFiles(
      o.cache,
      [...closures.keys()],
      o.trustedCacheKey,
      new Set(siteHas?.storePaths ?? []),
      o.timeout * 1000,
    );
    files.push(...plan.files);
    closureNote = `, ${closures.size} closure${closures.size === 1 ? '' : 's'} (${plan.paths} store paths, ${plan.paths - plan.leftOut} carried, ${plan.leftOut} left out as the site has them; NARs ${formatBytes(plan.narBytes)})`;
    for (const host of hosts)
      if (![...closures.values()].some((h) => h.includes(host)))
        console.log(`  ${host}: no intent yet, so no closure for it`);
  }
  const all = [...documents, ...files];
  const manifest = buildManifest({
    direction: 'to-site',
    createdAt: new Date().toISOString(),
    creator: { name: key.name, publicKey: key.publicKey },
    source: o.coordinator!,
    hosts,
    entries: all.map((e) => e.entry),
  });
  return writeChecked(
    o.out,
    manifest,
    all.map((e) => e.source),
    o.maxSize,
    `bundle for ${hosts.length} host${hosts.length === 1 ? '' : 's'} (${hosts.join(', ')}): ${documents.length} documents${sinceNote(o)}${closureNote}`,
  );
}

const issueText = (error: z.ZodError): string => `${error.issues[0]?.path.join('.')}: ${error.issues[0]?.message}`;

// What the running site relay answers at RETURN_DATA_PATH (relay/bundle-return-data.ts), asked
// with a proof by its own key: NDJSON read as it arrives, each line and the whole answer bounded,
// complete only with its closing line.
async function fetchReturnData(url: string, key: SigningKey, timeoutMs: number): Promise<ReturnData> {
  const target = `${httpBaseFromWs(url)}${RETURN_DATA_PATH}`;
  let response: Response;
  try {
    response = await fetch(target, {
      headers: await fetchAuthHeaders(target, key, timeoutMs),
      signal: AbortSignal.timeout(Math.max(timeoutMs, 60_000)),
    });
  } catch (error) {
    const cause = (error as { cause?: Error }).cause;
    throw new Error(
      `cannot reach the site relay at ${target}: ${cause?.message ?? (error as Error).message}; is it running? (or stop it and give --relay-data-dir DIR)`,
    );
  }
  if (!response.ok || !response.body) {
    const body = (await response.json().catch(() => ({}))) as { error?: unknown };
    throw new Error(
      `${target} answered HTTP ${response.status}${typeof body.error === 'string' ? `: ${body.error.slice(0, 1024)}` : ''}`,
    );
  }
  const data: ReturnData = { states: new Map(), vectors: new Map(), storePaths: [] };
  let ended = false;
  let total = 0;
  let pending: Uint8Array[] = [];
  let pendingBytes = 0;
  const takeLine = (bytes: Uint8Array): void => {
    if (bytes.length === 0) return;
    if (ended) throw new Error(`${target} answered more after its closing line`);
    let raw: unknown;
    try {
      raw = JSON.parse(new TextDecoder().decode(bytes));
    } catch {
      raw = null;
    }
    if (typeof raw === 'object' && raw !== null && 'end' in raw) {
      const end = returnDataEndSchema.safeParse(raw);
      if (!end.success) throw new Error(`${target} answered a closing line that is not one (${issueText(end.error)})`);
      if (end.data.documents !== data.vectors.size)
        throw new Error(`${target} named ${end.data.documents} documents but sent ${data.vectors.size}`);
      data.storePaths = end.data.storePaths;
      ended = true;
      return;
    }
    const line = returnDataDocumentSchema.safeParse(raw);
    if (!line.success) throw new Error(`${target} answered a line that is not return data (${issueText(line.error)})`);
    const { document, vector, state } = line.data;
    if (data.vectors.size >= MAX_DOCUMENTS) throw new Error(`${target} sent more than ${MAX_DOCUMENTS} documents`);
    data.vectors.set(document, fromBase64(vector));
    if (state === undefined) return;
    if (parseDocName(document)?.role !== 'status')
      throw new Error(`${target} sent the state of ${document}; a return bundle carries only hosts/<id>/status`);
    data.states.set(document, fromBase64(state));
  };
  for await (const chunk of response.body as AsyncIterable<Uint8Array>) {
    total += chunk.length;
    if (total > MAX_RETURN_DATA_BYTES)
      throw new Error(
        `${target} answered more than ${MAX_RETURN_DATA_BYTES} bytes; stop the relay and use --relay-data-dir`,
      );
    let from = 0;
    for (let newline = chunk.indexOf(10); newline !== -1; newline = chunk.indexOf(10, from)) {
      pending.push(chunk.subarray(from, newline));
      takeLine(Buffer.concat(pending));
      pending = [];
      pendingBytes = 0;
      from = newline + 1;
    }
    if (from < chunk.length) {
      pending.push(chunk.subarray(from));
      pendingBytes += chunk.length - from;
      if (pendingBytes > MAX_RETURN_DATA_LINE_BYTES)
        throw new Error(`${target} answered a line over ${MAX_RETURN_DATA_LINE_BYTES} bytes`);
    }
  }
  takeLine(Buffer.concat(pending));
  if (!ended) throw new Error(`${target} ended its answer early (no closing line): try again`);
  return data;
}

async function createReturn(o: CreateOptions): Promise<number> {
  const relayKey = o.key ? await readKeyFile(o.key) : null;
  // A running relay (its URL, asked with its own key) or a stopped one's data directory.
  const source = o.coordinator ?? o.relayDataDir!;
  const { states, vectors, storePaths } = o.coordinator
    ? await fetchReturnData(o.coordinator, relayKey!, o.timeout * 1000)
    : await (await loadDataDir()).read(o.relayDataDir!, (name) => parseDocName(name)?.role === 'status');
  const entries = [...states].map(([name, update]) => ({
    entry: documentEntry(name, update, true),
    source: { bytes: update } as EntrySource,
  }));
  const siteState: SiteState = {
    documents: Object.fromEntries([...vectors].map(([name, vector]) => [name, toBase64(vector)])),
    storePaths,
  };
  const hosts = [...states.keys()].map((name) => parseDocName(name)!.host);
  const unsigned = buildManifest({
    direction: 'return',
    createdAt: new Date().toISOString(),
    creator: relayKey ? { name: relayKey.name, publicKey: relayKey.publicKey } : { name: 'site', publicKey: '' },
    source,
    hosts,
    entries: entries.map((e) => e.entry),
    siteState,
  });
  // Signed by the site relay: HQ's running coordinator checks the key against the policy's relays.
  const manifest = relayKey ? signReturnManifest(unsigned, relayKey) : unsigned;
  if (!relayKey)
    console.log(
      "  not signed (no --key): only a stopped coordinator's data directory takes it at HQ; give the relay's --key to make one a running coordinator takes",
    );
  return writeChecked(
    o.out,
    manifest,
    entries.map((e) => e.source),
    o.maxSize,
    `return bundle${relayKey ? ` signed by ${relayKey.name} (${relayKey.publicKey})` : ''}: ${entries.length} status document${entries.length === 1 ? '' : 's'} (${hosts.join(', ') || 'none'}), state of ${vectors.size} documents, ${siteState.storePaths.length} cached store paths`,
  );
}

type CreateOptions = WithOptionalCoordinator<z.infer<typeof createSpec.options>>;
const createCommand = subcommand(
  createSpec,
  reachingOptionalCoordinator((o) => (o.return ? createReturn(o) : createToSite(o))),
);

const applySpec = defineCommand({
  name: 'bundle apply',
  summary:
    "check a bundle's hashes and signatures, then merge its updates into a server and its closures into the site's cache",
  usage:
    'outpost bundle apply --bundle FILE [--coordinator URL [--key FILE] | --relay-data-dir DIR] [--cache-dir DIR] [--trusted-cache-key NAME:KEY] [--save-site-state FILE]',
  options: z
    .object({
      bundle: option(z.string().min(1, 'give the bundle file with --bundle'), {
        placeholder: 'FILE',
        description: 'the bundle file (from outpost bundle create)',
      }),
      coordinator: option(coordinatorListSchema.optional(), {
        placeholder: 'URL',
        description:
          "the site's relay or coordinator, ws:// or wss://, reachable from here; for a return bundle, HQ's running coordinator (several of one fleet: the first that answers)",
      }),
      relayDataDir: option(z.string().min(1).optional(), {
        placeholder: 'DIR',
        description:
          "the --data-dir of the site's relay (or of HQ's coordinator, for a return bundle), stopped: the updates are appended to its update log, the closures go into its cache mirror (DIR/nix-cache)",
      }),
      cacheDir: option(z.string().min(1).optional(), {
        placeholder: 'DIR',
        description:
          "put the bundle's closures into this directory as a Nix binary cache (a host with no relay: serve it with outpost bundle serve-cache)",
      }),
      trustedCacheKey: option(z.array(cacheKeySchema).default([]), {
        placeholder: 'NAME:KEY',
        description:
          "the cache key the site's agents pin: every narinfo in the bundle must verify with it before anything is put in place",
      }),
      saveSiteState: option(z.string().min(1).optional(), {
        placeholder: 'FILE',
        description:
          "a return bundle: write what the site holds (state vectors, cached store paths) here, for the next bundle create's --since-state and --site-has",
      }),
      key: option(z.string().min(1).optional(), {
        placeholder: 'FILE',
        description:
          "an admin key file the server accepts writes from (none: open-mode servers); for a return bundle into HQ's running coordinator, an admin with deploy on the bundle's hosts",
      }),
      timeout: timeoutOption,
    })
    .refine((o) => o.coordinator === undefined || o.relayDataDir === undefined, {
      path: ['coordinator'],
      message:
        'give one target for the documents: --coordinator URL (a running server) or --relay-data-dir DIR (a stopped relay or coordinator)',
    })
    .refine((o) => o.coordinator !== undefined || o.relayDataDir !== undefined || o.cacheDir !== undefined, {
      path: ['coordinator'],
      message:
        'give a target: --coordinator URL (a running server), --relay-data-dir DIR (a stopped relay or coordinator) or --cache-dir DIR (closures only)',
    }),
  examples: [
    'systemctl stop outpost-relay && outpost bundle apply --bundle /media/usb/clinic.outpost-bundle --relay-data-dir /var/lib/outpost-relay --trusted-cache-key cache.example.org-1:AbC…= && systemctl start outpost-relay',
    'outpost bundle apply --bundle /media/usb/clinic.outpost-bundle --cache-dir /var/lib/outpost-bundle-cache --trusted-cache-key cache.example.org-1:AbC…= --coordinator ws://127.0.0.1:8080 --key alice.key',
    'outpost bundle apply --bundle /media/usb/clinic-return.outpost-bundle --coordinator wss://fleet.example.org --key ~/.config/outpost/alice.key --save-site-state clinic.site-state.json',
  ],
});

// What happened to one document: the server already had everything (a second apply, an older
// bundle), took it, or refused it (its reason).
type Outcome = BundleOutcome;

// Writes every update that adds something through a sync connection, then reads each such
// document again on a fresh connection until the server holds it: a refused write (the server
// closes the writer's connection with its reason) is reported, never taken for success.
async function applyThroughServer(
  url: string,
  updates: ReadonlyMap<string, Uint8Array>,
  identity: SigningKey | null,
  timeoutMs: number,
): Promise<Map<string, Outcome>> {
  const outcomes = new Map<string, Outcome>();
  const writers: { connection: DocumentConnection; update: Uint8Array; closes: string[] }[] = [];
  try {
    for (const [name, update] of updates) {
      const connection = connectDocument(url, name, { identity, maxBackoffMs: 1000 });
      const closes: string[] = [];
      connection.provider.on('connection-close', (event: { code: number; reason?: string } | null) => {
        if (event && event.code !== 1000) closes.push(`${event.code} ${event.reason ?? ''}`.trim());
      });
      writers.push({ connection, update, closes });
      try {
        await syncOrRefusal(connection, identity, timeoutMs);
      } catch (error) {
        outcomes.set(name, { kind: 'refused', reason: (error as Error).message });
        continue;
      }
      if (update.length === 0 || holds(connection.doc, update)) {
        outcomes.set(name, { kind: 'had' });
        continue;
      }
      if (missingDependencies(connection.doc, update)) {
        outcomes.set(name, { kind: 'refused', reason: MISSING_DEPENDENCIES_REASON });
        continue;
      }
      // Items first, then deletions, each sent on its own: the server keeps the content of results
      // the update carries deleted (shared/documents/history-forward.ts).
      for (const part of itemsFirst(update)) Y.applyUpdate(connection.doc, part, 'bundle');
    }
    const pending = writers.filter((w) => !outcomes.has(w.connection.name));
    const deadline = Date.now() + timeoutMs;
    while (pending.length > 0) {
      const doc = await readDocuments(
        url,
        pending.map((w) => w.connection.name),
        identity,
        Math.max(1000, deadline - Date.now()),
      );
      for (let i = pending.length - 1; i >= 0; i -= 1) {
        const writer = pending[i]!;
        if (holds(doc(writer.connection.name), writer.update)) {
          outcomes.set(writer.connection.name, { kind: 'changed' });
          pending.splice(i, 1);
        } else if (writer.closes.length > 0 || Date.now() > deadline) {
          outcomes.set(writer.connection.name, {
            kind: 'refused',
            reason: writer.closes.length
              ? `${url} closed the connection on the write (${writer.closes[0]})`
              : `${url} did not keep the update within the timeout`,
          });
          pending.splice(i, 1);
        }
      }
      if (pending.length > 0) await new Promise((resolve) => setTimeout(resolve, 200));
    }
  } finally {
    for (const w of writers) w.connection.close();
  }
  return outcomes;
}

const returnAnswerSchema = z.looseObject({
  error: z.string().max(4096).optional(),
  documents: z
    .array(
      z.looseObject({
        name: z.string().max(256),
        outcome: z.enum(['changed', 'had', 'refused']),
        reason: z.string().max(4096).optional(),
      }),
    )
    .max(MAX_DOCUMENTS)
    .optional(),
});

// Streams a return bundle to a running coordinator's RETURN_BUNDLE_PATH with the admin's key
// proof; its answer is per document, or a refusal of the whole bundle.
async function postReturnBundle(
  url: string,
  file: string,
  identity: SigningKey | null,
  timeoutMs: number,
): Promise<{ ok: true; outcomes: Map<string, Outcome> } | { ok: false; reason: string }> {
  const target = `${httpBaseFromWs(url)}${RETURN_BUNDLE_PATH}`;
  const size = (await fs.stat(file)).size;
  let response: Response;
  try {
    response = await fetch(target, {
      method: 'POST',
      headers: {
        ...(await proofHeaders(target, identity)),
        'content-type': 'application/octet-stream',
        'content-length': String(size),
      },
      body: Readable.toWeb(createReadStream(file)) as ReadableStream<Uint8Array>,
      duplex: 'half',
      signal: AbortSignal.timeout(Math.max(timeoutMs, 60_000)),
    } as RequestInit);
  } catch (error) {
    const cause = (error as { cause?: Error }).cause;
    return { ok: false, reason: `cannot reach ${target}: ${cause?.message ?? (error as Error).message}` };
  }
  const body = returnAnswerSchema.safeParse(await response.json().catch(() => null));
  if (!response.ok || !body.success || !body.data.documents)
    return {
      ok: false,
      reason: `${target} answered HTTP ${response.status}${body.success && body.data.error ? `: ${body.data.error}` : ''}`,
    };
  return {
    ok: true,
    outcomes: new Map(
      body.data.documents.map((d) => [
        d.name,
        d.outcome === 'refused'
          ? { kind: 'refused', reason: d.reason ?? 'no reason given' }
          : { kind: d.outcome === 'changed' ? 'changed' : 'had' },
      ]),
    ),
  };
}

let loadDataDir: () => Promise<DataDirAccess> = () =>
  Promise.reject(new Error('internal: data directories are not available in this build'));

// Which documents each direction may carry: to a site what create writes (a host's status, where
// its signed results live, is never written at a site from outside); back to HQ only statuses.
function foreignDocuments(manifest: BundleManifest): string[] {
  return manifest.entries
    .filter((e): e is BundleDocument => e.type === 'document')
    .filter((d) =>
      manifest.direction === 'return'
        ? parseDocName(d.name)?.role !== 'status'
        : !FLEET_DOCUMENTS.includes(d.name) && parseDocName(d.name)?.role !== 'desired',
    )
    .map((d) => d.name);
}

interface StagedCache {
  dir: string;
  staging: string;
  // Cache files written to staging, and those the target already held byte for byte.
  staged: BundleCacheFile[];
  held: BundleCacheFile[];
}

// Puts the staged files in place: NARs first, then narinfos, so an agent never reads a narinfo
// whose NAR is not there yet; an existing nix-cache-info is kept.
async function placeCacheFiles(cache: StagedCache): Promise<void> {
  await fs.mkdir(join(cache.dir, 'nar'), { recursive: true });
  const order = (e: BundleCacheFile): number => (e.path.startsWith('nar/') ? 0 : e.path.endsWith('.narinfo') ? 1 : 2);
  for (const entry of [...cache.staged].sort((a, b) => order(a) - order(b))) {
    const target = join(cache.dir, entry.path);
    if (entry.path === 'nix-cache-info' && (await fs.stat(target).catch(() => null))) continue;
    await fs.rename(join(cache.staging, entry.path), target);
  }
}

const refuse = (file: string, reason: string): number => {
  console.error(`outpost bundle apply: refused ${file}: ${reason}; nothing was applied`);
  return 1;
};

const applyCommand = subcommand(
  applySpec,
  reachingOptionalCoordinator(async (o) => {
    await fs.stat(o.bundle).catch((error: Error) => {
      throw new Error(`--bundle ${o.bundle} cannot be read (${error.message})`);
    });
    const opened = await openBundleFile(o.bundle);
    if (!opened.ok) return refuse(o.bundle, opened.reason);
    const { manifest } = opened;
    const foreign = foreignDocuments(manifest);
    if (foreign.length)
      return refuse(
        o.bundle,
        manifest.direction === 'return'
          ? `this return bundle names ${foreign.join(', ')}, but a return bundle carries only hosts/<id>/status documents`
          : `it names ${foreign.join(', ')}, which a bundle does not carry (only fleet/policy, fleet/enrollment, fleet/timestamp and hosts/<id>/desired)`,
      );
    const cacheEntries = manifest.entries.filter((e): e is BundleCacheFile => e.type === 'cache');
    const documentCount = manifest.entries.length - cacheEntries.length;
    const documentTarget = o.coordinator ?? o.relayDataDir;
    if (documentCount > 0 && !documentTarget)
      return refuse(
        o.bundle,
        `it carries ${documentCount} documents and no target for them was given: add --coordinator URL or --relay-data-dir DIR`,
      );
    const cacheDir = o.cacheDir ?? (o.relayDataDir ? join(o.relayDataDir, 'nix-cache') : undefined);
    if (cacheEntries.length > 0) {
      if (!cacheDir)
        return refuse(
          o.bundle,
          `it carries ${cacheEntries.length} binary-cache files: give --relay-data-dir DIR (the relay's cache mirror) or --cache-dir DIR`,
        );
      if (o.trustedCacheKey.length === 0)
        return refuse(
          o.bundle,
          `it carries ${cacheEntries.length} binary-cache files: give --trusted-cache-key NAME:KEY (the key the site's agents pin), so the narinfos are checked before anything is put in place`,
        );
    }
    console.log(
      `${manifest.direction === 'return' ? 'return bundle' : 'bundle'} of ${manifest.createdAt} from ${manifest.source} (made with key ${manifest.creator.name}): ${documentCount} documents, ${cacheEntries.length} cache files, ${formatBytes(opened.fileBytes)}`,
    );

    // Pass 1: every byte read once and checked; documents kept in memory, cache files staged next
    // to their target (same file system, so placing them is a rename).
    const updates = new Map<string, Uint8Array>();
    const narinfoTexts = new Map<string, Uint8Array>();
    const cache: StagedCache | null = cacheDir
      ? {
          dir: cacheDir,
          staging: join(cacheDir, 'tmp', `bundle-${randomBytes(6).toString('hex')}`),
          staged: [],
          held: [],
        }
      : null;
    try {
      if (cache && cacheEntries.length > 0) {
        // Staging left by an apply that was stopped part way: never reused, so removed.
        const tmp = join(cache.dir, 'tmp');
        for (const name of await fs.readdir(tmp).catch(() => [] as string[]))
          if (name.startsWith('bundle-')) await fs.rm(join(tmp, name), { recursive: true, force: true });
        await fs.mkdir(join(cache.staging, 'nar'), { recursive: true });
      }
      const checked = await readBundleEntries(opened, async (entry) => {
        const chunks: Uint8Array[] = [];
        if (entry.type === 'document')
          return {
            write: (chunk) => void chunks.push(chunk),
            end: () => void updates.set(entry.name, Buffer.concat(chunks)),
          };
        const keepText = entry.path.endsWith('.narinfo');
        if (await cacheHolds(cache!.dir, entry)) {
          cache!.held.push(entry);
          return {
            write: (chunk) => void (keepText && chunks.push(chunk)),
            end: () => void (keepText && narinfoTexts.set(entry.path, Buffer.concat(chunks))),
          };
        }
        cache!.staged.push(entry);
        const handle = await fs.open(join(cache!.staging, entry.path), 'w');
        return {
          write: async (chunk) => {
            if (keepText) chunks.push(chunk);
            await handle.write(chunk);
          },
          end: async () => {
            if (keepText) narinfoTexts.set(entry.path, Buffer.concat(chunks));
            await handle.sync();
            await handle.close();
          },
        };
      });
      if (!checked.ok) return refuse(o.bundle, checked.reason);
      let storePaths: string[] = [];
      if (cache && cacheEntries.length > 0) {
        const verdict = await checkCacheFiles(cacheEntries, narinfoTexts, o.trustedCacheKey, cache.dir);
        if (!verdict.ok) return refuse(o.bundle, verdict.reason);
        storePaths = verdict.paths;
      }

      // Pass 2: everything checked; apply.
      let failed = 0;
      if (documentCount > 0) failed = await applyDocuments(o, manifest, updates);
      if (cache && cacheEntries.length > 0) {
        await placeCacheFiles(cache);
        const stagedBytes = cache.staged.reduce((sum, e) => sum + e.bytes, 0);
        console.log(
          `binary cache ${cache.dir}: ${storePaths.length} store paths checked against ${o.trustedCacheKey.map((k) => k.split(':')[0]).join(', ')}; ${cache.staged.length} files added (${formatBytes(stagedBytes)}), ${cache.held.length} already there`,
        );
      }
      if (manifest.direction === 'return' && o.saveSiteState && manifest.siteState) {
        await writeFileDurably(o.saveSiteState, `${JSON.stringify(manifest.siteState, null, 2)}\n`);
        console.log(
          `wrote the site's state (${Object.keys(manifest.siteState.documents).length} documents, ${manifest.siteState.storePaths.length} cached store paths) to ${o.saveSiteState}: give it to the next bundle create as --since-state and --site-has`,
        );
      }
      return failed ? 1 : 0;
    } finally {
      if (cache) await fs.rm(cache.staging, { recursive: true, force: true });
    }
  }),
);

async function applyDocuments(
  o: WithOptionalCoordinator<z.infer<typeof applySpec.options>>,
  manifest: BundleManifest,
  updates: Map<string, Uint8Array>,
): Promise<number> {
  const target = o.coordinator ?? o.relayDataDir!;
  const identity = o.key ? await readKeyFile(o.key) : null;
  let outcomes: Map<string, Outcome>;
  if (o.coordinator && manifest.direction === 'return') {
    // A running coordinator takes a return bundle through its endpoint, which checks the relay's
    // signature and scope and the admin's capability (coordinator/bundle-return.ts).
    const posted = await postReturnBundle(o.coordinator, o.bundle, identity, o.timeout * 1000);
    if (!posted.ok) {
      console.error(`outpost bundle apply: refused ${o.bundle}: ${posted.reason}; nothing was applied`);
      return Math.max(1, updates.size);
    }
    outcomes = posted.outcomes;
  } else if (o.coordinator) {
    outcomes = await applyThroughServer(o.coordinator, updates, identity, o.timeout * 1000);
  } else {
    outcomes = await (await loadDataDir()).apply(o.relayDataDir!, updates, `bundle:${manifest.creator.name}`);
  }
  let refused = 0;
  const counts = { changed: 0, had: 0 };
  for (const name of updates.keys()) {
    const outcome = outcomes.get(name) ?? { kind: 'refused', reason: `${target} did not answer for it` };
    if (outcome.kind === 'refused') {
      refused += 1;
      console.log(`  ${name}: refused: ${outcome.reason}`);
    } else {
      counts[outcome.kind] += 1;
      console.log(`  ${name}: ${outcome.kind === 'changed' ? 'changed' : 'already had it'}`);
    }
  }
  console.log(
    `${counts.changed} document${counts.changed === 1 ? '' : 's'} changed, ${counts.had} already had it${refused ? `, ${refused} refused` : ''}`,
  );
  if (refused)
    console.error(
      `outpost bundle apply: ${target} refused ${refused} document${refused === 1 ? '' : 's'} (above); the others were applied. Fleet documents are written only by a coordinator that checks each entry: see docs/sneakernet.md`,
    );
  return refused;
}

export const bundleCommandGroup: CommandGroup = {
  name: 'bundle',
  summary: 'carry updates and closures to a site with no link on a USB stick, and its results back (sneakernet)',
  subcommands: [createCommand, applyCommand, serveCacheCommand],
  notes: [
    'Nothing in a bundle is trusted: agents and readers verify every signed intent, policy, checkpoint, status and result in it as always, and apply checks every narinfo against --trusted-cache-key. The hashes catch damaged, cut-short or edited files; apply refuses those and changes nothing.',
    'Applying a bundle twice, or an older one after a newer one, changes nothing (Yjs updates are idempotent; cache files already there are kept).',
  ],
};

export function runBundleCommand(argv: string[], dataDir: () => Promise<DataDirAccess>): Promise<number> {
  loadDataDir = dataDir;
  return runGroup(bundleCommandGroup, argv);
}
