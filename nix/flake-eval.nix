# Evaluates flake.nix's outputs against a stand-in nixpkgs whose lib is the real nixpkgs
# lib: what the flake asks of nixpkgs (the package set the CUDA build comes from, the
# overlay), without any nixpkgs package. scripts/check-nixos-module runs it:
#
#   nix-instantiate --eval --strict --json nix/flake-eval.nix \
#     --arg lib 'import /path/to/nixpkgs/lib' --arg stub /path/to/dir-with-default.nix
#
# `stub` is a directory whose default.nix stands for `import nixpkgs { system; config; }`.
{ lib, stub }:

let
  flake = import ../flake.nix;
  called = config: file: args: { inherit config args; file = baseNameOf file; };
  legacy = system: {
    callPackage = called { };
    stdenv.hostPlatform.isLinux = lib.hasSuffix "-linux" system;
  };
  nixpkgs = {
    outPath = stub;
    inherit lib;
    legacyPackages = lib.genAttrs [ "x86_64-linux" "aarch64-linux" "aarch64-darwin" ] legacy;
  };
  outputs = flake.outputs { self = outputs; inherit nixpkgs; };
  final = { callPackage = called { }; stdenv.hostPlatform.isLinux = true; };
in
{
  cuda = outputs.packages.x86_64-linux.rbee-cuda;
  cpu = outputs.packages.x86_64-linux.rbee;
  darwinHasCuda = outputs.packages.aarch64-darwin ? rbee-cuda;
  overlay = if outputs ? overlays.default then outputs.overlays.default final { } else null;
}
