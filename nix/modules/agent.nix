# services.outpost-agent: applies the signed deployment intents of this host with Nix.
#
# Evaluation never happens on the host: the agent fetches a closure that CI built, copied to the
# signed cache and named in a signed intent (`outpost deploy`), then runs its
# bin/switch-to-configuration. See docs/nixos.md.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  cfg = config.services.outpost-agent;
  flags = import ../lib/flags.nix;
  role = flags.roles.agent;
  inherit (lib) mkIf mkOption types;

  # A file the agent reads at run time. A string, never a Nix path: a path literal would be
  # copied into the world-readable Nix store.
  absolutePath = types.strMatching "/.+";
  # [DAYS ]HH:MM-HH:MM, e.g. "Tue 03:00-05:00", "Mon-Fri,Sun 22:00-06:00", "01:00-05:00".
  window = types.strMatching "(([A-Za-z]{3}(-[A-Za-z]{3})?)(,[A-Za-z]{3}(-[A-Za-z]{3})?)* )?[0-2][0-9]:[0-5][0-9]-[0-2][0-9]:[0-5][0-9]";
  # Bytes, optionally with a K/M/G/T suffix.
  size = types.strMatching "[0-9]+(\\.[0-9]+)?[KMGTkmgt]?";

  outpost = "${cfg.package}/bin/outpost";
  argv = flags.argsFor role cfg ++ cfg.extraArgs;
  execLine = "${outpost} agent ${lib.escapeShellArgs argv}";

  # nix-store / nix-env / nix for fetching and setting the profile; systemctl and systemd-run for
  # health, reboots and running the activation in a unit of its own.
  unitPath = [
    config.nix.package
    pkgs.coreutils
    config.systemd.package
  ];
  unitEnvironment = {
    HOME = "/root";
    NODE_ENV = "production";
    # glibc keeps freed memory per malloc arena (8 per core by default); in 10-minute fuzz runs the
    # agent's malloc grew 18 MiB with the default and 4 MiB with two (docs/fuzzing.md).
    MALLOC_ARENA_MAX = "2";
  };

  # Identifies what the agent runs (package, options, PATH, environment). The running agent
  # writes the one it was started with to /run/outpost-agent/running, the active system carries
  # the current one in /etc/outpost/agent.fingerprint; when they differ after a switch the agent
  # is restarted (see restartAfterSwitch).
  fingerprint = builtins.hashString "sha256" (
    builtins.concatStringsSep "\n" (
      [ execLine ]
      ++ map toString unitPath
      ++ lib.mapAttrsToList (name: value: "${name}=${value}") unitEnvironment
    )
  );
  runningFile = "/run/outpost-agent/running";
  fingerprintFile = "/etc/outpost/agent.fingerprint";
