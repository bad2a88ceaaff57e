import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { z } from 'zod';
import { durationSchema } from '../cli/duration.js';
import { defineCommand, option, UsageError } from '../cli/options.js';
import type { SigningKey } from '../shared/crypto/keys.js';
import { readKeyFile } from '../shared/node/key-file.js';
import type { ReleaseManifest } from '../shared/rollout/build.js';
import { readRolloutEntries } from '../shared/rollout/document.js';
import { judgeRollout, type RolloutView } from '../shared/rollout/judge.js';
import { planDigest } from '../shared/rollout/plan.js';
import { type ActionVerb, rolloutIdSchema } from '../shared/rollout/schemas.js';
import { cosignPlan, signPlan, signRolloutAction } from '../shared/rollout/sign.js';
import { verifiedPlanKeys } from '../shared/rollout/verify.js';
import type { Policy } from '../shared/schemas/policy.js';
import { activationActionSchema, generationSchema } from '../shared/schemas/primitives.js';
import { sleep } from '../shared/time/sleep.js';
import { adminForKey } from '../shared/trust/capabilities.js';
import { abortRollbackTargets, draftRolloutAction, pauseResumeOutcome } from '../shared/views/rollout-actions.js';
import {
  buildRolloutPlan,
  MAX_MANIFEST_BYTES,
  mayCreateRollout,
  parseReleaseManifest,
  planRollout,
  planSignatureNeeds,
  rolloutSlug,
} from '../shared/views/rollout-draft.js';
import { adminKeyOption, coordinatorOption, reachingCoordinator } from './common-options.js';
import { type HostKeyAuthority, type HostView, readHostKeyAuthority } from './fleet-view.js';
import {
  type CommandGroup,
  fileSchema,
  jsonOption,
  keyListSchema,
  resolvePublicKeys,
  runGroup,
  subcommand,
  timeoutOption,
} from './policy-cli-kit.js';
import {
  followRollout,
  highestIssued,
  listRolloutIds,
  postRollout,
  type RolloutSnapshot,
  readHostViews,
  readRollout,
  readRolloutDocuments,
  snapshotOf,
} from './rollout-remote.js';
import type { RolloutReport } from './rollout-render.js';

// Loaded when a subcommand needs them: `rollout create` (the first thing wave 1 waits for) need
// not load the status renderer's modules, nor the intent writer `abort --rollback` uses.
const rendering = () => import('./rollout-render.js');
const intentWriting = () => import('./submit-intent.js');

// `outpost rollout`: releases to many hosts in waves whose gates every agent checks itself
// (docs/rollouts.md). Every command reads the policy walked from the pinned org root and judges
// what the coordinator holds with the same code agents run.

const orgRootOption = option(keyListSchema.pipe(z.array(z.string()).min(1, 'give the pinned org root key')), {
  placeholder: 'KEY',
  description: 'a pinned org root key (base64, or a key file): the policy is walked from it',
  common: 'orgRoot',
});
const idOption = option(rolloutIdSchema, {
  placeholder: 'ID',
  description: 'the rollout (also as the first argument)',
});
const common = {
  coordinator: coordinatorOption,
  key: adminKeyOption(),
  orgRoot: orgRootOption,
  timeout: timeoutOption,
  json: jsonOption,
};

interface Session {
  key: SigningKey;
  authority: HostKeyAuthority;
  timeoutMs: number;
}

async function openSession(
  spec: { name: string },
  o: { key: string; orgRoot: string[]; coordinator: string; timeout: number },
): Promise<Session> {
  const key = await readKeyFile(o.key);
  const orgRoot = await resolvePublicKeys(spec, 'org-root', o.orgRoot);
  const timeoutMs = o.timeout * 1000;
  const authority = await readHostKeyAuthority(o.coordinator, orgRoot, key, timeoutMs);
  return { key, authority, timeoutMs };
}

const policyOf = (session: Session): Policy => session.authority.chain.at(-1)!;

