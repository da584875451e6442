# services.rbee — the NixOS module. For now it installs the rbee package; the hive service,
# the worker slice and the polkit rule arrive with rbee-hive.
{ config, lib, pkgs, ... }:

let
  cfg = config.services.rbee;
in
{
  options.services.rbee = {
    enable = lib.mkEnableOption "rbee, a pool of your own machines for running open LLMs";

    package = lib.mkOption {
      type = lib.types.package;
      description = "The rbee package (the three binaries).";
    };
  };

  config = lib.mkIf cfg.enable {
    environment.systemPackages = [ cfg.package ];
  };
}
