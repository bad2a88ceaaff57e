import { join } from 'node:path';
import { z } from 'zod';
import { signPayload } from '../shared/crypto/signatures.js';
import { type ActionEntry, readActionEntries } from '../shared/documents/desired.js';
import {
  actionResultsArray,
  appendActionResult,
  bundleDigest,
  collectBundlesMap,
  readOwnActionResults,
} from '../shared/documents/status.js';
import { writeFileDurably } from '../shared/node/durable-file.js';
import { describeRules, nextAllowedStart, rulesAllow } from '../shared/schedule/window-rules.js';
import {
  type ActionKind,
  type ActionRefusalCode,
  type ActionResult,
  actionIdSchema,
  actionKindSchema,
  actionOutcomeSchema,
  actionRefusalCodeSchema,
  type CollectBundle,
  type CollectSection,
  type HostLock,
  hostLockSchema,
  MAX_COLLECT_BYTES,
  MAX_KEPT_BUNDLES,
  type SignedAction,
} from '../shared/schemas/action.js';
import { isoTimeSchema } from '../shared/schemas/primitives.js';
import { actionDigest } from '../shared/trust/verify-action.js';
import { windowRules } from './effective-windows.js';
import { readBootId } from './nix/activation-runner.js';
import { confirmHealth } from './nix/health.js';
import { runCommand } from './nix/run-command.js';
import { probeSyncPeer } from './peer-probe.js';
import { type AgentRuntime, MAX_ENTRY_REPORTS, poke } from './runtime.js';
import { loadStateFile } from './state-file.js';
import { deliveredBy, highestOwnSeq, pruneOwnActionResults } from './status-prune.js';
import { saveStatusDocument } from './status-store.js';

// Remote actions (docs/access.md, "Remote actions"): signed requests in the desired document's
// `actions` array, each executed at most once, answered with a signed action result.
//
// At most once, whatever is delivered twice, and across restarts and crashes: a request is
// recorded as started (written durably) *before* it runs. A record found started at the next
// start was interrupted and is never run again: it is answered 'interrupted' (a reboot whose boot
// id changed since is answered 'done': the host rebooted). lock and unlock change only the
// agent's own file, in the same write that records them.

const RECORDS_FILE = 'actions.json';
// Records of requests that expired longer ago than this are dropped; a request expired that long
// is ignored without an answer (it can never run, and answering it again would let a peer
// replaying old requests make the host write for ever).
const RETAIN_MS = 7 * 86_400_000;
const MAX_RECORDS = 10_000;
// Reboot command: a reboot starts within this, or it failed.
const REBOOT_COMMAND_TIMEOUT_MS = 120_000;

const answerSchema = z.object({
  outcome: actionOutcomeSchema,
  code: actionRefusalCodeSchema.optional(),
  reason: z.string().max(2000),
  lock: hostLockSchema.nullable().optional(),
});
type Answer = z.infer<typeof answerSchema>;

// started: it runs or ran (no answer yet); executed: it ran and `answer` is what to report;
// answered: its result is in the status document; refused: answered with a refusal (keyed by the
// request's digest, so a refusal of one envelope never blocks another signed request with its id).
const recordSchema = z.object({
  id: actionIdSchema,
  digest: z.string().regex(/^[0-9a-f]{64}$/),
  action: actionKindSchema,
  state: z.enum(['started', 'executed', 'answered', 'refused']),
  expiresAt: isoTimeSchema,
  // reboot: the boot it was started in (a different boot id later: the host rebooted).
  bootId: z.string().nullable().default(null),
  answer: answerSchema.optional(),
});
type ActionRecord = z.infer<typeof recordSchema>;

const actionsFileSchema = z.object({
  version: z.literal(1),
  lock: hostLockSchema.nullable(),
  // issuedAt of the newest lock or unlock that took effect: an older one that arrives later (a
  // peer withheld it) is refused as superseded instead of undoing the newer.
  lockChangedAt: isoTimeSchema.nullable(),
  resultSeq: z.number().int().nonnegative(),
  records: z.array(recordSchema).max(MAX_RECORDS),
});
type ActionsFile = z.infer<typeof actionsFileSchema>;

