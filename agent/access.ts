import { promises as fs } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import type { Logger } from '../shared/log.js';
import { syncDirectory } from '../shared/node/durable-file.js';
import { type AccessStatus, accessStatusSchema, accountSchema } from '../shared/schemas/logins.js';
import type { Policy } from '../shared/schemas/policy.js';
import { accessSummary, authorizedKeysText, loginsForHost } from '../shared/trust/logins.js';
import type { AgentRuntime } from './runtime.js';
import { publishCurrentStatus } from './status-publish.js';

// SSH login access from the signed policy (docs/access.md): whenever the agent walks to a newer
// policy version, the keys it gives this host are written to --authorized-keys-dir, one file per
// local account (sshd: AuthorizedKeysFile <dir>/%u), and accounts that lost every key lose their
// file. Only the walked chain counts (root-signed, versions only ever rising), so a relay or
// coordinator can withhold a version but never make an older or forged one reach these files.
//
// A freeze (no fresh signed timestamps) does not hold this back: a newer version is the org root's
// own word, and a revocation it carries must apply at once. Nor does a freeze empty the files: the
// people who need to log in during an outage are the ones fixing it, and a withheld version is
// what the freeze already reports.

// Written after the account files: the highest policy version the files were written from. An
// agent whose trust state was lost (reinstalled, state directory wiped) re-walks the chain from
// the pinned root; until it is back at this version it leaves the files alone, so a peer serving
// only old versions cannot hand back keys a later version revoked.
const MANIFEST = '.outpost-access.json';
const manifestSchema = z.object({ version: z.literal(1), access: accessStatusSchema });
const TEMPORARY_PREFIX = '.tmp-';

export interface AccessKeeper {
  // Brings the files in line with `policy` (the newest walked version); calls are serialised and
  // coalesced. Resolves true when what the status reports changed.
  sync(policy: Policy | undefined): Promise<boolean>;
  // What the files hold (null before the first write), with the last error if one is pending.
  status(): AccessStatus | null;
}

export interface AccessOptions {
  dir: string;
  host: string;
  logger: Logger;
}

let temporaryCounter = 0;