async function readManifest(path: string): Promise<ReleaseManifest> {
  let text: string;
  try {
    const stat = await fs.stat(path);
    if (stat.size > MAX_MANIFEST_BYTES) throw new Error(`${stat.size} bytes, more than 16 MiB`);
    text = await fs.readFile(path, 'utf8');
  } catch (error) {
    throw new UsageError(`outpost rollout create: --release ${path}: cannot read it (${(error as Error).message})`);
  }
  const parsed = parseReleaseManifest(text, `outpost rollout create: --release ${path}`);
  if (!parsed.ok) throw new UsageError(parsed.reason);
  return parsed.value;
}

// ---------------------------------------------------------------------------------------------
const createSpec = defineCommand({
  name: 'rollout create',
  summary: 'sign a plan that rolls a release out in waves, and hand it to the coordinator',
  usage:
    'outpost rollout create --release FILE (--channel NAME | --wave NAME=HOSTS …) [--gate SPEC …] [--id ID] [options]',
  options: z.object({
    ...common,
    release: option(fileSchema('the release manifest'), {
      placeholder: 'FILE',
      description: 'the release manifest CI wrote: {"release": NAME, "hosts": {HOST: CLOSURE}}',
    }),
    channel: option(z.string().min(1).optional(), {
      placeholder: 'NAME',
      description: 'a channel of the policy: its hosts (those the release names) in its waves',
    }),
    wave: option(z.array(z.string()).default([]), {
      placeholder: 'NAME=HOSTS',
      description: "a wave, in order: NAME=HOST,HOST,@GROUP (instead of the channel's or the default waves)",
      defaultText: "the channel's waves, else first/middle/final (10/30/60 %)",
    }),
    gate: option(z.array(z.string()).default([]), {
      placeholder: 'SPEC',
      description: 'success=PERCENT,failures=N|any,soak=DURATION,approval — for every wave, or WAVE:… for one',
      defaultText: 'success=100,failures=0,soak=0',
    }),
    id: option(rolloutIdSchema.optional(), {
      placeholder: 'ID',
      description: 'the rollout id (1-48 of a-z, 0-9, -)',
      defaultText: 'the release name and 6 random hex digits',
    }),
    generation: option(z.coerce.number().pipe(generationSchema).optional(), {
      placeholder: 'N',
      description: "generation of every host (skips reading each host's highest; agents refuse one not above theirs)",
      defaultText: "one above each host's highest issued",
    }),
    action: option(activationActionSchema.default('switch'), {
      placeholder: 'ACTION',
      description: 'switch, boot or test',
    }),
    expires: option(durationSchema.prefault('60d'), {
      placeholder: 'DURATION',
      description: 'how long the plan stays valid (hosts offline longer refuse it)',
    }),
  }),
  examples: [
    'outpost rollout create --release release.json --channel production --gate first:soak=1h --gate middle:soak=4h,approval',
    'outpost rollout create --release release.json --wave canary=relay-1 --wave rest=@clinics --json',
  ],
});

