import { promises as fs } from 'node:fs';
import * as Y from 'yjs';
import { z } from 'zod';
import { type CommandGroup, runGroup, subcommand } from '../cli/command.js';
import { durationSchema } from '../cli/duration.js';
import { bytesSchema, defineCommand, option } from '../cli/options.js';
import { type BundleOutcome, type DataDirApply, holds } from '../shared/bundle/apply.js';
import {
  type BundleEntry,
  decodeBundle,
  encodeBundle,
  encodedBundleSize,
  MAX_DOCUMENTS,
  manifestFor,
} from '../shared/bundle/format.js';
import { fromBase64 } from '../shared/crypto/encoding.js';
import type { SigningKey } from '../shared/crypto/keys.js';
import { ENROLLMENT_DOC, POLICY_DOC, TIMESTAMP_DOC } from '../shared/documents/fleet.js';
import { desiredDocName, parseDocName } from '../shared/documents/names.js';
import { connectDocument, type DocumentConnection } from '../shared/node/connect.js';
import { writeFileDurably } from '../shared/node/durable-file.js';
import { readKeyFile } from '../shared/node/key-file.js';
import { hostIdSchema } from '../shared/schemas/primitives.js';
import { readDocuments, syncOrRefusal } from './policy-remote.js';

// `outpost bundle` (issue 16, docs/sneakernet.md): carry document updates to a site with no link
// on a USB stick. `create` reads what a key may read from a coordinator and writes one file;
// `apply` checks every hash in it first, then writes the updates into a server at the site as a
// sync client, so the server's own write checks apply and its agents sync as if the link had
// carried them. Nothing in a bundle is trusted: the intents, policies and checkpoints inside are
// signed, and every reader verifies them as always.

// The fleet documents a site needs to verify what the hosts' documents say: the signed policy
// chain, the enrollment records binding host keys, and the signed log checkpoints (freshness).
const FLEET_DOCUMENTS = [POLICY_DOC, ENROLLMENT_DOC, TIMESTAMP_DOC];
// A bundle is read whole into memory: documents only (NARs are not carried yet).
const MAX_BUNDLE_FILE_BYTES = 512 * 1024 * 1024;
const MAX_STATE_FILE_BYTES = 16 * 1024 * 1024;

const coordinatorOption = option(z.string().regex(/^wss?:\/\//, 'expected a ws:// or wss:// URL'), {
  placeholder: 'URL',
  description: 'coordinator or relay, ws:// or wss://',
  common: 'coordinator',
});
const timeoutOption = option(durationSchema.prefault('30s'), {
  placeholder: 'DURATION',
  description: 'how long to wait for the server',
  common: 'timeout',
});

const sinceStateSchema = z.object({
  documents: z.record(z.string(), z.string().max(4 * 1024 * 1024)),
});

