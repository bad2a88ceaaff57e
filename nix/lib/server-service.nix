# The systemd service of the coordinator and the relay: the same sandbox, restart policy and state
# directory; only the subcommand, its arguments and the description differ.
{
  lib,
  cfg,
  description,
  command,
  args,
}:

{
  inherit description;
  wantedBy = [ "multi-user.target" ];
  wants = [ "network-online.target" ];
  after = [ "network-online.target" ];
  environment.NODE_ENV = "production";
  script = ''
    exec ${cfg.package}/bin/outpost ${command} ${lib.escapeShellArgs (args ++ cfg.extraArgs)}
  '';
  serviceConfig = import ./hardening.nix { inherit (cfg) port; } // {
    Type = "simple";
    Restart = "on-failure";
    RestartSec = "5s";
    StateDirectory = lib.removePrefix "/var/lib/" cfg.stateDir;
    StateDirectoryMode = "0700";
    StandardOutput = "journal";
    StandardError = "journal";
  };
}
