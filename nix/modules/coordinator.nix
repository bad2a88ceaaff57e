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

    backend = mkOption {
      type = types.strMatching "level|nats://.+";
      default = "level";
      example = "nats://10.0.0.1:4222,10.0.0.2:4222,10.0.0.3:4222";
      description = ''
        Where the update log lives: `level` (LevelDB in {option}`stateDir`) or the servers of a NATS
        JetStream cluster that several coordinators share (docs/scale-out.md). Moving an existing
        log: `outpost coordinator migrate --from-level DIR --to nats://…`.
      '';
    };

    natsStream = mkOption {
      type = types.strMatching "[A-Za-z0-9_-]{1,32}";
      default = "OUTPOST";
      description = "JetStream stream of the update log, with a `nats://` backend.";
    };

    natsReplicas = mkOption {
      type = types.ints.between 1 5;
      default = 3;
      description = "Replicas of the stream when this coordinator creates it (1 for a single nats-server).";
    };

    # Credentials and TLS towards the NATS cluster: path strings, never copied into the Nix store.
    natsCredsFile = mkOption {
      type = types.nullOr absolutePath;
      default = null;
      description = "NATS credentials file (.creds: user JWT and NKey seed, e.g. from nsc); not with natsTokenFile.";
    };

    natsTokenFile = mkOption {
      type = types.nullOr absolutePath;
      default = null;
      description = "File holding the token of a NATS cluster with token authorization.";
    };

    natsTlsCaFile = mkOption {
      type = types.nullOr absolutePath;
      default = null;
      description = ''
        PEM CA certificate the NATS servers' certificates must come from; the connection then
        requires TLS. Name the servers in {option}`backend` as their certificates do.
      '';
    };

    natsTlsCertFile = mkOption {
      type = types.nullOr absolutePath;
      default = null;
      description = "PEM client certificate for NATS servers that verify clients (with natsTlsKeyFile).";
    };

    natsTlsKeyFile = mkOption {
      type = types.nullOr absolutePath;
      default = null;
      description = "PEM private key for natsTlsCertFile.";
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

    extraArgs = mkOption {
      type = types.listOf types.str;
      default = [ ];
      description = "Extra arguments appended to `outpost coordinator` (escape hatch; every flag has an option).";
    };
  }
  // import ../lib/server-options.nix {
    inherit lib;
    service = "outpost-coordinator";
    tlsExampleDir = "/var/lib/acme/fleet.example.org";
    tlsCertDescription = "PEM certificate to serve wss:// directly (otherwise terminate TLS in a reverse proxy).";
  };

  config = mkIf cfg.enable {
    warnings = map (
      e:
      "services.outpost-coordinator.${e.option} is set, but this outpost does not accept --${e.flag} yet (${role.pending.${e.flag}}); it is ignored."
    ) (flags.pendingSet role cfg);

    # The same rules as the command's (coordinator/backends/backend-option.ts), at evaluation time.
    assertions = [
      {
        assertion = (cfg.tlsCertFile == null) == (cfg.tlsKeyFile == null);
        message = "services.outpost-coordinator: set both tlsCertFile and tlsKeyFile, or neither.";
      }
      {
        assertion = cfg.natsCredsFile == null || cfg.natsTokenFile == null;
        message = "services.outpost-coordinator: set natsCredsFile or natsTokenFile, not both.";
      }
      {
        assertion = (cfg.natsTlsCertFile == null) == (cfg.natsTlsKeyFile == null);
        message = "services.outpost-coordinator: set both natsTlsCertFile and natsTlsKeyFile, or neither.";
      }
    ];

    networking.firewall.allowedTCPPorts = mkIf cfg.openFirewall [ cfg.port ];

    systemd.services.outpost-coordinator = import ../lib/server-service.nix {
      inherit lib cfg;
      description = "Outpost coordinator: fleet sync server and update log";
      command = "coordinator";
      args = flags.argsFor role cfg;
    };
  };
}
