import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { z } from 'zod';
import { type CommandGroup, runGroup, subcommand } from '../cli/command.js';
import { durationSchema } from '../cli/duration.js';
import { defineCommand, option } from '../cli/options.js';
import type { SigningKey } from '../shared/crypto/keys.js';
import { verifyPayloadSignature } from '../shared/crypto/signatures.js';
import { appendAction, readActionEntries } from '../shared/documents/desired.js';
import { desiredDocName, statusDocName } from '../shared/documents/names.js';
import { readActionResults, readCollectBundle, readCurrentStatus } from '../shared/documents/status.js';
import { connectDocument } from '../shared/node/connect.js';
import { readKeyFile } from '../shared/node/key-file.js';
import {
  type ActionKind,
  type ActionResult,
  type CollectBundle,
  MAX_ACTION_VALIDITY_MS,
  type SignedAction,
} from '../shared/schemas/action.js';
import { hostIdSchema } from '../shared/schemas/primitives.js';
import { sleep } from '../shared/time/sleep.js';
import { signAction } from '../shared/trust/sign-action.js';
import { actionDigest } from '../shared/trust/verify-action.js';
import { adminKeyOption, coordinatorOption, reachingCoordinator } from './common-options.js';
import { readHostKeyAuthority } from './fleet-view.js';
import { keyListSchema, resolvePublicKeys } from './policy-cli-kit.js';
import { syncOrRefusal } from './policy-remote.js';
import { latestPolicyVersion } from './submit-intent.js';

// `outpost action reboot|lock|unlock|collect|check HOST`: signs a remote-action request, stores it
// in the host's desired document (so it reaches the host through relays and bundles as intents
// do) and, with --wait (always for collect), follows the host's status document until the host's
// signed answer arrives. With --org-root the answer counts only when signed by the key enrollment
// binds to the host; a relay or coordinator can delay it, not forge it.

const SUMMARIES: Record<ActionKind, string> = {
  reboot: "reboot the host (inside its reboot window unless --force); needs 'reboot' on the host",
  lock: "lock the host: it takes on no new generation until unlocked (incidents, audits); needs 'lock'",
  unlock: "unlock a locked host: intents it holds go on; needs 'lock'",
  collect: "fetch a bounded diagnostics bundle (journal, failed units, disk, generations); needs 'collect'",
  check: "run the host's health checks now and report the outcome; needs 'check'",
};

function actionCommand(action: ActionKind) {
  return defineCommand({
    name: `action ${action}`,
    summary: SUMMARIES[action],
    usage: `outpost action ${action} HOST --coordinator URL --key FILE [options]`,
    options: z.object({
      coordinator: coordinatorOption,
      key: adminKeyOption(),
      host: option(hostIdSchema, { placeholder: 'ID', description: 'the host (also the first argument)' }),
      expires: option(durationSchema.prefault('1h'), {
        placeholder: 'DURATION',
        description: `how long the host may still act on the request (10m, 12h, 7d; at most ${MAX_ACTION_VALIDITY_MS / 86_400_000}d): a host offline longer never acts on it`,
      }),
      reason: option(z.string().max(500).optional(), {
        placeholder: 'TEXT',
        description:
          action === 'lock'
            ? "why (shown in the host's status while it is locked)"
            : 'why (signed with the request, for the record)',
      }),
      ...(action === 'reboot'
        ? {
            force: option(z.boolean().default(false), {
              description: "reboot now even outside the host's reboot window",
            }),
          }
        : {}),
      ...(action === 'collect'
        ? {
            output: option(z.string().min(1).optional(), {
              placeholder: 'FILE',
              description: 'save the bundle (JSON) there instead of printing it',
            }),
          }
        : {
            wait: option(z.boolean().default(false), {
              description:
                "block until the host's signed answer: exit 0 done; 1 refused, failed or interrupted; 3 none within --wait-timeout",
            }),
          }),
      waitTimeout: option(durationSchema.prefault('10m'), {
        placeholder: 'DURATION',
        description: `${action === 'collect' ? '' : 'with --wait: '}how long to wait for the host's answer`,
      }),
      orgRoot: option(keyListSchema, {
        placeholder: 'KEY',
        description:
          "pinned org root key (base64 or key file): the answer counts only when signed by the host's enrolled key",
        defaultText: "unverified: the key that signed the host's status",
        common: 'orgRoot',
      }),
      policyVersion: option(z.coerce.number().int().positive().optional(), {
        placeholder: 'N',
        description: 'fleet policy version to sign under',
        defaultText: 'the newest in fleet/policy',
      }),
      timeout: option(durationSchema.prefault('30s'), {
        placeholder: 'DURATION',
        description: 'how long to wait for the coordinator',
        common: 'timeout',
      }),
      json: option(z.boolean().default(false), { description: 'print the request and the answer as JSON' }),
    }),
    examples: [
      `outpost action ${action} clinic-1 --coordinator wss://fleet.example.org --key ~/.config/outpost/alice.key${action === 'collect' ? ' --output clinic-1.json' : ' --wait'}`,
      ...(action === 'reboot' ? ["outpost action reboot clinic-1 --expires 24h   # in tonight's reboot window"] : []),
      ...(action === 'lock' ? ['outpost action lock clinic-1 --reason "incident 2026-12-02" --wait'] : []),
    ],
  });
}

