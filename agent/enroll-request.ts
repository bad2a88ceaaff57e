import { z } from 'zod';
import type { SigningKey } from '../shared/crypto/keys.js';
import type { Logger } from '../shared/log.js';
import { backoffDelay, httpBaseFromWs } from '../shared/sync/reconnect.js';
import { type EnrollTokenFile, signEnrollRequest } from '../shared/trust/sign-enroll-request.js';

// Under a policy a host's connections count only once its key is bound to its id. At every start
// the agent asks for that binding (POST /api/enroll, idempotent at the coordinator; relays forward
// it): with a one-time token it is bound at once, without one it shows as pending until an admin
// with `enroll` approves it. Until the endpoints answer it retries with the reconnect backoff.
// Each attempt is signed afresh: the coordinator wants a request made about now (pending requests
// expire by their signed time).
export interface EnrollmentRequestOptions {
  endpoints: string[];
  host: string;
  key: SigningKey;
  token: EnrollTokenFile | null;
  logger: Logger;
  // The agent's reconnect backoff.
  backoff: { baseBackoffMs: number; maxBackoffMs: number };
}

// How often a pending host asks again (the coordinator stores a repeat only when the stored
// request is half way to its expiry).
const PENDING_RECHECK_MS = 3_600_000;

const answerSchema = z.object({
  ok: z.boolean().optional(),
  enrolled: z.boolean().optional(),
  conflict: z.string().optional(),
  error: z.string().optional(),
});

export function requestEnrollment(options: EnrollmentRequestOptions): { stop(): void } {
  const { logger } = options;
  let stopped = false;
  let timer: NodeJS.Timeout | null = null;
  let wake: (() => void) | null = null;

  const attemptAt = async (endpoint: string): Promise<{ retry: boolean; enrolled?: boolean }> => {
    const url = `${httpBaseFromWs(endpoint)}/api/enroll`;
    let response: Response;
    try {
      response = await fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(signEnrollRequest(options.key, options.host, options.token ?? undefined, new Date())),
        signal: AbortSignal.timeout(30_000),
      });
    } catch (error) {
      logger.debug(
        { event: 'enroll-request-unreachable', endpoint, err: error },
        'cannot reach the endpoint to ask for enrollment',
      );
      return { retry: true };
    }
    const parsed = answerSchema.safeParse(await response.json().catch(() => null));
    const answer = parsed.success ? parsed.data : {};
    if (response.status === 200 && answer.ok === true) {
      if (answer.conflict)
        logger.error(
          { event: 'enrollment-conflict', endpoint, hostKey: options.key.publicKey, reason: answer.conflict },
          `enrollment token conflict: ${answer.conflict}`,
        );
      return { retry: false, enrolled: answer.enrolled === true };
    }
    // 5xx, 409 (a coordinator without a policy yet), 429: worth asking again later.
    if (response.status >= 500 || response.status === 409 || response.status === 429) {
      logger.warn(
        { event: 'enroll-request-deferred', endpoint, status: response.status, reason: answer.error ?? null },
        'enrollment request not taken yet; asking again later',
      );
      return { retry: true };
    }
    logger.error(
      { event: 'enroll-request-refused', endpoint, status: response.status, reason: answer.error ?? null },
      `enrollment request refused: ${answer.error ?? `status ${response.status}`}; fix the token (outpost enroll token) or ask an admin to approve this host's key`,
    );
    return { retry: false };
  };

  void (async (): Promise<void> => {
    let pendingLogged = false;
    for (let attempt = 0; !stopped; attempt++) {
      let delayMs = backoffDelay(attempt, options.backoff.baseBackoffMs, options.backoff.maxBackoffMs);
      for (const endpoint of options.endpoints) {
        const outcome = await attemptAt(endpoint);
        if (stopped) return;
        if (outcome.retry) continue;
        // Refused: the log line says why and what to fix; asking again would change nothing.
        if (outcome.enrolled === undefined) return;
        if (outcome.enrolled) {
          logger.info(
            { event: 'enrolled', endpoint, hostKey: options.key.publicKey, viaToken: options.token !== null },
            `this host's key is bound to ${options.host}`,
          );
          return;
        }
        // Pending: ask again now and then, so the request stays listed for admins (pending
        // requests expire at the coordinator) and the approval shows up in this log.
        if (!pendingLogged)
          logger.info(
            {
              event: 'enrollment-pending',
              endpoint,
              hostKey: options.key.publicKey,
              viaToken: options.token !== null,
            },
            `enrollment pending: an admin with 'enroll' approves it with: outpost enroll approve --host ${options.host} --host-key ${options.key.publicKey} …`,
          );
        pendingLogged = true;
        attempt = -1;
        delayMs = PENDING_RECHECK_MS;
        break;
      }
      await new Promise<void>((resolve) => {
        wake = resolve;
        timer = setTimeout(resolve, delayMs);
      });
    }
  })();

  return {
    stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      wake?.();
    },
  };
}