interface ActionsRuntime {
  file: ActionsFile;
  logged: Set<string>;
  rebootWake: NodeJS.Timeout | null;
  downloadCheck: NodeJS.Timeout | null;
}

const runtimes = new WeakMap<AgentRuntime, ActionsRuntime>();

export function actionsFile(stateDir: string): string {
  return join(stateDir, RECORDS_FILE);
}

function emptyFile(): ActionsFile {
  return { version: 1, lock: null, lockChangedAt: null, resultSeq: 0, records: [] };
}

export async function loadActionsFile(stateDir: string): Promise<ActionsFile> {
  return loadStateFile(actionsFile(stateDir), {
    schema: actionsFileSchema,
    missing: emptyFile,
    fix: "it records which remote actions ran (and the host's lock): restore it from a backup, or move it aside knowing that unexpired actions may then run again",
  });
}

// Loaded once at start, before the loop (run-agent.ts).
export async function loadActions(agent: AgentRuntime): Promise<void> {
  runtimes.set(agent, {
    file: await loadActionsFile(agent.config.stateDir),
    logged: new Set(),
    rebootWake: null,
    downloadCheck: null,
  });
}

function runtimeOf(agent: AgentRuntime): ActionsRuntime | null {
  return runtimes.get(agent) ?? null;
}

// The host's lock, or null: a locked host takes on no new generation (evaluate.ts, select.ts).
export function actionLock(agent: AgentRuntime): HostLock | null {
  return runtimeOf(agent)?.file.lock ?? null;
}

export function describeLock(lock: HostLock): string {
  return `the host is locked since ${lock.since} by ${lock.by}${lock.reason ? ` (${lock.reason})` : ''}: it takes on no new generation until 'outpost action unlock'`;
}

async function save(agent: AgentRuntime, runtime: ActionsRuntime): Promise<void> {
  await writeFileDurably(actionsFile(agent.config.stateDir), JSON.stringify(actionsFileSchema.parse(runtime.file)));
}

function logOnce(agent: AgentRuntime, key: string, log: () => void): void {
  const runtime = runtimeOf(agent);
  if (!runtime || runtime.logged.has(key) || runtime.logged.size >= MAX_ENTRY_REPORTS) return;
  runtime.logged.add(key);
  log();
}

function setRecord(runtime: ActionsRuntime, record: ActionRecord): void {
  const others = runtime.file.records.filter((r) =>
    record.state === 'refused' ? r.digest !== record.digest || r.state !== 'refused' : r.id !== record.id,
  );
  const records = [...others, record];
  // Beyond the bound (thousands of admin-signed requests within a week), refusals go first (one
  // delivered again is only refused again), then the answers soonest to expire.
  while (records.length > MAX_RECORDS) {
    const droppable = records.filter((r) => r.state === 'refused' || r.state === 'answered');
    const pool = droppable.some((r) => r.state === 'refused')
      ? droppable.filter((r) => r.state === 'refused')
      : droppable;
    const oldest = pool.reduce<ActionRecord | undefined>(
      (best, r) => (!best || Date.parse(r.expiresAt) < Date.parse(best.expiresAt) ? r : best),
      undefined,
    );
    if (!oldest) break;
    records.splice(records.indexOf(oldest), 1);
  }
  runtime.file = { ...runtime.file, records };
}