const createCommand = subcommand(
  createSpec,
  reachingCoordinator(async (o) => {
    const manifest = await readManifest(o.release);
    const session = await openSession(createSpec, o);
    const policy = policyOf(session);
    const planned = planRollout(policy, {
      manifest,
      ...(o.channel !== undefined ? { channel: o.channel } : {}),
      waves: o.wave,
      gates: o.gate,
    });
    if (!planned.ok) throw new UsageError(`outpost rollout create: ${planned.reason}`);
    const hosts = planned.value.waves.flatMap((w) => w.hosts);
    const enrolled = (host: string): string | undefined => session.authority.bindings.get(host)?.hostKey;
    const allowed = mayCreateRollout(policy, session.key.publicKey, hosts, enrolled);
    if (!allowed.ok) throw new Error(allowed.reason);
    const admin = { name: allowed.value.admin };
    const generations =
      o.generation !== undefined
        ? new Map(hosts.map((h) => [h, o.generation! - 1]))
        : await highestIssued(o.coordinator, hosts, session.key, session.timeoutMs);
    const plan = buildRolloutPlan({
      id: o.id ?? `${rolloutSlug(manifest.release)}-${randomBytes(3).toString('hex')}`,
      manifest,
      ...(o.channel !== undefined ? { channel: o.channel } : {}),
      action: o.action,
      issuer: admin.name,
      issuerKey: session.key.publicKey,
      policyVersion: policy.version,
      now: Date.now(),
      expiresInSeconds: o.expires,
      planned: planned.value,
      enrolled,
      highest: (host) => generations.get(host)!,
    });
    const signed = signPlan(plan, session.key);
    await postRollout(o.coordinator, { plan: signed }, session.timeoutMs, `rollout ${plan.id}`);
    const needs = planSignatureNeeds(signed.plan, [session.key.publicKey], session.authority.chain);
    const out = {
      id: plan.id,
      plan: planDigest(signed.plan),
      release: plan.release,
      waves: plan.waves.map((w) => ({ name: w.name, hosts: w.hosts.map((h) => h.host), gate: w.gate })),
      skipped: planned.value.skipped,
      signedBy: [admin.name],
      signaturesNeeded: needs,
      expiresAt: plan.expiresAt,
    };
    if (o.json) console.log(JSON.stringify(out, null, 2));
    else {
      const { formatSeconds } = await rendering();
      console.log(
        `rollout ${plan.id} of ${plan.release} created (plan ${out.plan.slice(0, 12)}…), signed by ${admin.name}, valid until ${plan.expiresAt}`,
      );
      for (const w of plan.waves)
        console.log(
          `  wave ${w.name}: ${w.hosts.length} hosts (${w.hosts
            .slice(0, 8)
            .map((h) => h.host)
            .join(
              ', ',
            )}${w.hosts.length > 8 ? ', …' : ''}); gate: ${w.gate.minSuccessPercent}% success, ${w.gate.maxFailures === null ? 'any' : `at most ${w.gate.maxFailures}`} failures, soak ${formatSeconds(w.gate.soakSeconds)}${w.gate.approval ? ', approval' : ''}`,
        );
      for (const s of planned.value.skipped.slice(0, 20)) console.log(`  skipped ${s.host}: ${s.reason}`);
      if (needs.length)
        console.log(
          `  needs more signatures for ${needs.length} hosts (${needs[0]!.reason}): another admin runs 'outpost rollout approve ${plan.id}'`,
        );
      console.log(`follow it with 'outpost rollout status ${plan.id} --watch' or 'outpost rollout wait ${plan.id}'`);
    }
    return 0;
  }),
);

// ---------------------------------------------------------------------------------------------
async function reportFor(
  coordinator: string,
  snapshot: RolloutSnapshot,
  session: Session,
  options: { hostStatus: boolean },
): Promise<{ view: RolloutView; report: RolloutReport }> {
  const view = judgeRollout(snapshot.entries, snapshot.signed, session.authority.chain, Date.now());
  const statuses = new Map<string, HostView>();
  if (options.hostStatus) {
    // Hosts of open waves that have not proven anything yet: what their own status says.
    const proven = new Set([...view.succeeded.values()].flatMap((s) => [...s]));
    const failed = new Set(view.waves.flatMap((w) => w.gate.failures.map((f) => f.host)));
    const pending = view.waves
      .filter((w) => w.open)
      .flatMap((w) => w.hosts)
      .filter((h) => !proven.has(h) && !failed.has(h))
      .slice(0, 200);
    for (const hostView of await readHostViews(coordinator, pending, session.authority, session.key, session.timeoutMs))
      statuses.set(hostView.host, hostView);
  }
  return { view, report: (await rendering()).buildReport(view, statuses) };
}

const statusSpec = defineCommand({
  name: 'rollout status',
  summary: 'one rollout: waves, gates, hosts and failures (live with --watch)',
  usage: 'outpost rollout status ID [--watch] [--json] [options]',
  options: z.object({
    ...common,
    id: idOption,
    watch: option(z.boolean().default(false), { description: 'redraw as the rollout moves, until Ctrl-C' }),
    interval: option(durationSchema.prefault('2s'), {
      placeholder: 'DURATION',
      description: "with --watch: how often hosts' status documents are read again",
    }),
  }),
  examples: ['outpost rollout status 2026-w49-3f2a9c --watch'],
});

