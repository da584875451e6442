# Evaluates nixos-module/ with nixpkgs' lib alone (no nixpkgs packages, no NixOS): the
# options it declares, their defaults, its assertions and the units and files it defines.
# The NixOS options the module sets are declared here with nixpkgs' types (below), and
# `pkgs` is a stand-in whose derivations are fake store paths; what comes out is the
# module's own logic.
#
#   nix-instantiate --eval --strict --json nix/module-eval.nix \
#     --arg lib 'import /path/to/nixpkgs/lib' --arg config '{ services.rbee.enable = true; }'
#
# scripts/check-nixos-module runs it over a set of configurations and checks the results.
# `overlay = false` leaves pkgs.rbee out (a NixOS without rbee's overlay); `assertionsOnly`
# evaluates the failed assertions alone (what NixOS reports before anything else).
{ lib, config ? { }, systemdVersion ? "258", overlay ? true, assertionsOnly ? false, cudaSupport ? false }:

let
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
  # The NixOS options the module sets, with the types nixpkgs declares them with (read from
  # nixos/lib/systemd-unit-options.nix, nixos/modules/system/boot/systemd/tmpfiles.nix and
  # nixos/modules/config/users-groups.nix): a submodule refuses an option name it does not
  # declare, and a unit setting must be what systemd's unit checks accept.
  t = lib.types;
  opt = type: default: lib.mkOption { inherit type default; };
  atom = t.oneOf [ t.bool t.int t.str t.path ];
  # systemd-unit-options' unitOption: a value or a list (lists of definitions concatenate).
  unitOption = t.oneOf [ atom (t.listOf atom) ];
  unitCommon = {
    description = opt t.str "";
    documentation = opt (t.listOf t.str) [ ];
    wantedBy = opt (t.listOf t.str) [ ];
    after = opt (t.listOf t.str) [ ];
    wants = opt (t.listOf t.str) [ ];
  };
  service = t.submodule {
    options = unitCommon // {
      environment = opt (t.attrsOf (t.nullOr (t.oneOf [ t.str t.path t.package ]))) { };
      restartIfChanged = opt t.bool true;
      stopIfChanged = opt t.bool true;
      serviceConfig = opt (t.attrsOf unitOption) { };
    };
  };
  slice = t.submodule { options = unitCommon // { sliceConfig = opt (t.attrsOf unitOption) { }; }; };
  user = t.submodule {
    options = {
      isSystemUser = opt t.bool false;
      group = opt t.str "";
      home = opt (t.passwdEntry t.path) "/var/empty";
      description = opt (t.passwdEntry t.singleLineStr) "";
    };
  };
  group = t.submodule { options.gid = opt (t.nullOr t.int) null; };
  tmpfilesEntry = t.submodule {
    options = {
      mode = opt t.str "-";
      user = opt t.str "-";
      group = opt t.str "-";
      age = opt t.str "-";
      argument = opt t.str "";
    };
  };
  nixosStubs = {
    options = {
      assertions = lib.mkOption { type = lib.types.listOf lib.types.unspecified; default = [ ]; };
      warnings = lib.mkOption { type = lib.types.listOf lib.types.str; default = [ ]; };
      users.users = opt (t.attrsOf user) { };
      users.groups = opt (t.attrsOf group) { };
      systemd.services = opt (t.attrsOf service) { };
      systemd.slices = opt (t.attrsOf slice) { };
      systemd.tmpfiles.settings = opt (t.attrsOf (t.attrsOf (t.attrsOf tmpfilesEntry))) { };
      systemd.package = lib.mkOption { type = lib.types.anything; };
      security.polkit.enable = lib.mkOption { type = lib.types.bool; default = false; };
      security.polkit.extraConfig = lib.mkOption { type = lib.types.lines; default = ""; };
      networking.firewall.allowedTCPPorts = lib.mkOption { type = lib.types.listOf lib.types.port; default = [ ]; };
      environment.systemPackages = lib.mkOption { type = lib.types.listOf lib.types.anything; default = [ ]; };
      # nixos/modules/services/x11/xserver.nix and hardware/video/nvidia.nix.
      services.xserver.videoDrivers = opt (t.listOf t.str) [ "modesetting" "fbdev" ];
      hardware.nvidia.datacenter.enable = opt t.bool false;
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