in
{
  options.services.outpost-agent = {
    enable = lib.mkEnableOption "the Outpost agent, which applies this host's signed deployment intents";

    package = mkOption {
      type = types.package;
      default = pkgs.callPackage ../package.nix { };
      defaultText = lib.literalExpression "pkgs.callPackage <outpost>/nix/package.nix { }";
      description = "The outpost package whose `outpost agent` runs.";
    };

    hostId = mkOption {
      type = types.strMatching "[a-z0-9][a-z0-9-]{0,62}";
      default = config.networking.hostName;
      defaultText = lib.literalExpression "config.networking.hostName";
      example = "clinic-1";
      description = ''
        This host's id in the fleet (the `H` of `outpost deploy --host H`): 1-63 lowercase
        letters, digits or dashes.
      '';
    };

    keyFile = mkOption {
      type = absolutePath;
      default = "${cfg.stateDir}/host.key";
      defaultText = lib.literalExpression ''"''${config.services.outpost-agent.stateDir}/host.key"'';
      example = "/var/lib/outpost-agent/host.key";
      description = ''
        This host's Ed25519 key file; results and status are signed with it. A path string read
        at run time, never copied into the Nix store. Created with `outpost keygen` on first start
        when {option}`services.outpost-agent.generateKey` is set; its public key is printed to the
        journal.
      '';
    };

    generateKey = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Create {option}`services.outpost-agent.keyFile` with `outpost keygen` when it does not
        exist. Turn off when the key is provisioned by other means (sops-nix, agenix, an image).
      '';
    };

    coordinators = mkOption {
      type = types.listOf types.str;
      example = [
        "wss://relay.clinic-1.example.org"
        "wss://fleet.example.org"
      ];
      description = ''
        Sync endpoints, `ws://` or `wss://`: the site's relay, or the coordinator itself. The
        agent syncs through the first that answers and fails over to the next; list the
        nearest endpoint first.
      '';
    };

    orgRootKeys = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "mK1x0bXQ2i5wz4uF7f0c8Hq1cJmXr3xv0lq2e7YtQ5E=" ];
      description = ''
        Base64 public keys of the fleet's org root, pinned (`--org-root`). The agent walks the
        signed policy in `fleet/policy` from these keys and counts an intent only when its
        signers have `deploy` for this host under it. Give this or {option}`adminKeys`, not both.
      '';
    };

    adminKeys = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "X/L1G2uWjtGN5PBhrQqweSaWIXB3D+QvRjLzDCrHl2g=" ];
      description = ''
        Without a fleet policy (development, small fleets): base64 Ed25519 public keys of the
        admins whose intents this host trusts (printed by `outpost keygen`). Public keys: they
        may live in the Nix store. Give this or {option}`orgRootKeys`, not both.
      '';
    };

    enrollTokenFile = mkOption {
      type = types.nullOr absolutePath;
      default = null;
      example = "/run/keys/outpost-enroll.token";
      description = ''
        With {option}`orgRootKeys`: a one-time enrollment token (`outpost enroll token`) for an
        unattended install; the agent's enrollment request then binds its key at once. Without
        it the host shows as pending until an admin approves it. A path, never in the Nix store.
      '';
    };

    freezeAfter = mkOption {
      type = types.ints.positive;
      default = 86400;
      example = 172800;
      description = ''
        Seconds without a fresh signed timestamp after which the agent reports a freeze in its
        status (`--freeze-after`; policy mode).
      '';
    };

    deliveryWindow = mkOption {
      type = types.ints.positive;
      default = 604800;
      example = 1209600;
      description = ''
        Seconds within which an intent must reach the host after it could first have: after
        its issue if the host was in contact then, else after contact resumed; later, it is
        refused as stale (a peer may have withheld it). At least {option}`freezeAfter` counts.
        The intent's own expiry (`outpost deploy --expires`, 90 days by default) stays the hard
        limit (`--delivery-window`; policy mode with timestamp keys).
      '';
    };

    backoffBase = mkOption {
      type = types.ints.positive;
      default = 1;
      example = 5;
      description = "First reconnect delay in seconds, doubling per failure with jitter (`--backoff-base`).";
    };

    backoffMax = mkOption {
      type = types.ints.positive;
      default = 300;
      example = 900;
      description = ''
        Longest reconnect delay in seconds (`--backoff-max`). Minutes suit satellite links: a
        fleet coming back after an outage does not storm its relay or coordinator.
      '';
    };

    substituters = mkOption {
      type = types.listOf types.str;
      example = [ "https://cache.example.org" ];
      description = ''
        Binary caches the closures are fetched from (`http://`, `https://` or `file://`). They
        replace the machine-wide substituters for the agent's fetches.
      '';
    };

    trustedCacheKeys = mkOption {
      type = types.listOf types.str;
      example = [ "cache.example.org-1:0Plg+xy/uTp8Bdgo9bLRuem4H9I4GwfGVdSDR2u8KAU=" ];
      description = ''
        Nix public keys (`NAME:BASE64`, as in `trusted-public-keys`) that must sign every fetched
        path. Pinned: the machine-wide list is not used for the agent's fetches.
      '';
    };

    store = mkOption {
      type = types.nullOr absolutePath;
      default = null;
      example = "/var/lib/outpost-test-store";
      description = ''
        Install into a separate store root (a chroot store) instead of the system store. For
        tests and demos only; leave unset on real hosts.
      '';
    };

    profile = mkOption {
      type = absolutePath;
      default = "/nix/var/nix/profiles/system";
      description = "The system profile the agent sets before running `switch-to-configuration`.";
    };

    stateDir = mkOption {
      type = types.strMatching "/var/lib/[^/].*";
      default = "/var/lib/outpost-agent";
      description = ''
        Where the agent persists its phase, counters and signed status (systemd's
        `StateDirectory`, so it must be under /var/lib).
      '';
    };

    fetchTimeout = mkOption {
      type = types.ints.positive;
      default = 86400;
      description = "Seconds after which fetching a closure is given up (slow links are normal).";
    };

    activationTimeout = mkOption {
      type = types.ints.positive;
      default = 600;
      description = "Seconds after which `switch-to-configuration` is given up and rolled back.";
    };

    logLevel = import ../lib/log-level-option.nix {
      inherit lib;
      service = "outpost-agent";
    };

    profileType = mkOption {
      type = types.enum [
        "nixos"
        "system-manager"
      ];
      default = "nixos";
      description = ''
        What {option}`services.outpost-agent.profile` holds (`--profile-type`): a NixOS system
        (`bin/switch-to-configuration`) or a system-manager profile (`bin/activate`, for hosts
        that are not NixOS; no boot entries, no kernel handling).
      '';
    };

    minThroughput = mkOption {
      type = types.ints.unsigned;
      default = 256;
      example = 128;
      description = ''
        Bytes per second a NAR transfer must average over
        {option}`services.outpost-agent.throughputWindow`, or it is aborted and retried
        (`--min-throughput`, the slow-drip defence; 0 turns it off).
      '';
    };

    throughputWindow = mkOption {
      type = types.ints.positive;
      default = 600;
      example = 900;
      description = "Seconds `minThroughput` is averaged over (`--throughput-window`).";
    };

    downloadRetries = mkOption {
      type = types.ints.between 0 1000;
      default = 8;
      example = 20;
      description = ''
        Failed attempts in a row without progress on one file (refused, cut, too slow) before the
        download fails and is reported (`--download-retries`).
      '';
    };

    maxClosureSize = mkOption {
      type = size;
      default = "64G";
      example = "16G";
      description = ''
        Closures whose narinfos declare more than this in total are refused before the download
        (`--max-closure-size`; bytes, or with a K/M/G/T suffix).
      '';
    };

    minFreeSpace = mkOption {
      type = size;
      default = "1G";
      example = "4G";
      description = ''
        Disk space that must stay free after a download; a closure that does not fit is refused
        before its first byte is fetched (`--min-free-space`).
      '';
    };

    maintenanceWindows = mkOption {
      type = types.listOf window;
      default = [ ];
      example = [
        "Tue 03:00-05:00"
        "Mon 16:00-18:00"
      ];
      description = ''
        Windows `[DAYS ]HH:MM-HH:MM` in host-local time (see `timeZone`) in which downloads and
        activations may start (`--maintenance-window`, once per window). A download that runs past
        the end of a window finishes, and its activation waits for the next window. Empty: any
        time.
      '';
    };

    rebootWindows = mkOption {
      type = types.listOf window;
      default = [ ];
      example = [ "01:00-05:00" ];
      description = ''
        Windows in which the agent may reboot the host when a `switch` changes the kernel or
        initrd (it then installs the generation with `boot` and reboots in the window;
        `--reboot-window`). Empty: reboot right after the activation.
      '';
    };

    timeZone = mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "Africa/Kinshasa";
      description = "IANA time zone of the windows (`--timezone`). Null: the host's time zone.";
    };

    activationRunner = mkOption {
      type = types.enum [
        "auto"
        "systemd-run"
        "direct"
      ];
      default = "auto";
      example = "systemd-run";
      description = ''
        How the agent starts `switch-to-configuration` so the activation survives the agent being
        restarted (`--activation-runner`): `systemd-run` (a transient unit, outside the agent's
        cgroup) or `direct` (a process in its own session); `auto` is systemd-run wherever systemd
        runs, so on NixOS.
      '';
    };

    healthChecks = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [
        "systemctl is-active nginx.service"
        "curl -sf http://127.0.0.1/healthz"
      ];
      description = ''
        Shell commands (`/bin/sh -c`) that must exit 0 after an activation, or the agent rolls
        back (`--health-check`, once per command). The unit's PATH holds Nix, coreutils and
        systemd; use absolute paths for anything else.
      '';
    };

    confirmTimeout = mkOption {
      type = types.ints.positive;
      default = 300;
      example = 900;
      description = ''
        Seconds within which, after an activation, the host must sync afresh with a coordinator
        or relay and pass its health checks, or it re-activates the previous generation
        (`--confirm-timeout`).
      '';
    };

    requireSystemRunning = mkOption {
      type = types.enum [
        "auto"
        "true"
        "false"
      ];
      default = "auto";
      example = "true";
      description = ''
        Whether `systemctl is-system-running` must say `running` after an activation (`degraded`
        fails; `--require-system-running`); `auto` is true wherever systemd runs.
      '';
    };

    systemctl = mkOption {
      type = types.nullOr absolutePath;
      default = null;
      example = "/run/current-system/sw/bin/systemctl";
      description = "The systemctl binary for `is-system-running` and the systemd-run runner (`--systemctl`). Null: from the unit's PATH.";
    };

    bootedSystem = mkOption {
      type = absolutePath;
      default = "/run/booted-system";
      description = ''
        The link to the booted system, whose kernel and initrd decide whether a `switch` needs a
        reboot (`--booted-system`).
      '';
    };

    rebootCommand = mkOption {
      type = types.nonEmptyStr;
      default = "systemctl reboot";
      example = "systemctl kexec";
      description = "Shell command that reboots the host (`--reboot-command`).";
    };

    collectCommands = mkOption {
      type = types.listOf (types.strMatching "[a-z0-9][a-z0-9-]{0,31}=.+");
      default = [ ];
      example = [
        "journal=journalctl --no-pager --priority warning --lines 200"
        "nginx=systemctl status nginx.service"
      ];
      description = ''
        What `outpost action collect` gathers, as `NAME=COMMAND` (`--collect-command`, once per
        entry): the output tail of each shell command goes into the bundle's section NAME. Given,
        it replaces the default set (journal, failed units, disk usage, Nix generations).
      '';
    };

    actionTimeout = mkOption {
      type = types.ints.positive;
      default = 60;
      example = 120;
      description = ''
        Seconds after which a collect command is stopped, and within which the health checks of
        `outpost action check` must pass (`--action-timeout`).
      '';
    };

    sshPort = mkOption {
      type = types.ints.between 0 65535;
      default = 22;
      example = 2222;
      description = ''
        With `orgRootKeys`: the port of this host's sshd on 127.0.0.1 that `outpost ssh` tunnels
        reach, through the agent's own outbound link, after the agent checked the signed request
        against the policy (a role granting `ssh` on this host) (`--ssh-port`); 0 turns tunnels
        off. sshd need not listen on any other address for them. See docs/access.md.
      '';
    };

    sshIdleTimeout = mkOption {
      type = types.ints.positive;
      default = 1800;
      example = 600;
      description = "Seconds without a byte either way after which an `outpost ssh` session is closed (`--ssh-idle-timeout`).";
    };

    sshMaxSessions = mkOption {
      type = types.ints.between 1 100;
      default = 4;
      description = "`outpost ssh` sessions open at once on this host, at most (`--ssh-max-sessions`).";
    };

    metricsListen = mkOption {
      type = types.nullOr (types.strMatching "([[][0-9a-fA-F:.]+[]]|[0-9A-Za-z.-]+):[0-9]{1,5}");
      default = null;
      example = "127.0.0.1:9464";
      description = ''
        Serve the agent's Prometheus metrics (phase, generations, download bytes, last result) at
        `http://ADDRESS:PORT/metrics` (`--metrics-listen`); off when null. It has no
        authentication: keep it on loopback or a management network, and open the port in the
        firewall only for your Prometheus.
      '';
    };

    sshAccess = {
      enable = mkOption {
        type = types.bool;
        default = false;
        description = ''
          SSH logins from the signed fleet policy (`outpost policy add-login`, docs/access.md):
          the agent writes the keys the policy gives this host into
          {option}`services.outpost-agent.sshAccess.dir`, one file per local account, whenever a
          newer policy version arrives (`--authorized-keys-dir`), and sshd reads them
          (`services.openssh.authorizedKeysFiles` gets `DIR/%u`). A revoked key stops working as
          soon as the version that revokes it reaches the host, without a rebuild. Needs
          {option}`services.outpost-agent.orgRootKeys`. The accounts themselves are declared as
          usual (`users.users`); sshd must be enabled (`services.openssh.enable`).
        '';
      };
      dir = mkOption {
        type = absolutePath;
        default = "/var/lib/outpost-ssh-access";
        example = "/etc/ssh/outpost-authorized-keys";
        description = ''
          Where the agent writes the policy's login keys, one file per account (mode 0644, in a
          directory of mode 0755 owned by root: sshd reads the files as the logging-in user and
          refuses writable paths). Created at boot by systemd-tmpfiles.
        '';
      };
    };

    appsManifest = mkOption {
      type = types.nullOr absolutePath;
      default = null;
      example = "/etc/outpost/apps.json";
      description = ''
        The list of application services whose `docker compose ps` state the agent reports in its
        signed status (`--apps-manifest`). Set by {option}`services.outpost-apps` (nix/modules/apps.nix)
        whenever an app is declared; null: no apps are watched. See docs/apps.md.
      '';
    };

    appsInterval = mkOption {
      type = types.ints.positive;
      default = 60;
      example = 300;
      description = "Seconds between two checks of the apps' state, besides the one at start (`--apps-interval`).";
    };

    dockerCommand = mkOption {
      type = types.nullOr absolutePath;
      default = null;
      example = "/run/current-system/sw/bin/docker";
      description = ''
        The docker CLI (with the compose plugin) the agent asks for the apps' state
        (`--docker-command`). Set by {option}`services.outpost-apps` to the docker of
        `virtualisation.docker.package`; null: `docker` from the unit's PATH.
      '';
    };

    restartAfterSwitch = mkOption {
      type = types.bool;
      default = true;
      description = ''
        Restart the agent into the new version once a switch it performed changed its package or
        options and it has reported the result. The switch itself never stops the agent (its
        unit has `restartIfChanged = false`); a path unit watching the agent's state file
        triggers `outpost-agent-upgrade.service`, which restarts the agent when it is idle and
        its command line differs from the active system's.
      '';
    };

    extraArgs = mkOption {
      type = types.listOf types.str;
      default = [ ];
      description = ''
        Extra arguments appended to `outpost agent`. Every CLI flag already has an option; this is
        an escape hatch for testing a newer CLI.
      '';
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = cfg.coordinators != [ ];
        message = "services.outpost-agent.coordinators: give at least one sync endpoint (relay or coordinator).";
      }
      {
        assertion = (cfg.orgRootKeys != [ ]) != (cfg.adminKeys != [ ]);
        message = "services.outpost-agent: set orgRootKeys (the fleet policy) or adminKeys (no policy), exactly one of them; without either no intent can be trusted.";
      }
      {
        assertion = cfg.enrollTokenFile == null || cfg.orgRootKeys != [ ];
        message = "services.outpost-agent.enrollTokenFile needs orgRootKeys: enrollment is part of the fleet policy.";
      }
      {
        assertion = !cfg.sshAccess.enable || cfg.orgRootKeys != [ ];
        message = "services.outpost-agent.sshAccess.enable needs orgRootKeys: login keys come from the signed fleet policy.";
      }
      {
        assertion = cfg.substituters != [ ] && cfg.trustedCacheKeys != [ ];
        message = "services.outpost-agent: give substituters and trustedCacheKeys; unsigned paths are never installed.";
      }
    ];

    warnings = map (
      e:
      "services.outpost-agent.${e.option} is set, but this outpost does not accept --${e.flag} yet (${role.pending.${e.flag}}); it is ignored."
    ) (flags.pendingSet role cfg);

    environment.etc."outpost/agent.fingerprint".text = fingerprint;

    # sshd also reads the files the policy's logins become (sshAccess); NixOS keeps its own
    # AuthorizedKeysFile entries (users.users.*.openssh.authorizedKeys) beside them.
    services.openssh.authorizedKeysFiles = mkIf cfg.sshAccess.enable [ "${cfg.sshAccess.dir}/%u" ];
    systemd.tmpfiles.rules = mkIf cfg.sshAccess.enable [ "d ${cfg.sshAccess.dir} 0755 root root -" ];

    systemd.services.outpost-agent = {
      description = "Outpost agent: applies this host's signed deployment intents";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [
        "network-online.target"
        "nix-daemon.socket"
      ];
      path = unitPath;
      environment = unitEnvironment;

      # The agent runs switch-to-configuration as its own child: if the switch restarted or
      # stopped this unit it would kill the agent and the switch with it. Instead the agent keeps
      # running old code until outpost-agent-upgrade restarts it, after it has reported.
      restartIfChanged = false;
      stopIfChanged = false;
      # Same for a configuration that no longer enables the agent: it is gone after the reboot.
      unitConfig.X-StopOnRemoval = false;
      startLimitIntervalSec = 0;

      script = ''
        ${lib.optionalString cfg.generateKey ''
          if [ ! -e ${lib.escapeShellArg cfg.keyFile} ]; then
            ${outpost} keygen --out ${lib.escapeShellArg cfg.keyFile} --name ${lib.escapeShellArg cfg.hostId}
          fi
        ''}
        echo ${fingerprint} > ${runningFile}
        exec ${execLine}
      '';

      serviceConfig = {
        Type = "simple";
        # Root: switch-to-configuration changes the whole system. No sandboxing that would
        # restrict what an activation may do.
        User = "root";
        Restart = "always";
        RestartSec = "10s";
        StateDirectory = lib.removePrefix "/var/lib/" cfg.stateDir;
        StateDirectoryMode = "0700";
        RuntimeDirectory = "outpost-agent";
        RuntimeDirectoryMode = "0700";
        UMask = "0077";
        # Logs (JSON lines on stderr) go to the journal.
        StandardOutput = "journal";
        StandardError = "journal";
        TimeoutStopSec = "30s";
      };
    };

    systemd.services.outpost-agent-upgrade = mkIf cfg.restartAfterSwitch {
      description = "Restart the Outpost agent into the active system's version";
      path = [
        pkgs.coreutils
        pkgs.jq
        config.systemd.package
      ];
      serviceConfig.Type = "oneshot";
      script = ''
        expected=$(cat ${fingerprintFile} 2>/dev/null || true)
        running=$(cat ${runningFile} 2>/dev/null || true)
        if [ -z "$expected" ] || [ "$expected" = "$running" ]; then exit 0; fi
        if ! systemctl is-active --quiet outpost-agent.service; then exit 0; fi
        phase=$(jq -r '.phase // "idle"' ${lib.escapeShellArg "${cfg.stateDir}/state.json"} 2>/dev/null || echo unknown)
        case "$phase" in
          downloading|activating|confirming|unknown)
            echo "outpost-agent is busy ($phase); it is restarted once it is idle"
            exit 0
            ;;
        esac
        echo "outpost-agent runs an older command line than the active system's (phase $phase): restarting it"
        systemctl restart --no-block outpost-agent.service
      '';
    };

    # Every phase change rewrites state.json: after a switch, the write that records the result
    # triggers the check above.
    systemd.paths.outpost-agent-upgrade = mkIf cfg.restartAfterSwitch {
      description = "Watch the Outpost agent's state for finished switches";
      wantedBy = [ "multi-user.target" ];
      pathConfig = {
        PathChanged = "${cfg.stateDir}/state.json";
        Unit = "outpost-agent-upgrade.service";
      };
    };

    # Fallback in case a path event was missed.
    systemd.timers.outpost-agent-upgrade = mkIf cfg.restartAfterSwitch {
      description = "Periodically check that the Outpost agent runs the active system's version";
      wantedBy = [ "timers.target" ];
      timerConfig = {
        OnBootSec = "10min";
        OnUnitInactiveSec = "15min";
      };
    };
  };
}
