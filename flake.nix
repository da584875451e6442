{
  description = "rbee: the machines you own as one pool for running open LLMs (GGUF, llama.cpp)";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  # Thin on purpose: the package is nix/package.nix, the module nixos-module/, the checks
  # nix/checks.nix, and each file in nix/tests/ is one NixOS VM test.
  outputs = { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [ "x86_64-linux" "aarch64-linux" "aarch64-darwin" ];
      forAllSystems = f: lib.genAttrs systems (system: f system nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAllSystems (system: pkgs:
        let
          # CUDA is unfree: its own package set, so that evaluating (and building) it works
          # without a GPU and without changing anyone's nixpkgs config. cudaSupport too:
          # nixpkgs marks every CUDA redistributable broken without it (cuda-modules'
          # buildRedist), so rbee-cuda would not even evaluate.
          pkgsUnfree = import nixpkgs {
            inherit system;
            config = { allowUnfree = true; cudaSupport = true; };
          };
        in
        {
          rbee = pkgs.callPackage ./nix/package.nix { };
          default = self.packages.${system}.rbee;
          smollm2 = pkgs.callPackage ./nix/smollm2.nix { };
        } // lib.optionalAttrs pkgs.stdenv.hostPlatform.isLinux {
          rbee-cuda = pkgsUnfree.callPackage ./nix/package.nix { cudaSupport = true; };
        });

      # pkgs.rbee (and on Linux pkgs.rbee-cuda, built with the user's nixpkgs config, which
      # then needs allowUnfree and cudaSupport) for a NixOS that imports nixos-module/
      # directly.
      overlays.default = final: prev: {
        rbee = final.callPackage ./nix/package.nix { };
      } // lib.optionalAttrs final.stdenv.hostPlatform.isLinux {
        rbee-cuda = final.callPackage ./nix/package.nix { cudaSupport = true; };
      };

      nixosModules.rbee = { config, lib, pkgs, ... }: {
        imports = [ ./nixos-module ];
        services.rbee.package = lib.mkDefault
          self.packages.${pkgs.stdenv.hostPlatform.system}.${
            if config.services.rbee.acceleration == "cuda" then "rbee-cuda" else "rbee"};
      };
      nixosModules.default = self.nixosModules.rbee;

      checks = forAllSystems (system: pkgs:
        let
          packages = self.packages.${system};
          vmTests = lib.mapAttrs'
            (file: _: lib.nameValuePair "vm-${lib.removeSuffix ".nix" file}"
              (pkgs.testers.runNixOSTest (import ./nix/tests/${file} { inherit self pkgs lib; })))
            (lib.filterAttrs (f: t: t == "regular" && lib.hasSuffix ".nix" f) (builtins.readDir ./nix/tests));
        in
        { package = packages.rbee; }
        # Built, never run: evaluation and the build need no GPU.
        // lib.optionalAttrs (system == "x86_64-linux") { package-cuda = packages.rbee-cuda; }
        // import ./nix/checks.nix {
          inherit lib pkgs;
          inherit (packages) rbee smollm2;
          inherit (pkgs) cargo-nextest clippy rustfmt findutils;
        }
        // lib.optionalAttrs pkgs.stdenv.hostPlatform.isLinux vmTests);

      devShells = forAllSystems (system: pkgs: {
        default = pkgs.mkShell {
          inputsFrom = [ self.packages.${system}.rbee ];
          packages = with pkgs; [ cargo rustc cargo-nextest clippy rustfmt cmake clang ];
          RBEE_TEST_MODEL = self.packages.${system}.smollm2;
        };
      });
    };
}
