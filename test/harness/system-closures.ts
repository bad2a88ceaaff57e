import { promises as fs } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runCommand } from './nix-fixtures.js';

// Real closures that behave like systems for the lifecycle tests: a switch-to-configuration (or
// system-manager's bin/activate) whose behaviour the test chooses, optional kernel and initrd
// links (closures with equal `kernel` share those store paths, as NixOS generations do), and
// payload paths of random bytes (distinct NARs, incompressible, so byte counts are exact).

export interface SystemClosureOptions {
  name: string;
  // Body of bin/switch-to-configuration after "#!/bin/sh"; $OUTPOST_SYSTEM is the closure, $1 the action.
  switchScript?: string;
  // Body of bin/activate (system-manager profiles); without it there is none.
  activateScript?: string;
  // Kernel "version": adds kernel and initrd links to shared kernel-<v> and initrd-<v> paths.
  kernel?: string;
  extraPaths?: number;
  payloadBytes?: number;
  uniqueness?: string;
}

// Appends "<action> <closure>" to $OUTPOST_TEST_ACTIVATION_LOG, as the spine's closures do.
const LOG_ACTIVATION =
  // biome-ignore lint/suspicious/noTemplateCurlyInString: a shell default expansion, not a template
  'if [ -n "$OUTPOST_TEST_ACTIVATION_LOG" ]; then echo "${1:-activate} $OUTPOST_SYSTEM" >> "$OUTPOST_TEST_ACTIVATION_LOG"; fi';

// What the switch script of each test closure does.
export const SWITCH_SCRIPTS = {
  // A healthy system; it also brings the (test-simulated) network back, as a real rollback would.
  succeeds: [
    LOG_ACTIVATION,
    'if [ -n "$OUTPOST_TEST_NETWORK_CUT" ]; then rm -f "$OUTPOST_TEST_NETWORK_CUT"; fi',
    'exit 0',
  ].join('\n'),
  fails: [LOG_ACTIVATION, 'echo "warning: the following units failed: broken-db.service" >&2', 'exit 3'].join('\n'),
  hangs: [LOG_ACTIVATION, 'echo "starting broken-db.service"', 'exec sleep 600'].join('\n'),
  killsTheAgent: [
    LOG_ACTIVATION,
    'echo "restarting outpost-agent.service"',
    'kill -9 "$OUTPOST_AGENT_PID"',
    'sleep 1',
    'echo "activation finished"',
    'exit 0',
  ].join('\n'),
  cutsTheNetwork: [LOG_ACTIVATION, 'echo "reconfiguring eth0"', 'touch "$OUTPOST_TEST_NETWORK_CUT"', 'exit 0'].join(
    '\n',
  ),
} as const;

const EXPRESSION = `
let
  params = builtins.fromJSON (builtins.readFile ./params.json);
  base = { system = builtins.currentSystem; builder = "/bin/sh"; PATH = "/bin:/usr/bin"; };
  common = base // { inherit (params) uniqueness; };
  payload = index: derivation (common // {
    name = "\${params.name}-payload-\${toString index}";
    payloadBytes = toString params.payloadBytes;
    args = [ "-c" "{ echo \\"$name $uniqueness\\"; head -c \\"$payloadBytes\\" /dev/urandom; } > \\"$out\\"" ];
  });
  # No uniqueness: every closure with the same kernel version shares these paths.
  bootFile = kind: derivation (base // {
    name = "\${kind}-\${params.kernel}";
    version = params.kernel;
    args = [ "-c" "mkdir -p \\"$out\\"; echo \\"$name\\" > \\"$out/image\\"" ];
  });
  boot = params.kernel != null;
in derivation (common // {
  inherit (params) name switchScript activateScript;
  payloads = builtins.genList payload params.extraPaths;
  kernel = if boot then bootFile "kernel" else "";
  initrd = if boot then bootFile "initrd" else "";
  args = [ "-c" ''
    set -e
    mkdir -p "$out/bin"
    : > "$out/payloads"
    for p in $payloads; do echo "$p" >> "$out/payloads"; done
    if [ -n "$kernel" ]; then ln -s "$kernel/image" "$out/kernel"; ln -s "$initrd/image" "$out/initrd"; fi
    if [ -n "$switchScript" ]; then
      { echo '#!/bin/sh'; echo "OUTPOST_SYSTEM=$out"; printf '%s\\n' "$switchScript"; } > "$out/bin/switch-to-configuration"
      chmod 755 "$out/bin/switch-to-configuration"
    fi
    if [ -n "$activateScript" ]; then
      { echo '#!/bin/sh'; echo "OUTPOST_SYSTEM=$out"; printf '%s\\n' "$activateScript"; } > "$out/bin/activate"
      chmod 755 "$out/bin/activate"
    fi
  '' ];
})
`;

export async function buildSystemClosure(options: SystemClosureOptions): Promise<string> {
  const params = {
    name: options.name,
    switchScript:
      options.activateScript !== undefined && options.switchScript === undefined
        ? ''
        : (options.switchScript ?? SWITCH_SCRIPTS.succeeds),
    activateScript: options.activateScript ?? '',
    kernel: options.kernel ?? null,
    extraPaths: options.extraPaths ?? 0,
    payloadBytes: options.payloadBytes ?? 1024,
    uniqueness: options.uniqueness ?? `${process.pid}-${Date.now()}`,
  };
  const dir = await fs.mkdtemp(join(tmpdir(), 'outpost-system-'));
  try {
    await fs.writeFile(join(dir, 'params.json'), JSON.stringify(params));
    await fs.writeFile(join(dir, 'default.nix'), EXPRESSION);
    const result = await runCommand('nix-build', [
      '--no-out-link',
      '--option',
      'substituters',
      '',
      join(dir, 'default.nix'),
    ]);
    if (result.code !== 0) throw new Error(`building ${options.name} failed:\n${result.stderr.trim()}`);
    return result.stdout.trim();
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
}
