# services.outpost-apps.<name>: an application as field teams already run them — a git repository
# pinned to a reviewed commit, an optional pre-compose script, compose files and an env file from a
# secret — run by systemd as outpost-app-<name>.service. The Outpost agent does not run compose; it
# only reports each app's `docker compose ps` state in its signed status (docs/apps.md).
#
# The unit fetches the pinned commit into /var/lib/outpost-apps/<name> (objects checked with
# transfer.fsckObjects, HEAD compared with the commit afterwards), runs preCompose there, loads the
# Nix-built images, then `docker compose -p <name> … up -d --remove-orphans`, and records the
# commit it brought up (.git/outpost-deployed-rev, reported by the agent); stopping it runs
# `down`. A changed configuration (a new rev, say) reloads the unit: fetch and `up` again, without
# a `down` first, so only containers whose definition changed are recreated.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  cfg = config.services.outpost-apps;
  inherit (lib) mkDefault mkIf mkOption types;

  # A file read at run time. A string, never a Nix path: a path literal would be copied into the
  # world-readable Nix store.
  absolutePath = types.strMatching "/.+";
  # Compose files inside the checkout: relative (an assertion refuses `..`).
  relativePath = types.strMatching "[^/].*";

  stateRoot = "/var/lib/outpost-apps";
  manifestFile = "outpost/apps.json";
  docker = config.virtualisation.docker.package;
  apps = lib.attrValues cfg;
  anyApp = cfg != { };

  appOptions =
    { name, ... }:
    {
      options = {
        name = mkOption {
          type = types.str;
          default = name;
          readOnly = true;
          description = "The app's name: its compose project name and its unit's name (outpost-app-NAME).";
        };

        repo = mkOption {
          type = types.str;
          example = "https://git.example.org/field/clinic-app.git";
          description = ''
            The git repository holding the compose files, as `git fetch` takes it (https://, ssh://,
            or a path). Fetched at run time by the unit, not at build time.
          '';
        };

        rev = mkOption {
          type = types.str;
          example = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";
          description = ''
            The full 40-hex commit to run. Branches and tags are refused (an assertion): every site
            runs exactly what was reviewed, and a moved branch changes nothing until the
            configuration names the new commit.
          '';
        };

        composeFiles = mkOption {
          type = types.nonEmptyListOf relativePath;
          default = [ "docker-compose.yml" ];
          example = [
            "docker-compose.yml"
            "docker-compose.site.yml"
          ];
          description = "Compose files, relative to the checkout, in the order `docker compose -f` takes them.";
        };

        preCompose = mkOption {
          type = types.nullOr types.lines;
          default = null;
          example = "./scripts/render-config.sh";
          description = ''
            Shell commands run in the checkout before `docker compose up` (and before every reload);
            a failure stops the start. `OUTPOST_APP_ENV_FILE` names the env file when one is given.
          '';
        };

        envFile = mkOption {
          type = types.nullOr absolutePath;
          default = null;
          example = "/run/secrets/clinic-app.env";
          description = ''
            A secret env file (sops-nix, agenix, provisioning) passed as `docker compose --env-file`.
            A path string read at run time through systemd's LoadCredential, never copied into the
            Nix store.
          '';
        };

        images = mkOption {
          type = types.listOf types.package;
          default = [ ];
          example = lib.literalExpression "[ (pkgs.dockerTools.buildLayeredImage { name = \"clinic-api\"; tag = \"1.4\"; contents = [ clinicApi ]; }) ]";
          description = ''
            Image tarballs built with Nix (dockerTools.buildImage or buildLayeredImage), part of the
            system closure, so they travel through the signed cache and the relay mirror like the
            rest of the system; `docker load`ed before `up`. Images the compose files name that are
            not here are pulled from their registry as usual.
          '';
        };

        sshKeyFile = mkOption {
          type = types.nullOr absolutePath;
          default = null;
          example = "/run/secrets/clinic-app-deploy-key";
          description = ''
            A deploy key for an ssh:// repository (read at run time, never in the Nix store). The
            server's host key is learned on first use and pinned in the app's state directory.
          '';
        };
      };
    };

  unitName = app: "outpost-app-${app.name}";
  directory = app: "${stateRoot}/${app.name}";

  composeArgs =
    app:
    [
      "compose"
      "-p"
      app.name
      "--project-directory"
      (directory app)
    ]
    ++ lib.concatMap (f: [
      "-f"
      "${directory app}/${f}"
    ]) app.composeFiles;

  # The env file, when given, comes through LoadCredential: readable by this unit only.
  envArgs = app: lib.optionalString (app.envFile != null) ''--env-file "$CREDENTIALS_DIRECTORY/env"'';

  compose = app: "docker ${lib.escapeShellArgs (composeArgs app)} ${envArgs app}";

  # Start and reload: fetch and check the pinned commit, prepare, load images, up.
  upScript =
    app:
    let
      dir = lib.escapeShellArg (directory app);
      rev = lib.escapeShellArg app.rev;
    in
    ''
      set -euo pipefail
      ${lib.optionalString (app.envFile != null) ''export OUTPOST_APP_ENV_FILE="$CREDENTIALS_DIRECTORY/env"''}
      ${lib.optionalString (app.sshKeyFile != null) ''
        export GIT_SSH_COMMAND="ssh -i $CREDENTIALS_DIRECTORY/ssh-key -o IdentitiesOnly=yes -o StrictHostKeyChecking=accept-new -o UserKnownHostsFile=${dir}/.known_hosts"
      ''}
      # Every object fetched is checked (fsck); the commit id is the hash of what it holds.
      repo() { git -C ${dir} -c transfer.fsckObjects=true -c advice.detachedHead=false "$@"; }
      [ -d ${dir}/.git ] || git init --quiet ${dir}
      repo remote remove origin 2>/dev/null || true
      repo remote add origin ${lib.escapeShellArg app.repo}
      if ! repo cat-file -e ${rev}'^{commit}' 2>/dev/null; then
        # By commit id where the server allows it, else every ref (older servers).
        repo fetch --quiet origin ${rev} || repo fetch --quiet origin '+refs/*:refs/remotes/origin/*'
      fi
      repo checkout --quiet --force ${rev}
      head=$(repo rev-parse HEAD)
      if [ "$head" != ${rev} ]; then
        echo "outpost-app-${app.name}: the checkout is at $head, not the pinned ${app.rev}; refusing to start" >&2
        exit 1
      fi
      cd ${dir}
      ${lib.optionalString (app.preCompose != null) ''
        (
        ${app.preCompose}
        )
      ''}
      ${lib.concatMapStrings (image: ''
        docker load --quiet --input ${image}
      '') app.images}
      ${compose app} up -d --remove-orphans
      # What runs now, for the agent's report (deployedRev): a failed fetch or up leaves the last.
      echo ${rev} > ${dir}/.git/outpost-deployed-rev
    '';

  # systemd's sandbox for the coordinator and relay (nix/lib/hardening.nix), minus what an app
  # needs: root, for the docker socket and for pre-compose scripts that prepare bind mounts for
  # containers' users (chown); no dynamic user (systemd would hand the app's state, containers'
  # data included, to it); readable checkouts (containers' users read bind-mounted config).
  hardening = import ../lib/hardening.nix { port = 0; } // {
    DynamicUser = false;
    User = "root";
    PrivateUsers = false;
    CapabilityBoundingSet = [
      "CAP_CHOWN"
      "CAP_DAC_OVERRIDE"
      "CAP_FOWNER"
    ];
    AmbientCapabilities = [ "" ];
    SystemCallFilter = [ "@system-service" ];
    UMask = "0022";
  };

  unit = app: {
    description = "Outpost app ${app.name}: ${app.repo} at ${builtins.substring 0 12 app.rev}";
    wantedBy = [ "multi-user.target" ];
    wants = [ "network-online.target" ];
    requires = [ "docker.service" ];
    after = [
      "network-online.target"
      "docker.service"
    ];
    path = [
      docker
      pkgs.git
      pkgs.openssh
      pkgs.coreutils
    ];
    environment = {
      # The docker CLI's own config (and git's HOME) inside the app's state, not /root.
      DOCKER_CONFIG = "${directory app}/.docker";
      HOME = directory app;
    };
    script = upScript app;
    # A new configuration (another rev, other files) is applied with `up`, not `down` + `up`.
    reloadIfChanged = true;
    reload = upScript app;
    preStop = "${compose app} down --remove-orphans";
    startLimitIntervalSec = 0;
    serviceConfig = hardening // {
      Type = "oneshot";
      RemainAfterExit = true;
      # A site offline at boot retries the fetch until its link is back.
      Restart = "on-failure";
      RestartSec = "30s";
      # Image pulls over slow links.
      TimeoutStartSec = "30min";
      TimeoutStopSec = "5min";
      StateDirectory = "outpost-apps/${app.name}";
      StateDirectoryMode = "0750";
      LoadCredential =
        lib.optional (app.envFile != null) "env:${app.envFile}"
        ++ lib.optional (app.sshKeyFile != null) "ssh-key:${app.sshKeyFile}";
      StandardOutput = "journal";
      StandardError = "journal";
    };
  };

  # What the agent reads (--apps-manifest): which apps to ask docker about, at which commit.
  manifest = {
    version = 1;
    apps = map (app: {
      inherit (app) name rev repo;
      unit = "${unitName app}.service";
      directory = directory app;
      composeFiles = app.composeFiles;
    }) apps;
  };
