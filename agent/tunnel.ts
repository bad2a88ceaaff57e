import { connect, type Socket } from 'node:net';
import WebSocket from 'ws';
import type { SigningKey } from '../shared/crypto/keys.js';
import type { Logger } from '../shared/log.js';
import { startControlLink } from '../shared/node/tunnel-link.js';
import { closeQuietly, pipeStreamAndSocket } from '../shared/node/tunnel-stream.js';
import type { Policy } from '../shared/schemas/policy.js';
import { TUNNEL_CLOCK_SKEW_MS, type TunnelVerdict, verifyTunnelRequest } from '../shared/tunnel/request.js';
import type { SshSession } from '../shared/tunnel/session-log.js';
import {
  agentProofTarget,
  parseControlMessage,
  TUNNEL_ACCEPT_PATH,
  TUNNEL_AGENT_PATH,
  TUNNEL_MAX_MESSAGE,
  type TunnelOpen,
  type TunnelWireVerdict,
  tunnelOpenSchema,
} from '../shared/tunnel/wire.js';
import { openTunnelStore } from './tunnel-store.js';

// The agent's part of `outpost ssh` (docs/access.md): it keeps one control socket to its server
// (proving the host key), and decides every open request that arrives there itself — signature,
// this host, time, the signer's `ssh` capability under the newest policy it walked from its pinned
// root, a nonce never used (kept on disk), a free session slot — before it touches anything. Only
// then does it connect to the local sshd, always 127.0.0.1:--ssh-port (nothing in the request
// names an address), and pipe the bytes over a session socket it dials back to its server.

export interface SshTunnelSettings {
  // The local sshd's port on 127.0.0.1.
  port: number;
  idleTimeoutMs: number;
  maxSessions: number;
}

export interface SshTunnelOptions {
  host: string;
  key: SigningKey;
  endpoints: string[];
  settings: SshTunnelSettings;
  stateDir: string;
  logger: Logger;
  // The newest policy walked from the pinned org root (null: none yet).
  policy: () => Policy | null;
  // Why no tunnel may open now although the policy would allow it (a freeze: a newer policy, with a
  // revocation perhaps, may be withheld); null when nothing stands in the way.
  blocked: () => string | null;
  now: () => number;
  backoff: { baseBackoffMs: number; maxBackoffMs: number };
  // A session opened or closed: the status should show it.
  onSessionsChanged: () => void;
}

export interface SshTunnelService {
  sessions(): SshSession[];
  stats(): { open: number; refused: number };
  close(): void;
}

// A control link that is silent this long is dropped and dialled again (NAT state lost).
const CONTROL_TIMEOUT_MS = 60_000;
// How long the dial-back of a session (or of a refusal) may take.
const ACCEPT_TIMEOUT_MS = 15_000;

