import type { IncomingMessage, ServerResponse } from 'node:http';
import { Gauge, type Registry } from 'prom-client';
import type * as Y from 'yjs';
import { appendIntent, readIntentEntries } from '../shared/documents/desired.js';
import { desiredDocName, parseDocName, statusDocName } from '../shared/documents/names.js';
import { readResults } from '../shared/documents/status.js';
import type { Logger } from '../shared/log.js';
import { RequestBodyError, readJsonBody } from '../shared/node/http-body.js';
import {
  appendRolloutEntries,
  type RolloutEntries,
  readRolloutEntries,
  rolloutDocName,
  rolloutIdOfDoc,
} from '../shared/rollout/document.js';
import {
  findPlan,
  judgeRollout,
  newJudgeMemo,
  type RolloutJudgeMemo,
  type RolloutView,
} from '../shared/rollout/judge.js';
import { deriveRolloutIntent, expectedResultDigest, placeHosts, planDigest } from '../shared/rollout/plan.js';
import {
  type PlanCosignature,
  rolloutIdSchema,
  rolloutSubmissionSchema,
  type SignedPlan,
  type SignedRolloutAction,
  unknownActionFields,
  unknownPlanFields,
} from '../shared/rollout/schemas.js';
import { actionAuthority, planSignatureValid, planSignersForHost, verifiedPlanKeys } from '../shared/rollout/verify.js';
import type { SignedResult } from '../shared/schemas/report.js';
import { adminForKey } from '../shared/trust/capabilities.js';
import { intentDigest } from '../shared/trust/verify-intent.js';
import { highestGeneration } from '../shared/views/intent-draft.js';
import { type SourceLimiter, sourceOf } from './enrollment-limits.js';
import { decideFleetWrite } from './fleet-writes.js';
import { followDocumentChanges } from './followed-changes.js';
import { type DocumentHost, type HostedDocument, withPinned } from './hosted-documents.js';
import { respondJson } from './http-guard.js';
import type { TrustState } from './trust-state.js';
import type { UpdateLog } from './update-log.js';

// The coordinator's part in rollouts (docs/rollouts.md). It adds no trust: it stores plans,
// co-signatures and actions only after checking them as agents will, copies hosts' own signed
// results into the rollout's evidence, and — judging the gates with the same code agents run —
// delivers each wave's rollout intents into its hosts' desired documents once the gate is open.
// Agents check everything again; all of this is for liveness.

// A plan holds up to 10,000 hosts (~250 bytes each).
const MAX_BODY = 5 * 1024 * 1024;
// Evidence is gathered and written in batches: one write (and one broadcast to the agents
// following the rollout) per batch rather than per host.
const EVIDENCE_BATCH_MS = 100;
// Rollout intents are written into this many desired documents at once (their fsyncs are
// group-committed by the update log).
const DELIVERY_CONCURRENCY = 64;
// Coordinators sharing a NATS log judge and deliver rollouts in turn, like timestamps: the holder
// of this lease does, the others store submissions and take over when it lapses (docs/scale-out.md).
const ROLLOUT_LEASE_MS = 10_000;
const LEASE_RENEW_MS = 3000;
// Status documents that changed through another coordinator are read in batches.
const FOLLOWED_STATUS_BATCH_MS = 1000;

export interface RolloutService {
  handlePost(req: IncomingMessage, res: ServerResponse): Promise<void>;
  // Rollouts the coordinator follows, for /healthz.
  health(): Record<string, unknown>;
  // Whether this coordinator holds the rollout lease (always, on a log of its own).
  leading(): boolean;
  // Each followed rollout's state and waves at its last judgement, for /metrics.
  waveCounts(): { id: string; state: RolloutView['state'] | null; waves: WaveCounts[] }[];
  close(): void;
}

