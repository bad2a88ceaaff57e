// The one pause used everywhere: resolves after ms, or at once when signal aborts (so shutdowns
// and deadlines are not held up by a sleeping loop). Never rejects; callers check signal.aborted.
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  if (signal?.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}
