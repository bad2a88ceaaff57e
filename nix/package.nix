# The `outpost` CLI (agent, coordinator, relay and the admin commands), built from
# package-lock.json with buildNpmPackage.
#
# Dependencies come from importNpmLock rather than fetchNpmDeps + npmDepsHash: every tarball is
# fetched on its own, pinned by the lockfile's `integrity`, so there is no aggregate hash to
# recompute (and forget) whenever package-lock.json changes, and the derivation can be written
# without network access. It needs nixpkgs 24.05 or newer. The lockfile has no `resolved` URLs
# (npm's omit-lockfile-registry-resolved), so ./lib/npm-lock.nix derives them first.
# docs/nixos.md shows the fetchNpmDeps variant for older nixpkgs.
{
  lib,
  stdenv,
  buildNpmPackage,
  importNpmLock,
  nodejs_20,
  makeWrapper,
  autoPatchelfHook,
}:

let
  packageJson = lib.importJSON ../package.json;

  # npm's process.platform / process.arch for the platform the package runs on.
  npmOs =
    if stdenv.hostPlatform.isLinux then
      "linux"
    else if stdenv.hostPlatform.isDarwin then
      "darwin"
    else
      throw "outpost: unsupported platform ${stdenv.hostPlatform.system}";
  npmCpu =
    {
      x86_64 = "x64";
      aarch64 = "arm64";
      armv7l = "arm";
      i686 = "ia32";
      riscv64 = "riscv64";
      powerpc64le = "ppc64";
      s390x = "s390x";
      loongarch64 = "loong64";
    }
    .${stdenv.hostPlatform.parsed.cpu.name}
      or (throw "outpost: unsupported CPU ${stdenv.hostPlatform.parsed.cpu.name}");

  packageLock = import ./lib/npm-lock.nix {
    lockfile = lib.importJSON ../package-lock.json;
    os = npmOs;
    cpu = npmCpu;
  };

  # The sources the build reads; nothing that a local checkout may have lying around.
  src = lib.cleanSourceWith {
    name = "outpost-source";
    src = ../.;
    filter =
      path: type:
      let
        base = baseNameOf path;
      in
      !(builtins.elem base [
        ".git"
        "node_modules"
        "dist"
        "nix"
        "docs"
        ".outpost-demo"
      ])
      && !(lib.hasPrefix "result" base)
      && !(lib.hasSuffix ".log" base);
  };
in
buildNpmPackage {
  pname = packageJson.name;
  inherit (packageJson) version;
  inherit src;
  nodejs = nodejs_20;

  npmDeps = importNpmLock {
    npmRoot = src;
    package = packageJson;
    inherit packageLock;
  };
  npmConfigHook = importNpmLock.npmConfigHook;

  nativeBuildInputs = [ makeWrapper ] ++ lib.optionals stdenv.hostPlatform.isLinux [ autoPatchelfHook ];
  # classic-level's prebuilt LevelDB addon links libstdc++.
  buildInputs = lib.optionals stdenv.hostPlatform.isLinux [ stdenv.cc.cc.lib ];

  # `npm run build` = tsc into dist/.
  npmBuildScript = "build";

  # package.json has no "files" list and .gitignore excludes dist/, so `npm pack` (what the
  # default install hook uses) would leave the compiled code out: install by hand.
  installPhase = ''
    runHook preInstall

    npm prune --omit=dev --no-save $npmFlags "''${npmFlagsArray[@]}"

    dest=$out/lib/node_modules/${packageJson.name}
    mkdir -p "$dest"
    cp -r dist node_modules package.json "$dest"/
    # Compiled tests and the demo are not part of the CLI.
    rm -rf "$dest/dist/test"
    # npm's record of the install points at the tarballs in the store: keep them out of the closure.
    rm -f "$dest/node_modules/.package-lock.json"
    # Keep only this platform's prebuilt native addons (glibc builds).
    find "$dest/node_modules" -type d -name prebuilds | while read -r dir; do
      for entry in "$dir"/*; do
        [ "$(basename "$entry")" = "${npmOs}-${npmCpu}" ] || rm -rf "$entry"
      done
    done
    find "$dest/node_modules" -name '*.musl.node' -delete

    makeWrapper ${lib.getExe nodejs_20} $out/bin/outpost \
      --add-flags "$dest/${packageJson.bin.outpost}"

    runHook postInstall
  '';

  meta = {
    inherit (packageJson) description;
    license = lib.licenses.mit;
    mainProgram = "outpost";
    platforms = lib.platforms.linux ++ lib.platforms.darwin;
  };
}