in
{
  # The agent's options (appsManifest, dockerCommand) are set from here; importing it twice is one import.
  imports = [ ./agent.nix ];

  options.services.outpost-apps = mkOption {
    type = types.attrsOf (types.submodule appOptions);
    default = { };
    example = lib.literalExpression ''
      {
        clinic = {
          repo = "https://git.example.org/field/clinic-app.git";
          rev = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";
          composeFiles = [ "docker-compose.yml" ];
          preCompose = "./scripts/render-config.sh";
          envFile = "/run/secrets/clinic-app.env";
        };
      }
    '';
    description = ''
      Applications run with docker compose from a git repository pinned to a commit, one systemd
      unit each (outpost-app-NAME.service). The Outpost agent reports their state in its signed
      status; `outpost status --apps` shows it. See docs/apps.md.
    '';
  };

  config = mkIf anyApp {
    assertions =
      map (app: {
        assertion = builtins.match "[0-9a-f]{40}" app.rev != null;
        message = "services.outpost-apps.${app.name}.rev = \"${app.rev}\": give the full 40-hex commit id that was reviewed (git rev-parse REF), not a branch, tag or short id; every site then runs exactly that commit.";
      }) apps
      ++ map (app: {
        assertion = builtins.match "[a-z0-9][a-z0-9_-]{0,62}" app.name != null;
        message = "services.outpost-apps.${app.name}: app names are 1-63 lowercase letters, digits, dashes or underscores, starting with a letter or digit (they are compose project names).";
      }) apps
      ++ map (app: {
        assertion = !(lib.any (f: builtins.elem ".." (lib.splitString "/" f)) app.composeFiles);
        message = "services.outpost-apps.${app.name}.composeFiles: name files inside the checkout, without `..`.";
      }) apps
      ++ [
        {
          assertion = builtins.length apps <= 32;
          message = "services.outpost-apps: at most 32 apps per host (the agent reports each in its signed status).";
        }
      ];

    virtualisation.docker.enable = mkDefault true;

    environment.etc.${manifestFile}.text = builtins.toJSON manifest;

    services.outpost-agent.appsManifest = mkDefault "/etc/${manifestFile}";
    services.outpost-agent.dockerCommand = mkDefault "${docker}/bin/docker";

    systemd.services = lib.listToAttrs (
      map (app: {
        name = unitName app;
        value = unit app;
      }) apps
    );
  };
}
