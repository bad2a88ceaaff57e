# End-to-end NixOS test: a coordinator (which also plays CI: it holds the built closures and
# serves them as a signed binary cache), a relay at a site, and two agents, one behind the relay
# and one talking to the coordinator directly. An admin deploys a closure, both agents fetch it
# from the signed cache and apply it; an intent signed by an unknown key is refused; then agent1
# switches to a real NixOS system that changes the agent's own unit, survives that switch, and
# restarts itself into the new version.
#
# Needs nixpkgs and KVM: nix build .#checks.x86_64-linux.vm-test (see docs/nixos.md).
{
  pkgs,
  outpost,
  module,
}:

let
  inherit (pkgs) lib;

  # TEST-ONLY keys, generated once with `nix-store --generate-binary-cache-key outpost-vm-test-1`
  # and `outpost keygen --name vm-test-admin`. They end up in the world-readable store, which is
  # fine for a throwaway VM and never acceptable anywhere else. The agents' host keys are not
  # here: each agent creates its own with `outpost keygen` on first start.
  cacheSecretKey = "outpost-vm-test-1:46P34rF7Sp+A9z4uqfkcfBOsib3MFLkwPTMz2UVpoOLQ+WD7HL+5OnwF2Cj1stG56bgf0jgbB8ZV1INHa7woBQ==";
  cachePublicKey = "outpost-vm-test-1:0Plg+xy/uTp8Bdgo9bLRuem4H9I4GwfGVdSDR2u8KAU=";
  adminPublicKey = "X/L1G2uWjtGN5PBhrQqweSaWIXB3D+QvRjLzDCrHl2g=";
  adminKeyFile = pkgs.writeText "vm-test-admin.key" (
    builtins.toJSON {
      kind = "outpost-secret-key";
      name = "vm-test-admin";
      publicKey = adminPublicKey;
      secretKey = "UAlnG8ezPeTx/Hx/7DHm8b997lyVYUAgpGqpd8hc1qVf8vUba5aO0Y3k8GGtCrB5JpYhcHcP5C9GMvMMKseXaA==";
    }
  );

  # A stand-in system closure: switching to it only records the call. It is in the coordinator's
  # store (the cache) and nowhere else, so the agents must fetch it, signature checked.
  fakeSystem = pkgs.writeTextFile {
    name = "outpost-vm-test-system";
    destination = "/bin/switch-to-configuration";
    executable = true;
    text = ''
      #!${pkgs.runtimeShell}
      set -eu
      mkdir -p /var/lib/outpost-vm-test
      echo "$1 $0" >> /var/lib/outpost-vm-test/activations
    '';
  };

  common = {
    imports = [ module ];
    environment.systemPackages = [
      outpost
      pkgs.curl
      pkgs.jq
    ];
  };

  agent = endpoint: {
    imports = [ common ];
    services.outpost-agent = {
      enable = true;
      package = outpost;
      coordinators = [ endpoint ];
      adminKeys = [ adminPublicKey ];
      substituters = [ "http://coordinator:5000" ];
      trustedCacheKeys = [ cachePublicKey ];
    };
  };