interface ActiveRollout {
  id: string;
  document: HostedDocument;
  signed: SignedPlan;
  digest: string;
  // Waves (0-based) whose rollout intents were written to every host.
  delivered: Set<number>;
  pendingEvidence: SignedResult[];
  // Signatures of results already in (or queued for) the evidence.
  knownEvidence: Set<string>;
  flushTimer: NodeJS.Timeout | null;
  soakTimer: NodeJS.Timeout | null;
  // One judgement at a time; a change meanwhile asks for another. Requests in the same turn of
  // the event loop (a batch of evidence is both observed as a write and flushed) make one.
  judging: Promise<void> | null;
  judgeAgain: boolean;
  judgeScheduled: boolean;
  // The evidence tallied so far: each judgement reads only what was added since the last one.
  memo: RolloutJudgeMemo;
  state: RolloutView['state'] | null;
  // Per wave at the last judgement, for /metrics: hosts planned and hosts that proved success.
  waves: WaveCounts[];
}

export interface WaveCounts {
  wave: string;
  planned: number;
  succeeded: number;
  open: boolean;
}

class SubmissionRefused extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export async function startRolloutService(options: {
  host: DocumentHost;
  trust: TrustState;
  listDocuments: () => Promise<string[]>;
  // The update log's lease, its feed of other coordinators' entries and its heads, to compare with
  // when the feed may have lost some (coordinator/update-log.ts, followed-changes.ts).
  log: Pick<UpdateLog, 'claim' | 'follow' | 'heads'>;
  // Fleet POSTs are rate limited per source before anything is checked (fleet-api.ts).
  limiter: SourceLimiter;
  logger: Logger;
  now?: () => number;
}): Promise<RolloutService> {
  const { host, trust, logger } = options;
  const now = options.now ?? Date.now;
  const active = new Map<string, ActiveRollout>();
  // host → the rollouts whose plan names it (for evidence).
  const byHost = new Map<string, Set<string>>();
  let closed = false;
  let leading = false;
  let leaseTimer: NodeJS.Timeout | null = null;
  let statusTimer: NodeJS.Timeout | null = null;
  const followedStatusHosts = new Set<string>();
  const adopting = new Set<string>();

  // A followed rollout's plan is known (rollout.signed): judging reads the other arrays only, and the
  // plan's ~250 KB of text is not parsed again.
  const JUDGED = new Set(['cosignatures', 'actions', 'evidence'] as const);
  const entriesOf = (rollout: ActiveRollout): RolloutEntries =>
    readRolloutEntries(rollout.document.doc, { arrays: JUDGED });

  function register(id: string, document: HostedDocument, signed: SignedPlan): ActiveRollout {
    const existing = active.get(id);
    if (existing) return existing;
    const rollout: ActiveRollout = {
      id,
      document,
      signed,
      digest: planDigest(signed.plan),
      delivered: new Set(),
      pendingEvidence: [],
      knownEvidence: new Set(
        readRolloutEntries(document.doc, { arrays: new Set(['evidence']) }).evidence.map((r) => r.signature.signature),
      ),
      flushTimer: null,
      soakTimer: null,
      judging: null,
      judgeAgain: false,
      judgeScheduled: false,
      memo: newJudgeMemo(),
      state: null,
      waves: signed.plan.waves.map((wave) => ({
        wave: wave.name,
        planned: wave.hosts.length,
        succeeded: 0,
        open: false,
      })),
    };
    active.set(id, rollout);
    for (const name of placeHosts(signed.plan).keys()) {
      let set = byHost.get(name);
      if (!set) {
        set = new Set();
        byHost.set(name, set);
      }
      set.add(id);
    }
    return rollout;
  }

  // --- evidence --------------------------------------------------------------------------------

  // A host's status document changed: queue its results that answer a rollout it is in.
  function onStatus(hostName: string, doc: Y.Doc): void {
    const ids = byHost.get(hostName);
    if (!ids || !leading) return;
    const { results } = readResults(doc);
    for (const id of ids) {
      const rollout = active.get(id);
      if (!rollout) continue;
      const placed = placeHosts(rollout.signed.plan).get(hostName);
      const expected = expectedResultDigest(rollout.signed, rollout.digest, hostName);
      if (!placed || !expected) continue;
      let queued = false;
      for (const signed of results) {
        const { result, signature } = signed;
        // Cheap checks first; agents check again, with the signature.
        if (result.intentDigest !== expected || result.host !== hostName || signature.publicKey !== placed.entry.key)
          continue;
        if (rollout.knownEvidence.has(signature.signature)) continue;
        rollout.knownEvidence.add(signature.signature);
        rollout.pendingEvidence.push(signed);
        queued = true;
      }
      if (queued) rollout.flushTimer ??= setTimeout(() => void flushEvidence(rollout), EVIDENCE_BATCH_MS);
    }
  }

  async function flushEvidence(rollout: ActiveRollout): Promise<void> {
    rollout.flushTimer = null;
    const batch = rollout.pendingEvidence.splice(0);
    if (!batch.length || closed) return;
    try {
      await decideFleetWrite(host, rolloutDocName(rollout.id), `rollout:${rollout.id}`, (live) => {
        const stored = new Set(readRolloutEntries(live).evidence.map((r) => r.signature.signature));
        const fresh = batch.filter((r) => !stored.has(r.signature.signature));
        return {
          outcome: undefined,
          write: fresh.length ? (copy) => appendRolloutEntries(copy, { evidence: fresh }) : undefined,
        };
      });
      logger.info(
        { event: 'rollout-evidence', document: rolloutDocName(rollout.id), results: batch.length },
        `rollout ${rollout.id}: ${batch.length} results added to the evidence`,
      );
    } catch (error) {
      logger.error({ event: 'rollout-evidence-failed', rollout: rollout.id, err: error }, 'cannot store evidence');
      for (const r of batch) rollout.knownEvidence.delete(r.signature.signature);
    }
    requestJudgement(rollout);
  }

  // Results that reached status documents while the coordinator did not follow the rollout (it
  // restarted, or the plan is new): read the status documents of the plan's hosts once.
  async function scanStatuses(rollout: ActiveRollout): Promise<void> {
    const evidenced = new Set(entriesOf(rollout).evidence.map((r) => r.result.host));
    await readStatuses([...placeHosts(rollout.signed.plan).keys()].filter((h) => !evidenced.has(h)));
  }

  async function readStatuses(names: string[]): Promise<void> {
    await inBatches(names, DELIVERY_CONCURRENCY, async (name) => {
      await withPinned(host, statusDocName(name), (document) => onStatus(name, document.doc));
    });
  }

  // --- gates and delivery -----------------------------------------------------------------------

  function requestJudgement(rollout: ActiveRollout): void {
    if (closed || !leading || rollout.judgeScheduled) return;
    rollout.judgeScheduled = true;
    setImmediate(() => {
      rollout.judgeScheduled = false;
      startJudgement(rollout);
    });
  }

  function startJudgement(rollout: ActiveRollout): void {
    if (closed || !leading) return;
    if (rollout.judging) {
      rollout.judgeAgain = true;
      return;
    }
    rollout.judging = judge(rollout)
      .catch((error: Error) =>
        logger.error({ event: 'rollout-judge-failed', rollout: rollout.id, err: error }, 'judging the rollout failed'),
      )
      .finally(() => {
        rollout.judging = null;
        if (rollout.judgeAgain) {
          rollout.judgeAgain = false;
          requestJudgement(rollout);
        }
      });
  }

  async function judge(rollout: ActiveRollout): Promise<void> {
    const view = judgeRollout(entriesOf(rollout), rollout.signed, trust.chain(), now(), rollout.memo);
    rollout.waves = waveCountsOf(view);
    if (view.state !== rollout.state) {
      logger.info(
        {
          event: 'rollout-state',
          document: rolloutDocName(rollout.id),
          state: view.state,
          ...(view.halted ? { halted: view.halted } : {}),
        },
        `rollout ${rollout.id}: ${view.state}${view.halted ? ` (${view.halted.reason})` : ''}`,
      );
      rollout.state = view.state;
    }
    if (rollout.soakTimer) clearTimeout(rollout.soakTimer);
    rollout.soakTimer = null;
    if (view.nextChangeAt !== null)
      rollout.soakTimer = setTimeout(
        () => requestJudgement(rollout),
        Math.max(0, Math.min(2 ** 31 - 1, view.nextChangeAt - now() + 50)),
      );
    if (view.state === 'aborted' || view.state === 'expired') return;
    for (const wave of view.waves) {
      if (!wave.open || rollout.delivered.has(wave.index)) continue;
      await deliverWave(rollout, wave.index);
    }
  }

  // Writes each host's rollout intent into its desired document (unless it is there already).
  async function deliverWave(rollout: ActiveRollout, index: number): Promise<void> {
    const wave = rollout.signed.plan.waves[index]!;
    const startedAt = now();
    let written = 0;
    await inBatches(wave.hosts, DELIVERY_CONCURRENCY, async (entry) => {
      const placed = placeHosts(rollout.signed.plan).get(entry.host)!;
      const intent = deriveRolloutIntent(rollout.signed, rollout.digest, placed);
      const digest = intentDigest(intent);
      const wrote = await decideFleetWrite(host, desiredDocName(entry.host), `rollout:${rollout.id}`, (live) => {
        const present = readIntentEntries(live).entries.some((e) => intentDigest(e.signed) === digest);
        return { outcome: !present, write: present ? undefined : (copy) => appendIntent(copy, intent) };
      });
      if (wrote) written += 1;
    });
    rollout.delivered.add(index);
    logger.info(
      {
        event: 'rollout-wave-delivered',
        document: rolloutDocName(rollout.id),
        wave: wave.name,
        hosts: wave.hosts.length,
        written,
        ms: now() - startedAt,
      },
      `rollout ${rollout.id}: wave ${wave.name} delivered to ${wave.hosts.length} hosts`,
    );
  }

  // --- submissions ------------------------------------------------------------------------------

  function checkPlan(signed: SignedPlan): void {
    const { plan } = signed;
    const chain = trust.chain();
    const policy = chain.at(-1);
    if (!policy) throw new SubmissionRefused(409, 'no policy in force yet; push one with outpost policy push');
    const unknown = unknownPlanFields(plan);
    if (unknown.length)
      throw new SubmissionRefused(
        400,
        `the plan has fields this coordinator does not know (${unknown.slice(0, 8).join(', ')}); upgrade the coordinator`,
      );
    if (!planSignatureValid(signed))
      throw new SubmissionRefused(400, "the plan's signature by its issuerKey does not verify");
    if (Date.parse(plan.expiresAt) <= now())
      throw new SubmissionRefused(400, `the plan expired at ${plan.expiresAt}; create it again`);
    const issuer = adminForKey(policy, plan.issuerKey);
    const problems: string[] = [];
    for (const [name, placed] of placeHosts(plan)) {
      const verdict = planSignersForHost(plan, [plan.issuerKey], chain, name);
      if (!issuer || !verdict.admins.includes(issuer.name))
        problems.push(verdict.ok ? `${name}: not counted` : verdict.reason);
      const bound = trust.bindings().get(name)?.hostKey;
      if (bound !== placed.entry.key)
        problems.push(
          bound
            ? `${name}: the plan names key ${placed.entry.key.slice(0, 12)}…, enrollment binds ${bound.slice(0, 12)}…`
            : `${name} is not enrolled`,
        );
      if (problems.length >= 5) break;
    }
    if (problems.length)
      throw new SubmissionRefused(
        400,
        `rollout ${plan.id} refused: ${problems.join('; ')}. The issuer needs 'deploy' on every host, and the plan each host's enrolled key (create the plan again)`,
      );
  }

  // A plan fixes each host's next generation. One made from a stale view (the web editor signs
  // plans with no link) may name a generation a deploy or another rollout took since: the host
  // would refuse both as an equivocation, the other admin's intent too. Only the live documents
  // here say which generations are taken, so a new plan is checked against them.
  async function takenGenerations(plan: SignedPlan['plan']): Promise<string[]> {
    const problems: string[] = [];
    const entries = [...placeHosts(plan)].map(([name, placed]) => ({ name, generation: placed.entry.generation }));
    await inBatches(entries, DELIVERY_CONCURRENCY, async ({ name, generation }) => {
      // The clients' rule (`outpost rollout create`, the page): above every intent the document holds.
      let highest = await withPinned(host, desiredDocName(name), (d) => highestGeneration(d.doc, name));
      for (const id of byHost.get(name) ?? [])
        if (id !== plan.id)
          for (const wave of active.get(id)?.signed.plan.waves ?? [])
            for (const entry of wave.hosts) if (entry.host === name) highest = Math.max(highest, entry.generation);
      if (generation <= highest) problems.push(`${name}: generation ${generation} is taken (issued up to ${highest})`);
    });
    return problems;
  }

  async function submitPlan(signed: SignedPlan): Promise<{ status: number; body: Record<string, unknown> }> {
    checkPlan(signed);
    const { plan } = signed;
    const digest = planDigest(plan);
    const name = rolloutDocName(plan.id);
    // The same plan again (a retried submission) is not new: its first wave may be delivered.
    const stored = await withPinned(host, name, (d) =>
      readRolloutEntries(d.doc).plans.some((p) => planDigest(p.plan) === digest),
    );
    if (!stored) {
      const taken = await takenGenerations(plan);
      if (taken.length)
        throw new SubmissionRefused(
          409,
          `rollout ${plan.id} refused: ${taken.slice(0, 5).join('; ')}${taken.length > 5 ? ` and ${taken.length - 5} more` : ''}. Something was deployed since the plan was made; create the plan again`,
        );
    }
    const outcome = await decideFleetWrite(host, name, `rollout:${plan.id}`, (live) => {
      const entries = readRolloutEntries(live);
      const other = entries.plans.find((p) => planDigest(p.plan) !== digest);
      if (other) return { outcome: 'conflict' as const };
      if (entries.plans.length) return { outcome: 'known' as const };
      return { outcome: 'stored' as const, write: (copy) => appendRolloutEntries(copy, { plans: [signed] }) };
    });
    if (outcome === 'conflict')
      throw new SubmissionRefused(409, `rollout id ${plan.id} is taken by another plan; choose another --id`);
    const rollout = register(plan.id, await host.pin(name), signed);
    logger.info(
      {
        event: 'rollout-created',
        document: name,
        release: plan.release,
        issuer: plan.issuer,
        waves: plan.waves.length,
      },
      `rollout ${plan.id} of ${plan.release} stored`,
    );
    requestJudgement(rollout);
    return { status: 200, body: { ok: true, id: plan.id, plan: digest, stored: outcome === 'stored' } };
  }

  function rolloutFor(id: string): ActiveRollout {
    const rollout = active.get(id);
    if (!rollout) throw new SubmissionRefused(404, `no rollout ${id} here; 'outpost rollout list' shows the rollouts`);
    return rollout;
  }

  async function submitCosignature(
    cosignature: PlanCosignature & { rollout: string },
  ): Promise<{ status: number; body: Record<string, unknown> }> {
    const rollout = rolloutFor(cosignature.rollout);
    if (cosignature.plan !== rollout.digest)
      throw new SubmissionRefused(
        400,
        `the signature is for plan ${cosignature.plan.slice(0, 12)}…, rollout ${rollout.id} has plan ${rollout.digest.slice(0, 12)}…`,
      );
    const policy = trust.policy();
    const admin = policy ? adminForKey(policy, cosignature.signature.publicKey) : null;
    if (!admin)
      throw new SubmissionRefused(
        400,
        `key ${cosignature.signature.publicKey.slice(0, 12)}… is not an admin key under the policy in force`,
      );
    const entry: PlanCosignature = { plan: cosignature.plan, signature: cosignature.signature };
    if (!verifiedPlanKeys(rollout.signed, rollout.digest, [entry]).includes(entry.signature.publicKey))
      throw new SubmissionRefused(
        400,
        `the signature by admin ${admin.name} does not verify over rollout ${rollout.id}'s plan`,
      );
    await decideFleetWrite(host, rolloutDocName(rollout.id), `admin:${admin.name}`, (live) => {
      const known = readRolloutEntries(live).cosignatures.some(
        (c) => c.signature.signature === entry.signature.signature,
      );
      return {
        outcome: undefined,
        write: known ? undefined : (copy) => appendRolloutEntries(copy, { cosignatures: [entry] }),
      };
    });
    logger.info(
      { event: 'rollout-cosigned', document: rolloutDocName(rollout.id), admin: admin.name },
      `rollout ${rollout.id} co-signed by ${admin.name}`,
    );
    requestJudgement(rollout);
    return { status: 200, body: { ok: true, id: rollout.id, admin: admin.name } };
  }

  async function submitAction(signed: SignedRolloutAction): Promise<{ status: number; body: Record<string, unknown> }> {
    const { action } = signed;
    const rollout = rolloutFor(action.rollout);
    if (action.plan !== rollout.digest)
      throw new SubmissionRefused(
        400,
        `the action names plan ${action.plan.slice(0, 12)}…, rollout ${rollout.id} has plan ${rollout.digest.slice(0, 12)}…`,
      );
    const unknown = unknownActionFields(action);
    if (unknown.length)
      throw new SubmissionRefused(
        400,
        `the action has fields this coordinator does not know (${unknown.join(', ')}); upgrade the coordinator`,
      );
    const { plan } = rollout.signed;
    if (action.wave !== undefined && action.wave > plan.waves.length)
      throw new SubmissionRefused(400, `rollout ${rollout.id} has ${plan.waves.length} waves, no wave ${action.wave}`);
    // It must count on every host it concerns: the rollout stops (or a wave starts) everywhere or nowhere.
    const concerned = (): string[] =>
      action.verb === 'approve'
        ? plan.waves[action.wave! - 1]!.hosts.map((h) => h.host)
        : plan.waves.flatMap((w) => w.hosts.map((h) => h.host));
    const verdict = actionAuthority(trust.chain(), concerned)(signed);
    if (!verdict.ok)
      throw new SubmissionRefused(403, `${action.verb} of rollout ${rollout.id} refused: ${verdict.reason}`);
    await decideFleetWrite(host, rolloutDocName(rollout.id), `admin:${verdict.admin}`, (live) => {
      const known = readRolloutEntries(live).actions.some((a) => a.signature.signature === signed.signature.signature);
      return {
        outcome: undefined,
        write: known ? undefined : (copy) => appendRolloutEntries(copy, { actions: [signed] }),
      };
    });
    logger.info(
      {
        event: 'rollout-action',
        document: rolloutDocName(rollout.id),
        verb: action.verb,
        admin: verdict.admin,
        wave: action.wave,
      },
      `rollout ${rollout.id}: ${action.verb} by ${verdict.admin}`,
    );
    requestJudgement(rollout);
    return { status: 200, body: { ok: true, id: rollout.id, verb: action.verb, admin: verdict.admin } };
  }

  // --- start, lease and other coordinators' writes ---------------------------------------------

  // Follows a rollout found in the log (at start, or written through another coordinator).
  async function adopt(name: string): Promise<void> {
    const id = rolloutIdOfDoc(name);
    if (id === null || !rolloutIdSchema.safeParse(id).success || active.has(id) || adopting.has(id)) return;
    adopting.add(id);
    try {
      const document = await host.pin(name);
      const entries = readRolloutEntries(document.doc);
      const first = entries.plans[0];
      const signed = first ? findPlan(entries, planDigest(first.plan)) : null;
      if (!signed || Date.parse(signed.plan.expiresAt) <= now() || active.has(id)) {
        host.unpin(name);
        return;
      }
      const rollout = register(id, document, signed);
      // A finished rollout needs no catching up: its waves were delivered, and late results still
      // reach the evidence as hosts write them.
      const view = judgeRollout(entries, signed, trust.chain(), now());
      const state = view.state;
      if (state === 'complete' || state === 'aborted') {
        for (const index of signed.plan.waves.keys()) rollout.delivered.add(index);
        rollout.state = state;
        rollout.waves = waveCountsOf(view);
        return;
      }
      catchUp(rollout);
    } finally {
      adopting.delete(id);
    }
  }

  function catchUp(rollout: ActiveRollout): void {
    if (!leading) return;
    void scanStatuses(rollout)
      .catch((error: Error) =>
        logger.error({ event: 'rollout-scan-failed', rollout: rollout.id, err: error }, 'cannot read status documents'),
      )
      .then(() => requestJudgement(rollout));
  }

  // Claims or renews the lease; on taking it over, catches up every rollout followed here (what
  // the previous holder delivered is delivered again only where it is missing: deliverWave checks).
  async function renewLease(): Promise<void> {
    const was = leading;
    leading = await options.log.claim('rollouts', ROLLOUT_LEASE_MS).catch((error: Error) => {
      logger.warn({ event: 'rollout-lease-failed', reason: error.message }, 'cannot claim the rollout lease');
      return false;
    });
    if (leading === was || closed) return;
    logger.info(
      { event: leading ? 'rollout-lease-taken' : 'rollout-lease-lost', rollouts: active.size },
      leading
        ? 'this coordinator now judges and delivers rollouts'
        : 'another coordinator judges and delivers rollouts',
    );
    if (leading) for (const rollout of active.values()) catchUp(rollout);
  }

  host.observe({
    accepted(document) {
      const parsed = parseDocName(document.name);
      if (parsed?.role === 'status' && byHost.has(parsed.host)) onStatus(parsed.host, document.doc);
      // A co-signature or action stored through another coordinator (a followed entry).
      const id = rolloutIdOfDoc(document.name);
      const rollout = id === null ? undefined : active.get(id);
      if (rollout && rollout.document === document) requestJudgement(rollout);
    },
  });

  // Another coordinator's writes (a shared log): new rollouts are followed here too, and the
  // results hosts report through it are read here while this coordinator holds the lease
  // (documents loaded here already reach onStatus through the observer above).
  async function readFollowedStatuses(): Promise<void> {
    statusTimer = null;
    const hosts = [...followedStatusHosts];
    followedStatusHosts.clear();
    await readStatuses(hosts);
  }
  // After the log's delivery may have lost entries, the documents that moved meanwhile come here
  // too (coordinator/followed-changes.ts): a rollout submitted or a result reported through another
  // coordinator is then still followed or read, not left until its document's next entry.
  const followed = followDocumentChanges(
    options.log,
    (document) => {
      if (closed) return;
      if (rolloutIdOfDoc(document) !== null) {
        void adopt(document).catch((error: Error) =>
          logger.error({ event: 'rollout-adopt-failed', document, err: error }, 'cannot follow a rollout'),
        );
        return;
      }
      const parsed = parseDocName(document);
      if (!leading || parsed?.role !== 'status' || !byHost.has(parsed.host)) return;
      followedStatusHosts.add(parsed.host);
      statusTimer ??= setTimeout(
        () =>
          void readFollowedStatuses().catch((error: Error) =>
            logger.error({ event: 'rollout-status-read-failed', err: error }, 'cannot read followed status documents'),
          ),
        FOLLOWED_STATUS_BATCH_MS,
      );
    },
    logger,
  );

  await renewLease();
  leaseTimer = setInterval(() => void renewLease(), LEASE_RENEW_MS);
  for (const name of await options.listDocuments()) await adopt(name);

  return {
    async handlePost(req, res) {
      const source = sourceOf(req.socket.remoteAddress);
      const allowed = options.limiter.take(source, Date.now());
      if (!allowed.ok) {
        const seconds = Math.ceil(allowed.retryAfterMs / 1000);
        res.setHeader('retry-after', String(seconds));
        respondJson(res, 429, { error: `too many requests from ${source}; try again in ${seconds} s` });
        return;
      }
      try {
        if (!trust.enforced)
          throw new SubmissionRefused(
            409,
            'this coordinator runs without --org-root: rollouts need the fleet policy (agents check plans and evidence against it)',
          );
        const submission = await readJsonBody(req, rolloutSubmissionSchema, MAX_BODY);
        const answer =
          'plan' in submission
            ? await submitPlan(submission.plan)
            : 'cosignature' in submission
              ? await submitCosignature(submission.cosignature)
              : await submitAction(submission.action);
        respondJson(res, answer.status, answer.body);
      } catch (error) {
        if (error instanceof SubmissionRefused || error instanceof RequestBodyError) {
          logger.warn({ event: 'rollout-refused', reason: error.message }, 'refusing a rollout submission');
          respondJson(res, error.status, { error: error.message });
          return;
        }
        logger.error({ event: 'rollout-post-failed', err: error }, 'rollout submission failed');
        respondJson(res, 500, {
          error: `the coordinator failed to store this (${(error as Error).message}); try again, and check its log`,
        });
      }
    },
    leading: () => leading,
    waveCounts: () => [...active.values()].map((r) => ({ id: r.id, state: r.state, waves: r.waves })),
    health: () => ({
      leading,
      active: [...active.values()].map((r) => ({
        id: r.id,
        state: r.state,
        delivered: [...r.delivered].map((i) => i + 1),
      })),
    }),
    close() {
      closed = true;
      followed.stop();
      for (const timer of [leaseTimer, statusTimer]) if (timer) clearTimeout(timer);
      for (const rollout of active.values()) {
        for (const timer of [rollout.flushTimer, rollout.soakTimer]) if (timer) clearTimeout(timer);
      }
    },
  };
}

