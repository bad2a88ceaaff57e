import { once } from 'node:events';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ChallengeStore } from '../coordinator/challenges.js';
import { proofFromHeaders, respondJson } from '../coordinator/http-guard.js';
import type { UpdateLog } from '../coordinator/update-log.js';
import { RETURN_DATA_PATH, type ReturnDataLine } from '../shared/bundle/format.js';
import { toBase64 } from '../shared/crypto/encoding.js';
import type { SigningKey } from '../shared/crypto/keys.js';
import { parseDocName } from '../shared/documents/names.js';
import type { Logger } from '../shared/log.js';
import { AUTH_HEADERS, verifyAuthProof } from '../shared/sync/auth-proof.js';
import { logDocumentStates, mirroredStorePaths } from './bundle-log.js';

// GET /api/bundle/return-data (issue 16, docs/sneakernet.md): what `outpost bundle create
// --return --coordinator URL --key RELAY-KEY` needs from this running relay, so the relay need not
// be stopped: the whole state of every hosts/<id>/status document, every document's state vector
// and the store paths the cache mirror holds. The answer names every host the site has and their
// results, so only the holder of this relay's own key gets it: the usual single-use challenge
// (GET /auth/challenge) signed for this path, by the key this relay runs with. Being on the
// machine, an admin of the policy, or another relay is not enough; a relay without --key answers
// to nobody (its data directory, relay stopped, is the way then). The answer is NDJSON
// (returnDataLineSchema), read one document at a time from the log, ending with a closing line.

export interface ReturnDataContext {
  key: SigningKey | null;
  challenges: ChallengeStore;
  log: UpdateLog;
  cacheDir: string;
  logger: Logger;
}

type Refusal = { status: number; error: string };

export function createReturnDataEndpoint(context: ReturnDataContext) {
  const { key, challenges, log, cacheDir, logger } = context;
  const fix = `GET /auth/challenge, sign it for ${RETURN_DATA_PATH} with this relay's own key and send ${Object.values(AUTH_HEADERS).join(', ')} (outpost bundle create --return --coordinator URL --key RELAY-KEY does this)`;

  // Null when the request proves this relay's own key.
  function refusal(req: IncomingMessage): Refusal | null {
    if (!key)
      return {
        status: 404,
        error: `this relay runs without --key, so no key can prove it is this relay: stop it and use outpost bundle create --return --relay-data-dir DIR`,
      };
    const proof = proofFromHeaders(req);
    if (!proof.success) return { status: 401, error: `${RETURN_DATA_PATH} needs a key proof: ${fix}` };
    if (!challenges.consume(proof.data.challenge))
      return { status: 401, error: `unknown, used or expired challenge: ${fix}` };
    if (!verifyAuthProof(proof.data, RETURN_DATA_PATH))
      return { status: 401, error: `key proof signature does not verify for ${RETURN_DATA_PATH}: ${fix}` };
    if (proof.data.principal !== key.publicKey)
      return {
        status: 403,
        error: `key ${proof.data.principal} is not this relay's key: only the key this relay runs with (its --key) reads its return data`,
      };
    return null;
  }

  async function* lines(): AsyncGenerator<ReturnDataLine> {
    let documents = 0;
    for await (const { name, vector, state } of logDocumentStates(
      log,
      (document) => parseDocName(document)?.role === 'status',
    )) {
      documents += 1;
      yield { document: name, vector: toBase64(vector), ...(state ? { state: toBase64(state) } : {}) };
    }
    yield { end: true, documents, storePaths: await mirroredStorePaths(cacheDir) };
  }

  async function stream(res: ServerResponse): Promise<void> {
    res.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' });
    let closed = false;
    res.on('close', () => {
      closed = true;
    });
    for await (const line of lines()) {
      if (closed) return;
      if (!res.write(`${JSON.stringify(line)}\n`)) await Promise.race([once(res, 'drain'), once(res, 'close')]);
    }
    res.end();
  }

  return {
    handle(req: IncomingMessage, res: ServerResponse): void {
      req.resume();
      if (req.method !== 'GET') {
        respondJson(res, 405, { error: `use GET for ${RETURN_DATA_PATH}` });
        return;
      }
      const refused = refusal(req);
      if (refused) {
        logger.warn(
          { event: 'return-data-refused', address: req.socket.remoteAddress, reason: refused.error },
          'refusing a return data request',
        );
        respondJson(res, refused.status, { error: refused.error });
        return;
      }
      logger.info({ event: 'return-data-read', address: req.socket.remoteAddress }, 'return data read');
      stream(res).catch((error: Error) => {
        logger.error({ event: 'return-data-failed', err: error }, 'reading the return data failed');
        // Headers are sent: cut the answer short, which the reader names (no closing line).
        if (res.headersSent) res.destroy(error);
        else respondJson(res, 500, { error: `reading the relay's log failed: ${error.message}` });
      });
    },
  };
}