const statusCommand = subcommand(
  statusSpec,
  reachingCoordinator(async (o) => {
    const session = await openSession(statusSpec, o);
    const { renderReport } = await rendering();
    if (!o.watch) {
      const { report } = await reportFor(
        o.coordinator,
        await readRollout(o.coordinator, o.id, session.key, session.timeoutMs),
        session,
        {
          hostStatus: true,
        },
      );
      console.log(
        o.json
          ? JSON.stringify(report, null, 2)
          : renderReport(report, { progressBars: process.stdout.isTTY === true }),
      );
      return 0;
    }
    const connection = await followRollout(o.coordinator, o.id, session.key, session.timeoutMs);
    let stop = false;
    const onSignal = (): void => {
      stop = true;
    };
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    try {
      let previous = '';
      while (!stop) {
        const snapshot = snapshotOf(o.id, readRolloutEntries(connection.doc));
        const { report } = await reportFor(o.coordinator, snapshot, session, { hostStatus: true });
        const text = o.json
          ? JSON.stringify(report)
          : renderReport(report, { progressBars: process.stdout.isTTY === true });
        if (text !== previous) {
          // On a terminal the screen is redrawn; in a pipe each change is printed once.
          if (process.stdout.isTTY && !o.json) process.stdout.write('\x1b[H\x1b[2J');
          console.log(o.json ? text : `${text}\n${process.stdout.isTTY ? '' : '---'}`);
          previous = text;
        }
        const wake = new Promise<void>((resolve) => {
          const onUpdate = (): void => resolve();
          connection.doc.once('update', onUpdate);
          setTimeout(resolve, o.interval * 1000).unref();
        });
        await wake;
      }
    } finally {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      connection.close();
    }
    return 0;
  }),
);

// ---------------------------------------------------------------------------------------------
const listSpec = defineCommand({
  name: 'rollout list',
  summary: 'every rollout the coordinator holds, with its state',
  usage: 'outpost rollout list [--json] [options]',
  options: z.object({ ...common }),
});

const listCommand = subcommand(
  listSpec,
  reachingCoordinator(async (o) => {
    const session = await openSession(listSpec, o);
    const rows: {
      id: string;
      release: string;
      state: string;
      waves: number;
      hosts: number;
      issuer: string;
      createdAt: string;
    }[] = [];
    const problems: { id: string; error: string }[] = [];
    for (const id of await listRolloutIds(o.coordinator, session.key, session.timeoutMs)) {
      try {
        const snapshot = await readRollout(o.coordinator, id, session.key, session.timeoutMs);
        const view = judgeRollout(snapshot.entries, snapshot.signed, session.authority.chain, Date.now());
        rows.push({
          id,
          release: view.plan.release,
          state: view.state,
          waves: view.plan.waves.length,
          hosts: view.plan.waves.reduce((n, w) => n + w.hosts.length, 0),
          issuer: view.plan.issuer,
          createdAt: view.plan.createdAt,
        });
      } catch (error) {
        problems.push({ id, error: (error as Error).message });
      }
    }
    if (o.json) console.log(JSON.stringify({ rollouts: rows, unreadable: problems }, null, 2));
    else if (!rows.length && !problems.length) console.log("no rollouts yet: 'outpost rollout create' makes one");
    else {
      const header = ['ID', 'RELEASE', 'STATE', 'WAVES', 'HOSTS', 'ISSUER', 'CREATED'];
      const table = [
        header,
        ...rows.map((r) => [r.id, r.release, r.state, String(r.waves), String(r.hosts), r.issuer, r.createdAt]),
      ];
      const widths = header.map((_, i) => Math.max(...table.map((row) => row[i]!.length)));
      for (const row of table)
        console.log(row.map((c, i) => (i === row.length - 1 ? c : c.padEnd(widths[i]!))).join('  '));
      for (const p of problems) console.log(`${p.id}: ${p.error}`);
    }
    return 0;
  }),
);

