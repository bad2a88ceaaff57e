// Moved to shared/views/policy-edit.ts (the web editor's policy drafts use the same edits).
export * from '../shared/views/policy-edit.js';