const createSpec = defineCommand({
  name: 'bundle create',
  summary: 'write the updates a site with no link is missing into one file, for a USB stick',
  usage:
    'outpost bundle create --coordinator URL --key FILE --host ID [--host ID…] [--since-state FILE] --out FILE [--max-size BYTES]',
  options: z.object({
    coordinator: coordinatorOption,
    key: option(z.string().min(1, 'give your admin key file'), {
      placeholder: 'FILE',
      description: "your admin key file (outpost keygen): it must be allowed to read the hosts' documents",
      common: 'key',
    }),
    host: option(z.array(hostIdSchema).min(1, 'name at least one host of the site with --host').max(MAX_DOCUMENTS), {
      placeholder: 'ID',
      description: 'a host of the site (repeat for each): its desired document goes in the bundle',
    }),
    sinceState: option(z.string().min(1).optional(), {
      placeholder: 'FILE',
      description:
        'JSON {"documents": {"<name>": "<base64 Yjs state vector>"}}: carry only what the site lacks beyond these',
      defaultText: 'everything (the whole state of each document)',
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
  }),
  examples: [
    'outpost bundle create --coordinator wss://fleet.example.org --key ~/.config/outpost/alice.key --host clinic-1 --host clinic-2 --out /media/usb/clinic.outpost-bundle --max-size 4000000000',
  ],
});

async function readSinceState(path: string | undefined): Promise<Map<string, Uint8Array>> {
  const vectors = new Map<string, Uint8Array>();
  if (!path) return vectors;
  const stat = await fs.stat(path).catch((error: Error) => {
    throw new Error(`--since-state ${path} cannot be read (${error.message})`);
  });
  if (stat.size > MAX_STATE_FILE_BYTES)
    throw new Error(
      `--since-state ${path} is ${stat.size} bytes, more than ${MAX_STATE_FILE_BYTES}: is it the right file?`,
    );
  let raw: unknown;
  try {
    raw = JSON.parse(await fs.readFile(path, 'utf8'));
  } catch (error) {
    throw new Error(`--since-state ${path} is not JSON (${(error as Error).message})`);
  }
  const parsed = sinceStateSchema.safeParse(raw);
  if (!parsed.success)
    throw new Error(
      `--since-state ${path}: expected {"documents": {"<name>": "<base64 state vector>"}} (${parsed.error.issues[0]?.message})`,
    );
  for (const [name, text] of Object.entries(parsed.data.documents)) {
    let vector: Uint8Array;
    try {
      vector = fromBase64(text);
      Y.decodeStateVector(vector);
    } catch (error) {
      throw new Error(
        `--since-state ${path}: the state vector of ${name} is not base64 Yjs (${(error as Error).message})`,
      );
    }
    vectors.set(name, vector);
  }
  return vectors;
}

const createCommand = subcommand(createSpec, async (o) => {
  const key = await readKeyFile(o.key);
  const since = await readSinceState(o.sinceState);
  const hosts = [...new Set(o.host)].sort();
  const names = [...FLEET_DOCUMENTS, ...hosts.map(desiredDocName)];
  const doc = await readDocuments(o.coordinator, names, key, o.timeout * 1000);
  const entries: BundleEntry[] = names.map((name) => {
    const vector = since.get(name);
    return {
      name,
      update: vector ? Y.encodeStateAsUpdate(doc(name), vector) : Y.encodeStateAsUpdate(doc(name)),
      full: !vector,
    };
  });
  const manifest = manifestFor(entries, {
    createdAt: new Date().toISOString(),
    creator: { name: key.name, publicKey: key.publicKey },
    source: o.coordinator,
    hosts,
  });
  const size = encodedBundleSize(manifest);
  console.log(
    `bundle for ${hosts.length} host${hosts.length === 1 ? '' : 's'} (${hosts.join(', ')}): ${entries.length} documents, ${size} bytes${o.sinceState ? ` (only what ${o.sinceState} lacks)` : ''}`,
  );
  if (o.maxSize !== undefined && size > o.maxSize) {
    console.error(
      `outpost bundle create: the bundle would be ${size} bytes, more than --max-size ${o.maxSize}; nothing was written. Use a larger stick, fewer --host, or --since-state`,
    );
    return 1;
  }
  await writeFileDurably(o.out, encodeBundle(manifest, entries));
  console.log(`wrote ${o.out}`);
  return 0;
});

const applySpec = defineCommand({
  name: 'bundle apply',
  summary: "check a bundle's hashes, then merge its updates into a server at the site",
  usage: 'outpost bundle apply --bundle FILE (--coordinator URL [--key FILE] | --relay-data-dir DIR)',
  options: z
    .object({
      bundle: option(z.string().min(1, 'give the bundle file with --bundle'), {
        placeholder: 'FILE',
        description: 'the bundle file (from outpost bundle create)',
      }),
      coordinator: option(
        z
          .string()
          .regex(/^wss?:\/\//, 'expected a ws:// or wss:// URL')
          .optional(),
        {
          placeholder: 'URL',
          description: "the site's relay or coordinator, ws:// or wss://, reachable from here",
        },
      ),
      relayDataDir: option(z.string().min(1).optional(), {
        placeholder: 'DIR',
        description:
          "the --data-dir of the site's relay (or coordinator), stopped: the updates are appended to its update log, and on start it checks them like updates from upstream",
      }),
      key: option(z.string().min(1).optional(), {
        placeholder: 'FILE',
        description: "an admin key file the site's server accepts writes from (none: open-mode servers)",
      }),
      timeout: timeoutOption,
    })
    .refine((o) => (o.coordinator === undefined) !== (o.relayDataDir === undefined), {
      path: ['coordinator'],
      message:
        'give exactly one target: --coordinator URL (a running server) or --relay-data-dir DIR (a stopped relay)',
    }),
  examples: [
    'outpost bundle apply --bundle /media/usb/clinic.outpost-bundle --coordinator ws://127.0.0.1:8080 --key alice.key',
    'systemctl stop outpost-relay && outpost bundle apply --bundle /media/usb/clinic.outpost-bundle --relay-data-dir /var/lib/outpost-relay && systemctl start outpost-relay',
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
      Y.applyUpdate(connection.doc, update, 'bundle');
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

let loadDataDirApply: () => Promise<DataDirApply> = () =>
  Promise.reject(new Error('internal: --relay-data-dir is not available in this build'));

const applyCommand = subcommand(applySpec, async (o) => {
  const stat = await fs.stat(o.bundle).catch((error: Error) => {
    throw new Error(`--bundle ${o.bundle} cannot be read (${error.message})`);
  });
  if (stat.size > MAX_BUNDLE_FILE_BYTES) {
    console.error(
      `outpost bundle apply: ${o.bundle} is ${stat.size} bytes, more than ${MAX_BUNDLE_FILE_BYTES}: not a bundle this outpost writes; nothing was applied`,
    );
    return 1;
  }
  const decoded = decodeBundle(new Uint8Array(await fs.readFile(o.bundle)));
  if (!decoded.ok) {
    console.error(`outpost bundle apply: refused ${o.bundle}: ${decoded.reason}; nothing was applied`);
    return 1;
  }
  const { manifest, updates } = decoded.bundle;
  // Only what create writes: a bundle naming other documents (a host's status, where its signed
  // results live) was not made by outpost bundle create.
  const foreign = manifest.documents.filter(
    (d) => !FLEET_DOCUMENTS.includes(d.name) && parseDocName(d.name)?.role !== 'desired',
  );
  if (foreign.length) {
    console.error(
      `outpost bundle apply: refused ${o.bundle}: it names ${foreign.map((d) => d.name).join(', ')}, which a bundle does not carry (only fleet/policy, fleet/enrollment, fleet/timestamp and hosts/<id>/desired); nothing was applied`,
    );
    return 1;
  }
  console.log(
    `bundle of ${manifest.createdAt} from ${manifest.source} (made with key ${manifest.creator.name}): ${manifest.documents.length} documents, hashes match`,
  );
  const target = o.coordinator ?? o.relayDataDir!;
  const outcomes = o.coordinator
    ? await applyThroughServer(o.coordinator, updates, o.key ? await readKeyFile(o.key) : null, o.timeout * 1000)
    : await (await loadDataDirApply())(o.relayDataDir!, updates, `bundle:${manifest.creator.name}`);
  let refused = 0;
  const counts = { changed: 0, had: 0 };
  for (const { name } of manifest.documents) {
    const outcome = outcomes.get(name)!;
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
  if (refused) {
    console.error(
      `outpost bundle apply: ${target} refused ${refused} document${refused === 1 ? '' : 's'} (above); the others were applied. Fleet documents are written only by a coordinator that checks each entry: see docs/sneakernet.md`,
    );
    return 1;
  }
  return 0;
});

export const bundleCommandGroup: CommandGroup = {
  name: 'bundle',
  summary: 'carry updates to a site with no link on a USB stick (sneakernet)',
  subcommands: [createCommand, applyCommand],
  notes: [
    'Nothing in a bundle is trusted: agents and readers verify every signed intent, policy and checkpoint in it as always. The hashes catch damaged, cut-short or edited files; apply refuses those and changes nothing.',
    'Applying a bundle twice, or an older one after a newer one, changes nothing (Yjs updates are idempotent).',
  ],
};

export function runBundleCommand(argv: string[], dataDirApply: () => Promise<DataDirApply>): Promise<number> {
  loadDataDirApply = dataDirApply;
  return runGroup(bundleCommandGroup, argv);
}