// ---------------------------------------------------------------------------------------------
const approveSpec = defineCommand({
  name: 'rollout approve',
  summary: 'co-sign the plan (groups that need several admins), or with --wave let a wave start',
  usage: 'outpost rollout approve ID [--wave N] [options]',
  options: z.object({
    ...common,
    id: idOption,
    wave: option(z.coerce.number().int().min(2).optional(), {
      placeholder: 'N',
      description: 'approve the start of wave N (2 = the second); without it: add your signature to the plan',
    }),
  }),
  examples: ['outpost rollout approve 2026-w49-3f2a9c', 'outpost rollout approve 2026-w49-3f2a9c --wave 3'],
});

async function sendAction(
  o: { coordinator: string; id: string },
  session: Session,
  snapshot: RolloutSnapshot,
  verb: ActionVerb,
  extra: { wave?: number; reason?: string } = {},
): Promise<void> {
  const { plan } = snapshot.signed;
  const admin = adminForKey(policyOf(session), session.key.publicKey);
  const signed = signRolloutAction(
    draftRolloutAction(plan, snapshot.entries, verb, admin?.name ?? session.key.name, Date.now(), extra),
    session.key,
  );
  await postRollout(o.coordinator, { action: signed }, session.timeoutMs, `${verb} of rollout ${plan.id}`);
}

const approveCommand = subcommand(
  approveSpec,
  reachingCoordinator(async (o) => {
    const session = await openSession(approveSpec, o);
    const snapshot = await readRollout(o.coordinator, o.id, session.key, session.timeoutMs);
    const { plan } = snapshot.signed;
    if (o.wave !== undefined) {
      if (o.wave > plan.waves.length)
        throw new UsageError(
          `outpost rollout approve: --wave ${o.wave}: rollout ${plan.id} has ${plan.waves.length} waves`,
        );
      await sendAction(o, session, snapshot, 'approve', { wave: o.wave });
      const out = { id: plan.id, approved: `wave ${o.wave} (${plan.waves[o.wave - 1]!.name})`, by: session.key.name };
      console.log(
        o.json
          ? JSON.stringify(out, null, 2)
          : `rollout ${plan.id}: approved the start of wave ${o.wave} (${plan.waves[o.wave - 1]!.name})`,
      );
      return 0;
    }
    const digest = planDigest(plan);
    const cosignature = cosignPlan(plan, session.key);
    await postRollout(
      o.coordinator,
      { cosignature: { ...cosignature, rollout: plan.id } },
      session.timeoutMs,
      `your signature on rollout ${plan.id}`,
    );
    const keys = verifiedPlanKeys(snapshot.signed, digest, [...snapshot.entries.cosignatures, cosignature]);
    const needs = planSignatureNeeds(plan, keys, session.authority.chain);
    const signers = keys.map((k) => adminForKey(policyOf(session), k)?.name ?? `${k.slice(0, 12)}…`);
    const out = { id: plan.id, signedBy: signers, signaturesNeeded: needs };
    if (o.json) console.log(JSON.stringify(out, null, 2));
    else {
      console.log(`rollout ${plan.id}: signed by ${signers.join(', ')}`);
      console.log(
        needs.length
          ? `still needed for ${needs.length} hosts: ${needs[0]!.reason}`
          : 'enough signatures for every host',
      );
    }
    return 0;
  }),
);

// ---------------------------------------------------------------------------------------------
const verbSpec = (verb: 'pause' | 'resume', summary: string) =>
  defineCommand({
    name: `rollout ${verb}`,
    summary,
    usage: `outpost rollout ${verb} ID [options]`,
    options: z.object({
      ...common,
      id: idOption,
      reason: option(z.string().max(500).optional(), { placeholder: 'TEXT', description: 'why (shown to everyone)' }),
    }),
  });
const pauseSpec = verbSpec('pause', 'hold every host that has not started (signed); hosts already activating finish');
const resumeSpec = verbSpec('resume', 'carry on after a pause (signed)');

