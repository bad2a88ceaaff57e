# Fills in the `resolved` tarball URLs of a package-lock.json (lockfileVersion 2 or 3).
#
# This repository's lockfile is written with npm's omit-lockfile-registry-resolved, so its
# entries carry name, version and integrity but no URL; nixpkgs' importNpmLock (and
# fetchNpmDeps) only fetch entries that have one. For registry packages the URL follows from the
# name and version, and the `integrity` hash pins the content, so nothing is trusted that the
# lockfile did not already pin.
#
# Optional packages for another platform (the per-platform compiler binaries of TypeScript 7,
# for instance) are left without a URL: npm skips them for this platform, and Nix need not
# download them.
#
# Pure Nix, builtins only, so the offline test can evaluate it.
{
  lockfile,
  # npm's names for the build platform (process.platform / process.arch).
  os,
  cpu,
  registry ? "https://registry.npmjs.org",
}:
let
  inherit (builtins)
    elem
    filter
    length
    elemAt
    mapAttrs
    split
    substring
    stringLength
    ;

  last = list: elemAt list (length list - 1);
  strings = list: filter (x: builtins.isString x) list;
  isNegated = s: substring 0 1 s == "!";

  # npm's os / cpu fields: allowed values, or "!value" exclusions.
  fits =
    allowed: value:
    let
      excluded = map (s: substring 1 (stringLength s) s) (filter isNegated allowed);
      required = filter (s: !isNegated s) allowed;
    in
    !(elem value excluded) && (required == [ ] || elem value required);
  fitsPlatform = entry: fits (entry.os or [ ]) os && fits (entry.cpu or [ ]) cpu;

  # "node_modules/a/node_modules/@scope/b" → "@scope/b" (aliased entries carry their real name).
  packageName = path: entry: entry.name or (last (strings (split "node_modules/" path)));
  tarballUrl =
    path: entry:
    let
      name = packageName path entry;
      base = last (strings (split "/" name));
    in
    "${registry}/${name}/-/${base}-${entry.version}.tgz";

  needsUrl =
    path: entry:
    path != ""
    && !(entry ? resolved)
    && !(entry.link or false)
    && !(entry.inBundle or false)
    && entry ? version
    && entry ? integrity
    && ((!(entry.optional or false) && !(entry.devOptional or false)) || fitsPlatform entry);

  withResolved =
    path: entry: if needsUrl path entry then entry // { resolved = tarballUrl path entry; } else entry;
in
lockfile // { packages = mapAttrs withResolved lockfile.packages; }
