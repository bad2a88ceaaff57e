# Typed declarations of the NixOS options the Outpost modules set or read, and nothing else, for
# evaluating them with the real module system (lib.evalModules) where NixOS itself is not at hand
# (nix/tests/eval-modules.nix). The types follow nixos/modules (systemd-unit-options.nix,
# system/etc/etc.nix, misc/assertions.nix, services/networking/firewall.nix), so a module that sets
# a value of the wrong type, or an option NixOS does not have, fails to evaluate here as it would
# on a host. Everything not listed is an error on purpose: a new setting needs its declaration
# here, copied from NixOS with its type.
{ lib, pkgs, ... }:
let
  inherit (lib) mkOption types;

  # systemd's [Unit]/[Service]/[Path]/[Timer] values: a value, or a list of them (one line each).
  atom = types.oneOf [
    types.bool
    types.int
    types.str
    types.path
    types.package
  ];
  unitSection = types.attrsOf (types.either atom (types.listOf atom));
  unitNames = types.listOf types.str;

  # What services, paths and timers share (systemd-unit-options.nix, commonUnitOptions).
  commonUnitOptions = {
    description = mkOption {
      type = types.singleLineStr;
      default = "";
    };
    wantedBy = mkOption {
      type = unitNames;
      default = [ ];
    };
    wants = mkOption {
      type = unitNames;
      default = [ ];
    };
    after = mkOption {
      type = unitNames;
      default = [ ];
    };
    requires = mkOption {
      type = unitNames;
      default = [ ];
    };
    unitConfig = mkOption {
      type = unitSection;
      default = { };
    };
    startLimitIntervalSec = mkOption {
      type = types.nullOr types.int;
      default = null;
    };
  };

  service = types.submodule {
    options = commonUnitOptions // {
      path = mkOption {
        type = types.listOf (
          types.oneOf [
            types.package
            types.str
          ]
        );
        default = [ ];
      };
      environment = mkOption {
        type = types.attrsOf (
          types.nullOr (
            types.oneOf [
              types.str
              types.path
              types.package
            ]
          )
        );
        default = { };
      };
      script = mkOption {
        type = types.lines;
        default = "";
      };
      restartIfChanged = mkOption {
        type = types.bool;
        default = true;
      };
      stopIfChanged = mkOption {
        type = types.bool;
        default = true;
      };
      serviceConfig = mkOption {
        type = unitSection;
        default = { };
      };
      preStop = mkOption {
        type = types.lines;
        default = "";
      };
      reload = mkOption {
        type = types.lines;
        default = "";
      };
      reloadIfChanged = mkOption {
        type = types.bool;
        default = false;
      };
    };
  };

  pathUnit = types.submodule {
    options = commonUnitOptions // {
      pathConfig = mkOption {
        type = unitSection;
        default = { };
      };
    };
  };

  timerUnit = types.submodule {
    options = commonUnitOptions // {
      timerConfig = mkOption {
        type = unitSection;
        default = { };
      };
    };
  };

  etcFile = types.submodule {
    options = {
      text = mkOption {
        type = types.nullOr types.lines;
        default = null;
      };
      source = mkOption {
        type = types.nullOr types.path;
        default = null;
      };
      mode = mkOption {
        type = types.str;
        default = "symlink";
      };
    };
  };
in
{
  options = {
    assertions = mkOption {
      type = types.listOf (
        types.submodule {
          options = {
            assertion = mkOption { type = types.bool; };
            message = mkOption { type = types.str; };
          };
        }
      );
      default = [ ];
    };
    warnings = mkOption {
      type = types.listOf types.str;
      default = [ ];
    };

    networking.hostName = mkOption {
      # nixos/modules/tasks/network-interfaces.nix
      type = types.strMatching "^$|^[[:alnum:]]([[:alnum:]_-]{0,61}[[:alnum:]])?$";
      default = "nixos";
    };
    networking.firewall.allowedTCPPorts = mkOption {
      type = types.listOf types.port;
      default = [ ];
    };

    nix.package = mkOption {
      type = types.package;
      default = pkgs.nix;
    };

    systemd.package = mkOption {
      type = types.package;
      default = pkgs.systemd;
    };
    systemd.services = mkOption {
      type = types.attrsOf service;
      default = { };
    };
    systemd.paths = mkOption {
      type = types.attrsOf pathUnit;
      default = { };
    };
    systemd.timers = mkOption {
      type = types.attrsOf timerUnit;
      default = { };
    };

    # nixos/modules/services/networking/ssh/sshd.nix
    services.openssh.authorizedKeysFiles = mkOption {
      type = types.listOf types.str;
      default = [ ];
    };
    # nixos/modules/system/boot/systemd/tmpfiles.nix
    systemd.tmpfiles.rules = mkOption {
      type = types.listOf types.str;
      default = [ ];
    };
    # nixos/modules/virtualisation/docker.nix
    virtualisation.docker.enable = mkOption {
      type = types.bool;
      default = false;
    };
    virtualisation.docker.package = mkOption {
      type = types.package;
      default = pkgs.docker;
    };

    environment.etc = mkOption {
      type = types.attrsOf etcFile;
      default = { };
    };
  };
}