// After a pause or resume is stored, the document is read again: another admin's action signed
// at the same moment (the same sequence number) may decide instead (judgeActions: a pause wins).
// The admin is told, and the command exits 1, rather than believe an action that did not count.
const pauseOrResume = (verb: 'pause' | 'resume', spec: typeof pauseSpec) =>
  subcommand(
    spec,
    reachingCoordinator(async (o) => {
      const session = await openSession(spec, o);
      const snapshot = await readRollout(o.coordinator, o.id, session.key, session.timeoutMs);
      await sendAction(o, session, snapshot, verb, o.reason !== undefined ? { reason: o.reason } : {});
      const after = await readRollout(o.coordinator, o.id, session.key, session.timeoutMs);
      const { actions } = judgeRollout(after.entries, after.signed, session.authority.chain, Date.now());
      const outcome = pauseResumeOutcome(o.id, verb, actions, `Run 'outpost rollout ${verb} ${o.id}' again`);
      const effective = outcome.decided;
      const done = verb === 'pause' ? 'paused' : 'resumed';
      const out = { id: o.id, [done]: effective, effective, paused: actions.paused, aborted: actions.aborted };
      if (o.json) console.log(JSON.stringify(out, null, 2));
      else if (effective) console.log(`rollout ${o.id}: ${done}`);
      if (!outcome.decided) console.error(outcome.reason);
      return effective ? 0 : 1;
    }),
  );

const abortSpec = defineCommand({
  name: 'rollout abort',
  summary: 'stop for good: hosts that have not started drop it; --rollback returns started ones',
  usage: 'outpost rollout abort ID [--rollback] [--reason TEXT] [options]',
  options: z.object({
    ...common,
    id: idOption,
    reason: option(z.string().max(500).optional(), { placeholder: 'TEXT', description: 'why (shown to everyone)' }),
    rollback: option(z.boolean().default(false), {
      description:
        'also sign, for every host that applied or is activating the release, an intent back to the closure it ran before (needs rollback)',
    }),
    expires: option(durationSchema.prefault('7d'), {
      placeholder: 'DURATION',
      description: 'with --rollback: how long those intents stay valid',
    }),
  }),
  examples: ['outpost rollout abort 2026-w49-3f2a9c --rollback --reason "db migrations fail"'],
});

const abortCommand = subcommand(
  abortSpec,
  reachingCoordinator(async (o) => {
    const session = await openSession(abortSpec, o);
    const snapshot = await readRollout(o.coordinator, o.id, session.key, session.timeoutMs);
    await sendAction(o, session, snapshot, 'abort', o.reason !== undefined ? { reason: o.reason } : {});
    const { plan } = snapshot.signed;
    const rolledBack: { host: string; generation: number; closure: string }[] = [];
    const notRolledBack: { host: string; reason: string }[] = [];
    if (o.rollback) {
      const entries = plan.waves.flatMap((w) => w.hosts);
      const views = await readHostViews(
        o.coordinator,
        entries.map((e) => e.host),
        session.authority,
        session.key,
        session.timeoutMs,
      );
      const byHost = new Map(views.map((view) => [view.host, view]));
      // Read once for every host (this rollout now reads as aborted: its waves still to come hold no generation).
      const rollouts = await readRolloutDocuments(o.coordinator, session.key, session.timeoutMs);
      for (const back of abortRollbackTargets(plan, (host) => byHost.get(host) ?? null)) {
        if (!back.ok) {
          notRolledBack.push({ host: back.host, reason: back.reason });
          continue;
        }
        try {
          const { signed } = await (await intentWriting()).submitIntent(
            o.coordinator,
            {
              host: back.host,
              closure: back.closure,
              action: plan.action,
              validForSeconds: o.expires,
              rollouts,
              chain: session.authority.chain,
            },
            session.key,
            session.timeoutMs,
          );
          rolledBack.push({ host: back.host, generation: signed.intent.generation, closure: back.closure });
        } catch (error) {
          notRolledBack.push({ host: back.host, reason: (error as Error).message });
        }
      }
    }
    const out = { id: plan.id, aborted: true, rolledBack, notRolledBack };
    if (o.json) console.log(JSON.stringify(out, null, 2));
    else {
      console.log(`rollout ${plan.id}: aborted; hosts that have not started drop it`);
      for (const r of rolledBack) console.log(`  ${r.host}: back to ${r.closure} as generation ${r.generation}`);
      for (const r of notRolledBack) console.log(`  ${r.host}: NOT rolled back: ${r.reason}`);
    }
    return notRolledBack.length ? 1 : 0;
  }),
);

