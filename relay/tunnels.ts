import WebSocket from 'ws';
import type { TunnelHub } from '../coordinator/tunnels.js';
import type { SigningKey } from '../shared/crypto/keys.js';
import type { Logger } from '../shared/log.js';
import { type ControlLink, startControlLink } from '../shared/node/tunnel-link.js';
import {
  hostsMessages,
  parseControlMessage,
  TUNNEL_ACCEPT_PATH,
  TUNNEL_MAX_MESSAGE,
  TUNNEL_RELAY_PATH,
  tunnelOpenSchema,
} from '../shared/tunnel/wire.js';

// A relay's part of `outpost ssh` towards its upstream: one control socket (proving the relay key)
// that announces the hosts whose agents (or downstream relays) hold a tunnel link here, and
// receives the open requests for them; each session is then dialled back up as its own websocket
// (`_tunnel/accept`), piped to the one the host's side dialled here. The hub (coordinator/tunnels.ts,
// the same code as the coordinator's) does the rest.
export interface RelayTunnelOptions {
  upstreams: string[];
  key: SigningKey | null;
  baseBackoffMs: number;
  maxBackoffMs: number;
  timeoutMs: number;
  logger: Logger;
}

const ANNOUNCE_DELAY_MS = 200;

export function linkTunnelsUpstream(hub: TunnelHub, options: RelayTunnelOptions): ControlLink {
  const { logger } = options;
  // What the upstream was told on this link (null: nothing yet, the next message resets).
  let announced: Set<string> | null = null;
  const announce = (): void => {
    if (!link.connectedUrl()) return;
    const now = new Set(hub.hosts());
    for (const message of hostsMessages(announced, now)) link.send(JSON.stringify(message));
    announced = now;
  };
  const link = startControlLink({
    urls: options.upstreams,
    path: TUNNEL_RELAY_PATH,
    query: {},
    proof: options.key ? { key: options.key, target: TUNNEL_RELAY_PATH } : null,
    baseBackoffMs: options.baseBackoffMs,
    maxBackoffMs: options.maxBackoffMs,
    timeoutMs: options.timeoutMs,
    logger,
    onOpen: () => {
      announced = null;
      announce();
    },
    onMessage: (text) => {
      const open = parseControlMessage(tunnelOpenSchema, text);
      if (!open) {
        logger.warn(
          { event: 'tunnel-bad-message', from: 'upstream' },
          'ignoring a malformed tunnel message from upstream',
        );
        return;
      }
      hub.openFromUpstream(open);
    },
  });
  // Agents come and go in bursts (a site's link returning): one announcement per burst.
  let pending: NodeJS.Timeout | null = null;
  hub.onHostsChanged(() => {
    if (pending) return;
    pending = setTimeout(() => {
      pending = null;
      announce();
    }, ANNOUNCE_DELAY_MS);
    pending.unref();
  });
  hub.setUpstream({
    dialAccept: (session) => {
      const url = link.connectedUrl();
      if (!url) return null;
      const ws = new WebSocket(`${url.replace(/\/+$/, '')}/${TUNNEL_ACCEPT_PATH}?session=${session}`, {
        handshakeTimeout: options.timeoutMs,
        maxPayload: TUNNEL_MAX_MESSAGE,
      });
      ws.on('error', (error) =>
        logger.debug({ event: 'tunnel-accept-error', reason: error.message }, 'tunnel session upstream failed'),
      );
      return ws;
    },
  });
  return link;
}
