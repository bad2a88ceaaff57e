import { runCommand } from './run-command.js';

const TRUSTED_FLAG = /[?&]trusted=(1|true)/;

// The agent refuses to run on a Nix that would install unsigned paths: signatures are the only
// thing tying a closure to the organisation's cache key.
export async function checkNixSignatureConfig(substituters: string[]): Promise<void> {
  for (const url of substituters) {
    if (TRUSTED_FLAG.test(url)) {
      throw new Error(
        `substituter ${url} is marked trusted, which makes Nix skip signature checks; remove '?trusted=…' from it`,
      );
    }
  }
  const outcome = await runCommand('nix', ['--extra-experimental-features', 'nix-command', 'show-config', '--json'], {
    timeoutMs: 60_000,
    keepBytes: 4 << 20,
  });
  if (outcome.code !== 0) {
    throw new Error(
      `cannot read the Nix configuration ('nix show-config' failed: ${outcome.outputTail.trim().split('\n').pop()}); is Nix installed? (Debian: apt-get install nix-bin)`,
    );
  }
  let config: Record<string, { value?: unknown } | undefined>;
  try {
    config = JSON.parse(outcome.outputTail) as Record<string, { value?: unknown }>;
  } catch {
    throw new Error("cannot parse 'nix show-config --json' output; is this Nix 2.4 or newer?");
  }
  if (config['require-sigs']?.value !== true) {
    throw new Error(
      "Nix has 'require-sigs = false' (in nix.conf or NIX_CONFIG): it would install unsigned paths. Set 'require-sigs = true' and restart the agent",
    );
  }
  const configured = JSON.stringify(config.substituters?.value ?? []);
  if (TRUSTED_FLAG.test(configured)) {
    throw new Error(
      `Nix's configured substituters include one marked trusted (${configured}); remove '?trusted=…' from nix.conf`,
    );
  }
}
