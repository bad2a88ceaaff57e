import type { NatsConnection } from '@nats-io/transport-node';
import { z } from 'zod';
import type { Logger } from '../../shared/log.js';
import { hostIdSchema } from '../../shared/schemas/primitives.js';
import type { PresenceTable } from '../presence.js';

// Presence across coordinators that share a NATS cluster: each tells the others which hosts it
// sees itself (awareness of their status documents here, and the summaries of relays connected
// here, which it checked against each relay's scope), never what the others told it, so /api/presence and `outpost status` on any
// coordinator show a host online wherever it is connected. Liveness is not history: it goes over
// plain NATS publish/subscribe, never into the stream. Each coordinator sends its changes as they
// happen and all its hosts every heartbeat; one not heard from for `expireMs` (stopped, killed,
// cut off) has its hosts marked offline as of then, as a relay's are when its link ends.

export interface PresenceShare {
  // What this coordinator itself sees of a host changed: its status document gained or lost its
  // last awareness state here, or a relay connected here reported it (PresenceTable.onOwnChange).
  local(host: string, online: boolean, lastSeen?: number): void;
  close(): void;
}

const MAX_HOSTS_PER_MESSAGE = 2000;
const MAX_SOURCES = 64;
const MAX_HOSTS_PER_SOURCE = 100_000;
const MAX_MESSAGE_BYTES = 256 * 1024;

const messageSchema = z.looseObject({
  v: z.literal(1),
  from: z.string().min(1).max(128),
  hosts: z.array(z.tuple([hostIdSchema, z.boolean(), z.number().int().nonnegative()])).max(MAX_HOSTS_PER_MESSAGE),
});

export function sharePresence(
  nc: NatsConnection,
  subject: string,
  self: string,
  table: PresenceTable,
  logger: Logger,
  options: { heartbeatMs?: number; expireMs?: number } = {},
): PresenceShare {
  const heartbeatMs = options.heartbeatMs ?? 5000;
  const expireMs = options.expireMs ?? 3 * heartbeatMs;
  const mine = new Map<string, { online: boolean; at: number }>();
  const sources = new Map<string, { key: object; heardAt: number }>();
  let closed = false;

  const publish = (hosts: [string, boolean, number][]): void => {
    for (let i = 0; i < hosts.length; i += MAX_HOSTS_PER_MESSAGE) {
      try {
        nc.publish(subject, JSON.stringify({ v: 1, from: self, hosts: hosts.slice(i, i + MAX_HOSTS_PER_MESSAGE) }));
      } catch (error) {
        // The connection is closing or closed: the next heartbeat says it all again.
        logger.debug({ event: 'presence-publish-failed', reason: (error as Error).message }, 'presence not sent');
        return;
      }
    }
  };
  const all = (): [string, boolean, number][] => [...mine].map(([host, seen]) => [host, seen.online, seen.at]);

  const subscription = nc.subscribe(subject, {
    callback: (error, message) => {
      if (error || closed) return;
      if (message.data.length > MAX_MESSAGE_BYTES) return;
      let parsed: z.infer<typeof messageSchema>;
      try {
        const result = messageSchema.safeParse(JSON.parse(new TextDecoder().decode(message.data)));
        if (!result.success) throw new Error(result.error.issues[0]?.message ?? 'invalid');
        parsed = result.data;
      } catch (problem) {
        logger.warn({ event: 'presence-message-refused', reason: (problem as Error).message }, 'bad presence message');
        return;
      }
      if (parsed.from === self) return;
      let source = sources.get(parsed.from);
      if (!source) {
        if (sources.size >= MAX_SOURCES) return;
        source = { key: { coordinator: parsed.from }, heardAt: 0 };
        sources.set(parsed.from, source);
        // Someone new: tell it everything now instead of at the next heartbeat.
        publish(all());
      }
      source.heardAt = Date.now();
      for (const [host, online, at] of parsed.hosts)
        table.setRemote(source.key, host, online, at, MAX_HOSTS_PER_SOURCE, true);
    },
  });

  const timer = setInterval(() => {
    // An empty list still says "I am here".
    const hosts = all();
    if (hosts.length === 0) publish([]);
    else publish(hosts);
    const now = Date.now();
    for (const [from, source] of sources)
      if (now - source.heardAt > expireMs) {
        table.dropSource(source.key, source.heardAt);
        sources.delete(from);
        logger.info({ event: 'presence-source-lost', coordinator: from }, 'a coordinator stopped reporting presence');
      }
  }, heartbeatMs);
  timer.unref();
  publish([]);

  return {
    local(host, online, lastSeen) {
      const at = online || lastSeen === undefined ? Date.now() : lastSeen;
      mine.set(host, { online, at });
      publish([[host, online, at]]);
    },
    close() {
      closed = true;
      clearInterval(timer);
      subscription.unsubscribe();
    },
  };
}
