# A stand-in for nixpkgs' `lib`, enough to evaluate the Outpost modules without nixpkgs: options
# become plain attrsets ({ _type = "option"; type; description; default; … }), types are plain
# descriptions, and mkIf / mkMerge / mkOverride are kept as markers that `resolve` pushes
# through. Nothing is type-checked or merged the way the real module system does; the offline
# test (test/nixos-module.test.ts) only needs the declarations and the rendered units. The real
# evaluation happens in the VM test (nix/tests/vm-test.nix) wherever nixpkgs is reachable.
let
  inherit (builtins)
    attrNames
    concatStringsSep
    elem
    filter
    foldl'
    isAttrs
    isList
    listToAttrs
    mapAttrs
    match
    replaceStrings
    stringLength
    substring
    toString
    ;

  mkType =
    name: description: extra:
    {
      _type = "option-type";
      inherit name description;
    }
    // extra;

  types = rec {
    str = mkType "str" "string" { };
    lines = mkType "lines" "strings concatenated with \"\\n\"" { };
    bool = mkType "bool" "boolean" { };
    int = mkType "int" "signed integer" { };
    port = mkType "port" "16 bit unsigned integer; between 0 and 65535 (both inclusive)" { };
    path = mkType "path" "path" { };
    package = mkType "package" "package" { };
    anything = mkType "anything" "anything" { };
    strMatching =
      pattern: mkType "strMatching" "string matching the pattern ${pattern}" { inherit pattern; };
    enum =
      values:
      mkType "enum" "one of ${concatStringsSep ", " (map (v: ''"${toString v}"'') values)}" {
        inherit values;
      };
    listOf = elemType: mkType "listOf" "list of ${elemType.description}" { inherit elemType; };
    attrsOf = elemType: mkType "attrsOf" "attribute set of ${elemType.description}" { inherit elemType; };
    nullOr = elemType: mkType "nullOr" "null or ${elemType.description}" { inherit elemType; };
    either = a: b: mkType "either" "${a.description} or ${b.description}" { elemTypes = [ a b ]; };
    oneOf = ts: mkType "oneOf" (concatStringsSep " or " (map (t: t.description) ts)) { elemTypes = ts; };
    ints = {
      positive = mkType "positiveInt" "positive integer, meaning >0" { };
      unsigned = mkType "unsignedInt" "unsigned integer, meaning >=0" { };
      between = lo: hi: mkType "intBetween" "integer between ${toString lo} and ${toString hi} (both inclusive)" { };
    };
    submodule = options: mkType "submodule" "submodule" { inherit options; };
  };

  hasPrefix = prefix: s: substring 0 (stringLength prefix) s == prefix;
  removePrefix =
    prefix: s:
    if hasPrefix prefix s then substring (stringLength prefix) (stringLength s - stringLength prefix) s else s;
  escapeShellArg =
    arg:
    let
      string = toString arg;
    in
    if match "[[:alnum:],._+:@%/-]+" string == null then
      "'${replaceStrings [ "'" ] [ "'\\''" ] string}'"
    else
      string;

  # Pushes mkIf / mkMerge / mkOverride markers through, lazily, attribute by attribute. A false
  # mkIf becomes null ("not defined").
  resolve =
    value:
    if isAttrs value && value ? _type then
      (
        if value._type == "if" then
          (if value.condition then resolve value.content else null)
        else if value._type == "override" then
          resolve value.content
        else if value._type == "merge" then
          foldl' mergeResolved { } (filter (v: v != null) (map resolve value.contents))
        else
          value
      )
    else if isAttrs value && !(value ? outPath) then
      mapAttrs (_: resolve) value
    else
      value;

  mergeResolved =
    a: b:
    if isAttrs a && isAttrs b && !(a ? outPath) && !(b ? outPath) then
      a // mapAttrs (name: v: if a ? ${name} then mergeResolved a.${name} v else v) b
    else if isList a && isList b then
      a ++ b
    else
      b;
in
{
  inherit types hasPrefix removePrefix escapeShellArg resolve;

  mkOption = attrs: { _type = "option"; } // attrs;
  mkEnableOption = name: {
    _type = "option";
    type = types.bool;
    default = false;
    example = true;
    description = "Whether to enable ${name}.";
  };
  mkIf = condition: content: {
    _type = "if";
    inherit condition content;
  };
  mkMerge = contents: {
    _type = "merge";
    inherit contents;
  };
  mkOverride = priority: content: {
    _type = "override";
    inherit priority content;
  };
  mkDefault = content: {
    _type = "override";
    priority = 1000;
    inherit content;
  };
  mkForce = content: {
    _type = "override";
    priority = 50;
    inherit content;
  };
  literalExpression = text: {
    _type = "literalExpression";
    inherit text;
  };
  literalMD = text: {
    _type = "literalMD";
    inherit text;
  };

  escapeShellArgs = args: concatStringsSep " " (map escapeShellArg args);
  optional = cond: x: if cond then [ x ] else [ ];
  optionals = cond: xs: if cond then xs else [ ];
  optionalString = cond: s: if cond then s else "";
  optionalAttrs = cond: as: if cond then as else { };
  concatStringsSep = concatStringsSep;
  concatMapStringsSep = sep: f: xs: concatStringsSep sep (map f xs);
  mapAttrs = mapAttrs;
  mapAttrsToList = f: attrs: map (name: f name attrs.${name}) (attrNames attrs);
  filterAttrs =
    pred: attrs:
    listToAttrs (
      map (name: {
        inherit name;
        value = attrs.${name};
      }) (filter (name: pred name attrs.${name}) (attrNames attrs))
    );
  genAttrs =
    names: f:
    listToAttrs (
      map (name: {
        inherit name;
        value = f name;
      }) names
    );
  elem = elem;
}