type ActionOptions = {
  coordinator: string;
  key: string;
  host: string;
  expires: number;
  reason?: string | undefined;
  force?: boolean;
  output?: string | undefined;
  wait?: boolean;
  waitTimeout: number;
  orgRoot: string[];
  policyVersion?: number | undefined;
  timeout: number;
  json: boolean;
};

// Exit codes: 0 done (or stored, without --wait); 1 refused, failed, interrupted; 3 no answer in time.
const EXIT: Record<ActionResult['outcome'] | 'timeout', number> = {
  done: 0,
  failed: 1,
  refused: 1,
  interrupted: 1,
  timeout: 3,
};

// Signs the request and returns once a fresh connection sees it stored.
export async function submitAction(
  serverUrl: string,
  request: {
    action: ActionKind;
    host: string;
    validForSeconds: number;
    force?: boolean;
    reason?: string;
    policyVersion?: number;
  },
  key: SigningKey,
  timeoutMs: number,
): Promise<{ signed: SignedAction; digest: string }> {
  const name = desiredDocName(request.host);
  const writer = connectDocument(serverUrl, name, { identity: key });
  try {
    await syncOrRefusal(writer, key, timeoutMs);
    const policyVersion = request.policyVersion ?? (await latestPolicyVersion(serverUrl, timeoutMs, key));
    const now = Date.now();
    const signed = signAction(
      {
        kind: 'action',
        action: request.action,
        host: request.host,
        id: randomBytes(16).toString('hex'),
        issuedAt: new Date(now).toISOString(),
        expiresAt: new Date(now + request.validForSeconds * 1000).toISOString(),
        issuer: key.name,
        ...(request.force ? { force: true } : {}),
        ...(request.reason ? { reason: request.reason } : {}),
        ...(policyVersion === undefined ? {} : { policyVersion }),
      },
      key,
    );
    const digest = actionDigest(signed);
    appendAction(writer.doc, signed);
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const reader = connectDocument(serverUrl, name, { identity: key });
      try {
        await syncOrRefusal(reader, key, Math.max(1, deadline - Date.now()));
        if (readActionEntries(reader.doc).entries.some((e) => actionDigest(e.signed) === digest))
          return { signed, digest };
      } finally {
        reader.close();
      }
      await sleep(100);
    }
    throw new Error(
      `the coordinator at ${serverUrl} did not confirm storing the request within ${timeoutMs} ms (it stores requests only from admins whose roles allow deploy, rollback or an action on ${request.host}); nothing will happen unless it did`,
    );
  } finally {
    writer.close();
  }
}

// `bundle`: a collect's bundle, checked against the digest in the signed answer (or why it is not there).
export type ActionWait =
  | { outcome: 'timeout'; reason: string }
  | {
      outcome: 'answered';
      result: ActionResult;
      bundle?: { ok: true; bundle: CollectBundle } | { ok: false; reason: string };
    };

// Follows the host's status document until an answer to `id` signed by the host's key arrives:
// the enrolled key (hostKey given) or, unverified, the key that signed the host's current status.
export async function waitForActionResult(
  serverUrl: string,
  options: {
    host: string;
    id: string;
    hostKey: string | null;
    identity: SigningKey;
    timeoutMs: number;
    readTimeoutMs: number;
  },
): Promise<ActionWait> {
  const deadline = Date.now() + options.timeoutMs;
  const connection = connectDocument(serverUrl, statusDocName(options.host), { identity: options.identity });
  try {
    await syncOrRefusal(connection, options.identity, Math.min(options.readTimeoutMs, options.timeoutMs));
    for (;;) {
      const expected = options.hostKey ?? readCurrentStatus(connection.doc)?.signature.publicKey ?? null;
      const found = readActionResults(connection.doc).results.find(
        (r) =>
          r.result.id === options.id &&
          r.result.host === options.host &&
          (expected === null || r.signature.publicKey === expected) &&
          verifyPayloadSignature('action-result', r.result, r.signature),
      );
      if (found) {
        const digest = found.result.bundleDigest;
        if (digest === undefined) return { outcome: 'answered', result: found.result };
        return {
          outcome: 'answered',
          result: found.result,
          bundle: readCollectBundle(connection.doc, options.id, digest),
        };
      }
      if (Date.now() >= deadline)
        return {
          outcome: 'timeout',
          reason: `no answer from ${options.host} within ${Math.round(options.timeoutMs / 1000)} s; the request stays stored until it expires: the host acts on it when it gets it (follow it with 'outpost status --host ${options.host}')`,
        };
      await new Promise<void>((resolve) => {
        const done = (): void => {
          connection.doc.off('update', done);
          resolve();
        };
        connection.doc.on('update', done);
        setTimeout(done, Math.max(10, Math.min(1000, deadline - Date.now()))).unref();
      });
    }
  } finally {
    connection.close();
  }
}

