// Moved to shared/views/group-windows.ts (the web editor shows and checks windows the same way).
export * from '../shared/views/group-windows.js';
