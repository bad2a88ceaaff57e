import { useEffect, useState } from 'preact/hooks';
import { z } from 'zod';
import type { SigningKey } from '../../../shared/crypto/keys.js';
import { base64Key32Schema } from '../../../shared/schemas/primitives.js';
import {
  createKey,
  type KeySummary,
  keyFileText,
  listKeys,
  MIN_PASSPHRASE_LENGTH,
  parseKeyFileText,
  storeKey,
  unlockKey,
  VaultError,
} from '../keys/vault.js';
import { idbGet, idbPut } from '../storage/idb.js';
import { serverUrlOfPage } from './session.js';

// Key import, creation and unlocking, and the pinned org root: everything before a session.
const rootListSchema = z.array(base64Key32Schema);

export async function loadOrgRoot(): Promise<string[]> {
  const parsed = rootListSchema.safeParse(await idbGet('settings', `org-root ${serverUrlOfPage()}`));
  return parsed.success ? parsed.data : [];
}

async function saveOrgRoot(text: string): Promise<string[]> {
  const keys = text
    .split(/[\s,]+/)
    .map((k) => k.trim())
    .filter(Boolean);
  const parsed = rootListSchema.safeParse(keys);
  if (!parsed.success)
    throw new VaultError(
      'org root keys are base64 Ed25519 public keys (44 characters, ending in =), separated by spaces; ask whoever holds the root for them',
    );
  await idbPut('settings', `org-root ${serverUrlOfPage()}`, parsed.data);
  return parsed.data;
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

export function SetupScreen(props: { onStored: () => void }) {
  const [mode, setMode] = useState<'import' | 'create'>('import');
  const [keyText, setKeyText] = useState('');
  const [name, setName] = useState('');
  const [passphrase, setPassphrase] = useState('');
  const [repeat, setRepeat] = useState('');
  const [root, setRoot] = useState('');
  const [message, setMessage] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [created, setCreated] = useState<SigningKey | null>(null);

  useEffect(() => {
    void loadOrgRoot().then((keys) => setRoot(keys.join(' ')));
  }, []);

  const readFile = async (event: Event): Promise<void> => {
    const file = (event.target as HTMLInputElement).files?.[0];
    if (file) setKeyText(await file.text());
  };

  const submit = async (event: Event): Promise<void> => {
    event.preventDefault();
    setMessage(null);
    if (passphrase !== repeat) return setMessage('the two passphrases differ');
    setBusy(true);
    try {
      await saveOrgRoot(root);
      const key = mode === 'import' ? parseKeyFileText(keyText.trim()) : createKey(name.trim());
      await storeKey(key, passphrase);
      if (mode === 'create') setCreated(key);
      else props.onStored();
    } catch (error) {
      setMessage(describe(error));
    } finally {
      setBusy(false);
    }
  };

  if (created)
    return (
      <main class="setup" data-testid="setup-created">
        <h1>Key created</h1>
        <p>
          Public key <code data-testid="created-public-key">{created.publicKey}</code>: give it to a policy admin (
          <code>outpost policy admin add</code>) so agents trust what you sign.
        </p>
        <p>
          The secret exists only in this browser, encrypted. Save a copy of the key file somewhere safe:{' '}
          <a
            href={URL.createObjectURL(new Blob([keyFileText(created)], { type: 'application/json' }))}
            download={`${created.name}.key`}
          >
            download {created.name}.key
          </a>
        </p>
        <button type="button" onClick={props.onStored}>
          Continue
        </button>
      </main>
    );

  return (
    <main class="setup" data-testid="setup">
      <h1>Outpost web editor</h1>
      <p class="lede">
        Your admin key stays in this browser, encrypted under a passphrase; the server only ever sees signatures.
      </p>
      <form onSubmit={(e) => void submit(e)}>
        <fieldset>
          <legend>Key</legend>
          <label>
            <input type="radio" name="mode" checked={mode === 'import'} onChange={() => setMode('import')} /> Import a
            key file (outpost keygen)
          </label>
          <label>
            <input type="radio" name="mode" checked={mode === 'create'} onChange={() => setMode('create')} /> Create a
            new key
          </label>
          {mode === 'import' ? (
            <div class="stack">
              <input type="file" accept=".key,.json,application/json" data-testid="key-file" onChange={readFile} />
              <textarea
                rows={4}
                placeholder="…or paste the key file here"
                value={keyText}
                data-testid="key-text"
                onInput={(e) => setKeyText((e.target as HTMLTextAreaElement).value)}
              />
            </div>
          ) : (
            <label class="stack">
              Your admin name
              <input
                value={name}
                data-testid="key-name"
                onInput={(e) => setName((e.target as HTMLInputElement).value)}
              />
            </label>
          )}
        </fieldset>
        <fieldset>
          <legend>Passphrase (at least {MIN_PASSPHRASE_LENGTH} characters; asked at every unlock)</legend>
          <input
            type="password"
            autocomplete="new-password"
            data-testid="passphrase"
            value={passphrase}
            onInput={(e) => setPassphrase((e.target as HTMLInputElement).value)}
          />
          <input
            type="password"
            autocomplete="new-password"
            placeholder="again"
            data-testid="passphrase-repeat"
            value={repeat}
            onInput={(e) => setRepeat((e.target as HTMLInputElement).value)}
          />
        </fieldset>
        <fieldset>
          <legend>Pinned org root key(s)</legend>
          <p class="hint">
            What the page checks policies, intents and host keys against. Without it nothing shown is verified against
            the policy and the page says so.
          </p>
          <input
            value={root}
            data-testid="org-root"
            placeholder="base64 public key of the org root"
            onInput={(e) => setRoot((e.target as HTMLInputElement).value)}
          />
        </fieldset>
        <button type="submit" disabled={busy} data-testid="store-key">
          {busy ? 'Encrypting…' : 'Store key'}
        </button>
        {message && (
          <p class="error" role="alert" data-testid="setup-message">
            {message}
          </p>
        )}
      </form>
    </main>
  );
}

export function UnlockScreen(props: { onUnlocked: (key: SigningKey) => void; onAddKey: () => void }) {
  const [keys, setKeys] = useState<KeySummary[]>([]);
  const [selected, setSelected] = useState('');
  const [passphrase, setPassphrase] = useState('');
  const [message, setMessage] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  useEffect(() => {
    void listKeys().then((list) => {
      setKeys(list);
      setSelected(list[0]?.publicKey ?? '');
    });
  }, []);
  const submit = async (event: Event): Promise<void> => {
    event.preventDefault();
    setBusy(true);
    setMessage(null);
    try {
      const key = await unlockKey(selected, passphrase);
      setPassphrase('');
      props.onUnlocked(key);
    } catch (error) {
      setMessage(describe(error));
    } finally {
      setBusy(false);
    }
  };
  return (
    <main class="setup" data-testid="unlock">
      <h1>Unlock your key</h1>
      <form onSubmit={(e) => void submit(e)}>
        <label class="stack">
          Key
          <select value={selected} onChange={(e) => setSelected((e.target as HTMLSelectElement).value)}>
            {keys.map((k) => (
              <option key={k.publicKey} value={k.publicKey}>
                {k.name} ({k.publicKey.slice(0, 12)}…)
              </option>
            ))}
          </select>
        </label>
        <label class="stack">
          Passphrase
          <input
            type="password"
            autocomplete="current-password"
            autofocus
            data-testid="unlock-passphrase"
            value={passphrase}
            onInput={(e) => setPassphrase((e.target as HTMLInputElement).value)}
          />
        </label>
        <button type="submit" disabled={busy || !selected} data-testid="unlock-button">
          {busy ? 'Unlocking…' : 'Unlock'}
        </button>{' '}
        <button type="button" onClick={props.onAddKey}>
          Add another key
        </button>
        {message && (
          <p class="error" role="alert" data-testid="unlock-message">
            {message}
          </p>
        )}
      </form>
    </main>
  );
}