export function renderBundle(bundle: CollectBundle): string {
  return bundle.sections
    .map(
      (s) =>
        `== ${s.name}: ${s.command} (${s.timedOut ? 'timed out' : `exit ${s.exitCode}`}${s.truncated ? ', cut to its tail' : ''}) ==\n${s.output.trimEnd()}`,
    )
    .join('\n\n');
}

async function runAction(action: ActionKind, options: ActionOptions): Promise<number> {
  const key = await readKeyFile(options.key);
  const timeoutMs = options.timeout * 1000;
  const orgRoot = await resolvePublicKeys(commands[action], 'org-root', options.orgRoot);
  const wait = action === 'collect' || options.wait === true;
  // The enrolled key, read before submitting: an answer signed by any other key never counts.
  let hostKey: string | null = null;
  if (wait && orgRoot.length > 0) {
    const authority = await readHostKeyAuthority(options.coordinator, orgRoot, key, timeoutMs);
    hostKey = authority.bindings.get(options.host)?.hostKey ?? null;
    if (!hostKey)
      throw new Error(
        `${options.host} is not enrolled under the policy walked from --org-root: no answer could be checked; check the host id`,
      );
  }
  const { signed, digest } = await submitAction(
    options.coordinator,
    {
      action,
      host: options.host,
      validForSeconds: options.expires,
      ...(options.force ? { force: true } : {}),
      ...(options.reason ? { reason: options.reason } : {}),
      ...(options.policyVersion === undefined ? {} : { policyVersion: options.policyVersion }),
    },
    key,
    timeoutMs,
  );
  const { request } = signed;
  if (!options.json)
    console.error(
      `stored: ${action} ${request.host} (request ${request.id}), signed by ${key.name}, valid until ${request.expiresAt}`,
    );
  if (!wait) {
    if (options.json) console.log(JSON.stringify({ ...signed, digest }));
    return 0;
  }
  const answer = await waitForActionResult(options.coordinator, {
    host: options.host,
    id: request.id,
    hostKey,
    identity: key,
    timeoutMs: options.waitTimeout * 1000,
    readTimeoutMs: timeoutMs,
  });
  const unverified = hostKey === null ? ' (host key unverified: give --org-root to check it against enrollment)' : '';
  if (answer.outcome === 'timeout') {
    if (options.json) console.log(JSON.stringify({ ...signed, digest, answer: null }));
    console.error(`outpost action ${action}: ${answer.reason}`);
    return EXIT.timeout;
  }
  const { result } = answer;
  if (options.json)
    console.log(
      JSON.stringify({
        ...signed,
        digest,
        answer: result,
        ...(answer.bundle?.ok ? { bundle: answer.bundle.bundle } : {}),
      }),
    );
  else {
    const line = `${result.host}: ${action} ${result.outcome}${result.code ? ` (${result.code})` : ''}: ${result.reason} (action result #${result.seq})${unverified}`;
    if (result.outcome === 'done') console.log(line);
    else console.error(`outpost action ${action}: ${line}`);
    if (result.outputTail) console.log(result.outputTail.trimEnd());
    if (answer.bundle && !answer.bundle.ok) {
      console.error(`outpost action collect: ${answer.bundle.reason}`);
      return 1;
    }
    if (answer.bundle?.ok) {
      const bundle = answer.bundle.bundle;
      if (options.output) {
        await fs.writeFile(
          options.output,
          `${JSON.stringify({ host: result.host, at: result.at, ...bundle }, null, 2)}\n`,
          {
            mode: 0o600,
          },
        );
        console.log(`saved the bundle (${bundle.sections.length} sections) to ${options.output}`);
      } else console.log(renderBundle(bundle));
    }
  }
  return EXIT[result.outcome];
}

const KINDS: ActionKind[] = ['reboot', 'lock', 'unlock', 'collect', 'check'];
const commands = Object.fromEntries(KINDS.map((kind) => [kind, actionCommand(kind)])) as Record<
  ActionKind,
  ReturnType<typeof actionCommand>
>;

export const actionCommandGroup: CommandGroup = {
  name: 'action',
  summary: 'remote actions on a host: reboot, lock, unlock, collect, check (signed, expiring, executed at most once)',
  subcommands: KINDS.map((kind) =>
    subcommand(
      commands[kind],
      reachingCoordinator((options) => runAction(kind, options as unknown as ActionOptions)),
    ),
  ),
  notes: [
    'HOST may be given as the first argument or as --host.',
    'Each request needs the capability of the same name on the host (lock for unlock too); docs/access.md, Remote actions.',
  ],
};

export function runActionCommand(argv: string[]): Promise<number> {
  // `outpost action reboot clinic-1`: the host as first argument stands for --host HOST.
  const [sub, first, ...rest] = argv;
  const args = sub && first && !first.startsWith('-') ? [sub, '--host', first, ...rest] : argv;
  return runGroup(actionCommandGroup, args);
}
