import { z } from 'zod';
import {
  type PlanCosignature,
  planCosignatureSchema,
  rolloutIdSchema,
  type SignedPlan,
  type SignedRolloutAction,
  signedPlanSchema,
  signedRolloutActionSchema,
} from '../../../shared/rollout/schemas.js';
import { type SignedEnrollment, signedEnrollmentSchema } from '../../../shared/schemas/policy.js';
import { httpBaseFromWs } from '../../../shared/sync/reconnect.js';
import { idbDelete, idbPut, idbValues } from '../storage/idb.js';
import { readBounded } from './read-bounded.js';

// Rollout plans and actions (approve a wave, pause, resume, abort), plan co-signatures and
// enrollment approvals signed in this page wait here, in IndexedDB (awaited before the page says "signed"), until the server's API
// stores them: POST /api/rollouts and /api/enroll/approve, exactly as the CLI sends them.
//
// They cannot wait inside the rollout or enrollment document the way intents wait in a host's
// desired document: fleet documents are written only by the coordinator, after it checked each
// entry (coordinator/trust-state.ts gives admins read access), so a write into the page's copy
// would be refused by the server and stop that copy from syncing. Instead the views read the
// document and these entries together (marked not yet delivered), and they are sent in the order
// they were signed whenever the link is there — a pause before the approval signed after it.
// Delivered means the server answered 200: it stores an entry only after checking it as readers
// will, and answers after its log is on disk. A refusal (4xx) is final and shown with the
// server's reason; anything else (no link, 5xx, 429) is tried again.
const common = {
  id: z.string().min(1).max(200),
  server: z.string(),
  what: z.string().max(300),
  signedAt: z.string(),
  deliveredAt: z.string().nullable(),
  refused: z.string().max(2_000).nullable(),
};
const apiOutboxEntrySchema = z.discriminatedUnion('kind', [
  z.object({ kind: z.literal('rollout-action'), signed: signedRolloutActionSchema, ...common }),
  z.object({ kind: z.literal('enrollment'), signed: signedEnrollmentSchema, ...common }),
  // A rollout planned and signed with no link (rollout-create.ts); `plannedFrom`: when the view it
  // was planned from was last live (null: never).
  z.object({
    kind: z.literal('rollout-plan'),
    signed: signedPlanSchema,
    plannedFrom: z.number().nullable(),
    ...common,
  }),
  z.object({
    kind: z.literal('rollout-cosignature'),
    rollout: rolloutIdSchema,
    signed: planCosignatureSchema,
    ...common,
  }),
]);
export type ApiOutboxEntry = z.infer<typeof apiOutboxEntrySchema>;
export interface Waiting<T> {
  signed: T;
  // When the server answered 200 (null: not yet delivered).
  deliveredAt: string | null;
}

// After the server said it stored an entry, its document should show it within moments (it is
// broadcast as it is written). Until then the page counts it; afterwards only the document counts,
// and the page says the server's answer and its document disagree.
const ARRIVAL_GRACE_MS = 60_000;
export const arriving = (waiting: Waiting<unknown>, now: number): boolean =>
  waiting.deliveredAt === null || now - Date.parse(waiting.deliveredAt) < ARRIVAL_GRACE_MS;

// Delivered entries are kept this long (then the document is the record), refused ones until dismissed.
const KEEP_DELIVERED_MS = 7 * 86_400_000;

export type NewApiOutboxEntry =
  | { kind: 'rollout-action'; signed: SignedRolloutAction; what: string }
  | { kind: 'enrollment'; signed: SignedEnrollment; what: string }
  | { kind: 'rollout-cosignature'; rollout: string; signed: PlanCosignature; what: string }
  | { kind: 'rollout-plan'; signed: SignedPlan; plannedFrom: number | null; what: string };

const PATHS = {
  'rollout-action': '/api/rollouts',
  'rollout-cosignature': '/api/rollouts',
  'rollout-plan': '/api/rollouts',
  enrollment: '/api/enroll/approve',
} as const;
// The bodies `outpost rollout create|pause|resume|abort|approve` and `outpost enroll approve` send.
function body(entry: ApiOutboxEntry): unknown {
  switch (entry.kind) {
    case 'rollout-action':
      return { action: entry.signed };
    case 'rollout-cosignature':
      return { cosignature: { ...entry.signed, rollout: entry.rollout } };
    case 'rollout-plan':
      return { plan: entry.signed };
    case 'enrollment':
      return entry.signed;
  }
}
const idOf = (entry: NewApiOutboxEntry): string =>
  entry.kind === 'enrollment' ? entry.signed.signatures[0]!.signature : entry.signed.signature.signature;

const SEND_EVERY_MS = 2_000;
const SEND_TIMEOUT_MS = 15_000;
const MAX_ANSWER_BYTES = 64 * 1024;

export type PostOutcome =
  | { kind: 'stored' }
  | { kind: 'refused'; reason: string }
  | { kind: 'unreachable'; reason: string };

// One POST of a signed entry to the server that served the page; a refusal is told apart from a
// missing link (only the first is final).
export async function postSigned(serverUrl: string, path: string, payload: unknown): Promise<PostOutcome> {
  if (!navigator.onLine) return { kind: 'unreachable', reason: 'this browser is offline' };
  const url = `${httpBaseFromWs(serverUrl)}${path}`;
  let response: Response;
  try {
    response = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(payload),
      signal: AbortSignal.timeout(SEND_TIMEOUT_MS),
    });
  } catch (error) {
    return { kind: 'unreachable', reason: `${url} unreachable (${(error as Error).message})` };
  }
  // Cut or missing, it is no JSON: reported with the status below.
  const text = (await readBounded(response, MAX_ANSWER_BYTES)) ?? '';
  let answer: { ok?: unknown; error?: unknown } = {};
  try {
    answer = JSON.parse(text) as typeof answer;
  } catch {
    // Reported below with the status.
  }
  if (response.status === 200 && answer.ok === true) return { kind: 'stored' };
  const reason = typeof answer.error === 'string' ? answer.error : `status ${response.status}`;
  const final = response.status >= 400 && response.status < 500 && response.status !== 408 && response.status !== 429;
  return final ? { kind: 'refused', reason } : { kind: 'unreachable', reason: `${url} answered ${reason}` };
}