export const ROLLOUTS_PATH = '/api/rollouts';

// Hosts by rollout wave, for Prometheus: planned and proved-successful hosts per wave, whether the
// wave is open, and each followed rollout's state. Labels name rollouts and waves, which are few.
export function registerRolloutMetrics(registry: Registry, service: RolloutService): void {
  new Gauge({
    name: 'outpost_rollout_wave_hosts',
    help: "Hosts of each followed rollout's waves: planned, and succeeded (their signed results are the wave's evidence)",
    labelNames: ['rollout', 'wave', 'hosts'],
    registers: [registry],
    collect() {
      this.reset();
      for (const rollout of service.waveCounts())
        for (const wave of rollout.waves) {
          this.set({ rollout: rollout.id, wave: wave.wave, hosts: 'planned' }, wave.planned);
          this.set({ rollout: rollout.id, wave: wave.wave, hosts: 'succeeded' }, wave.succeeded);
        }
    },
  });
  new Gauge({
    name: 'outpost_rollout_wave_open',
    help: 'Whether each wave of a followed rollout may start (1) or waits for its gate, approval or a resume (0)',
    labelNames: ['rollout', 'wave'],
    registers: [registry],
    collect() {
      this.reset();
      for (const rollout of service.waveCounts())
        for (const wave of rollout.waves) this.set({ rollout: rollout.id, wave: wave.wave }, wave.open ? 1 : 0);
    },
  });
  new Gauge({
    name: 'outpost_rollout_state',
    help: 'Each followed rollout, 1 in its current state (running, paused, halted, aborted, complete, expired)',
    labelNames: ['rollout', 'state'],
    registers: [registry],
    collect() {
      this.reset();
      for (const rollout of service.waveCounts())
        if (rollout.state) this.set({ rollout: rollout.id, state: rollout.state }, 1);
    },
  });
}

function waveCountsOf(view: RolloutView): WaveCounts[] {
  return view.waves.map((wave) => ({
    wave: wave.name,
    planned: wave.hosts.length,
    succeeded: view.succeeded.get(wave.index)?.size ?? 0,
    open: wave.open,
  }));
}

async function inBatches<T>(items: readonly T[], concurrency: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) await work(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker));
}
