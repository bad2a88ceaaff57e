# How the NixOS module options of each daemon become its command line, as data.
#
# The modules (nix/modules/*.nix) build their ExecStart from `argsFor`. The offline test
# (test/integration/nixos-module.test.ts, through nix/tests/eval-modules.nix) compares these
# tables with the CLI's own option list (`outpost <command> --help --json`, declared once in
# agent/options.ts, coordinator/options.ts, relay/options.ts, admin/web.ts): a CLI flag that no option reaches
# fails the test, so does a flag here that the CLI does not accept (the service would refuse to
# start), a module option whose type does not fit the flag, and a module default that differs
# from the CLI's default. A module that means to differ says why in `ownDefault`.
#
# Pure Nix, builtins only: it must evaluate without nixpkgs.
let
  inherit (builtins)
    attrNames
    concatLists
    concatMap
    elem
    filter
    isBool
    isList
    toString
    ;

  # One CLI flag: `option` is the attribute of services.outpost-<role> that sets it (a dotted path
  # for a nested option); `when`, if present, names a bool option without which the flag is left
  # out; `ownDefault`, when present, is why that option's default is not the CLI's.
  # Rendering: null → flag left out (the CLI default applies); bool → bare `--flag` when true;
  # list → the flag repeated once per element; anything else → `--flag VALUE`.
  render =
    flag: value:
    if value == null then
      [ ]
    else if isBool value then
      (if value then [ "--${flag}" ] else [ ])
    else if isList value then
      concatMap (v: [
        "--${flag}"
        (toString v)
      ]) value
    else
      [
        "--${flag}"
        (toString value)
      ];

  isSet = value: !(value == null || value == false || value == [ ]);

  # cfg.a.b for the option path "a.b".
  optionValue =
    cfg: option: builtins.foldl' (value: name: value.${name}) cfg (filter builtins.isString (builtins.split "[.]" option));
  flagValue = cfg: e: if e ? when && !(optionValue cfg e.when) then null else optionValue cfg e.option;
