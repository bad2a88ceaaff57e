// A small promise wrapper over one IndexedDB database of the editor's own (keys, settings, the
// outbox of signed actions, trust state). The Yjs documents live in y-indexeddb's databases.
const DB_NAME = 'outpost-editor';
// Version 2 added `api-outbox` (rollout actions and enrollment approvals signed here, waiting for
// the server's API); the upgrade only creates stores that are missing.
const DB_VERSION = 2;
export const STORES = ['keys', 'settings', 'outbox', 'trust', 'api-outbox'] as const;
export type StoreName = (typeof STORES)[number];

let opened: Promise<IDBDatabase> | null = null;

function request<T>(req: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error ?? new Error('IndexedDB request failed'));
  });
}

export function openEditorDb(): Promise<IDBDatabase> {
  opened ??= new Promise((resolve, reject) => {
    const req = indexedDB.open(DB_NAME, DB_VERSION);
    req.onupgradeneeded = () => {
      for (const name of STORES) if (!req.result.objectStoreNames.contains(name)) req.result.createObjectStore(name);
    };
    req.onsuccess = () => resolve(req.result);
    req.onerror = () =>
      reject(
        new Error(
          `cannot open this browser's IndexedDB (${req.error?.message ?? 'unknown error'}); private windows and some settings forbid it`,
        ),
      );
  });
  return opened;
}

async function withStore<T>(
  store: StoreName,
  mode: IDBTransactionMode,
  run: (s: IDBObjectStore) => IDBRequest<T>,
): Promise<T> {
  const db = await openEditorDb();
  const tx = db.transaction(store, mode);
  const result = await request(run(tx.objectStore(store)));
  // Writes count only once the transaction has committed.
  if (mode === 'readwrite')
    await new Promise<void>((resolve, reject) => {
      tx.oncomplete = () => resolve();
      tx.onerror = () => reject(tx.error ?? new Error('IndexedDB transaction failed'));
      tx.onabort = () => reject(tx.error ?? new Error('IndexedDB transaction aborted'));
    });
  return result;
}

export const idbGet = (store: StoreName, key: string): Promise<unknown> =>
  withStore(store, 'readonly', (s) => s.get(key) as IDBRequest<unknown>);
export const idbPut = (store: StoreName, key: string, value: unknown): Promise<void> =>
  withStore(store, 'readwrite', (s) => s.put(value, key)).then(() => undefined);
export const idbDelete = (store: StoreName, key: string): Promise<void> =>
  withStore(store, 'readwrite', (s) => s.delete(key));
export const idbValues = (store: StoreName): Promise<unknown[]> =>
  withStore(store, 'readonly', (s) => s.getAll() as IDBRequest<unknown[]>);
