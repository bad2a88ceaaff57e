import { join } from 'node:path';
import { generateSigningKey } from '../../shared/crypto/keys.js';
import { writeKeyFile } from '../../shared/node/key-file.js';
import type { Policy } from '../../shared/schemas/policy.js';
import { checkpointingCoordinatorArgs } from './admin-cli.js';
import { basePolicy, makeTestOrg } from './policy-fixtures.js';
import { startCoordinatorProcess } from './processes.js';

// HQ and one site relay as the sneakernet tests set them up (docs/sneakernet.md): the org, the
// site relay's own key, the key files alice, the relay and HQ's timestamp signer use, and HQ's
// coordinator in DIR/hq pinning the org root and signing checkpoints (bundles carry them).
export function sneakernetOrg(dir: string) {
  const org = makeTestOrg();
  const relayKey = generateSigningKey('site-relay');
  const keyFiles = {
    alice: join(dir, 'alice.key'),
    relay: join(dir, 'relay.key'),
    timestamp: join(dir, 'ts.key'),
  };
  return {
    org,
    relayKey,
    keyFiles,
    hqDir: join(dir, 'hq'),
    async writeKeyFiles(): Promise<void> {
      await writeKeyFile(keyFiles.alice, org.alice);
      await writeKeyFile(keyFiles.timestamp, org.timestamp);
      await writeKeyFile(keyFiles.relay, relayKey);
    },
    startHq: () =>
      startCoordinatorProcess(
        join(dir, 'hq'),
        join(dir, 'hq.log'),
        0,
        checkpointingCoordinatorArgs(org, keyFiles.timestamp),
      ),
    // The base policy with the site relay serving `hosts`.
    sitePolicy: (hosts: string[]): Policy =>
      basePolicy(org, { relays: [{ name: 'site-relay', key: relayKey.publicKey, hosts, groups: [] }] }),
  };
}
