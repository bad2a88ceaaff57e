import { httpBaseFromWs } from '../shared/sync/reconnect.js';

// Why an admin command could not reach a coordinator or relay, in words that name the URL and the
// likely fix. fetch() itself says only "fetch failed"; the reason is in its cause.
export function describeFetchFailure(target: string, serverUrl: string, error: unknown): string {
  const failure = error as Error & { cause?: { code?: string; message?: string } };
  const code = failure.cause?.code ?? '';
  const detail = failure.cause?.message ?? failure.message;
  let where = serverUrl;
  try {
    where = new URL(httpBaseFromWs(serverUrl)).host;
  } catch {
    // keep the URL as given
  }
  const tls = serverUrl.startsWith('wss:');
  let hint: string;
  if (failure.name === 'TimeoutError')
    hint = `no answer from ${where} in time: is the coordinator overloaded, or a firewall dropping packets? Try again, or raise --timeout`;
  else if (code === 'ECONNREFUSED')
    hint = `nothing listens at ${where} (connection refused): is the coordinator running, and is the port in ${serverUrl} right?`;
  else if (code === 'ENOTFOUND' || code === 'EAI_AGAIN')
    hint = `the host name in ${serverUrl} does not resolve (${code}): check its spelling and DNS`;
  else if (
    tls &&
    (code === 'ERR_SSL_WRONG_VERSION_NUMBER' || /wrong version number|packet length too long/.test(detail))
  )
    hint = `${where} does not speak TLS: use ws:// instead of wss://, or start the coordinator with --tls-cert and --tls-key`;
  else if (!tls && (code === 'UND_ERR_SOCKET' || code === 'ECONNRESET'))
    hint = `${where} closed the connection without answering: if it serves TLS, use wss:// instead of ws://`;
  else if (/CERT|SELF_SIGNED|ALTNAME/.test(code))
    hint = `the TLS certificate of ${where} is not trusted (${code}): give Node its CA with NODE_EXTRA_CA_CERTS=FILE, or fix the certificate's name`;
  else if (detail === 'bad port')
    hint = `fetch refuses port ${where.split(':').pop()} (a port reserved for other protocols): run the coordinator on another port`;
  else hint = `${detail}${code ? ` (${code})` : ''}: is the coordinator running at ${serverUrl}?`;
  return `cannot reach ${target}: ${hint}`;
}

// fetch() with failures explained.
export async function fetchExplained(
  target: string,
  serverUrl: string,
  init: RequestInit & { signal: AbortSignal },
): Promise<Response> {
  try {
    return await fetch(target, init);
  } catch (error) {
    throw new Error(describeFetchFailure(target, serverUrl, error));
  }
}

// How long each coordinator in a list may take to answer before the next is tried.
export const COORDINATOR_PROBE_TIMEOUT_MS = 5_000;

// Of several coordinators (or relays) of one fleet, the first that answers /healthz, so a command
// works while one of them is down. One URL is used as given, without a probe: its own errors say
// more than a probe would. Those skipped are named on stderr, so the admin knows where it went.
export async function reachCoordinator(
  urls: readonly string[],
  timeoutMs = COORDINATOR_PROBE_TIMEOUT_MS,
  warn: (line: string) => void = (line) => console.error(line),
): Promise<string> {
  if (urls.length === 1) return urls[0]!;
  const failures: string[] = [];
  for (const url of urls) {
    const target = `${httpBaseFromWs(url)}/healthz`;
    try {
      const response = await fetch(target, { signal: AbortSignal.timeout(timeoutMs) });
      await response.body?.cancel();
      if (response.ok) {
        if (failures.length) warn(`outpost: using ${url}; ${failures.join('; ')}`);
        return url;
      }
      failures.push(`${url} answered HTTP ${response.status} at /healthz`);
    } catch (error) {
      failures.push(describeFetchFailure(target, url, error));
    }
  }
  throw new Error(`none of the ${urls.length} coordinators answered: ${failures.join('; ')}`);
}
