import { useCallback, useEffect, useMemo, useState } from 'preact/hooks';
import type { SigningKey } from '../../../shared/crypto/keys.js';
import { listKeys } from '../keys/vault.js';
import { EnrollmentPage } from './enrollment.js';
import { FleetView, scopesOf } from './fleet.js';
import { useNow, useRoute, useSubscription } from './hooks.js';
import { HostPage } from './host.js';
import { PolicyPage } from './policy.js';
import { RolloutList, RolloutPage } from './rollouts.js';
import { closeSession, openSession, type Session } from './session.js';
import { loadOrgRoot, SetupScreen, UnlockScreen } from './setup.js';
import { StatusBar } from './status-bar.js';

const VIEWS = [
  ['fleet', '#/', 'Fleet'],
  ['rollouts', '#/rollouts', 'Rollouts'],
  ['enrollment', '#/enrollment', 'Enrollment'],
  ['policy', '#/policy', 'Policy'],
] as const;

type Stage =
  | { name: 'loading' }
  | { name: 'setup' }
  | { name: 'locked' }
  | { name: 'ready'; session: Session }
  | { name: 'failed'; reason: string };

function Workspace(props: { session: Session; onLock: () => void }) {
  const { session } = props;
  const subscribeSync = useCallback((l: () => void) => session.sync.subscribe(l), [session]);
  const subscribeOutbox = useCallback((l: () => void) => session.outbox.subscribe(l), [session]);
  useSubscription(subscribeSync);
  useSubscription(subscribeOutbox);
  const subscribeApiOutbox = useCallback((l: () => void) => session.apiOutbox.subscribe(l), [session]);
  useSubscription(subscribeApiOutbox);
  const now = useNow();
  const route = useRoute();
  const policy = session.sync.authority()?.chain.at(-1);
  const scopes = useMemo(() => scopesOf(policy), [policy]);
  return (
    <div class="workspace">
      <StatusBar session={session} now={now} onLock={props.onLock} />
      <nav class="views" aria-label="Views">
        {VIEWS.map(([view, href, label]) => (
          <a
            key={view}
            href={href}
            data-testid={`nav-${view}`}
            aria-current={route.view === view || (view === 'rollouts' && route.view === 'rollout') ? 'page' : undefined}
          >
            {label}
          </a>
        ))}
      </nav>
      {route.view === 'host' ? (
        <HostPage session={session} host={route.host} now={now} />
      ) : route.view === 'rollouts' ? (
        <RolloutList session={session} now={now} />
      ) : route.view === 'rollout' ? (
        <RolloutPage session={session} id={route.id} now={now} />
      ) : route.view === 'enrollment' ? (
        <EnrollmentPage session={session} now={now} />
      ) : route.view === 'policy' ? (
        <PolicyPage session={session} />
      ) : (
        <FleetView views={session.sync.hostViews()} now={now} scopes={scopes} />
      )}
    </div>
  );
}

export function App() {
  const [stage, setStage] = useState<Stage>({ name: 'loading' });
  const decide = useCallback(async () => {
    const keys = await listKeys();
    setStage(keys.length ? { name: 'locked' } : { name: 'setup' });
  }, []);
  useEffect(() => {
    decide().catch((error: Error) => setStage({ name: 'failed', reason: error.message }));
  }, [decide]);
  const unlocked = async (key: SigningKey): Promise<void> => {
    try {
      setStage({ name: 'ready', session: await openSession(key, await loadOrgRoot()) });
    } catch (error) {
      setStage({ name: 'failed', reason: (error as Error).message });
    }
  };
  const lock = (): void => {
    if (stage.name === 'ready') void closeSession(stage.session);
    setStage({ name: 'locked' });
  };
  switch (stage.name) {
    case 'loading':
      return <p class="boot">Loading Outpost…</p>;
    case 'setup':
      return <SetupScreen onStored={() => setStage({ name: 'locked' })} />;
    case 'locked':
      return <UnlockScreen onUnlocked={(key) => void unlocked(key)} onAddKey={() => setStage({ name: 'setup' })} />;
    case 'failed':
      return (
        <main class="setup">
          <h1>Outpost cannot start here</h1>
          <p class="error" role="alert">
            {stage.reason}
          </p>
        </main>
      );
    case 'ready':
      return <Workspace session={stage.session} onLock={lock} />;
  }
}