// Appends the signed answer, numbered after both the saved counter and this host's own signed
// action results in the document (a save that failed after an append never reuses a number). The
// number is taken synchronously and saved in actions.json before the answer goes into the status
// document, whose changes peers see at once: saved after it, a stop in between lost it, and an
// agent whose document on disk lacked the answer too numbered the next one the same.
async function answer(
  agent: AgentRuntime,
  runtime: ActionsRuntime,
  record: Pick<ActionRecord, 'id' | 'digest' | 'action'>,
  content: Answer & { outputTail?: string; bundle?: CollectBundle },
): Promise<void> {
  const { config, logger, statusDoc } = agent;
  const seq =
    highestOwnSeq(actionResultsArray(statusDoc), config.key.publicKey, runtime.file.resultSeq, 'action-result') + 1;
  runtime.file = { ...runtime.file, resultSeq: seq };
  await save(agent, runtime);
  // Old answers go first, in an update of their own (as results do, status-publish.ts).
  pruneOwnActionResults(statusDoc, config.key.publicKey, deliveredBy(agent.delivered));
  const result: ActionResult = {
    kind: 'action-result',
    host: config.host,
    seq,
    at: new Date(config.now()).toISOString(),
    action: record.action,
    id: record.id,
    requestDigest: record.digest,
    outcome: content.outcome,
    ...(content.code ? { code: content.code } : {}),
    reason: content.reason.slice(0, 2000),
    ...(content.outputTail ? { outputTail: content.outputTail.slice(-8192) } : {}),
    ...(content.bundle ? { bundleDigest: bundleDigest(content.bundle) } : {}),
    ...(content.lock !== undefined ? { lock: content.lock } : {}),
  };
  statusDoc.transact(() => {
    appendActionResult(statusDoc, { result, signature: signPayload('action-result', result, config.key) });
    if (content.bundle) keepBundle(agent, record.id, content.bundle);
  }, 'local');
  await saveStatusDocument(config.stateDir, statusDoc);
  const level = content.outcome === 'done' ? 'info' : 'warn';
  logger[level](
    {
      event: 'action-result',
      document: agent.statusName,
      action: record.action,
      id: record.id,
      outcome: content.outcome,
      code: content.code,
      reason: content.reason,
      seq,
    },
    `${record.action} ${record.id}: ${content.outcome}${content.code ? ` (${content.code})` : ''}: ${content.reason}`,
  );
}

// The bundle under its request id, and only the newest MAX_KEPT_BUNDLES of this host's (its own
// answers say which are newest): the status document keeps the newest answers (and those naming a
// kept bundle, status-prune.ts), of bundles only these few.
function keepBundle(agent: AgentRuntime, id: string, bundle: CollectBundle): void {
  const map = collectBundlesMap(agent.statusDoc);
  map.set(id, bundle);
  const newest = readOwnActionResults(agent.statusDoc, agent.config.key.publicKey)
    .filter((r) => r.result.bundleDigest !== undefined)
    .sort((a, b) => b.result.seq - a.result.seq)
    .slice(0, MAX_KEPT_BUNDLES)
    .map((r) => r.result.id);
  for (const key of [...map.keys()]) if (!newest.includes(key)) map.delete(key);
}

// Requests recorded as started or executed but not answered: an agent stopped (or the host went
// down) between running and answering. Nothing runs again; each is answered once.
async function finishInterrupted(agent: AgentRuntime, runtime: ActionsRuntime): Promise<void> {
  const unanswered = runtime.file.records.filter((r) => r.state === 'started' || r.state === 'executed');
  // Usually none: only then are the host's own answers read (every signature checked).
  if (unanswered.length === 0) return;
  const answered = new Set(readOwnActionResults(agent.statusDoc, agent.config.key.publicKey).map((r) => r.result.id));
  for (const record of unanswered) {
    if (!answered.has(record.id)) {
      let content: Answer;
      if (record.state === 'executed' && record.answer) content = record.answer;
      else if (record.action === 'reboot') {
        const bootId = await readBootId();
        content =
          record.bootId && bootId && bootId !== record.bootId
            ? {
                outcome: 'done',
                reason: 'the host rebooted (its boot id changed since the reboot command was started)',
              }
            : {
                outcome: 'interrupted',
                reason:
                  'the agent stopped after starting the reboot command and before it finished, and the host has not rebooted since; not run again: send a new request',
              };
      } else
        content = {
          outcome: 'interrupted',
          reason: `the agent stopped while the ${record.action} ran; not run again: send a new request`,
        };
      await answer(agent, runtime, record, content);
    }
    setRecord(runtime, { ...record, state: 'answered' });
    await save(agent, runtime);
  }
}

