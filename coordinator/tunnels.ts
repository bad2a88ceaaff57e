import { randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import WebSocket, { WebSocketServer } from 'ws';
import type { Logger } from '../shared/log.js';
import { closeQuietly, pipeSockets } from '../shared/node/tunnel-stream.js';
import { hostIdSchema } from '../shared/schemas/primitives.js';
import { relayServesHost } from '../shared/trust/capabilities.js';
import { type SignedTunnelRequest, signedTunnelRequestSchema, tunnelSignatureValid } from '../shared/tunnel/request.js';
import {
  agentProofTarget,
  parseControlMessage,
  sessionIdSchema,
  TUNNEL_ACCEPT_PATH,
  TUNNEL_AGENT_PATH,
  TUNNEL_MAX_ANNOUNCED_HOSTS,
  TUNNEL_MAX_MESSAGE,
  TUNNEL_OPEN_PATH,
  TUNNEL_RELAY_PATH,
  type TunnelOpen,
  tunnelHostsSchema,
} from '../shared/tunnel/wire.js';
import { refuseUpgrade, requestQuery } from './http-guard.js';
import type { Principal, TrustState } from './trust-state.js';

// The coordinator's and every relay's part of `outpost ssh` (shared/tunnel/wire.ts has the
// paths): a router that pairs an admin's session socket with the socket the host's side dials
// back, and forwards the open request towards the host over the agent's (or the downstream
// relay's) control socket. It decides nothing about access: the agent verifies the signed request
// against its own policy. It sees only SSH's encrypted bytes. What it bounds: sessions per host
// and in all, how long a session may wait for the host's answer, idle sessions, message sizes,
// and bytes in flight (shared/node/tunnel-stream.ts).

export interface TunnelLimits {
  // The host's side must dial back (accept or refuse) within this long.
  answerTimeoutMs: number;
  // An admin must send the signed request within this long of connecting.
  requestTimeoutMs: number;
  // Sessions waiting or open per host, and in all, at this server.
  maxSessionsPerHost: number;
  maxSessions: number;
  // A safety net only: the agent closes idle sessions after its --ssh-idle-timeout.
  idleTimeoutMs: number;
  // Control sockets are pinged this often, and dropped when silent for three times as long.
  pingIntervalMs: number;
}

export const DEFAULT_TUNNEL_LIMITS: TunnelLimits = {
  answerTimeoutMs: 15_000,
  requestTimeoutMs: 15_000,
  maxSessionsPerHost: 8,
  maxSessions: 1000,
  idleTimeoutMs: 6 * 3_600_000,
  pingIntervalMs: 20_000,
};

export type Authenticate = (req: IncomingMessage, target: string) => { principal: Principal } | { refused: string };

// A relay plugs its upstream in: opens that arrive from there, and the socket it dials back up.
export interface TunnelUpstream {
  dialAccept(session: string): WebSocket | null;
}

export interface TunnelHub {
  upgrade(req: IncomingMessage, socket: Duplex, head: Buffer, path: string): void;
  // A relay: its upstream asks for a session to a host (TunnelOpen from its control socket).
  openFromUpstream(open: TunnelOpen): void;
  setUpstream(upstream: TunnelUpstream): void;
  // The hosts reachable through this server now (its agents' and its downstream relays').
  hosts(): string[];
  onHostsChanged(listener: () => void): void;
  stats(): { agents: number; relays: number; reachableHosts: number; waiting: number; open: number; refused: number };
  close(): void;
}

interface Waiting {
  host: string;
  // The admin's socket, or the upstream (a relay passes the answer up by dialling back).
  origin: WebSocket | 'upstream';
  timer: NodeJS.Timeout;
}

const CLOSE_UNAUTHENTICATED = 4401;
const CLOSE_FORBIDDEN = 4403;
const CLOSE_REPLACED = 4409;

export function createTunnelHub(options: {
  trust: TrustState;
  authenticate: Authenticate;
  logger: Logger;
  limits?: Partial<TunnelLimits>;
}): TunnelHub {
  const { trust, authenticate, logger } = options;
  const limits: TunnelLimits = { ...DEFAULT_TUNNEL_LIMITS, ...options.limits };
  const wss = new WebSocketServer({ noServer: true, maxPayload: TUNNEL_MAX_MESSAGE });
  const agents = new Map<string, WebSocket>();
  const relays = new Map<WebSocket, Set<string>>();
  const waiting = new Map<string, Waiting>();
  // Sessions waiting or open, per host.
  const perHost = new Map<string, number>();
  let sessions = 0;
  let open = 0;
  let refusedCount = 0;
  let upstream: TunnelUpstream | null = null;
  const listeners: (() => void)[] = [];
  const changed = (): void => {
    for (const listener of listeners) listener();
  };

  function routeFor(host: string): WebSocket | null {
    const agent = agents.get(host);
    if (agent) return agent;
    for (const [ws, hosts] of relays) if (hosts.has(host)) return ws;
    return null;
  }

  function take(host: string): boolean {
    const count = perHost.get(host) ?? 0;
    if (count >= limits.maxSessionsPerHost || sessions >= limits.maxSessions) return false;
    perHost.set(host, count + 1);
    sessions += 1;
    return true;
  }

  function release(host: string): void {
    const count = (perHost.get(host) ?? 1) - 1;
    if (count <= 0) perHost.delete(host);
    else perHost.set(host, count);
    sessions -= 1;
  }

  // Tells the origin no, as a verdict (what a refusing agent sends too), and closes.
  function refuse(origin: WebSocket | 'upstream', session: string, reason: string): void {
    refusedCount += 1;
    logger.warn({ event: 'tunnel-refused', session: session.slice(0, 12), reason }, 'refusing a tunnel');
    const ws = origin === 'upstream' ? (upstream?.dialAccept(session) ?? null) : origin;
    if (!ws) return;
    const say = (): void => {
      ws.send(JSON.stringify({ ok: false, reason }), () => closeQuietly(ws, 1000, 'refused'));
    };
    ws.on('error', () => undefined);
    if (ws.readyState === WebSocket.OPEN) say();
    else if (ws.readyState === WebSocket.CONNECTING) ws.once('open', say);
  }

  function route(host: string, session: string, request: SignedTunnelRequest, origin: WebSocket | 'upstream') {
    // Session ids are random; one already waiting here is an upstream repeating itself.
    if (waiting.has(session)) return;
    const target = routeFor(host);
    if (!target)
      return refuse(
        origin,
        session,
        `no tunnel link to ${host} here: its agent is offline, runs without --org-root or with --ssh-port 0, or is connected to another server`,
      );
    if (!take(host))
      return refuse(
        origin,
        session,
        `too many tunnels to ${host} (or in all) at this server; close one or try again later`,
      );
    const timer = setTimeout(() => {
      if (!waiting.delete(session)) return;
      release(host);
      refuse(origin, session, `${host} did not answer within ${limits.answerTimeoutMs / 1000} s`);
    }, limits.answerTimeoutMs);
    waiting.set(session, { host, origin, timer });
    if (origin !== 'upstream')
      origin.once('close', () => {
        const entry = waiting.get(session);
        if (entry?.origin !== origin) return;
        waiting.delete(session);
        clearTimeout(entry.timer);
        release(host);
      });
    const message: TunnelOpen = { type: 'open', session, host, request };
    target.send(JSON.stringify(message), (error) => error && target.terminate());
  }

  // Pings a control socket; one silent for three intervals is dropped.
  function keepAlive(ws: WebSocket): void {
    let heard = Date.now();
    ws.on('pong', () => (heard = Date.now()));
    ws.on('message', () => (heard = Date.now()));
    const timer = setInterval(() => {
      if (Date.now() - heard > 3 * limits.pingIntervalMs) return ws.terminate();
      ws.ping();
    }, limits.pingIntervalMs);
    timer.unref();
    ws.on('close', () => clearInterval(timer));
  }

  // Nothing a peer sends may throw out of a handler (the process would end): a bug is logged and
  // costs that one socket.
  function guarded<A extends unknown[]>(ws: WebSocket, handler: (...args: A) => void): (...args: A) => void {
    return (...args) => {
      try {
        handler(...args);
      } catch (error) {
        logger.error({ event: 'tunnel-handler-failed', err: error }, 'a tunnel handler failed');
        ws.terminate();
      }
    };
  }

  function refuseSocket(ws: WebSocket, code: number, reason: string, fields: Record<string, unknown>): void {
    logger.warn({ event: 'tunnel-link-refused', ...fields, reason }, 'refusing a tunnel link');
    ws.on('error', () => undefined);
    closeQuietly(ws, code, reason);
  }

  function acceptAgent(req: IncomingMessage, ws: WebSocket, host: string) {
    const outcome = authenticate(req, agentProofTarget(host));
    if ('refused' in outcome) return refuseSocket(ws, CLOSE_UNAUTHENTICATED, outcome.refused, { host });
    const { principal } = outcome;
    if (trust.enforced && (principal.kind !== 'agent' || principal.host !== host))
      return refuseSocket(ws, CLOSE_FORBIDDEN, `${principal.label} is not the enrolled key of ${host}`, { host });
    agents.get(host)?.close(CLOSE_REPLACED, 'replaced by a newer tunnel link of the same host');
    agents.set(host, ws);
    ws.on('error', () => undefined);
    ws.on('close', () => {
      if (agents.get(host) === ws) agents.delete(host);
      changed();
    });
    keepAlive(ws);
    logger.info({ event: 'tunnel-agent-linked', host }, 'agent tunnel link up');
    changed();
  }

  function acceptRelay(req: IncomingMessage, ws: WebSocket) {
    const outcome = authenticate(req, TUNNEL_RELAY_PATH);
    if ('refused' in outcome) return refuseSocket(ws, CLOSE_UNAUTHENTICATED, outcome.refused, {});
    const { principal } = outcome;
    if (trust.enforced && principal.kind !== 'relay')
      return refuseSocket(ws, CLOSE_FORBIDDEN, `${principal.label} is not a relay of the policy`, {});
    const relayKey = principal.kind === 'relay' ? principal.key : null;
    relays.set(ws, new Set());
    ws.on('error', () => undefined);
    ws.on(
      'message',
      guarded(ws, (data, isBinary) => {
        const announced = isBinary ? null : parseControlMessage(tunnelHostsSchema, data.toString());
        if (!announced) return refuseSocket(ws, 1008, 'expected {"type":"hosts","reset":…,"add":[…],"remove":[…]}', {});
        const hosts = announced.reset ? new Set<string>() : (relays.get(ws) ?? new Set<string>());
        for (const host of announced.remove) hosts.delete(host);
        // A relay routes only the hosts the policy gives it (a wrong claim would only misroute).
        const policy = trust.policy();
        for (const host of announced.add)
          if (!trust.enforced || (policy !== null && relayKey !== null && relayServesHost(policy, relayKey, host)))
            hosts.add(host);
        if (hosts.size > TUNNEL_MAX_ANNOUNCED_HOSTS)
          return refuseSocket(ws, 1008, `more than ${TUNNEL_MAX_ANNOUNCED_HOSTS} hosts announced`, {});
        relays.set(ws, hosts);
        changed();
      }),
    );
    ws.on('close', () => {
      relays.delete(ws);
      changed();
    });
    keepAlive(ws);
  }

  // The admin's socket: the first message is the signed request. The hub checks only that an admin
  // of the policy signed it (so a stranger takes no slot and reaches no agent); the agent decides.
  function acceptOpen(ws: WebSocket, host: string): void {
    const session = randomBytes(32).toString('hex');
    ws.on('error', () => undefined);
    const timer = setTimeout(
      () => refuse(ws, session, 'no signed request within the time allowed'),
      limits.requestTimeoutMs,
    );
    ws.once(
      'message',
      guarded(ws, (data, isBinary) => {
        clearTimeout(timer);
        const signed = isBinary ? null : parseControlMessage(signedTunnelRequestSchema, data.toString());
        if (!signed)
          return refuse(ws, session, 'the first message must be a signed tunnel request (outpost ssh sends one)');
        if (trust.enforced) {
          const signer = trust.principalForKey(signed.signature.publicKey);
          if (signer.kind !== 'admin' || !tunnelSignatureValid(signed))
            return refuse(ws, session, 'the request is not signed by an admin of the policy');
        }
        route(host, session, signed, ws);
      }),
    );
  }

  function acceptSession(ws: WebSocket, session: string) {
    const entry = waiting.get(session);
    if (!entry) return refuseSocket(ws, CLOSE_FORBIDDEN, 'no such session waiting here', {});
    waiting.delete(session);
    clearTimeout(entry.timer);
    const other = entry.origin === 'upstream' ? (upstream?.dialAccept(session) ?? null) : entry.origin;
    if (!other || other.readyState === WebSocket.CLOSING || other.readyState === WebSocket.CLOSED) {
      release(entry.host);
      return closeQuietly(ws, 1001, 'the other end is gone');
    }
    open += 1;
    let idle: NodeJS.Timeout | null = setTimeout(() => {
      closeQuietly(ws, 1000, 'idle');
      closeQuietly(other, 1000, 'idle');
    }, limits.idleTimeoutMs);
    const host = entry.host;
    pipeSockets(other, ws, {
      activity: () => idle?.refresh(),
      onEnd: (reason) => {
        if (idle) clearTimeout(idle);
        idle = null;
        open -= 1;
        release(host);
        logger.info({ event: 'tunnel-closed', host, session: session.slice(0, 12), reason }, 'tunnel closed');
      },
    });
    logger.info({ event: 'tunnel-paired', host, session: session.slice(0, 12) }, 'tunnel paired');
  }

  function reachable(): string[] {
    const all = new Set(agents.keys());
    for (const hosts of relays.values()) for (const host of hosts) all.add(host);
    return [...all].sort();
  }

  return {
    upgrade(req, socket, head, path) {
      const query = requestQuery(req.url);
      if (path === TUNNEL_AGENT_PATH || path === TUNNEL_OPEN_PATH) {
        const host = hostIdSchema.safeParse(query.get('host'));
        if (!host.success) return refuseUpgrade(socket, 400, 'Bad Request', `${path} needs ?host=ID (a host id)`);
        wss.handleUpgrade(req, socket, head, (ws) =>
          guarded(ws, () =>
            path === TUNNEL_AGENT_PATH ? acceptAgent(req, ws, host.data) : acceptOpen(ws, host.data),
          )(),
        );
        return;
      }
      if (path === TUNNEL_RELAY_PATH) {
        wss.handleUpgrade(req, socket, head, (ws) => guarded(ws, () => acceptRelay(req, ws))());
        return;
      }
      if (path === TUNNEL_ACCEPT_PATH) {
        const session = sessionIdSchema.safeParse(query.get('session'));
        if (!session.success) return refuseUpgrade(socket, 400, 'Bad Request', `${path} needs ?session=ID`);
        if (!waiting.has(session.data)) return refuseUpgrade(socket, 404, 'Not Found', 'no such session waiting here');
        wss.handleUpgrade(req, socket, head, (ws) => guarded(ws, () => acceptSession(ws, session.data))());
        return;
      }
      refuseUpgrade(
        socket,
        404,
        'Not Found',
        `unknown tunnel path; expected ${TUNNEL_OPEN_PATH}, ${TUNNEL_AGENT_PATH}, ${TUNNEL_RELAY_PATH} or ${TUNNEL_ACCEPT_PATH}`,
      );
    },
    openFromUpstream(message) {
      route(message.host, message.session, message.request, 'upstream');
    },
    setUpstream(link) {
      upstream = link;
    },
    hosts: reachable,
    onHostsChanged(listener) {
      listeners.push(listener);
    },
    stats: () => ({
      agents: agents.size,
      relays: relays.size,
      reachableHosts: reachable().length,
      waiting: waiting.size,
      open,
      refused: refusedCount,
    }),
    close() {
      for (const entry of waiting.values()) clearTimeout(entry.timer);
      waiting.clear();
      for (const ws of wss.clients) ws.terminate();
    },
  };
}
