{
  description = "Outpost: offline-first fleet manager for NixOS";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.05";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAllSystems (pkgs: {
        outpost = pkgs.callPackage ./nix/package.nix { };
        default = self.packages.${pkgs.stdenv.hostPlatform.system}.outpost;
      });

      overlays.default = final: _prev: { outpost = final.callPackage ./nix/package.nix { }; };

      # Each module defaults its `package` to the same nix/package.nix, built with the host's
      # nixpkgs; set services.outpost-*.package = outpost.packages.${system}.default to use this
      # flake's pinned build instead.
      nixosModules = {
        agent = ./nix/modules/agent.nix;
        apps = ./nix/modules/apps.nix;
        coordinator = ./nix/modules/coordinator.nix;
        relay = ./nix/modules/relay.nix;
        web = ./nix/modules/web.nix;
        default = ./nix/modules/default.nix;
      };

      # The option → flag tables the modules and the offline test share.
      lib.flags = import ./nix/lib/flags.nix;

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = [
            pkgs.nodejs_20
            pkgs.nix
            pkgs.nixfmt-rfc-style
            pkgs.nix-serve
            pkgs.jq
          ];
        };
      });

      # The VM test needs KVM: nix build .#checks.x86_64-linux.vm-test (see docs/nixos.md).
      checks = forAllSystems (pkgs: {
        package = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
        vm-test = import ./nix/tests/vm-test.nix {
          inherit pkgs;
          outpost = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
          module = self.nixosModules.default;
        };
      });

      formatter = forAllSystems (pkgs: pkgs.nixfmt-rfc-style);
    };
}
