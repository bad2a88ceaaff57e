import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { defineCommand, logLevelOption, option } from '../../cli/options.js';
import { checkLogChain } from '../../shared/audit/log-chain.js';
import { canonicalJson } from '../../shared/crypto/canonical.js';
import type { Logger } from '../../shared/log.js';
import { type LogEntry, openUpdateLog } from '../update-log.js';
import {
  backendSchema,
  type NatsBackend,
  natsAccessOptionsShape,
  natsBackendText,
  natsStreamOptionsShape,
  refineNatsAccess,
} from './backend-option.js';
import { openNatsLog } from './nats-log.js';

// `outpost coordinator migrate --from-level DIR --to nats://…`: copies a LevelDB update log, entry
// for entry (numbers, times, principals and hashes unchanged), into a JetStream stream, then
// checks every copied document's hash chain and head against the source. Run it again and it
// copies only what is new; a stream that already holds something else for a document is refused.

export const migrateCommand = defineCommand({
  name: 'coordinator migrate',
  summary: 'copy a LevelDB update log into a NATS JetStream stream and verify the copy',
  usage: 'outpost coordinator migrate --from-level DIR --to nats://HOST:PORT[,HOST:PORT…] [--nats-stream NAME]',
  options: z
    .object({
      fromLevel: option(z.string().min(1), {
        placeholder: 'DIR',
        description: "the coordinator's --data-dir (stop that coordinator first: LevelDB allows one process)",
      }),
      to: option(backendSchema, {
        placeholder: 'nats://HOST:PORT,…',
        description: 'the NATS servers of the cluster the coordinators will use',
      }),
      ...natsStreamOptionsShape,
      ...natsAccessOptionsShape,
      logLevel: logLevelOption,
    })
    .superRefine(refineNatsAccess),
  examples: [
    'outpost coordinator migrate --from-level /var/lib/outpost-coordinator --to nats://10.0.0.1:4222,10.0.0.2:4222',
  ],
});

export interface MigrationReport {
  documents: number;
  entries: number;
  copied: number;
  checkpoints: number;
}

// Documents copied at once: each is one chain of awaited publishes.
const PARALLEL_DOCUMENTS = 8;

export async function migrateLevelToNats(from: string, to: NatsBackend, logger: Logger): Promise<MigrationReport> {
  // LevelDB would create an empty log in a mistyped directory and "copy" nothing.
  if (!existsSync(join(from, 'CURRENT')))
    throw new Error(`${from} holds no update log (no LevelDB CURRENT file); give the coordinator's --data-dir`);
  const source = await openUpdateLog(from);
  try {
    const target = await openNatsLog({ ...to, logger });
    try {
      const documents = await source.documents();
      const report: MigrationReport = { documents: documents.length, entries: 0, copied: 0, checkpoints: 0 };
      const before = new Map((await target.heads()).map((head) => [head.document, head.seq]));
      const queue = [...documents];
      const copyNext = async (): Promise<void> => {
        for (let document = queue.shift(); document !== undefined; document = queue.shift()) {
          for await (const entry of source.iterate(document)) {
            report.entries += 1;
            if ((before.get(document) ?? 0) >= entry.seq) continue;
            await target.importEntry(entry);
            report.copied += 1;
          }
        }
      };
      await Promise.all(Array.from({ length: PARALLEL_DOCUMENTS }, copyNext));
      const kept = new Set<string>();
      for await (const checkpoint of target.checkpoints()) kept.add(canonicalJson(checkpoint));
      for await (const checkpoint of source.checkpoints()) {
        if (kept.has(canonicalJson(checkpoint))) continue;
        await target.putCheckpoint(checkpoint);
        report.checkpoints += 1;
      }
      // The copy is what an auditor would check: one unbroken chain per document, ending where
      // the source ends.
      for (const document of documents) {
        const entries: LogEntry[] = [];
        for await (const entry of target.iterate(document)) entries.push(entry);
        const check = checkLogChain(document, entries);
        const head = await source.head(document);
        if (check.problems.length > 0 || check.head?.hash !== head?.hash)
          throw new Error(
            `the copy of ${document} does not verify (${check.problems[0]?.detail ?? `ends at #${check.head?.seq ?? 0}, the source at #${head?.seq ?? 0}`}); the stream ${to.stream} held something else: copy into a new --nats-stream`,
          );
      }
      return report;
    } finally {
      await target.close();
    }
  } finally {
    await source.close();
  }
}

export function describeMigration(report: MigrationReport, to: NatsBackend): string {
  return `copied ${report.copied} of ${report.entries} entries in ${report.documents} documents and ${report.checkpoints} checkpoints to ${natsBackendText(to)}; every document's hash chain verified against the source`;
}
