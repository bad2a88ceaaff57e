import WebSocket from 'ws';
import type { TunnelHub } from '../coordinator/tunnels.js';
import type { SigningKey } from '../shared/crypto/keys.js';
import type { Logger } from '../shared/log.js';
import { type ControlLink, startControlLink } from '../shared/node/tunnel-link.js';
import {
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

export function linkTunnelsUpstream(hub: TunnelHub, options: RelayTunnelOptions): ControlLink {
  const { logger } = options;
  let lastAnnounced = '';
  const announce = (force: boolean): void => {
    const text = JSON.stringify({ type: 'hosts', hosts: hub.hosts() });
    if (!force && text === lastAnnounced) return;
    lastAnnounced = text;
    link.send(text);
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
    onOpen: () => announce(true),
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
  hub.onHostsChanged(() => announce(false));
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