// Temp file (exclusive: never through a planted name), fsync, mode 0644, rename: sshd reads either
// the old or the new list, never a torn one, and never a file of the wrong mode.
async function writeAccountFile(dir: string, account: string, text: string): Promise<void> {
  temporaryCounter += 1;
  const temporary = join(dir, `${TEMPORARY_PREFIX}${account}-${process.pid}-${temporaryCounter}`);
  const handle = await fs.open(temporary, 'wx', 0o644);
  try {
    await handle.writeFile(text);
    await handle.chmod(0o644);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await fs.rename(temporary, join(dir, account));
}

async function currentText(path: string): Promise<string | null> {
  const stat = await fs.lstat(path).catch(() => null);
  // A symlink or anything else in an account's place is replaced, never read or followed.
  if (!stat?.isFile() || (stat.mode & 0o777) !== 0o644) return null;
  return fs.readFile(path, 'utf8').catch(() => null);
}

async function readManifest(dir: string): Promise<AccessStatus | null> {
  const text = await fs.readFile(join(dir, MANIFEST), 'utf8').catch(() => null);
  if (text === null) return null;
  try {
    return manifestSchema.parse(JSON.parse(text)).access;
  } catch {
    return null;
  }
}

export function createAccessKeeper(options: AccessOptions): AccessKeeper {
  const { dir, host, logger } = options;
  let written: AccessStatus | null = null;
  let error: string | null = null;
  let loaded = false;
  let queue: Promise<boolean> = Promise.resolve(false);
  let wanted: Policy | undefined;

  const apply = async (policy: Policy): Promise<void> => {
    await fs.mkdir(dir, { recursive: true, mode: 0o755 });
    const stat = await fs.lstat(dir);
    if (!stat.isDirectory()) throw new Error(`${dir} is not a directory; give --authorized-keys-dir a directory`);
    // sshd reads an account's file as that account (and with StrictModes refuses a writable path):
    // the directory must be readable by all and writable by no one but its owner.
    if (stat.mode & 0o022)
      throw new Error(
        `${dir} is writable by group or others, who could add keys sshd would accept: chmod 755 ${dir} (owned by root)`,
      );
    // The agent's unit runs with umask 0077, which mkdir honours.
    if ((stat.mode & 0o005) !== 0o005) await fs.chmod(dir, 0o755);
    if (!loaded) {
      written = await readManifest(dir);
      loaded = true;
    }
    if (written && policy.version < written.policyVersion)
      throw new Error(
        `${dir} holds the logins of policy version ${written.policyVersion}, newer than version ${policy.version} in force here (was the agent's state reset?); keeping them until version ${written.policyVersion} arrives again`,
      );
    const access = loginsForHost(policy, host);
    const summary = accessSummary(policy.version, access);
    let changed = false;
    for (const entry of access) {
      const text = authorizedKeysText(policy.version, entry);
      if ((await currentText(join(dir, entry.account))) === text) continue;
      await writeAccountFile(dir, entry.account, text);
      changed = true;
    }
    const keep = new Set(access.map((a) => a.account));
    for (const name of await fs.readdir(dir)) {
      const stale = accountSchema.safeParse(name).success && !keep.has(name);
      // Leftovers of a write cut short (a crash between open and rename).
      const leftover = name.startsWith(TEMPORARY_PREFIX);
      if (!stale && !leftover) continue;
      await fs.rm(join(dir, name), { force: true, recursive: false });
      if (stale) changed = true;
    }
    if (changed) await syncDirectory(join(dir, MANIFEST));
    if (JSON.stringify(written) !== JSON.stringify(summary)) {
      await writeAccountFile(dir, MANIFEST, `${JSON.stringify({ version: 1, access: summary })}\n`);
      await syncDirectory(join(dir, MANIFEST));
    }
    if (changed || written?.digest !== summary.digest)
      logger.info(
        {
          event: 'access-written',
          dir,
          policyVersion: policy.version,
          accounts: summary.accounts,
          digest: summary.digest,
        },
        `login keys of policy version ${policy.version} written: ${access.map((a) => `${a.account} (${a.keys.length})`).join(', ') || 'no account'}`,
      );
    written = summary;
  };

  const run = async (): Promise<boolean> => {
    const policy = wanted;
    const before = JSON.stringify({ written, error });
    // Signed timestamps call this every minute: files already written from this version stay.
    const done = loaded && error === null && written?.policyVersion === policy?.version;
    if (policy && !done && policy.version >= (written?.policyVersion ?? 0)) {
      try {
        await apply(policy);
        error = null;
      } catch (cause) {
        const message = (cause as Error).message.slice(0, 1000);
        if (message !== error)
          logger.error(
            { event: 'access-write-failed', dir, policyVersion: policy.version, err: cause },
            `cannot write the login keys of policy version ${policy.version}: ${message}`,
          );
        error = message;
      }
    }
    return JSON.stringify({ written, error }) !== before;
  };

  return {
    sync(policy) {
      wanted = policy;
      queue = queue.then(run, run);
      return queue;
    },
    status() {
      return written ? { ...written, ...(error ? { error } : {}) } : null;
    },
  };
}

// Keeps the files in line with the policy in force from the agent's start on: the version walked
// before a restart is written at once (files edited meanwhile are restored), each newer one as
// soon as the chain reaches it — not when the loop is free, which may be hours into a download.
export function followPolicyForAccess(agent: AgentRuntime, keeper: AccessKeeper): void {
  const { config, logger } = agent;
  const sync = (): void => {
    if (agent.stopped) return;
    void keeper
      .sync(config.trust.chain().at(-1))
      .then((changed) => (changed && !agent.stopped ? publishCurrentStatus(agent) : undefined))
      .catch((error: unknown) =>
        logger.warn({ event: 'status-write-failed', err: error }, 'cannot write the status document'),
      );
  };
  config.trust.onChange(sync);
  sync();
}
