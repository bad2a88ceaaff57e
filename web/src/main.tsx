import { render } from 'preact';
import { App } from './ui/app.js';

// The app shell is kept by a service worker (sw.ts) so the page loads with no link.
if ('serviceWorker' in navigator) {
  navigator.serviceWorker.register('/sw.js').catch((error: Error) => console.warn('no offline shell:', error.message));
}
render(<App />, document.getElementById('app')!);
