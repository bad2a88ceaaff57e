import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { renderNarinfo, transferCap } from '../../../../agent/download/staging.js';
import { parseNarinfo } from '../../../../shared/nix/narinfo.js';

test('staging: the narinfo Nix reads back carries the signed fields unchanged, with a local URL; byte caps follow the declared sizes', () => {
  const text = [
    `StorePath: /nix/store/${'a'.repeat(32)}-x`,
    'URL: nar/abc.nar.xz',
    'Compression: xz',
    `FileHash: sha256:${'1'.repeat(52)}`,
    'FileSize: 300',
    `NarHash: sha256:${'0'.repeat(52)}`,
    'NarSize: 1000',
    `References: ${'b'.repeat(32)}-y`,
    'Deriver: unknown-deriver',
    'Sig: cache-1:sig',
  ].join('\n');
  const info = parseNarinfo(text, 'test');
  const staged = parseNarinfo(renderNarinfo(info), 'staged');
  assert.equal({ ...staged, url: '' }, { ...info, url: '' });
  assert.is(staged.url, `nar/${'a'.repeat(32)}.nar`);
  assert.is(transferCap(info), 300);
  assert.is(transferCap({ ...info, fileSize: undefined, compression: 'none' }), 1000);
  assert.ok(transferCap({ ...info, fileSize: undefined }) < 1000 + 70_000);
});

test.run();
