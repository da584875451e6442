{
  description = "rbee: the machines you own as one pool for running open LLMs (GGUF, llama.cpp)";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" "aarch64-darwin" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAllSystems (pkgs: rec {
        rbee = pkgs.callPackage ./nix/package.nix { };
        default = rbee;
      });

      nixosModules.rbee = { lib, pkgs, ... }: {
        imports = [ ./nixos-module ];
        services.rbee.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.rbee;
      };
      nixosModules.default = self.nixosModules.rbee;

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          inputsFrom = [ self.packages.${pkgs.stdenv.hostPlatform.system}.rbee ];
          packages = with pkgs; [ cargo-nextest clippy rustfmt ];
        };
      });
    };
}