in
rec {
  roles = {
    agent = {
      command = "agent";
      optionPath = "services.outpost-agent";
      flags = [
        { flag = "host"; option = "hostId"; }
        { flag = "key"; option = "keyFile"; }
        { flag = "coordinator"; option = "coordinators"; }
        { flag = "org-root"; option = "orgRootKeys"; }
        { flag = "admin-key"; option = "adminKeys"; }
        { flag = "enroll-token"; option = "enrollTokenFile"; }
        { flag = "freeze-after"; option = "freezeAfter"; }
        { flag = "delivery-window"; option = "deliveryWindow"; }
        { flag = "backoff-base"; option = "backoffBase"; }
        { flag = "backoff-max"; option = "backoffMax"; }
        { flag = "substituter"; option = "substituters"; }
        { flag = "trusted-cache-key"; option = "trustedCacheKeys"; }
        { flag = "store"; option = "store"; }
        { flag = "profile"; option = "profile"; }
        { flag = "state-dir"; option = "stateDir"; }
        { flag = "fetch-timeout"; option = "fetchTimeout"; }
        { flag = "activation-timeout"; option = "activationTimeout"; }
        { flag = "log-level"; option = "logLevel"; }
        { flag = "profile-type"; option = "profileType"; }
        { flag = "min-throughput"; option = "minThroughput"; }
        { flag = "throughput-window"; option = "throughputWindow"; }
        { flag = "download-retries"; option = "downloadRetries"; }
        { flag = "max-closure-size"; option = "maxClosureSize"; }
        { flag = "min-free-space"; option = "minFreeSpace"; }
        { flag = "maintenance-window"; option = "maintenanceWindows"; }
        { flag = "reboot-window"; option = "rebootWindows"; }
        { flag = "timezone"; option = "timeZone"; }
        { flag = "activation-runner"; option = "activationRunner"; }
        { flag = "confirm-timeout"; option = "confirmTimeout"; }
        { flag = "health-check"; option = "healthChecks"; }
        { flag = "require-system-running"; option = "requireSystemRunning"; }
        { flag = "systemctl"; option = "systemctl"; }
        { flag = "booted-system"; option = "bootedSystem"; }
        { flag = "reboot-command"; option = "rebootCommand"; }
        { flag = "metrics-listen"; option = "metricsListen"; }
        {
          flag = "authorized-keys-dir";
          option = "sshAccess.dir";
          when = "sshAccess.enable";
          ownDefault = "passed only with sshAccess.enable, which also points sshd's AuthorizedKeysFile at it";
        }
        { flag = "collect-command"; option = "collectCommands"; }
        { flag = "action-timeout"; option = "actionTimeout"; }
        { flag = "ssh-port"; option = "sshPort"; }
        { flag = "ssh-idle-timeout"; option = "sshIdleTimeout"; }
        { flag = "ssh-max-sessions"; option = "sshMaxSessions"; }
        { flag = "apps-manifest"; option = "appsManifest"; }
        { flag = "apps-interval"; option = "appsInterval"; }
        { flag = "docker-command"; option = "dockerCommand"; }
      ];
      # Flags the CLI does not accept yet: their options exist, so host configurations can be
      # written now, but they are NOT passed to the agent (it rejects unknown flags) and the module
      # warns when one is set. When the CLI accepts a flag, delete it here: the test fails until
      # you do, because the flag would otherwise be unreachable.
      pending = { };
    };

    coordinator = {
      command = "coordinator";
      optionPath = "services.outpost-coordinator";
      flags = [
        {
          flag = "data-dir";
          option = "stateDir";
          ownDefault = "systemd's StateDirectory, which must be under /var/lib";
        }
        { flag = "backend"; option = "backend"; }
        { flag = "nats-stream"; option = "natsStream"; }
        { flag = "nats-replicas"; option = "natsReplicas"; }
        { flag = "nats-creds"; option = "natsCredsFile"; }
        { flag = "nats-token-file"; option = "natsTokenFile"; }
        { flag = "nats-tls-ca"; option = "natsTlsCaFile"; }
        { flag = "nats-tls-cert"; option = "natsTlsCertFile"; }
        { flag = "nats-tls-key"; option = "natsTlsKeyFile"; }
        { flag = "listen"; option = "listen"; }
        { flag = "port"; option = "port"; }
        { flag = "max-payload"; option = "maxPayload"; }
        { flag = "idle-unload"; option = "idleUnload"; }
        { flag = "org-root"; option = "orgRootKeys"; }
        { flag = "timestamp-key"; option = "timestampKeyFile"; }
        { flag = "timestamp-interval"; option = "timestampInterval"; }
        { flag = "tls-cert"; option = "tlsCertFile"; }
        { flag = "tls-key"; option = "tlsKeyFile"; }
        { flag = "max-connections-per-address"; option = "maxConnectionsPerAddress"; }
        { flag = "max-pending-upgrades"; option = "maxPendingUpgrades"; }
        { flag = "upgrade-timeout"; option = "upgradeTimeout"; }
        { flag = "max-documents-per-connection"; option = "maxDocumentsPerConnection"; }
        { flag = "max-update-size"; option = "maxUpdateSize"; }
        { flag = "max-writer-bytes-per-hour"; option = "maxWriterBytesPerHour"; }
        { flag = "max-document-size"; option = "maxDocumentSize"; }
        { flag = "max-value-depth"; option = "maxValueDepth"; }
        { flag = "max-value-objects-per-kib"; option = "maxValueObjectsPerKib"; }
        { flag = "enroll-burst"; option = "enrollBurst"; }
        { flag = "enroll-refill"; option = "enrollRefill"; }
        { flag = "max-pending-enrollments"; option = "maxPendingEnrollments"; }
        { flag = "pending-enrollment-ttl"; option = "pendingEnrollmentTtl"; }
        { flag = "log-level"; option = "logLevel"; }
      ];
      pending = { };
    };

    # `outpost relay` (relay/options.ts, relayCommand).
    relay = {
      command = "relay";
      optionPath = "services.outpost-relay";
      flags = [
        { flag = "upstream"; option = "upstreams"; }
        { flag = "key"; option = "keyFile"; }
        { flag = "org-root"; option = "orgRootKeys"; }
        {
          flag = "data-dir";
          option = "stateDir";
          ownDefault = "systemd's StateDirectory, which must be under /var/lib";
        }
        {
          flag = "listen";
          option = "listen";
          ownDefault = "a relay serves the site's other machines, so it listens on every address";
        }
        { flag = "port"; option = "port"; }
        { flag = "max-payload"; option = "maxPayload"; }
        { flag = "idle-unload"; option = "idleUnload"; }
        { flag = "backoff-base"; option = "backoffBase"; }
        { flag = "backoff-max"; option = "backoffMax"; }
        { flag = "upstream-timeout"; option = "upstreamTimeout"; }
        { flag = "sync-concurrency"; option = "syncConcurrency"; }
        { flag = "cache-upstream"; option = "cacheUpstreams"; }
        { flag = "cache-max-size"; option = "cacheMaxSize"; }
        { flag = "tls-cert"; option = "tlsCertFile"; }
        { flag = "tls-key"; option = "tlsKeyFile"; }
        { flag = "max-connections-per-address"; option = "maxConnectionsPerAddress"; }
        { flag = "max-pending-upgrades"; option = "maxPendingUpgrades"; }
        { flag = "upgrade-timeout"; option = "upgradeTimeout"; }
        { flag = "max-documents-per-connection"; option = "maxDocumentsPerConnection"; }
        { flag = "max-update-size"; option = "maxUpdateSize"; }
        { flag = "max-writer-bytes-per-hour"; option = "maxWriterBytesPerHour"; }
        { flag = "max-document-size"; option = "maxDocumentSize"; }
        { flag = "max-value-depth"; option = "maxValueDepth"; }
        { flag = "max-value-objects-per-kib"; option = "maxValueObjectsPerKib"; }
        { flag = "log-level"; option = "logLevel"; }
      ];
      pending = { };
    };
    web = {
      command = "web";
      optionPath = "services.outpost-web";
      flags = [
        { flag = "coordinator"; option = "coordinators"; }
        { flag = "listen"; option = "listen"; }
        { flag = "port"; option = "port"; }
        { flag = "max-connections"; option = "maxConnections"; }
        { flag = "log-level"; option = "logLevel"; }
      ];
      pending = { };
    };
  };

  # The flags of a role that are passed on the command line today.
  activeFlags = role: filter (e: !(elem e.flag (attrNames role.pending))) role.flags;

  # cfg (config.services.outpost-<role>) → argv after `outpost <command>`.
  argsFor = role: cfg: concatLists (map (e: render e.flag (flagValue cfg e)) (activeFlags role));

  # Options of pending flags that the configuration sets: the module turns them into warnings.
  pendingSet =
    role: cfg:
    filter (e: elem e.flag (attrNames role.pending) && isSet (flagValue cfg e)) role.flags;

  inherit render;
}
