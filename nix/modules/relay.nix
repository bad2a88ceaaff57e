# services.outpost-relay: a site-local sync server that keeps serving the site's agents while the
# uplink is down and exchanges updates with its upstreams (the coordinator, or another relay)
# whenever it is up. Like the coordinator it holds no key. See docs/nixos.md.
#
# `outpost relay` is issue 5; nix/lib/flags.nix lists the flags this module passes, and
# test/nixos-module.test.ts checks them against relayCommand once coordinator/relay-options.ts
# exists.
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

    listen = mkOption {
      type = types.str;
      default = "0.0.0.0";
      example = "10.20.0.1";
      description = "Address the site's agents connect to.";
    };

    port = mkOption {
      type = types.port;
      default = 8421;
      description = "TCP port the site's agents connect to.";
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
        Where the relay keeps its copy of the documents and the updates still to be sent upstream
        (`--data-dir`). systemd's `StateDirectory`, so it must be under /var/lib.
      '';
    };

    logLevel = mkOption {
      type = types.enum [
        "trace"
        "debug"
        "info"
        "warn"
        "error"
      ];
      default = "info";
      description = "Log level; logs are JSON lines in the journal (`journalctl -u outpost-relay`).";
    };

    extraArgs = mkOption {
      type = types.listOf types.str;
      default = [ ];
      description = "Extra arguments appended to `outpost relay` (escape hatch; every flag has an option).";
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = cfg.upstreams != [ ];
        message = "services.outpost-relay.upstreams: give the coordinator (or another relay) to sync with.";
      }
    ];

    warnings = map (
      e:
      "services.outpost-relay.${e.option} is set, but this outpost does not accept --${e.flag} yet (${role.pending.${e.flag}}); it is ignored."
    ) (flags.pendingSet role cfg);

    networking.firewall.allowedTCPPorts = mkIf cfg.openFirewall [ cfg.port ];

    systemd.services.outpost-relay = {
      description = "Outpost relay: site-local sync server";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ];
      environment.NODE_ENV = "production";
      script = ''
        exec ${cfg.package}/bin/outpost relay ${lib.escapeShellArgs (flags.argsFor role cfg ++ cfg.extraArgs)}
      '';
      serviceConfig = import ../lib/hardening.nix { inherit (cfg) port; } // {
        Type = "simple";
        Restart = "on-failure";
        RestartSec = "5s";
        StateDirectory = lib.removePrefix "/var/lib/" cfg.stateDir;
        StateDirectoryMode = "0700";
        StandardOutput = "journal";
        StandardError = "journal";
      };
    };
  };
}