// ---------------------------------------------------------------------------------------------
const waitSpec = defineCommand({
  name: 'rollout wait',
  summary: 'block until the rollout is complete (exit 0), or halted, aborted, expired or timed out (exit 1)',
  usage: 'outpost rollout wait ID [--timeout-total DURATION] [options]',
  options: z.object({
    ...common,
    id: idOption,
    timeoutTotal: option(durationSchema.prefault('6h'), {
      placeholder: 'DURATION',
      description: 'give up (exit 1) after this long',
    }),
  }),
  examples: ['outpost rollout wait "$(jq -r .id rollout.json)" --timeout-total 24h'],
});

const waitCommand = subcommand(
  waitSpec,
  reachingCoordinator(async (o) => {
    const session = await openSession(waitSpec, o);
    const deadline = Date.now() + o.timeoutTotal * 1000;
    const { buildReport, formatSeconds } = await rendering();
    const connection = await followRollout(o.coordinator, o.id, session.key, session.timeoutMs);
    try {
      let said = '';
      for (;;) {
        const snapshot = snapshotOf(o.id, readRolloutEntries(connection.doc));
        const view = judgeRollout(snapshot.entries, snapshot.signed, session.authority.chain, Date.now());
        const line = `${view.state}: ${view.waves.map((w) => `${w.name} ${w.gate.successes}/${w.gate.needed}${w.open ? '' : ' (closed)'}`).join(', ')}`;
        if (line !== said && !o.json) console.error(`rollout ${o.id}: ${line}`);
        said = line;
        const final =
          view.state === 'complete' || view.state === 'halted' || view.state === 'aborted' || view.state === 'expired';
        if (final || Date.now() >= deadline) {
          const report = buildReport(view, new Map());
          const timedOut = !final;
          if (o.json) console.log(JSON.stringify({ ...report, timedOut }, null, 2));
          else if (view.state === 'complete') console.log(`rollout ${o.id}: complete`);
          else
            console.log(
              `rollout ${o.id}: ${
                timedOut
                  ? `not complete after ${formatSeconds(Math.round(o.timeoutTotal))} (${view.state})`
                  : view.actions.aborted
                    ? `aborted by ${view.actions.aborted.by}${view.actions.aborted.reason ? `: ${view.actions.aborted.reason}` : ''}`
                    : view.state
              }${view.halted && !view.actions.aborted ? `: ${view.halted.reason}` : ''}`,
            );
          return view.state === 'complete' ? 0 : 1;
        }
        await new Promise<void>((resolve) => {
          connection.doc.once('update', () => resolve());
          const until = Math.min(deadline, view.nextChangeAt ?? Number.POSITIVE_INFINITY, Date.now() + 5000);
          setTimeout(resolve, Math.max(50, until - Date.now())).unref();
        });
        await sleep(20);
      }
    } finally {
      connection.close();
    }
  }),
);

export const rolloutCommandGroup: CommandGroup = {
  name: 'rollout',
  summary: 'roll a release out to many hosts in waves with gates that agents check',
  subcommands: [
    createCommand,
    statusCommand,
    listCommand,
    approveCommand,
    pauseOrResume('pause', pauseSpec),
    pauseOrResume('resume', resumeSpec),
    abortCommand,
    waitCommand,
  ],
  notes: [
    'ID may be given as the first argument or as --id.',
    'Settings come from flags, OUTPOST_COORDINATOR / OUTPOST_KEY / OUTPOST_ORG_ROOT, or the admin config file.',
    'How rollouts work and what a compromised coordinator can do to one: docs/rollouts.md',
  ],
};

export function runRolloutCommand(argv: string[]): Promise<number> {
  // `outpost rollout status ID`: the id as first argument stands for --id ID.
  const [sub, first, ...rest] = argv;
  const args =
    sub && first && !first.startsWith('-') && sub !== 'create' && sub !== 'list' ? [sub, '--id', first, ...rest] : argv;
  return runGroup(rolloutCommandGroup, args);
}
