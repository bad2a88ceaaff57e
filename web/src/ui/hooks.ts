import { useEffect, useLayoutEffect, useState } from 'preact/hooks';

// Re-renders when `subscribe`'s source says it changed (the sync flushes at most once a frame).
// Subscribed during the render's commit (a layout effect, not a deferred one), so a flush right
// after mounting is not missed.
export function useSubscription(subscribe: (listener: () => void) => () => void): number {
  const [version, setVersion] = useState(0);
  useLayoutEffect(() => subscribe(() => setVersion((v) => v + 1)), [subscribe]);
  return version;
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

export type Route = { view: 'fleet' } | { view: 'host'; host: string };

function parseRoute(hash: string): Route {
  const match = /^#\/host\/([a-z0-9][a-z0-9-]{0,62})$/.exec(hash);
  return match ? { view: 'host', host: match[1]! } : { view: 'fleet' };
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
