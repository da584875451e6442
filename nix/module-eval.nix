# Evaluates nixos-module/ with nixpkgs' lib alone (no nixpkgs packages, no NixOS): the
# options it declares, their defaults, its assertions and the units and files it defines.
# The NixOS options the module sets are declared here loosely, and `pkgs` is a stand-in
# whose derivations are fake store paths; what comes out is the module's own logic.
#
#   nix-instantiate --eval --strict --json nix/module-eval.nix \
#     --arg lib 'import /path/to/nixpkgs/lib' --arg config '{ services.rbee.enable = true; }'
#
# scripts/check-nixos-module runs it over a set of configurations and checks the results.
# `overlay = false` leaves pkgs.rbee out (a NixOS without rbee's overlay); `assertionsOnly`
# evaluates the failed assertions alone (what NixOS reports before anything else).
{ lib, config ? { }, systemdVersion ? "258", overlay ? true, assertionsOnly ? false, cudaSupport ? false }:

let
  loose = lib.mkOption { type = lib.types.anything; default = { }; };
  fakeDrv = name: {
    type = "derivation";
    inherit name;
    outPath = "/nix/store/00000000000000000000000000000000-${name}";
    meta.mainProgram = "rbee-keeper";
  };
  pkgs = lib.optionalAttrs overlay {
    rbee = fakeDrv "rbee" // { cudaSupport = false; };
    rbee-cuda = fakeDrv "rbee-cuda" // { cudaSupport = true; };
  } // {
    config = { inherit cudaSupport; };
    formats.toml = { }: {
      type = lib.types.attrsOf lib.types.anything;
      # JSON instead of TOML: what the generated file would hold, readable here.
      generate = name: value: builtins.toJSON value;
    };
    runCommand = name: env: script: "/nix/store/00000000000000000000000000000000-${name}";
  };
  nixosStubs = {
    options = {
      assertions = lib.mkOption { type = lib.types.listOf lib.types.unspecified; default = [ ]; };
      warnings = lib.mkOption { type = lib.types.listOf lib.types.str; default = [ ]; };
      users = loose;
      systemd.services = lib.mkOption { type = lib.types.attrsOf lib.types.anything; default = { }; };
      systemd.slices = lib.mkOption { type = lib.types.attrsOf lib.types.anything; default = { }; };
      systemd.tmpfiles = loose;
      systemd.package = lib.mkOption { type = lib.types.anything; };
      security.polkit.enable = lib.mkOption { type = lib.types.bool; default = false; };
      security.polkit.extraConfig = lib.mkOption { type = lib.types.lines; default = ""; };
      networking.firewall.allowedTCPPorts = lib.mkOption { type = lib.types.listOf lib.types.port; default = [ ]; };
      environment.systemPackages = lib.mkOption { type = lib.types.listOf lib.types.anything; default = [ ]; };
    };
    config.systemd.package = { version = systemdVersion; };
  };
  evaluated = lib.evalModules {
    modules = [ ../nixos-module nixosStubs config ];
    specialArgs = { inherit pkgs; };
  };
  c = evaluated.config;
  hive = c.systemd.services.rbee-hive or null;
  failedAssertions = map (a: a.message) (lib.filter (a: !a.assertion) c.assertions);
in
if assertionsOnly then { inherit failedAssertions; } else
{
  inherit failedAssertions;
  package = c.services.rbee.package.name;
  warnings = c.warnings;
  settings = c.services.rbee.settings;
  hive = if hive == null then null else {
    inherit (hive) environment wantedBy;
    serviceConfig = hive.serviceConfig;
    restartIfChanged = hive.restartIfChanged or null;
    stopIfChanged = hive.stopIfChanged or null;
  };
  slice = c.systemd.slices.rbee-workers or null;
  tmpfiles = c.systemd.tmpfiles;
  users = c.users;
  polkit = { inherit (c.security.polkit) enable extraConfig; };
  firewall = c.networking.firewall.allowedTCPPorts;
  packages = map (p: p.name) c.environment.systemPackages;
  options = lib.mapAttrs (_: o: { description = o.description or null; default = o.defaultText or (o.default or null); })
    (lib.filterAttrs (_: o: o ? _type && o._type == "option") evaluated.options.services.rbee
      // lib.mapAttrs' (n: v: lib.nameValuePair "workers.${n}" v) evaluated.options.services.rbee.workers);
}