function prune(runtime: ActionsRuntime, now: number): void {
  const keep = runtime.file.records.filter(
    (r) => r.state === 'started' || r.state === 'executed' || Date.parse(r.expiresAt) + RETAIN_MS > now,
  );
  if (keep.length !== runtime.file.records.length) runtime.file = { ...runtime.file, records: keep };
}

function known(runtime: ActionsRuntime, signed: SignedAction, digest: string): boolean {
  return runtime.file.records.some((r) => (r.state === 'refused' ? r.digest === digest : r.id === signed.request.id));
}

// The requests not handled yet, oldest issued first (so a lock and the unlock after it apply in
// the order they were signed, whatever order they arrived in).
function pendingEntries(agent: AgentRuntime, runtime: ActionsRuntime): { entry: ActionEntry; digest: string }[] {
  const { entries, malformed } = readActionEntries(agent.desiredDoc);
  for (const m of malformed)
    logOnce(agent, `malformed:${m.index}`, () =>
      agent.logger.warn(
        { event: 'malformed-action', document: agent.desiredName, index: m.index, reason: m.error },
        `ignoring malformed action entry ${m.index}: ${m.error}`,
      ),
    );
  const now = agent.config.trust.now();
  return entries
    .map((entry) => ({ entry, digest: actionDigest(entry.signed) }))
    .filter(({ entry, digest }) => {
      if (known(runtime, entry.signed, digest)) return false;
      // Expired beyond the records' memory: never run, never answered again.
      return Date.parse(entry.signed.request.expiresAt) + RETAIN_MS > now;
    })
    .sort(
      (a, b) =>
        Date.parse(a.entry.signed.request.issuedAt) - Date.parse(b.entry.signed.request.issuedAt) ||
        a.entry.signed.request.id.localeCompare(b.entry.signed.request.id),
    );
}

// Runs every pending request that may run now; called by the loop before each evaluation.
export async function processActions(agent: AgentRuntime): Promise<void> {
  const runtime = runtimeOf(agent);
  if (!runtime || agent.stopped) return;
  await finishInterrupted(agent, runtime);
  prune(runtime, agent.config.trust.now());
  let lockChanged = false;
  for (const { entry, digest } of pendingEntries(agent, runtime)) {
    if (agent.stopped) break;
    // An earlier entry of this pass may have recorded this id.
    if (known(runtime, entry.signed, digest)) continue;
    const outcome = await handle(agent, runtime, entry.signed, digest);
    if (outcome === 'lock-changed') lockChanged = true;
  }
  // The loop writes the status (now showing the lock, or none) after this turn's evaluation.
  if (lockChanged) poke(agent);
}

type Handled = 'done' | 'skipped' | 'lock-changed';

async function refuse(
  agent: AgentRuntime,
  runtime: ActionsRuntime,
  signed: SignedAction,
  digest: string,
  code: ActionRefusalCode,
  reason: string,
): Promise<Handled> {
  const record: ActionRecord = {
    id: signed.request.id,
    digest,
    action: signed.request.action,
    state: 'refused',
    expiresAt: signed.request.expiresAt,
    bootId: null,
  };
  await answer(agent, runtime, record, { outcome: 'refused', code, reason });
  setRecord(runtime, record);
  await save(agent, runtime);
  return 'done';
}

