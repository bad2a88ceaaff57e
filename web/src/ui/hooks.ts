import { useEffect, useLayoutEffect, useState } from 'preact/hooks';

// Re-renders when `subscribe`'s source says it changed (the sync flushes at most once a frame).
// Subscribed during the render's commit (a layout effect, not a deferred one), so a flush right
// after mounting is not missed.
export function useSubscription(subscribe: (listener: () => void) => () => void): number {
  const [version, setVersion] = useState(0);
  useLayoutEffect(() => subscribe(() => setVersion((v) => v + 1)), [subscribe]);
  return version;
}

// One action at a time: busy while it runs, then its outcome; a thrown error becomes a failed one.
export function useAction<O>(): {
  busy: boolean;
  outcome: O | { ok: false; reason: string } | null;
  run(work: () => Promise<O>): Promise<void>;
} {
  const [busy, setBusy] = useState(false);
  const [outcome, setOutcome] = useState<O | { ok: false; reason: string } | null>(null);
  const run = async (work: () => Promise<O>): Promise<void> => {
    setBusy(true);
    setOutcome(null);
    try {
      setOutcome(await work());
    } catch (error) {
      setOutcome({ ok: false, reason: (error as Error).message });
    } finally {
      setBusy(false);
    }
  };
  return { busy, outcome, run };
}

// A clock for "… ago" texts.
export function useNow(everyMs = 1000): number {
  const [now, setNow] = useState(Date.now());
  useEffect(() => {
    const timer = setInterval(() => setNow(Date.now()), everyMs);
    return () => clearInterval(timer);
  }, [everyMs]);
  return now;
}

export type Route =
  | { view: 'fleet' }
  | { view: 'host'; host: string }
  | { view: 'rollouts' }
  | { view: 'rollout'; id: string }
  | { view: 'enrollment' }
  | { view: 'policy' };

function parseRoute(hash: string): Route {
  const host = /^#\/host\/([a-z0-9][a-z0-9-]{0,62})$/.exec(hash);
  if (host) return { view: 'host', host: host[1]! };
  const rollout = /^#\/rollouts\/([a-z0-9][a-z0-9-]{0,47})$/.exec(hash);
  if (rollout) return { view: 'rollout', id: rollout[1]! };
  if (hash === '#/rollouts') return { view: 'rollouts' };
  if (hash === '#/enrollment') return { view: 'enrollment' };
  if (hash === '#/policy') return { view: 'policy' };
  return { view: 'fleet' };
}

export function useRoute(): Route {
  const [route, setRoute] = useState(parseRoute(location.hash));
  useEffect(() => {
    const onChange = (): void => setRoute(parseRoute(location.hash));
    window.addEventListener('hashchange', onChange);
    return () => window.removeEventListener('hashchange', onChange);
  }, []);
  return route;
}

export const goToHost = (host: string): void => {
  location.hash = `#/host/${host}`;
};
export const goToFleet = (): void => {
  location.hash = '#/';
};