in
pkgs.testers.runNixOSTest {
  name = "outpost";

  nodes = {
    coordinator =
      { nodes, ... }:
      {
        imports = [ common ];
        services.outpost-coordinator = {
          enable = true;
          package = outpost;
          listen = "0.0.0.0";
          openFirewall = true;
        };

        # The signed binary cache CI pushes to. Here nix-serve signs this node's store on the fly;
        # docs/nixos.md shows the `nix copy --to` flow for a real cache.
        services.nix-serve = {
          enable = true;
          secretKeyFile = "/etc/outpost-vm-test/cache.secret";
          openFirewall = true;
        };
        environment.etc."outpost-vm-test/cache.secret" = {
          text = cacheSecretKey;
          mode = "0400";
        };

        # What CI built: the stand-in closure, and agent1's system with its v2 specialisation.
        virtualisation.additionalPaths = [
          fakeSystem
          nodes.agent1.system.build.toplevel
        ];
      };

    relay = {
      imports = [ common ];
      services.outpost-relay = {
        enable = true;
        package = outpost;
        upstreams = [ "ws://coordinator:8420" ];
        openFirewall = true;
      };
    };

    # At a site, behind the relay.
    agent1 = {
      imports = [ (agent "ws://relay:8421") ];
      environment.etc."outpost-vm-test/version".text = lib.mkDefault "v1";
      # Generation 2 for agent1: a real NixOS system that also changes the agent's own unit.
      specialisation.v2.configuration = {
        environment.etc."outpost-vm-test/version".text = "v2";
        services.outpost-agent.logLevel = "debug";
      };
    };

    # At headquarters, straight to the coordinator.
    agent2 = agent "ws://coordinator:8420";
  };

  testScript = ''
    import shlex

    COORDINATOR = "ws://127.0.0.1:8420"
    ADMIN_KEY = "/root/.config/outpost/admin.key"
    FAKE_SYSTEM = "${fakeSystem}"


    def host_matches(host, condition, timeout=600):
        """Waits until `outpost status --json` shows `host` satisfying the jq `condition`."""
        query = f'.hosts[] | select(.host == "{host}") | {condition}'
        coordinator.wait_until_succeeds(
            f"outpost status --coordinator {COORDINATOR} --json | jq -e {shlex.quote(query)}",
            timeout=timeout,
        )


    def wait_applied(host, generation, closure):
        host_matches(
            host,
            f'.applied.generation == {generation} and .applied.closure == "{closure}"'
            f' and .lastResult.generation == {generation} and .lastResult.outcome == "applied"'
            " and .lastResult.signatureValid",
        )


    def deploy(host, closure, generation, key=ADMIN_KEY):
        coordinator.succeed(
            f"outpost deploy --coordinator {COORDINATOR} --key {key} --host {host}"
            f" --closure {closure} --generation {generation}"
        )


    start_all()

    with subtest("coordinator, signed cache and relay come up"):
        coordinator.wait_for_unit("outpost-coordinator.service")
        coordinator.wait_until_succeeds("curl -sf http://127.0.0.1:8420/healthz")
        coordinator.wait_for_unit("nix-serve.service")
        coordinator.wait_for_open_port(5000)
        relay.wait_for_unit("outpost-relay.service")
        relay.wait_for_open_port(8421)
        # Hardened: a transient unprivileged user, read-only system.
        for machine, unit in ((coordinator, "outpost-coordinator"), (relay, "outpost-relay")):
            machine.succeed(f"test $(systemctl show -p DynamicUser --value {unit}.service) = yes")
            machine.succeed(
                f"test $(stat -c %u /proc/$(systemctl show -p MainPID --value {unit}.service)) -ne 0"
            )

    with subtest("agents start, create their host keys with outpost keygen and report in"):
        for machine in (agent1, agent2):
            machine.wait_for_unit("outpost-agent.service")
            machine.wait_until_succeeds("test -s /var/lib/outpost-agent/host.key")
            machine.succeed("test $(stat -c %a /var/lib/outpost-agent/host.key) = 600")
            machine.succeed("curl -sf http://coordinator:5000/nix-cache-info")
        for host in ("agent1", "agent2"):
            host_matches(host, '.phase == "idle" and .statusSignatureValid')

    with subtest("an admin deploys a closure and both agents apply it"):
        coordinator.succeed(f"install -D -m 600 ${adminKeyFile} {ADMIN_KEY}")
        deploy("agent1", FAKE_SYSTEM, 1)
        deploy("agent2", FAKE_SYSTEM, 1)
        wait_applied("agent1", 1, FAKE_SYSTEM)
        wait_applied("agent2", 1, FAKE_SYSTEM)
        for machine in (agent1, agent2):
            machine.succeed(
                f"grep -qx 'switch {FAKE_SYSTEM}/bin/switch-to-configuration' /var/lib/outpost-vm-test/activations"
            )
            machine.succeed(f"test $(readlink -f /nix/var/nix/profiles/system) = {FAKE_SYSTEM}")
            # Fetched from the cache, and Nix recorded the cache's signature.
            machine.succeed(
                f"nix --extra-experimental-features nix-command path-info --sigs {FAKE_SYSTEM} | grep -q outpost-vm-test-1:"
            )

    with subtest("an intent signed by a key the hosts do not trust is refused"):
        coordinator.succeed("outpost keygen --out /root/intruder.key --name intruder")
        deploy("agent2", FAKE_SYSTEM, 2, key="/root/intruder.key")
        host_matches(
            "agent2",
            '.lastResult.generation == 2 and .lastResult.outcome == "refused"'
            ' and (.lastResult.reason | startswith("unknown-signer")) and .applied.generation == 1',
        )

    with subtest("agent1 switches to a system that changes its own unit, survives it, then restarts"):
        v2 = agent1.succeed("readlink -f /run/current-system/specialisation/v2").strip()
        old_pid = agent1.succeed("systemctl show -p MainPID --value outpost-agent.service").strip()
        deploy("agent1", v2, 2)
        wait_applied("agent1", 2, v2)
        agent1.succeed("grep -qx v2 /etc/outpost-vm-test/version")
        agent1.succeed(f"test $(readlink -f /run/current-system) = {v2}")
        # The process that ran switch-to-configuration reported the result itself: the switch
        # did not stop it (restartIfChanged = false).
        agent1.succeed(f"journalctl --no-pager _PID={old_pid} | grep -q 'generation 2: applied'")
        # Then outpost-agent-upgrade restarted it into the new unit (log level debug).
        agent1.wait_until_succeeds(
            "cmp -s /run/outpost-agent/running /etc/outpost/agent.fingerprint", timeout=120
        )
        agent1.wait_until_succeeds(
            "tr '\\0' ' ' < /proc/$(systemctl show -p MainPID --value outpost-agent.service)/cmdline"
            " | grep -q -- '--log-level debug'",
            timeout=120,
        )
        new_pid = agent1.succeed("systemctl show -p MainPID --value outpost-agent.service").strip()
        assert new_pid != old_pid, "outpost-agent was not restarted after the switch"
        agent1.succeed("journalctl --no-pager -u outpost-agent-upgrade.service | grep -q 'restarting it'")
        # And it reports in again, still on generation 2.
        host_matches("agent1", '.phase == "applied" and .applied.generation == 2')
  '';
}