export class ApiOutbox {
  private readonly entries = new Map<string, ApiOutboxEntry>();
  private readonly listeners = new Set<() => void>();
  private timer: ReturnType<typeof setInterval> | null = null;
  private readonly onOnline = (): void => void this.deliver();
  // One delivery round at a time, in signing order.
  private round: Promise<void> = Promise.resolve();

  constructor(private readonly serverUrl: string) {}

  async start(): Promise<void> {
    const now = Date.now();
    for (const raw of await idbValues('api-outbox')) {
      const parsed = apiOutboxEntrySchema.safeParse(raw);
      if (!parsed.success || parsed.data.server !== this.serverUrl) continue;
      const entry = parsed.data;
      if (entry.deliveredAt !== null && now - Date.parse(entry.deliveredAt) > KEEP_DELIVERED_MS)
        await idbDelete('api-outbox', `${entry.server} ${entry.id}`);
      else this.entries.set(entry.id, entry);
    }
    this.timer = setInterval(() => void this.deliver(), SEND_EVERY_MS);
    window.addEventListener('online', this.onOnline);
    void this.deliver();
  }

  // Stored first (a reload or a crash loses nothing), then one delivery round; the answer says
  // whether the server stored it now, refused it, or it waits for the link.
  async add(fresh: NewApiOutboxEntry): Promise<ApiOutboxEntry> {
    const id = idOf(fresh);
    const entry: ApiOutboxEntry = {
      ...fresh,
      id,
      server: this.serverUrl,
      signedAt: new Date().toISOString(),
      deliveredAt: null,
      refused: null,
    };
    await this.save(entry);
    await this.deliver();
    return this.entries.get(id) ?? entry;
  }

  // Entries not refused, oldest first, with when the server said it stored them: the caller drops
  // those the document holds, and counts a delivered one the document lacks only for a short while
  // (arriving(): a server that answered 200 and dropped it must not leave the page showing it).
  rolloutActions(rollout: string): Waiting<SignedRolloutAction>[] {
    return this.sorted().flatMap((e) =>
      e.kind === 'rollout-action' && e.refused === null && e.signed.action.rollout === rollout
        ? [{ signed: e.signed, deliveredAt: e.deliveredAt }]
        : [],
    );
  }

  rolloutCosignatures(rollout: string): Waiting<PlanCosignature>[] {
    return this.sorted().flatMap((e) =>
      e.kind === 'rollout-cosignature' && e.refused === null && e.rollout === rollout
        ? [{ signed: e.signed, deliveredAt: e.deliveredAt }]
        : [],
    );
  }

  // Rollouts created with no link, not refused (the list shows them until their document does).
  rolloutPlans(): (Waiting<SignedPlan> & { plannedFrom: number | null })[] {
    return this.sorted().flatMap((e) =>
      e.kind === 'rollout-plan' && e.refused === null
        ? [{ signed: e.signed, deliveredAt: e.deliveredAt, plannedFrom: e.plannedFrom }]
        : [],
    );
  }

  enrollments(): Waiting<SignedEnrollment>[] {
    return this.sorted().flatMap((e) =>
      e.kind === 'enrollment' && e.refused === null ? [{ signed: e.signed, deliveredAt: e.deliveredAt }] : [],
    );
  }

  // What the server refused (shown with its reason until dismissed).
  refused(): ApiOutboxEntry[] {
    return this.sorted().filter((e) => e.refused !== null);
  }

  pending(): ApiOutboxEntry[] {
    return this.sorted().filter((e) => e.deliveredAt === null && e.refused === null);
  }

  // A refused entry is dropped once the admin has read why.
  async dismiss(id: string): Promise<void> {
    const entry = this.entries.get(id);
    if (!entry || entry.refused === null) return;
    await idbDelete('api-outbox', `${entry.server} ${entry.id}`);
    this.entries.delete(id);
    this.changed();
  }

  subscribe(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  deliver(): Promise<void> {
    // A failed round (IndexedDB) is tried again at the next tick; it never blocks the chain.
    this.round = this.round.then(() => this.deliverPending()).catch(() => undefined);
    return this.round;
  }

  private sorted(): ApiOutboxEntry[] {
    return [...this.entries.values()].sort((a, b) => a.signedAt.localeCompare(b.signedAt));
  }

  private async save(entry: ApiOutboxEntry): Promise<void> {
    await idbPut('api-outbox', `${entry.server} ${entry.id}`, entry);
    this.entries.set(entry.id, entry);
    this.changed();
  }

  private changed(): void {
    for (const listener of this.listeners) listener();
  }

  private async deliverPending(): Promise<void> {
    for (const entry of this.pending()) {
      const outcome = await postSigned(this.serverUrl, PATHS[entry.kind], body(entry));
      // Stop at the first that cannot go: the later ones wait behind it, in order.
      if (outcome.kind === 'unreachable') return;
      await this.save(
        outcome.kind === 'stored'
          ? { ...entry, deliveredAt: new Date().toISOString() }
          : { ...entry, refused: outcome.reason },
      );
    }
  }

  close(): void {
    if (this.timer) clearInterval(this.timer);
    window.removeEventListener('online', this.onOnline);
  }
}
