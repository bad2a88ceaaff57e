# services.outpost-relay: a site-local sync server that keeps serving the site's agents while the
# uplink is down and exchanges updates with its upstreams (the coordinator, or another relay)
# whenever it is up. Like the coordinator it holds no key. See docs/nixos.md.
#
# nix/lib/flags.nix lists the flags this module passes, and test/integration/nixos-module.test.ts
# checks them, their types and defaults against `outpost relay --help --json` (relay/options.ts).
# docs/relays.md explains the relay.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  cfg = config.services.outpost-relay;
  flags = import ../lib/flags.nix;
  role = flags.roles.relay;
  inherit (lib) mkIf mkOption types;
  absolutePath = types.strMatching "/.+";
in
{
  options.services.outpost-relay = {
    enable = lib.mkEnableOption "an Outpost relay (site-local sync server)";

    package = mkOption {
      type = types.package;
      default = pkgs.callPackage ../package.nix { };
      defaultText = lib.literalExpression "pkgs.callPackage <outpost>/nix/package.nix { }";
      description = "The outpost package whose `outpost relay` runs.";
    };

    upstreams = mkOption {
      type = types.listOf types.str;
      example = [ "wss://fleet.example.org" ];
      description = ''
        Where the relay syncs to, `ws://` or `wss://`: the coordinator, or a relay closer to it
        (`--upstream`, once per entry).
      '';
    };

    keyFile = mkOption {
      type = types.nullOr absolutePath;
      default = null;
      example = "/var/lib/outpost-relay/relay.key";
      description = ''
        The relay's key file (`outpost keygen --out FILE`; a path string, never copied into the
        Nix store). The fleet policy lists its public key under `relays`; the relay only proves
        with it which relay is connecting, and signs nothing.
      '';
    };

    orgRootKeys = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "Usy31KCa4TahJjSL08Un6b7GOHfRI1UKQZJ8KSwJlu8=" ];
      description = ''
        Pinned org root public keys (base64). With them the site's agents must prove their keys
        here too, checked against the policy the relay syncs from its upstream (needs keyFile).
      '';
    };

    listen = mkOption {
      type = types.str;
      default = "0.0.0.0";
      example = "10.20.0.1";
      description = "Address the site's agents connect to.";
    };

    port = mkOption {
      type = types.port;
      default = 8421;
      description = "TCP port the site's agents connect to (websocket, HTTP API and /nix-cache).";
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Open {option}`services.outpost-relay.port` in the firewall.";
    };

    stateDir = mkOption {
      type = types.strMatching "/var/lib/[^/].*";
      default = "/var/lib/outpost-relay";
      description = ''
        Where the relay keeps its update log and its binary-cache mirror (`--data-dir`).
        systemd's `StateDirectory`, so it must be under /var/lib.
      '';
    };

    maxPayload = mkOption {
      type = types.ints.positive;
      default = 1048576;
      description = "Largest websocket message accepted, in bytes; bigger ones close the connection.";
    };

    idleUnload = mkOption {
      type = types.ints.positive;
      default = 30;
      description = "Seconds after a document's last connection closes before it is unloaded (unconfirmed writes keep it).";
    };

    backoffBase = mkOption {
      type = types.ints.positive;
      default = 1;
      description = "First reconnect delay towards the upstream, in seconds; doubles per failure, with jitter.";
    };

    backoffMax = mkOption {
      type = types.ints.positive;
      default = 300;
      description = "Longest reconnect delay towards the upstream, in seconds (minutes suit satellite links).";
    };

    upstreamTimeout = mkOption {
      type = types.ints.positive;
      default = 60;
      description = "Seconds without any message or pong after which the upstream link counts as dead.";
    };

    syncConcurrency = mkOption {
      type = types.ints.positive;
      default = 16;
      description = "Documents fetched from the upstream at once after a reconnect or a restart.";
    };

    cacheUpstreams = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "https://cache.example.org" ];
      description = ''
        Binary caches to mirror at `http://<relay>:<port>/nix-cache` (`--cache-upstream`). Each
        file is fetched once and served unchanged; agents still check every signature.
      '';
    };

    cacheMaxSize = mkOption {
      type = types.ints.positive;
      default = 10737418240;
      description = "Bytes of disk the cache mirror may use; the least recently used files go first.";
    };

    extraArgs = mkOption {
      type = types.listOf types.str;
      default = [ ];
      description = "Extra arguments appended to `outpost relay` (escape hatch; every flag has an option).";
    };
  }
  // import ../lib/server-options.nix {
    inherit lib;
    service = "outpost-relay";
    tlsExampleDir = "/var/lib/acme/relay.example.org";
    tlsCertDescription = "PEM certificate to serve wss:// and https:// directly.";
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = cfg.upstreams != [ ];
        message = "services.outpost-relay.upstreams: give the coordinator (or another relay) to sync with.";
      }
      {
        assertion = cfg.orgRootKeys == [ ] || cfg.keyFile != null;
        message = "services.outpost-relay.orgRootKeys needs keyFile: the upstream checks the relay's key against the policy.";
      }
      {
        assertion = (cfg.tlsCertFile == null) == (cfg.tlsKeyFile == null);
        message = "services.outpost-relay: set both tlsCertFile and tlsKeyFile, or neither.";
      }
    ];

    warnings = map (
      e:
      "services.outpost-relay.${e.option} is set, but this outpost does not accept --${e.flag} yet (${role.pending.${e.flag}}); it is ignored."
    ) (flags.pendingSet role cfg);

    networking.firewall.allowedTCPPorts = mkIf cfg.openFirewall [ cfg.port ];

    systemd.services.outpost-relay = import ../lib/server-service.nix {
      inherit lib cfg;
      description = "Outpost relay: site-local sync server";
      command = "relay";
      args = flags.argsFor role cfg;
    };
  };
}
