# Evaluates the Outpost NixOS modules with the real module system, for
# test/integration/nixos-module.test.ts:
#
#   nix-instantiate --eval --strict --json --readonly-mode nix/tests/eval-modules.nix \
#     --argstr nixpkgsLib ../shared/vendor/nixpkgs-lib
#
# (always pass --argstr nixpkgsLib, "" when there is no copy: only the lockfile part is evaluated)
#
# `nixpkgsLib` is an unmodified copy of nixpkgs' lib/ folder's parent (it is test material beside
# the repository, never part of it). Each module is evaluated by lib.evalModules with real
# lib.types against typed declarations of the NixOS options it sets (nixos-options.nix), so a
# value of the wrong type, an option NixOS does not have, or a failed merge is an evaluation error.
#
# For each role it lists the option declarations (type, description, default) and the
# option → flag table of nix/lib/flags.nix, and renders the module's units three times:
# `minimal` (enable and the options without a default, from their examples; everything else
# takes the module's defaults), `sample` (every option set, so every mapped flag must appear on
# the command line) and `alternate` (sample with the other side of exclusive options). It also
# evaluates the flake's output names, and the lockfile rewrite of nix/package.nix (which needs no
# lib, so it is evaluated even without one).
{
  nixpkgsLib ? "",
  # { role = "agent"; settings = { … }; }: evaluate only that role's minimal configuration with
  # these settings added, and return its command line. The test uses it to show that a wrong
  # value is refused.
  probe ? null,
  # { repo = "…"; rev = "…"; preCompose = "…"; }: the start and stop scripts of one app with these
  # settings (services.outpost-apps.probe), for the test that runs them with real git.
  appProbe ? null,
}:
let
  flags = import ../lib/flags.nix;

  inherit (builtins)
    attrNames
    concatMap
    filter
    head
    isAttrs
    isFunction
    isList
    isPath
    listToAttrs
    mapAttrs
    pathExists
    toString
    ;

  # Relative paths are taken from the repository root, as in `../shared/vendor/nixpkgs-lib`.
  libRoot =
    if builtins.substring 0 1 nixpkgsLib == "/" then nixpkgsLib else "${toString ../..}/${nixpkgsLib}";
  libDir = "${libRoot}/lib";
  haveLib = nixpkgsLib != "" && pathExists "${libDir}/default.nix";

  lockfile = builtins.fromJSON (builtins.readFile ../../package-lock.json);
  resolvedFor =
    os: cpu:
    let
      rewritten = import ../lib/npm-lock.nix { inherit lockfile os cpu; };
    in
    listToAttrs (
      map (path: {
        name = path;
        value = rewritten.packages.${path}.resolved or null;
      }) (filter (p: p != "") (attrNames rewritten.packages))
    );
  npmLock = {
    x86_64-linux = resolvedFor "linux" "x64";
    aarch64-linux = resolvedFor "linux" "arm64";
  };

  withLib =
    let
      lib = import (/. + libDir);

      stubDrv = name: {
        type = "derivation";
        inherit name;
        outPath = "/nix/store/00000000000000000000000000000000-${name}";
      };

      pkgs = {
        callPackage = _path: _args: stubDrv "outpost";
        coreutils = stubDrv "coreutils";
        jq = stubDrv "jq";
        docker = stubDrv "docker";
        git = stubDrv "git";
        openssh = stubDrv "openssh";
        nix = stubDrv "nix";
        systemd = stubDrv "systemd";
        stdenv.hostPlatform.system = "x86_64-linux";
      };

      isSet = v: !(v == null || v == false || v == [ ] || v == "");
      isOption = v: isAttrs v && (v._type or null) == "option";

      # Walks an option tree ({ a = mkOption …; b.c = mkOption …; }) into a flat list.
      collectOptions =
        prefix: tree:
        concatMap (
          name:
          let
            value = tree.${name};
            path = if prefix == "" then name else "${prefix}.${name}";
          in
          if isAttrs value && (value._type or null) == "option" then
            [
              {
                name = path;
                option = value;
              }
            ]
          else if isAttrs value then
            collectOptions path value
          else
            [ ]
        ) (attrNames tree);

      # The real types, described for the test: strMatching's name carries its pattern, so the
      # pattern goes to a field of its own.
      typeName = t: if (t.functor.name or null) == "strMatching" then "strMatching" else t.name;
      typeJson =
        t:
        if !(isAttrs t) || (t._type or null) != "option-type" then
          { name = "<not a type>"; }
        else
          {
            name = typeName t;
            inherit (t) description;
          }
          // lib.optionalAttrs (t.nestedTypes ? elemType) { elemType = typeJson t.nestedTypes.elemType; }
          // lib.optionalAttrs (t.name == "enum") { inherit (t.functor.payload) values; }
          // lib.optionalAttrs (typeName t == "strMatching") { inherit (t.functor.payload) pattern; };

      # JSON-safe rendering of a value; paths are reported, never copied to the store.
      valueJson =
        v:
        if isPath v then
          "<path ${toString v}>"
        else if isFunction v then
          "<function>"
        else if isAttrs v && v ? outPath then
          "<derivation ${v.name or "?"}>"
        else if isAttrs v then
          mapAttrs (_: valueJson) v
        else if isList v then
          map valueJson v
        else
          v;

      # A value of type t, for options with neither an example nor a default worth setting.
      sampleByType =
        name: t:
        let
          n = typeName t;
        in
        if n == "bool" then
          true
        else if n == "listOf" then
          [
            (sampleByType name t.nestedTypes.elemType)
            (sampleByType "${name}-2" t.nestedTypes.elemType)
          ]
        else if n == "nullOr" then
          sampleByType name t.nestedTypes.elemType
        else if n == "enum" then
          head t.functor.payload.values
        else if lib.hasPrefix "int" n || lib.hasPrefix "unsignedInt" n || lib.hasPrefix "positiveInt" n then
          7
        else if n == "package" then
          stubDrv "outpost-sample"
        else
          "/sample/${name}";

      # Every option set to something that renders: its example, else a set default, else by type.
      sampleValue =
        name: o:
        if name == "extraArgs" then
          [ ]
        else if o ? example && isSet o.example && !(isAttrs o.example && o.example ? _type) then
          o.example
        else if o ? default && isSet o.default then
          o.default
        else
          sampleByType name o.type;

      # Options that are exclusive with each other get one side in `sample` and the other in
      # `alternate` (every other option set in both): the agent trusts either the fleet policy
      # (orgRootKeys, enrollTokenFile) or a static admin key list (adminKeys), never both, never
      # neither; a coordinator proves itself to NATS with a credentials file or a token, not both.
      # A flag is reachable when one of the two puts it on the command line.
      overrides = {
        agent = {
          minimal = decls: { orgRootKeys = decls.orgRootKeys.example; };
          sample = _: { adminKeys = [ ]; };
          alternate = _: {
            orgRootKeys = [ ];
            enrollTokenFile = null;
            # Login keys come from the policy (an assertion says so).
            sshAccess.enable = false;
          };
        };
        coordinator = {
          sample = _: { natsTokenFile = null; };
          alternate = _: { natsCredsFile = null; };
        };
      };

      evaluate =
        file: settings:
        lib.evalModules {
          specialArgs = { inherit pkgs; };
          modules = [
            ./nixos-options.nix
            file
            {
              networking.hostName = "stub-host";
              nix.package = stubDrv "nix";
              systemd.package = stubDrv "systemd";
            }
            settings
          ];
        };

      roleContext =
        roleName: file:
        let
          role = flags.roles.${roleName};
          prefix = "outpost-${roleName}";
          decls = (evaluate file { }).options.services.${prefix};
          forcedFor = which: ((overrides.${roleName} or { }).${which} or (_: { })) decls;
        in
        {
          inherit role decls;
          render =
            which: settings:
            let
              evaluated = evaluate file { services.${prefix} = settings // forcedFor which; };
              inherit (evaluated) config;
              cfg = config.services.${prefix};
              unit = config.systemd.services.${prefix} or null;
              field = name: default: if unit == null then default else unit.${name};
            in
            {
              script = field "script" null;
              restartIfChanged = field "restartIfChanged" null;
              stopIfChanged = field "stopIfChanged" null;
              unitConfig = valueJson (field "unitConfig" { });
              serviceConfig = valueJson (field "serviceConfig" { });
              path = map toString (field "path" [ ]);
              # From the evaluated options: every value the command line is made of has passed
              # its type's check and merge.
              argv = flags.argsFor role cfg;
              # Everything the module sets in NixOS options, forced whole (with --strict) so each
              # value meets its declared type, not only the fields the test reads.
              nixos = valueJson {
                inherit (config) systemd networking;
                environment.etc = config.environment.etc;
              };
              services = attrNames config.systemd.services;
              paths = attrNames config.systemd.paths;
              timers = attrNames config.systemd.timers;
              etc = attrNames config.environment.etc;
              firewallPorts = config.networking.firewall.allowedTCPPorts;
              authorizedKeysFiles = config.services.openssh.authorizedKeysFiles;
              inherit (config) warnings;
              failedAssertions = map (a: a.message) (filter (a: !a.assertion) config.assertions);
            };
          # Options without a default take their example (required options must have one);
          # everything else is left to the module's defaults.
          # Nested options (sshAccess.enable) are walked like the top level.
          minimalSettings =
            let
              required =
                tree:
                lib.concatMapAttrs (
                  name: o:
                  if isOption o then
                    lib.optionalAttrs (!(o ? default)) {
                      ${name} = o.example or (throw "option ${name} has neither a default nor an example");
                    }
                  else
                    { ${name} = required o; }
                ) tree;
            in
            { enable = true; } // required decls;
          everySetting =
            let
              every = tree: mapAttrs (name: o: if isOption o then sampleValue name o else every o) tree;
            in
            every decls;
        };

      files = {
        agent = ../modules/agent.nix;
        coordinator = ../modules/coordinator.nix;
        relay = ../modules/relay.nix;
        web = ../modules/web.nix;
      };

      evalRole =
        roleName: file:
        let
          context = roleContext roleName file;
          inherit (context) role decls render;
        in
        {
          inherit (role) command optionPath pending;
          flags = map (e: {
            inherit (e) flag option;
            ownDefault = e.ownDefault or null;
          }) role.flags;
          file = toString file;
          options = map (
            { name, option }:
            {
              inherit name;
              hasType = option ? type;
              type = typeJson (option.type or null);
              description = option.description or null;
              hasDefault = option ? default;
              default = if option ? default then valueJson option.default else null;
              defaultIsPath = option ? default && isPath option.default;
              defaultText = if option ? defaultText then valueJson option.defaultText else null;
              hasExample = option ? example;
            }
          # Options hidden from the manual (a renamed option's old name) are no one's to document.
          ) (filter ({ option, ... }: (option.visible or true) != false) (collectOptions "" decls));
          minimal = render "minimal" context.minimalSettings;
          sample = render "sample" context.everySetting;
          alternate = render "alternate" context.everySetting;
        };

      # services.outpost-apps (apps.nix, which imports agent.nix): its option declarations, nothing
      # declared, two apps (one with every option set) beside a minimal agent, and the assertions a
      # branch, a short commit id or a bad name trips.
      appsEval =
        let
          agentContext = roleContext "agent" files.agent;
          agentSettings = agentContext.minimalSettings // {
            orgRootKeys = agentContext.decls.orgRootKeys.example;
          };
          rev = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";
          everyOption = {
            repo = "https://git.example.org/field/clinic-app.git";
            inherit rev;
            composeFiles = [
              "docker-compose.yml"
              "docker-compose.site.yml"
            ];
            preCompose = "./scripts/render-config.sh";
            envFile = "/run/secrets/clinic-app.env";
            sshKeyFile = "/run/secrets/clinic-app-deploy-key";
            images = [ (stubDrv "docker-image-clinic-api.tar.gz") ];
          };
          fewestOptions = {
            repo = "/srv/git/notes.git";
            rev = "0123456789abcdef0123456789abcdef01234567";
          };
          renderApps =
            apps: withAgent:
            let
              inherit
                (evaluate ../modules/apps.nix {
                  services = {
                    outpost-apps = apps;
                  }
                  // lib.optionalAttrs withAgent { outpost-agent = agentSettings; };
                })
                config
                ;
              etc = config.environment.etc;
            in
            {
              services = attrNames config.systemd.services;
              units = valueJson (lib.filterAttrs (n: _: lib.hasPrefix "outpost-app-" n) config.systemd.services);
              manifest = if etc ? "outpost/apps.json" then builtins.fromJSON etc."outpost/apps.json".text else null;
              agentArgv = if withAgent then flags.argsFor flags.roles.agent config.services.outpost-agent else [ ];
              dockerEnabled = config.virtualisation.docker.enable;
              # Forced whole (--strict): every value the module sets meets its NixOS type.
              nixos = valueJson {
                inherit (config) systemd virtualisation;
                environment.etc = etc;
              };
              inherit (config) warnings;
              failedAssertions = map (a: a.message) (filter (a: !a.assertion) config.assertions);
            };
          appDecls = (evaluate ../modules/apps.nix { }).options.services.outpost-apps.type.getSubOptions [ ];
        in
        {
          options = map (
            { name, option }:
            {
              inherit name;
              hasType = option ? type;
              type = typeJson (option.type or null);
              description = option.description or null;
              hasDefault = option ? default;
              default = if option ? default then valueJson option.default else null;
              defaultIsPath = option ? default && isPath option.default;
              hasExample = option ? example;
            }
          ) (filter (o: !(lib.hasPrefix "_module" o.name) && o.name != "name") (collectOptions "" appDecls));
          probe =
            let
              rendered = renderApps { probe = appProbe; } false;
            in
            {
              inherit (rendered.units.outpost-app-probe) script preStop;
              inherit (rendered) failedAssertions;
            };
          none = renderApps { } true;
          sample = renderApps {
            clinic = everyOption;
            notes = fewestOptions;
          } true;
          refused = {
            branch = (renderApps { clinic = everyOption // { rev = "main"; }; } false).failedAssertions;
            shortRev = (renderApps { clinic = everyOption // { rev = "4b825dc"; }; } false).failedAssertions;
            upperCase = (renderApps { clinic = everyOption // { rev = lib.toUpper rev; }; } false).failedAssertions;
            name = (renderApps { "Clinic App" = fewestOptions; } false).failedAssertions;
          };
        };

      # The flake's outputs with the real lib and stand-in packages: only names are forced, no
      # package is built.
      flake =
        let
          systems = [
            "x86_64-linux"
            "aarch64-linux"
          ];
          nixpkgs = {
            inherit lib;
            legacyPackages = lib.genAttrs systems (system: pkgs // { stdenv.hostPlatform.system = system; });
          };
          outputs = (import ../../flake.nix).outputs {
            self = outputs // {
              outPath = toString ../..;
            };
            inherit nixpkgs;
          };
          namesPerSystem = set: mapAttrs (_: attrNames) set;
        in
        {
          outputs = attrNames outputs;
          packages = namesPerSystem outputs.packages;
          devShells = namesPerSystem outputs.devShells;
          checks = namesPerSystem outputs.checks;
          nixosModules = mapAttrs (_: m: toString m) outputs.nixosModules;
        };
    in
    if appProbe != null then
      { appProbe = appsEval.probe; }
    else if probe != null then
      let
        context = roleContext probe.role files.${probe.role};
        # Like minimal, without its forced settings: the probe's own settings decide.
        rendered = context.render "probe" (context.minimalSettings // probe.settings);
      in
      {
        probe = rendered.argv;
        probeFailedAssertions = rendered.failedAssertions;
      }
    else
      {
        libVersion = lib.version;
        roles = mapAttrs evalRole files;
        apps = removeAttrs appsEval [ "probe" ];
        defaultModuleImports = map toString (import ../modules/default.nix).imports;
        inherit flake;
      };
in
if probe != null || appProbe != null then
  (if haveLib then withLib else throw "the probe needs nixpkgs' lib: give --argstr nixpkgsLib DIR")
else
  {
    inherit npmLock;
    libFound = haveLib;
    libDir = if nixpkgsLib == "" then null else libDir;
  }
  // (if haveLib then withLib else { })
