import type { SigningKey } from '../../shared/crypto/keys.js';
import { connectDocument, type DocumentConnection, waitForSync } from '../../shared/node/connect.js';
import { httpBaseFromWs } from '../../shared/sync/reconnect.js';
import { waitFor } from '../harness/processes.js';

// The well-behaved clients: while the fuzzer attacks, a stock y-websocket client must still
// sync and see another client's update, and a valid request must still get its answer.

let tagCounter = 0;

// Writer and reader on `document`, each at its own endpoint; the reader must see a fresh tag.
export async function syncRoundTrip(
  writerUrl: string,
  readerUrl: string,
  document: string,
  timeoutMs: number,
  identity: SigningKey | null = null,
): Promise<void> {
  const writer = connectDocument(writerUrl, document, { identity, maxBackoffMs: 500, baseBackoffMs: 100 });
  const reader = connectDocument(readerUrl, document, { identity, maxBackoffMs: 500, baseBackoffMs: 100 });
  const connections: DocumentConnection[] = [writer, reader];
  try {
    await Promise.all(connections.map((c) => waitForSync(c, timeoutMs)));
    const tag = `health-${process.pid}-${++tagCounter}-${Date.now()}`;
    // A map entry overwritten each time: the health document stays small however long the run.
    writer.doc.getMap('health').set('tag', tag);
    const written = Date.now();
    try {
      await waitFor(`${readerUrl} to see ${tag}`, () => reader.doc.getMap('health').get('tag') === tag, timeoutMs, 20);
    } catch {
      const state = (c: DocumentConnection): string =>
        `${c.provider.wsconnected ? 'connected' : 'disconnected'}, ${c.provider.synced ? 'synced' : 'not synced'}`;
      throw new Error(
        `${document}: a tag written at ${writerUrl} did not reach a reader at ${readerUrl} within ${Date.now() - written} ms (writer ${state(writer)}, reader ${state(reader)}, reader sees ${JSON.stringify(reader.doc.getMap('health').get('tag'))})`,
      );
    }
  } finally {
    for (const c of connections) c.close();
  }
}

export async function expectJson(
  url: string,
  init: RequestInit,
  check: (status: number, body: Record<string, unknown>) => boolean,
  timeoutMs: number,
): Promise<void> {
  let response: Response;
  try {
    response = await fetch(url, { ...init, signal: AbortSignal.timeout(timeoutMs) });
  } catch (error) {
    // undici says only "fetch failed"; the cause says what happened (refused, reset, …).
    const cause = (error as { cause?: { message?: string; code?: string } }).cause;
    throw new Error(
      `${init.method ?? 'GET'} ${url}: ${(error as Error).message}${cause ? ` (${cause.code ?? ''} ${cause.message ?? ''})` : ''}`,
    );
  }
  const body = (await response.json()) as Record<string, unknown>;
  if (!check(response.status, body))
    throw new Error(`${init.method ?? 'GET'} ${url}: ${response.status} ${JSON.stringify(body).slice(0, 300)}`);
}

export function healthz(serverUrl: string, timeoutMs: number): Promise<void> {
  return expectJson(
    `${httpBaseFromWs(serverUrl)}/healthz`,
    {},
    (status, body) => status === 200 && body.ok === true,
    timeoutMs,
  );
}