async function handle(
  agent: AgentRuntime,
  runtime: ActionsRuntime,
  signed: SignedAction,
  digest: string,
): Promise<Handled> {
  const { config, logger, desiredName } = agent;
  const { request } = signed;
  const verdict = config.trust.verifyAction(signed);
  if (!verdict.ok) {
    if (verdict.waitForPolicy) {
      logOnce(agent, `wait:${digest}`, () =>
        logger.info(
          { event: 'action-waiting-for-policy', document: desiredName, action: request.action, id: request.id },
          `${request.action} ${request.id}: ${verdict.reason}; deciding when the policy arrives`,
        ),
      );
      return 'skipped';
    }
    if (!verdict.fromAdmin) {
      // No admin's valid signature: anyone who can write the document could have written it.
      logOnce(agent, `invalid:${digest}`, () =>
        logger.warn(
          {
            event: 'action-ignored',
            document: desiredName,
            action: request.action,
            id: request.id,
            code: verdict.code,
            reason: verdict.reason,
          },
          `ignoring ${request.action} request ${request.id}: ${verdict.code}: ${verdict.reason} (no admin signed it; a relay or coordinator may have written it)`,
        ),
      );
      return 'skipped';
    }
    return refuse(agent, runtime, signed, digest, verdict.code, verdict.reason);
  }
  const by = verdict.admin;
  switch (request.action) {
    case 'lock':
    case 'unlock':
      return lockOrUnlock(agent, runtime, signed, digest, by);
    case 'reboot':
      return reboot(agent, runtime, signed, digest);
    case 'collect':
    case 'check':
      return runAndAnswer(agent, runtime, signed, digest, request.action);
  }
}

async function lockOrUnlock(
  agent: AgentRuntime,
  runtime: ActionsRuntime,
  signed: SignedAction,
  digest: string,
  by: string,
): Promise<Handled> {
  const { request } = signed;
  const { lock, lockChangedAt } = runtime.file;
  if (lockChangedAt !== null && Date.parse(request.issuedAt) < Date.parse(lockChangedAt))
    return refuse(
      agent,
      runtime,
      signed,
      digest,
      'superseded',
      `a later ${lock ? 'lock' : 'unlock'} (issued ${lockChangedAt}) already took effect; this ${request.action} was issued before it (${request.issuedAt}), so it changes nothing`,
    );
  let next: HostLock | null;
  let reason: string;
  if (request.action === 'lock') {
    next = {
      since: new Date(agent.config.now()).toISOString(),
      by,
      id: request.id,
      ...(request.reason ? { reason: request.reason } : {}),
    };
    reason = lock
      ? `locked again (was locked since ${lock.since} by ${lock.by}); no new generation until unlocked`
      : 'locked: no new generation until unlocked';
  } else {
    next = null;
    reason = lock ? `unlocked (was locked since ${lock.since} by ${lock.by})` : 'was not locked';
  }
  const record: ActionRecord = {
    id: request.id,
    digest,
    action: request.action,
    state: 'executed',
    expiresAt: request.expiresAt,
    bootId: null,
    answer: { outcome: 'done', reason, lock: next },
  };
  // The lock and the record in one durable write: a crash leaves both or neither.
  runtime.file = { ...runtime.file, lock: next, lockChangedAt: request.issuedAt };
  setRecord(runtime, record);
  await save(agent, runtime);
  await answer(agent, runtime, record, record.answer!);
  setRecord(runtime, { ...record, state: 'answered' });
  await save(agent, runtime);
  return 'lock-changed';
}

