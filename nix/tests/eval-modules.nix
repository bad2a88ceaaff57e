# Evaluates the Outpost NixOS modules as far as possible without nixpkgs, for
# test/nixos-module.test.ts:
#
#   nix-instantiate --eval --strict --json --readonly-mode nix/tests/eval-modules.nix
#
# For each role it lists the option declarations (type, description, default) and the
# option → flag table of nix/lib/flags.nix, and renders the module's units twice through the
# stub lib: `minimal` (enable plus the required options, from their examples) and `sample`
# (every option set, so every mapped flag must appear on the command line). It also evaluates
# the flake's output names against a stub nixpkgs, and the lockfile rewrite of nix/package.nix.
let
  lib = import ./stub-lib.nix;
  flags = import ../lib/flags.nix;

  inherit (builtins)
    attrNames
    concatMap
    elem
    filter
    head
    isAttrs
    isBool
    isFunction
    isList
    isPath
    listToAttrs
    mapAttrs
    toString
    ;

  stubDrv = name: {
    type = "derivation";
    inherit name;
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
  };

  pkgs = {
    callPackage = _path: _args: stubDrv "outpost";
    coreutils = stubDrv "coreutils";
    jq = stubDrv "jq";
    stdenv.hostPlatform.system = "x86_64-linux";
  };

  isSet = v: !(v == null || v == false || v == [ ] || v == "");
  # A resolved definition, or `default` when it is undefined (missing, or a false mkIf).
  or' = default: v: if v == null then default else v;

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

  typeJson =
    t:
    if !(isAttrs t) || (t._type or null) != "option-type" then
      { name = "<not a type>"; }
    else
      {
        inherit (t) name description;
      }
      // lib.optionalAttrs (t ? elemType) { elemType = typeJson t.elemType; }
      // lib.optionalAttrs (t ? values) { inherit (t) values; }
      // lib.optionalAttrs (t ? pattern) { inherit (t) pattern; };

  # JSON-safe rendering of a default value; paths are reported, never copied to the store.
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

  sampleByType =
    name: t:
    if t.name == "bool" then
      true
    else if t.name == "listOf" then
      [
        (sampleByType name t.elemType)
        (sampleByType "${name}-2" t.elemType)
      ]
    else if t.name == "nullOr" then
      sampleByType name t.elemType
    else if t.name == "enum" then
      head t.values
    else if elem t.name [
      "int"
      "port"
      "positiveInt"
      "unsignedInt"
      "intBetween"
    ] then
      7
    else if t.name == "package" then
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

  # Options without a default take their example (required options must have one).
  minimalValue =
    name: o:
    if name == "enable" then
      true
    else if o ? default then
      o.default
    else
      o.example or (throw "option ${name} has neither a default nor an example");

  # Options that are exclusive with each other get one side in `sample` and the other in
  # `alternate` (every other option set in both): the agent trusts either the fleet policy
  # (orgRootKeys, enrollTokenFile) or a static admin key list (adminKeys), never both, never
  # neither. A flag is reachable when one of the two puts it on the command line.
  overrides = {
    agent = {
      minimal = decls: { orgRootKeys = decls.orgRootKeys.example; };
      sample = _: { adminKeys = [ ]; };
      alternate = _: {
        orgRootKeys = [ ];
        enrollTokenFile = null;
      };
    };
  };

  evalRole =
    roleName: file:
    let
      role = flags.roles.${roleName};
      prefix = "outpost-${roleName}";
      render =
        which: pick:
        let
          config = {
            services.${prefix} = cfg;
            networking.hostName = "stub-host";
            nix.package = stubDrv "nix";
            systemd.package = stubDrv "systemd";
          };
          module = import file { inherit config lib pkgs; };
          decls = module.options.services.${prefix};
          forced = ((overrides.${roleName} or { }).${which} or (_: { })) decls;
          cfg = mapAttrs (name: o: forced.${name} or (pick name o)) decls;
          resolved = or' { } (lib.resolve module.config);
          systemd = or' { } (resolved.systemd or null);
          services = or' { } (systemd.services or null);
          unit = or' { } (services.${prefix} or null);
          field = name: default: or' default (unit.${name} or null);
        in
        {
          inherit decls cfg;
          rendered = {
            script = field "script" null;
            restartIfChanged = field "restartIfChanged" null;
            stopIfChanged = field "stopIfChanged" null;
            unitConfig = valueJson (field "unitConfig" { });
            serviceConfig = valueJson (field "serviceConfig" { });
            path = map toString (field "path" [ ]);
            argv = flags.argsFor role cfg;
            services = attrNames (lib.filterAttrs (_: v: v != null) services);
            paths = attrNames (lib.filterAttrs (_: v: v != null) (or' { } (systemd.paths or null)));
            timers = attrNames (lib.filterAttrs (_: v: v != null) (or' { } (systemd.timers or null)));
            etc = attrNames (or' { } ((or' { } (resolved.environment or null)).etc or null));
            firewallPorts = or' [ ] ((or' { } ((or' { } (resolved.networking or null)).firewall or null)).allowedTCPPorts or null);
            warnings = or' [ ] (resolved.warnings or null);
            failedAssertions = map (a: a.message) (filter (a: !a.assertion) (or' [ ] (resolved.assertions or null)));
          };
        };
      minimal = render "minimal" minimalValue;
      sample = render "sample" sampleValue;
      alternate = render "alternate" sampleValue;
    in
    {
      inherit (role) command optionPath flags pending;
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
      ) (collectOptions "" minimal.decls);
      minimal = minimal.rendered;
      sample = sample.rendered;
      alternate = alternate.rendered;
    };

  # The flake's outputs against a stub nixpkgs: only names are forced, no package is built.
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
in
{
  roles = {
    agent = evalRole "agent" ../modules/agent.nix;
    coordinator = evalRole "coordinator" ../modules/coordinator.nix;
    relay = evalRole "relay" ../modules/relay.nix;
  };
  defaultModuleImports = map toString (import ../modules/default.nix).imports;
  inherit flake;
  npmLock = {
    x86_64-linux = resolvedFor "linux" "x64";
    aarch64-linux = resolvedFor "linux" "arm64";
  };
}