export async function startSshTunnels(options: SshTunnelOptions): Promise<SshTunnelService> {
  const { logger, settings } = options;
  const store = await openTunnelStore(options.stateDir, options.now);
  // Sessions deciding, connecting or open (bounded by maxSessions), and dial-backs in flight
  // (refusals included: a server flooding opens gets no more than this many sockets from us).
  let active = 0;
  let dialing = 0;
  let refused = 0;
  const live = new Set<{ ws: WebSocket; tcp: Socket | null }>();

  function decide(open: TunnelOpen): TunnelVerdict {
    const blocked = options.blocked();
    if (blocked) return { ok: false, reason: blocked };
    const verdict = verifyTunnelRequest(open.request, {
      policy: options.policy(),
      host: options.host,
      now: options.now(),
    });
    if (!verdict.ok) return verdict;
    if (active >= settings.maxSessions)
      return {
        ok: false,
        reason: `${options.host} already has ${active} tunnel sessions (--ssh-max-sessions ${settings.maxSessions}); close one first`,
      };
    return verdict;
  }

  function dialBack(url: string, session: string): WebSocket {
    const ws = new WebSocket(`${url.replace(/\/+$/, '')}/${TUNNEL_ACCEPT_PATH}?session=${session}`, {
      handshakeTimeout: ACCEPT_TIMEOUT_MS,
      maxPayload: TUNNEL_MAX_MESSAGE,
    });
    dialing += 1;
    let counted = true;
    const done = (): void => {
      if (counted) dialing -= 1;
      counted = false;
    };
    ws.once('open', done);
    ws.once('close', done);
    ws.on('error', (error) =>
      logger.debug({ event: 'tunnel-accept-error', reason: error.message }, 'tunnel session socket error'),
    );
    return ws;
  }

  function sendVerdict(ws: WebSocket, verdict: TunnelWireVerdict, then?: () => void): void {
    ws.send(JSON.stringify(verdict), (error) => {
      if (error) return ws.terminate();
      then?.();
    });
  }

  function refuse(url: string, open: TunnelOpen, reason: string): void {
    refused += 1;
    logger.warn(
      {
        event: 'tunnel-refused',
        requestedHost: open.request.request.host,
        signer: open.request.signature.publicKey,
        nonce: open.request.request.nonce,
        reason,
      },
      'refusing an ssh tunnel',
    );
    if (dialing >= settings.maxSessions * 4) return;
    const ws = dialBack(url, open.session);
    ws.once('open', () => sendVerdict(ws, { ok: false, reason }, () => closeQuietly(ws, 1000, 'refused')));
  }

  async function handleOpen(open: TunnelOpen, url: string): Promise<void> {
    const verdict = decide(open);
    if (!verdict.ok) return refuse(url, open, verdict.reason);
    const { nonce } = open.request.request;
    active += 1;
    let released = false;
    const release = (): void => {
      if (!released) active -= 1;
      released = true;
    };
    const claimed = await store.claim(nonce, verdict.expiresAtMs + TUNNEL_CLOCK_SKEW_MS).catch((error: Error) => ({
      ok: false as const,
      reason: `cannot record the request's nonce (${error.message}); no tunnel without it`,
    }));
    if (!claimed.ok) {
      release();
      return refuse(url, open, claimed.reason);
    }
    const ws = dialBack(url, open.session);
    const entry: { ws: WebSocket; tcp: Socket | null } = { ws, tcp: null };
    live.add(entry);
    ws.once('close', () => {
      live.delete(entry);
      entry.tcp?.destroy();
      release();
    });
    ws.once('open', () => {
      // Only 127.0.0.1 and the configured port: the request names no address.
      const tcp = connect({ host: '127.0.0.1', port: settings.port });
      entry.tcp = tcp;
      let connected = false;
      tcp.once('error', (error) => {
        if (connected) return;
        release();
        sendVerdict(
          ws,
          {
            ok: false,
            reason: `${options.host} cannot reach its sshd at 127.0.0.1:${settings.port} (${error.message}); is sshd running and --ssh-port right?`,
          },
          () => closeQuietly(ws, 1000, 'refused'),
        );
      });
      tcp.once('connect', () => {
        connected = true;
        runSession(open, verdict, ws, tcp, release);
      });
    });
  }

  function runSession(
    open: TunnelOpen,
    verdict: Extract<TunnelVerdict, { ok: true }>,
    ws: WebSocket,
    tcp: Socket,
    release: () => void,
  ): void {
    const record: SshSession = {
      nonce: open.request.request.nonce,
      admin: verdict.admin,
      key: verdict.key,
      openedAt: new Date(options.now()).toISOString(),
      closedAt: null,
      bytesIn: 0,
      bytesOut: 0,
    };
    logger.info(
      { event: 'tunnel-opened', admin: verdict.admin, key: verdict.key, nonce: record.nonce },
      'ssh tunnel opened',
    );
    void store.update(record).then(options.onSessionsChanged, () => undefined);
    sendVerdict(ws, { ok: true });
    let reason = 'closed';
    const idle = setTimeout(() => {
      reason = `idle for ${settings.idleTimeoutMs / 1000} s (--ssh-idle-timeout)`;
      tcp.destroy();
      closeQuietly(ws, 1000, 'idle timeout');
    }, settings.idleTimeoutMs);
    const counters = pipeStreamAndSocket(tcp, tcp, ws, {
      activity: () => idle.refresh(),
      onError: (problem) => {
        reason = problem;
        tcp.destroy();
        closeQuietly(ws, 1008, problem);
      },
    });
    tcp.on('error', (error) => (reason = `sshd connection: ${error.message}`));
    tcp.once('close', () => {
      if (reason === 'closed') reason = 'sshd closed the connection';
      closeQuietly(ws, 1000, reason);
      finish();
    });
    ws.once('close', (code, why) => {
      if (reason === 'closed') reason = `the admin's side closed (${why.toString() || code})`;
      tcp.destroy();
      finish();
    });
    let finished = false;
    const finish = (): void => {
      if (finished) return;
      finished = true;
      clearTimeout(idle);
      release();
      const closed: SshSession = {
        ...record,
        closedAt: new Date(options.now()).toISOString(),
        bytesIn: counters.down,
        bytesOut: counters.up,
        closeReason: reason.slice(0, 200),
      };
      logger.info(
        {
          event: 'tunnel-closed',
          admin: verdict.admin,
          nonce: record.nonce,
          reason,
          bytesIn: closed.bytesIn,
          bytesOut: closed.bytesOut,
        },
        'ssh tunnel closed',
      );
      void store.update(closed).then(options.onSessionsChanged, () => undefined);
    };
  }

  const link = startControlLink({
    urls: options.endpoints,
    path: TUNNEL_AGENT_PATH,
    query: { host: options.host },
    proof: { key: options.key, target: agentProofTarget(options.host) },
    baseBackoffMs: options.backoff.baseBackoffMs,
    maxBackoffMs: options.backoff.maxBackoffMs,
    timeoutMs: CONTROL_TIMEOUT_MS,
    logger,
    onOpen: () => undefined,
    onMessage: (text, url) => {
      const open = parseControlMessage(tunnelOpenSchema, text);
      if (!open) {
        logger.warn({ event: 'tunnel-bad-message', url }, 'ignoring a malformed tunnel message from the server');
        return;
      }
      handleOpen(open, url).catch((error: Error) =>
        logger.error({ event: 'tunnel-open-failed', err: error }, 'handling a tunnel request failed'),
      );
    },
  });

  return {
    sessions: () => store.sessions(),
    stats: () => ({ open: live.size, refused }),
    close() {
      link.stop();
      for (const entry of live) {
        entry.tcp?.destroy();
        entry.ws.terminate();
      }
    },
  };
}