async function reboot(
  agent: AgentRuntime,
  runtime: ActionsRuntime,
  signed: SignedAction,
  digest: string,
): Promise<Handled> {
  const { config, logger, desiredName } = agent;
  const { request } = signed;
  // Never in the middle of an activation: the pipeline's own reboot and rollback own the host then.
  if (agent.state.phase === 'activating' || agent.state.phase === 'confirming') {
    logOnce(agent, `busy:${digest}`, () =>
      logger.info(
        { event: 'action-deferred', document: desiredName, action: 'reboot', id: request.id, phase: agent.state.phase },
        `reboot ${request.id}: waiting until the activation in progress is confirmed or rolled back`,
      ),
    );
    return 'skipped';
  }
  const now = config.now();
  const rules = windowRules(config, 'reboot');
  if (!request.force && !rulesAllow(rules, now)) {
    const next = nextAllowedStart(rules, now);
    const expiresAt = Date.parse(request.expiresAt);
    if (next === null || next >= expiresAt)
      return refuse(
        agent,
        runtime,
        signed,
        digest,
        'outside-window',
        `outside the host's reboot windows (${describeRules(rules)}), which ${next === null ? 'do not open within a week' : `open next at ${new Date(next).toISOString()}`}, after the request expires at ${request.expiresAt}: send it again with an --expires that covers the window, or with --force`,
      );
    logOnce(agent, `window:${digest}`, () =>
      logger.info(
        {
          event: 'action-waiting-for-window',
          document: desiredName,
          action: 'reboot',
          id: request.id,
          windows: describeRules(rules),
          nextStart: new Date(next).toISOString(),
        },
        `reboot ${request.id}: waiting for the reboot window (${describeRules(rules)}) at ${new Date(next).toISOString()}`,
      ),
    );
    if (!runtime.rebootWake) {
      runtime.rebootWake = setTimeout(
        () => {
          runtime.rebootWake = null;
          poke(agent);
        },
        Math.min(2 ** 31 - 1, Math.max(1000, next - now)),
      );
      runtime.rebootWake.unref();
    }
    return 'skipped';
  }
  const record: ActionRecord = {
    id: request.id,
    digest,
    action: 'reboot',
    state: 'started',
    expiresAt: request.expiresAt,
    bootId: await readBootId(),
  };
  // Recorded before the command runs: a host that goes down (as it should) never reboots twice.
  setRecord(runtime, record);
  await save(agent, runtime);
  logger.warn(
    {
      event: 'action-reboot',
      document: desiredName,
      id: request.id,
      by: request.issuer,
      force: request.force === true,
      command: config.rebootCommand,
    },
    `rebooting on request ${request.id} of ${request.issuer}${request.force ? ' (forced, outside the reboot window if need be)' : ''}`,
  );
  const outcome = await runCommand('/bin/sh', ['-c', config.rebootCommand], {
    timeoutMs: REBOOT_COMMAND_TIMEOUT_MS,
    env: {
      ...process.env,
      OUTPOST_HOST: config.host,
      OUTPOST_ACTION_ID: request.id,
      // A stand-in reboot command in tests ends the agent as a real reboot does.
      OUTPOST_AGENT_PID: String(process.pid),
    },
  });
  const ok = outcome.code === 0;
  await answer(agent, runtime, record, {
    outcome: ok ? 'done' : 'failed',
    reason: ok
      ? `the reboot command (${config.rebootCommand}) ran${request.force ? ' (forced)' : ''}`
      : `the reboot command (${config.rebootCommand}) ${outcome.timedOut ? 'did not finish in time' : `exited with ${outcome.code ?? outcome.signal}`}`,
    outputTail: outcome.outputTail,
  });
  setRecord(runtime, { ...record, state: 'answered' });
  await save(agent, runtime);
  return 'done';
}

async function runAndAnswer(
  agent: AgentRuntime,
  runtime: ActionsRuntime,
  signed: SignedAction,
  digest: string,
  action: Extract<ActionKind, 'collect' | 'check'>,
): Promise<Handled> {
  const { request } = signed;
  const record: ActionRecord = {
    id: request.id,
    digest,
    action,
    state: 'started',
    expiresAt: request.expiresAt,
    bootId: null,
  };
  setRecord(runtime, record);
  await save(agent, runtime);
  agent.logger.info(
    { event: 'action-started', document: agent.desiredName, action, id: request.id, by: request.issuer },
    `${action} on request ${request.id} of ${request.issuer}`,
  );
  if (action === 'collect') {
    const bundle = await collectBundle(agent);
    const failed = bundle.sections.filter((s) => s.exitCode !== 0).map((s) => s.name);
    await answer(agent, runtime, record, {
      outcome: 'done',
      reason: `collected ${bundle.sections.length} section(s)${failed.length ? `; ${failed.join(', ')} did not exit 0` : ''}`,
      bundle,
    });
  } else {
    const health = await runHealthChecks(agent);
    await answer(agent, runtime, record, health);
  }
  setRecord(runtime, { ...record, state: 'answered' });
  await save(agent, runtime);
  return 'done';
}

