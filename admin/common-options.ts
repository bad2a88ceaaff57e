import { type OptionMeta, option } from '../cli/options.js';
import { coordinatorUrlSchema, fileSchema } from './policy-cli-kit.js';

// The two options nearly every admin command takes, declared once: where to connect and which
// admin key signs and proves who you are. Both fall back to $OUTPOST_COORDINATOR / $OUTPOST_KEY
// and the admin config file (cli/options.ts commonSettings).

export const coordinatorOption = option(coordinatorUrlSchema, {
  placeholder: 'URL',
  description: 'the coordinator or a relay, ws:// or wss://',
  common: 'coordinator',
});

const ADMIN_KEY_HELP = 'your admin key file (outpost keygen): it signs, and proves who you are to the coordinator';

// A command may say more about what the key must be allowed to do (`outpost ssh`: a role granting ssh).
export function adminKeyOption(description: OptionMeta['description'] = ADMIN_KEY_HELP) {
  return option(fileSchema('your admin key file'), { placeholder: 'FILE', description, common: 'key' });
}
