# services.outpost-web: `outpost web` as a service on an admin's workstation — the web editor
# served from this machine's own outpost package on a loopback address, its API requests and
# websockets forwarded unchanged to the coordinator (or a relay). A coordinator serving the page
# serves the code that holds the admin's passphrase and key; this serves the code this machine
# installed (docs/web.md, "outpost web"). It holds no key and keeps no state: the keys stay in the
# browser, encrypted.
#
# Started at boot, it also holds its port: the browser keeps the stored (encrypted) keys per
# origin, http://127.0.0.1:PORT, and another local program listening there while it is not
# running would be served that origin's storage.
#
# nix/lib/flags.nix lists the flags this module passes, and test/integration/nixos-module.test.ts
# checks them, their types and defaults against `outpost web --help --json` (admin/web.ts).
{
  config,
  lib,
  pkgs,
  ...
}:

let
  cfg = config.services.outpost-web;
  flags = import ../lib/flags.nix;
  role = flags.roles.web;
  inherit (lib) mkIf mkOption types;
in
{
  # `coordinator` (one URL) became `coordinators` (a list): old configurations keep working, with a
  # warning naming the new option.
  imports = [
    (lib.mkChangedOptionModule [ "services" "outpost-web" "coordinator" ] [ "services" "outpost-web" "coordinators" ] (
      config: [ config.services.outpost-web.coordinator ]
    ))
  ];

  options.services.outpost-web = {
    enable = lib.mkEnableOption "the Outpost web editor served from this machine (`outpost web`)";

    package = mkOption {
      type = types.package;
      default = pkgs.callPackage ../package.nix { };
      defaultText = lib.literalExpression "pkgs.callPackage <outpost>/nix/package.nix { }";
      description = "The outpost package whose `outpost web` runs; the page served is the one it was built with.";
    };

    coordinators = mkOption {
      type = types.nonEmptyListOf (types.strMatching "wss?://.+");
      example = [ "wss://fleet.example.org" ];
      description = ''
        The coordinator, or a relay, the page talks to, `ws://` or `wss://` (`--coordinator`); or
        several coordinators of one fleet, in order: `outpost web` forwards to one and moves to
        the next when it cannot reach it (docs/scale-out.md). Their TLS certificates are verified
        as the CLI verifies them (see extraCaCertFile).
      '';
    };

    listen = mkOption {
      type = types.strMatching "127\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9]{1,3}|::1|localhost";
      default = "127.0.0.1";
      example = "::1";
      description = ''
        Loopback address to serve the page on: only this machine may reach it (the page holds the
        admin's key). Any other address is refused, here and by `outpost web`.
      '';
    };

    port = mkOption {
      type = types.port;
      default = 8430;
      description = ''
        TCP port of the page. The browser stores the keys per origin (http://127.0.0.1:PORT):
        keep it fixed, and serve nothing else there.
      '';
    };

    maxConnections = mkOption {
      type = types.ints.positive;
      default = 512;
      description = "Connections the browser may hold open at once (page loads, API requests, websockets).";
    };

    extraCaCertFile = mkOption {
      type = types.nullOr (types.strMatching "/.+");
      default = null;
      example = "/etc/ssl/fleet-ca.pem";
      description = ''
        PEM file of a CA to trust for the coordinator's certificate besides the system's
        (`NODE_EXTRA_CA_CERTS`; a path string, never copied into the Nix store).
      '';
    };

    logLevel = import ../lib/log-level-option.nix {
      inherit lib;
      service = "outpost-web";
    };

    extraArgs = mkOption {
      type = types.listOf types.str;
      default = [ ];
      description = "Extra arguments appended to `outpost web` (escape hatch; every flag has an option).";
    };
  };

  config = mkIf cfg.enable {
    warnings = map (
      e:
      "services.outpost-web.${e.option} is set, but this outpost does not accept --${e.flag} yet (${role.pending.${e.flag}}); it is ignored."
    ) (flags.pendingSet role cfg);

    systemd.services.outpost-web = {
      description = "Outpost web editor served from this installation (outpost web)";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ];
      environment = {
        NODE_ENV = "production";
      }
      // lib.optionalAttrs (cfg.extraCaCertFile != null) { NODE_EXTRA_CA_CERTS = cfg.extraCaCertFile; };
      script = ''
        exec ${cfg.package}/bin/outpost web ${lib.escapeShellArgs (flags.argsFor role cfg ++ cfg.extraArgs)}
      '';
      # The coordinator's and relays' sandbox; with no state at all.
      serviceConfig = import ../lib/hardening.nix { inherit (cfg) port; } // {
        Type = "simple";
        Restart = "on-failure";
        RestartSec = "5s";
        StandardOutput = "journal";
        StandardError = "journal";
      };
    };
  };
}