// The bundle: each configured command's output tail, cut so the whole stays within
// MAX_COLLECT_BYTES (each section gets an equal share; what a short one leaves goes to the rest).
export async function collectBundle(agent: AgentRuntime): Promise<CollectBundle> {
  const { config } = agent;
  const commands = config.collectCommands.slice(0, 16);
  const outcomes = await Promise.all(
    commands.map((c) =>
      runCommand('/bin/sh', ['-c', c.command], {
        timeoutMs: config.actionTimeoutMs,
        keepBytes: MAX_COLLECT_BYTES,
      }),
    ),
  );
  let budget = MAX_COLLECT_BYTES - commands.reduce((sum, c) => sum + c.command.length + c.name.length + 64, 0);
  const sections: CollectSection[] = [];
  outcomes.forEach((outcome, i) => {
    const share = Math.max(0, Math.floor(budget / (commands.length - i)));
    const text = outcome.outputTail;
    const bytes = new TextEncoder().encode(text);
    const kept = bytes.length > share ? new TextDecoder().decode(bytes.subarray(bytes.length - share)) : text;
    budget -= new TextEncoder().encode(kept).length;
    sections.push({
      name: commands[i]!.name,
      command: commands[i]!.command.slice(0, 1000),
      exitCode: outcome.code,
      timedOut: outcome.timedOut,
      // runCommand keeps at most MAX_COLLECT_BYTES: a full tail may have been cut already.
      truncated: kept.length < text.length || bytes.length >= MAX_COLLECT_BYTES,
      output: kept,
    });
  });
  return { sections };
}

async function runHealthChecks(agent: AgentRuntime): Promise<Answer & { outputTail?: string }> {
  const { config } = agent;
  const health = await confirmHealth({
    ...config.health,
    probePeer: (timeoutMs) =>
      probeSyncPeer(config.coordinators, agent.desiredName, agent.desiredDoc, timeoutMs, config.key),
    deadline: config.now() + config.actionTimeoutMs,
    now: config.now,
    stopping: () => agent.stopped,
  });
  if (health.ok === null) return { outcome: 'interrupted', reason: 'the agent stopped while the checks ran' };
  if (health.ok) return { outcome: 'done', reason: `healthy: ${health.detail}` };
  return { outcome: 'failed', reason: health.reason, outputTail: health.outputTail };
}

// A new request while a download runs (hours on a slow link): the download is paused (it resumes
// where it was) so the loop handles the request now — a lock must hold the download's activation.
// Only a request some admin validly signed does this; checked at most every 250 ms.
export function scheduleActionCheck(agent: AgentRuntime): void {
  const runtime = runtimeOf(agent);
  if (!runtime || runtime.downloadCheck || agent.state.phase !== 'downloading') return;
  runtime.downloadCheck = setTimeout(() => {
    runtime.downloadCheck = null;
    if (agent.stopped || agent.state.phase !== 'downloading') return;
    const waiting = pendingEntries(agent, runtime).some(({ entry }) => {
      const verdict = agent.config.trust.verifyAction(entry.signed);
      return verdict.ok || verdict.fromAdmin;
    });
    if (waiting) agent.downloadAbort.abort();
  }, 250);
}

export function stopActions(agent: AgentRuntime): void {
  const runtime = runtimeOf(agent);
  if (runtime?.rebootWake) clearTimeout(runtime.rebootWake);
  if (runtime?.downloadCheck) clearTimeout(runtime.downloadCheck);
}
