# services.outpost-coordinator: the sync server every admin, relay and agent talks to, with its
# append-only update log. It holds no key and is not trusted: intents and results are signed by
# admins and hosts. See docs/nixos.md.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  cfg = config.services.outpost-coordinator;
  flags = import ../lib/flags.nix;
  role = flags.roles.coordinator;
  inherit (lib) mkIf mkOption types;
  absolutePath = types.strMatching "/.+";
in
{
  options.services.outpost-coordinator = {
    enable = lib.mkEnableOption "the Outpost coordinator (sync server and update log)";

    package = mkOption {
      type = types.package;
      default = pkgs.callPackage ../package.nix { };
      defaultText = lib.literalExpression "pkgs.callPackage <outpost>/nix/package.nix { }";
      description = "The outpost package whose `outpost coordinator` runs.";
    };

    listen = mkOption {
      type = types.str;
      default = "127.0.0.1";
      example = "0.0.0.0";
      description = ''
        Address to listen on. The default keeps it behind a TLS reverse proxy on the same host
        (agents and relays connect with `wss://`); use `0.0.0.0` or `::` to serve directly.
      '';
    };

    port = mkOption {
      type = types.port;
      default = 8420;
      description = "TCP port of the websocket and HTTP API.";
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Open {option}`services.outpost-coordinator.port` in the firewall.";
    };

    stateDir = mkOption {
      type = types.strMatching "/var/lib/[^/].*";
      default = "/var/lib/outpost-coordinator";
      description = ''
        Where the update log (LevelDB) lives (`--data-dir`). systemd's `StateDirectory`, owned by
        the service's transient user, so it must be under /var/lib. Back it up.
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
      description = "Seconds after a document's last connection closes before it is unloaded from memory.";
    };

    orgRootKeys = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "Usy31KCa4TahJjSL08Un6b7GOHfRI1UKQZJ8KSwJlu8=" ];
      description = ''
        Pinned org root public keys (base64). With them every connection must prove its key by
        challenge–response and the signed fleet policy decides who may read or write which
        document; without them the coordinator runs in open development mode.
      '';
    };

    timestampKeyFile = mkOption {
      type = types.nullOr absolutePath;
      default = null;
      example = "/var/lib/outpost-coordinator/timestamp.key";
      description = ''
        Key file (a path string, never copied into the Nix store) of the online timestamp key listed
        in the policy's timestampKeys; the coordinator signs freshness timestamps with it.
      '';
    };

    timestampInterval = mkOption {
      type = types.ints.positive;
      default = 60;
      description = "Seconds between signed freshness timestamps.";
    };

    tlsCertFile = mkOption {
      type = types.nullOr absolutePath;
      default = null;
      example = "/var/lib/acme/fleet.example.org/cert.pem";
      description = "PEM certificate to serve wss:// directly (otherwise terminate TLS in a reverse proxy).";
    };

    tlsKeyFile = mkOption {
      type = types.nullOr absolutePath;
      default = null;
      example = "/var/lib/acme/fleet.example.org/key.pem";
      description = "PEM private key for tlsCertFile (a path string, never copied into the Nix store).";
    };

    # Resource limits (docs/operations.md, "Limits"); each is shown in /healthz with its refusals.
    maxConnectionsPerAddress = mkOption {
      type = types.ints.positive;
      default = 4096;
      description = ''
        Open connections one client address may hold. Behind a reverse proxy every client has the
        proxy's address: raise this to the fleet's size and limit per client in the proxy.
      '';
    };

    maxPendingUpgrades = mkOption {
      type = types.ints.positive;
      default = 128;
      description = "Connections one address may hold that have not sent a complete request yet.";
    };

    upgradeTimeout = mkOption {
      type = types.ints.positive;
      default = 10;
      description = "Seconds a connection has to send a complete request (or websocket upgrade) before it is dropped.";
    };

    maxDocumentsPerConnection = mkOption {
      type = types.ints.positive;
      default = 25000;
      description = "Documents one relay link may hold open, and hosts it may report presence for.";
    };

    maxUpdateSize = mkOption {
      type = types.ints.positive;
      default = 262144;
      description = "Bytes of new content one update may add to a document; bigger writes are refused.";
    };

    maxWriterBytesPerHour = mkOption {
      type = types.ints.positive;
      default = 67108864;
      description = ''
        Bytes of new content one writer (a host, an admin; a relay per document) may add per hour;
        beyond it its writes are refused until the quota refills.
      '';
    };

    maxDocumentSize = mkOption {
      type = types.ints.positive;
      default = 33554432;
      description = "Largest state, in bytes, a document may grow to (what every reader syncs).";
    };

    # Enrollment limits: what strangers can make the coordinator store through POST /api/enroll;
    # shown in /healthz under `enrollment`.
    enrollBurst = mkOption {
      type = types.ints.positive;
      default = 30;
      description = "Fleet POSTs (enroll, approve, policy) one source (IPv4 address or IPv6 /64) may make in a burst.";
    };

    enrollRefill = mkOption {
      type = types.ints.positive;
      default = 2;
      description = "After a burst, one more fleet POST per source every this many seconds.";
    };

    maxPendingEnrollments = mkOption {
      type = types.ints.positive;
      default = 1000;
      description = ''
        Enrollment requests without a token kept at once, waiting for an admin; more are refused
        (HTTP 429) until some expire or an admin runs `outpost enroll clear`.
      '';
    };

    pendingEnrollmentTtl = mkOption {
      type = types.ints.positive;
      default = 604800;
      description = "Seconds after which a pending enrollment request not approved is dropped (the agent asks again every hour).";
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
      description = "Log level; logs are JSON lines in the journal (`journalctl -u outpost-coordinator`).";
    };

    extraArgs = mkOption {
      type = types.listOf types.str;
      default = [ ];
      description = "Extra arguments appended to `outpost coordinator` (escape hatch; every flag has an option).";
    };
  };

  config = mkIf cfg.enable {
    warnings = map (
      e:
      "services.outpost-coordinator.${e.option} is set, but this outpost does not accept --${e.flag} yet (${role.pending.${e.flag}}); it is ignored."
    ) (flags.pendingSet role cfg);

    networking.firewall.allowedTCPPorts = mkIf cfg.openFirewall [ cfg.port ];

    systemd.services.outpost-coordinator = {
      description = "Outpost coordinator: fleet sync server and update log";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ];
      environment.NODE_ENV = "production";
      script = ''
        exec ${cfg.package}/bin/outpost coordinator ${lib.escapeShellArgs (flags.argsFor role cfg ++ cfg.extraArgs)}
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
