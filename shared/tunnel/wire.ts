import { z } from 'zod';
import { hostIdSchema } from '../schemas/primitives.js';
import { signedTunnelRequestSchema } from './request.js';

// The websockets of `outpost ssh` (docs/access.md, `outpost ssh`). Every connection is outbound
// from the side behind NAT: agents and relays keep one control socket to their server, and each
// session is one more websocket per hop, dialled by the downstream side once it has decided.
//   _tunnel/agent?host=H  (+ the host key's proof, signed for `_tunnel/agent/H`)   agent → server
//   _tunnel/relay         (+ the relay key's proof, signed for `_tunnel/relay`)    relay → upstream
//   _tunnel/open?host=H   the admin's session: first text message the signed request  admin → server
//   _tunnel/accept?session=S  the downstream end of session S                       agent/relay → server
// On a session socket the first text message from the host's side is the verdict
// ({ok:true} or {ok:false, reason}); after {ok:true} only binary messages follow: the SSH bytes.
export const TUNNEL_PREFIX = '_tunnel/';
export const TUNNEL_AGENT_PATH = '_tunnel/agent';
export const TUNNEL_RELAY_PATH = '_tunnel/relay';
export const TUNNEL_OPEN_PATH = '_tunnel/open';
export const TUNNEL_ACCEPT_PATH = '_tunnel/accept';

export function agentProofTarget(host: string): string {
  return `${TUNNEL_AGENT_PATH}/${host}`;
}

// Control and verdict messages are small JSON; the SSH bytes travel in binary messages of at most
// TUNNEL_CHUNK_BYTES (senders split), so every tunnel socket is bounded at TUNNEL_MAX_MESSAGE.
export const TUNNEL_CONTROL_MAX_BYTES = 16 * 1024;
export const TUNNEL_CHUNK_BYTES = 32 * 1024;
export const TUNNEL_MAX_MESSAGE = 64 * 1024;
// A relay announces at most this many hosts (the whole set at every change).
export const TUNNEL_MAX_ANNOUNCED_HOSTS = 100_000;
// Past this many bytes queued towards one side, the other side is not read (backpressure).
export const TUNNEL_HIGH_WATER_BYTES = 1024 * 1024;

export const sessionIdSchema = z.string().regex(/^[0-9a-f]{64}$/, 'a session id is 64 lowercase hex digits');

// Server → agent or relay, on its control socket.
export const tunnelOpenSchema = z.object({
  type: z.literal('open'),
  session: sessionIdSchema,
  host: hostIdSchema,
  request: signedTunnelRequestSchema,
});
export type TunnelOpen = z.infer<typeof tunnelOpenSchema>;

// Relay → upstream, on its control socket: which hosts' tunnels it can reach, as changes in
// batches of at most TUNNEL_HOSTS_BATCH (each message stays under TUNNEL_CONTROL_MAX_BYTES);
// `reset` starts the set afresh (the first message on every new link).
export const TUNNEL_HOSTS_BATCH = 200;
export const tunnelHostsSchema = z.object({
  type: z.literal('hosts'),
  reset: z.boolean(),
  add: z.array(hostIdSchema).max(TUNNEL_HOSTS_BATCH),
  remove: z.array(hostIdSchema).max(TUNNEL_HOSTS_BATCH),
});
export type TunnelHosts = z.infer<typeof tunnelHostsSchema>;

// The messages that move a relay's announced set from `before` to `after`.
export function hostsMessages(before: ReadonlySet<string> | null, after: ReadonlySet<string>): TunnelHosts[] {
  const add = [...after].filter((host) => !before?.has(host));
  const remove = before ? [...before].filter((host) => !after.has(host)) : [];
  const messages: TunnelHosts[] = [];
  for (let i = 0; i < Math.max(add.length, remove.length, before ? 0 : 1); i += TUNNEL_HOSTS_BATCH)
    messages.push({
      type: 'hosts',
      reset: before === null && i === 0,
      add: add.slice(i, i + TUNNEL_HOSTS_BATCH),
      remove: remove.slice(i, i + TUNNEL_HOSTS_BATCH),
    });
  return messages;
}

export const tunnelVerdictSchema = z.union([
  z.object({ ok: z.literal(true) }),
  z.object({ ok: z.literal(false), reason: z.string().max(2000) }),
]);
export type TunnelWireVerdict = z.infer<typeof tunnelVerdictSchema>;

// One JSON text message, bounded before parsing; null when it is not what the schema says.
export function parseControlMessage<T extends z.ZodType>(schema: T, text: string): z.output<T> | null {
  if (text.length > TUNNEL_CONTROL_MAX_BYTES) return null;
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return null;
  }
  const parsed = schema.safeParse(raw);
  return parsed.success ? parsed.data : null;
}
