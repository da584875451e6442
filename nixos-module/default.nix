# services.rbee — a node of an rbee pool: rbee-hive as a hardened system service (user
# `rbee`) that runs each llm-worker-rbee as a sandboxed transient unit rbee-worker@<model>
# in rbee-workers.slice, allowed by a polkit rule; rbee-keeper on the PATH.
# The same units, for other distributions, are in ../systemd/ (this module mirrors them).
{ config, lib, pkgs, ... }:

let
  inherit (lib) mkOption mkEnableOption mkIf mkDefault types literalExpression;

  cfg = config.services.rbee;
  settingsFormat = pkgs.formats.toml { };

  # Nix-provided files become file:// references to the store (a path literal is copied
  # there; the hive cannot read /home); references stay as they are.
  modelRef = m:
    let s = if builtins.isPath m then "${m}" else toString m; in
    if lib.hasPrefix "hf:" s || lib.hasPrefix "file://" s then s else "file://${s}";

  # Secrets reach the hive as systemd credentials: readable by the service only, and the
  # files themselves may stay root-only.
  credentialsDir = "/run/credentials/rbee-hive.service";

  rawConfig = settingsFormat.generate "rbee-hive-unchecked.toml" cfg.settings;
  # The generated file is checked by the hive itself when the system is built: a mistake
  # fails `nixos-rebuild`, not the service at boot. (Files it names are not opened.)
  checkedConfig = pkgs.runCommand "rbee-hive.toml" { } ''
    ${lib.getExe' cfg.package "rbee-hive"} check-config ${rawConfig}
    cp ${rawConfig} $out
  '';

  stateInVarLib = lib.hasPrefix "/var/lib/" cfg.stateDir;
  cuda = cfg.acceleration == "cuda";
in
{
  options.services.rbee = {
    enable = mkEnableOption "rbee-hive, the node daemon of an rbee pool (LLM workers as systemd units)";

    package = mkOption {
      type = types.nullOr types.package;
      default = if cuda then pkgs.rbee-cuda or null else pkgs.rbee or null;
      defaultText = lib.literalExpression ''if acceleration == "cuda" then pkgs.rbee-cuda else pkgs.rbee'';
      description = ''
        The three binaries (rbee-hive, llm-worker-rbee, rbee-keeper). From rbee's overlay
        (`nixpkgs.overlays = [ rbee.overlays.default ]`), or set by the flake's
        `nixosModules.default`, which picks its `rbee` or, with `acceleration = "cuda"`, its
        `rbee-cuda` package.
      '';
    };

    user = mkOption {
      type = types.str;
      default = "rbee";
      description = ''
        The system user the hive runs as, created when it is `rbee`; the polkit rule lets
        this user (and no other) start and stop `rbee-worker@*` units. A static user, not a
        dynamic one: polkit decides by its name. Workers run as dynamic users of their own.
      '';
    };

    group = mkOption {
      type = types.str;
      default = "rbee";
      description = "The hive's group, created when it is `rbee`.";
    };

    host = mkOption {
      type = types.str;
      default = "127.0.0.1";
      example = "0.0.0.0";
      description = ''
        Address of the hive's HTTP API. The default, loopback, is reached from other
        machines through SSH (rbee-keeper's default). Any other address should come with
        {option}`services.rbee.apiKeyFile`.
      '';
    };

    port = mkOption {
      type = types.port;
      default = 9200;
      description = "Port of the hive's HTTP API.";
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Open {option}`services.rbee.port` in the firewall (TCP).";
    };

    acceleration = mkOption {
      type = types.nullOr (types.enum [ "cpu" "cuda" ]);
      default = if pkgs.config.cudaSupport or false then "cuda" else null;
      defaultText = literalExpression ''if config.nixpkgs.config.cudaSupport then "cuda" else null'';
      example = "cuda";
      description = ''
        What the workers run on. `null` and `"cpu"`: the CPU build, and the hive sees no GPU
        device. `"cuda"`: the CUDA build of the worker (the flake's `rbee-cuda`), and the
        hive may open /dev/nvidia* to read GPU memory through NVML (workers get their GPU
        from the hive). The NVIDIA driver itself is configured as usual
        (`hardware.nvidia`, `services.xserver.videoDrivers`). It is also the hive's
        `default_backend`: where workers run that a request does not place (every OpenAI
        request): `null` leaves it `auto` (a GPU when there is one, else the CPU).
      '';
    };

    stateDir = mkOption {
      type = types.path;
      default = "/var/lib/rbee";
      description = ''
        Where the hive keeps its worker records, logs, downloaded models and catalogue
        (models.db). Under /var/lib it is the service's StateDirectory.
      '';
    };

    apiKeyFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      example = "/run/secrets/rbee-api-key";
      description = ''
        A file holding the API key clients must send (`Authorization: Bearer <key>`).
        It must not be in the Nix store (which everyone can read); it is passed to the
        service as a systemd credential, so it may be readable by root only. Default: no
        key (fine on loopback).
      '';
    };

    hfTokenFile = mkOption {
      type = types.nullOr types.path;
      default = null;
      example = "/run/secrets/hf-token";
      description = ''
        A file holding a Hugging Face token, for gated or private models. Not in the Nix
        store; passed as a systemd credential. Default: none (public models only).
      '';
    };

    models = mkOption {
      type = types.listOf (types.either types.str types.path);
      default = [ ];
      example = literalExpression ''
        [ "hf:HuggingFaceTB/SmolLM2-135M-Instruct-GGUF:Q4_K_M" ./models/mistral.Q4_K_M.gguf ]
      '';
      description = ''
        Models to have in the catalogue at start: model references (`hf:org/repo[:QUANT]`,
        `file:///abs/path.gguf`), downloaded in the background when the hive starts, and
        Nix-provided GGUF files (paths or derivations), recorded in place. The hive starts
        workers for them on demand.
      '';
    };

    syncModels = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Make the catalogue exactly `models` at every start of the hive: a model it has that
        `models` no longer lists is removed, and a file it downloaded for it is deleted
        (Nix-provided and other local files, and the Hugging Face cache, are never
        touched). A model a running worker serves is kept until a later start finds it
        unused.
      '';
    };

    idleTimeout = mkOption {
      type = types.ints.unsigned;
      default = 300;
      description = "Seconds a worker may sit idle before the hive stops it; 0 never stops one.";
    };

    workers = {
      memoryMax = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "80%";
        description = ''
          MemoryMax= of rbee-workers.slice: the memory all workers together may use (each
          worker also gets its own limit from the hive's preflight). Default: no cap.
        '';
      };
      cpuQuota = mkOption {
        type = types.nullOr types.str;
        default = null;
        example = "800%";
        description = "CPUQuota= of rbee-workers.slice (100% = one CPU). Default: no cap.";
      };
      ports = mkOption {
        type = types.str;
        default = "9300-9399";
        description = "The ports workers listen on (on loopback), `FIRST-LAST`.";
      };
    };

    environmentVariables = mkOption {
      type = types.attrsOf types.str;
      default = { };
      example = { HF_ENDPOINT = "https://hf-mirror.example.org"; RBEE_LOG = "debug"; };
      description = ''
        Environment of the hive: `HF_ENDPOINT` (a Hugging Face mirror), `RBEE_LOG`
        (tracing filter), `HTTPS_PROXY`, … Not for secrets (they would land in the store):
        use {option}`services.rbee.hfTokenFile`.
      '';
    };

    settings = mkOption {
      type = types.submodule { freeformType = settingsFormat.type; };
      default = { };
      example = { limits.ram_bytes = 17179869184; download_attempts = 3; };
      description = ''
        The hive's configuration file (TOML; every option `rbee-hive --help` lists, with
        underscores). The module's own options fill it (host, port, state_dir, …); what is
        set here wins. The file is checked with `rbee-hive check-config` when the system is
        built.
      '';
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = cfg.package != null;
        message = "services.rbee.package is not set and pkgs has no ${if cuda then "rbee-cuda" else "rbee"}: import rbee's flake module (rbee.nixosModules.default), add its overlay (nixpkgs.overlays = [ rbee.overlays.default ]), or set services.rbee.package.";
      }
      {
        assertion = !cuda || cfg.package == null || (cfg.package.cudaSupport or false);
        message = "services.rbee.acceleration is \"cuda\" but services.rbee.package (${cfg.package.name or "?"}) is not a CUDA build: use rbee-cuda (the overlay's pkgs.rbee-cuda, or the flake's packages.<system>.rbee-cuda).";
      }
      {
        assertion = !cfg.syncModels || cfg.models != [ ];
        message = "services.rbee.syncModels = true with an empty services.rbee.models would remove every model the hive has: list the models to keep in services.rbee.models, or set syncModels = false.";
      }
      {
        assertion = config.security.polkit.enable;
        message = "services.rbee needs polkit: the rbee user starts and stops worker units through it. Remove security.polkit.enable = false.";
      }
      {
        assertion = cfg.apiKeyFile == null || !lib.hasPrefix builtins.storeDir (toString cfg.apiKeyFile);
        message = "services.rbee.apiKeyFile must not be in the Nix store (everyone can read it): use a path such as /run/secrets/rbee-api-key.";
      }
      {
        assertion = cfg.hfTokenFile == null || !lib.hasPrefix builtins.storeDir (toString cfg.hfTokenFile);
        message = "services.rbee.hfTokenFile must not be in the Nix store (everyone can read it).";
      }
    ];
    warnings = lib.optional (!(lib.elem cfg.host [ "127.0.0.1" "::1" "localhost" ]) && cfg.apiKeyFile == null)
      "services.rbee.host is ${cfg.host} but no apiKeyFile is set: anyone who reaches that address can start workers."
    # nixos/modules/hardware/video/nvidia.nix loads the driver for either of these.
    ++ lib.optional (cuda && !(lib.elem "nvidia" (config.services.xserver.videoDrivers or [ ])
                               || (config.hardware.nvidia.datacenter.enable or false)))
      "services.rbee.acceleration is \"cuda\" but no NVIDIA driver is configured: set services.xserver.videoDrivers = [ \"nvidia\" ] (with hardware.nvidia.open as your GPU needs) or, on a server, hardware.nvidia.datacenter.enable = true; without it the hive finds no GPU.";

    services.rbee.settings = lib.mapAttrs (_: mkDefault) ({
      host = cfg.host;
      port = cfg.port;
      state_dir = toString cfg.stateDir;
      supervisor = "systemd-system";
      idle_timeout_secs = cfg.idleTimeout;
      worker_ports = cfg.workers.ports;
      worker_binary = lib.getExe' cfg.package "llm-worker-rbee";
      worker_logs = "journal";
      provision = map modelRef cfg.models;
      provision_sync = cfg.syncModels;
      default_backend = if cfg.acceleration == null then "auto" else cfg.acceleration;
    } // lib.optionalAttrs (cfg.apiKeyFile != null) {
      api_key_file = "${credentialsDir}/api-key";
    });

    users.users = lib.optionalAttrs (cfg.user == "rbee") {
      rbee = {
        isSystemUser = true;
        inherit (cfg) group;
        home = cfg.stateDir;
        description = "rbee node daemon";
      };
    };
    users.groups = lib.optionalAttrs (cfg.group == "rbee") { rbee = { }; };

    systemd.tmpfiles.settings."10-rbee" = lib.mkIf (!stateInVarLib) {
      ${toString cfg.stateDir}.d = { inherit (cfg) user group; mode = "0750"; };
    };

    # Every worker runs in this slice: one place to cap them all.
    systemd.slices.rbee-workers = {
      description = "rbee inference workers";
      sliceConfig = lib.filterAttrs (_: v: v != null) {
        MemoryMax = cfg.workers.memoryMax;
        CPUQuota = cfg.workers.cpuQuota;
      };
    };

    systemd.services.rbee-hive = {
      description = "rbee hive (node daemon: runs LLM workers as systemd units)";
      documentation = [ "https://github.com/rbee-project/rbee#readme" ];
      wantedBy = [ "multi-user.target" ];
      after = [ "network-online.target" "dbus.service" ];
      wants = [ "network-online.target" ];
      environment = cfg.environmentVariables
        // lib.optionalAttrs (cfg.hfTokenFile != null) { HF_TOKEN_PATH = "${credentialsDir}/hf-token"; };
      # The workers are siblings (transient units), not children. A changed unit is
      # restarted, not stopped and started (switch-to-configuration's X-StopIfChanged):
      # on a restart job the hive leaves its workers running and the next hive adopts them;
      # a stop (systemctl stop, shutdown) stops them (SIGTERM).
      restartIfChanged = true;
      stopIfChanged = false;
      serviceConfig = {
        Type = "notify";
        NotifyAccess = "main";
        WatchdogSec = 60;
        ExecStart = "${lib.getExe' cfg.package "rbee-hive"} --config ${checkedConfig}";
        User = cfg.user;
        Group = cfg.group;
        KillSignal = "SIGTERM";
        TimeoutStopSec = 90;
        Restart = "on-failure";
        RestartSec = 5;
        # A bad config or a taken port: restarting cannot fix them.
        RestartPreventExitStatus = "2 3";
        LoadCredential =
          lib.optional (cfg.apiKeyFile != null) "api-key:${toString cfg.apiKeyFile}"
          ++ lib.optional (cfg.hfTokenFile != null) "hf-token:${toString cfg.hfTokenFile}";

        # The hive parses no model weights and runs no inference: a tight sandbox.
        NoNewPrivileges = true;
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
        # Loosened: no PrivateDevices — with CUDA the hive reads GPU memory through NVML,
        # which opens /dev/nvidiactl and /dev/nvidiaN; an allow-list instead.
        DevicePolicy = "closed";
        DeviceAllow = lib.optionals cuda [
          "char-nvidiactl rw"
          "char-nvidia-caps rw"
          "char-nvidia-frontend rw"
          "char-nvidia-uvm rw"
        ];
        ProtectKernelTunables = true;
        ProtectKernelModules = true;
        ProtectKernelLogs = true;
        ProtectControlGroups = true;
        ProtectClock = true;
        ProtectHostname = true;
        RestrictNamespaces = true;
        RestrictRealtime = true;
        RestrictSUIDSGID = true;
        LockPersonality = true;
        # Other users' processes (the workers' dynamic users) stay hidden: the hive asks
        # systemd about its workers. Not ProcSubset = "pid": preflight reads /proc/meminfo.
        ProtectProc = "invisible";
        # Only root and the service user mapped; the bus and polkit still see the real uid.
        PrivateUsers = true;
        RemoveIPC = true;
        MemoryDenyWriteExecute = true;
        SystemCallArchitectures = "native";
        SystemCallFilter = [ "@system-service" ];
        SystemCallErrorNumber = "EPERM";
        # Loosened: AF_UNIX for the system bus (StartTransientUnit, polkit) and sd_notify.
        RestrictAddressFamilies = [ "AF_INET" "AF_INET6" "AF_UNIX" ];
        CapabilityBoundingSet = "";
        UMask = "0027";
      } // (if stateInVarLib then {
        StateDirectory = lib.removePrefix "/var/lib/" (toString cfg.stateDir);
        StateDirectoryMode = "0750";
      } else {
        ReadWritePaths = [ (toString cfg.stateDir) ];
      });
    };

    # The rbee user may start, stop and signal rbee-worker@*.service units and nothing
    # else (see ../systemd/rbee-hive.polkit.rules). systemd passes the unit name to polkit
    # for transient units from v257 on; with an older systemd the second rule answers the
    # requests that carry no unit name (root-equivalent; see its file).
    security.polkit.enable = mkDefault true;
    security.polkit.extraConfig = lib.replaceStrings
      [ ''subject.user === "rbee"'' ]
      [ ''subject.user === ${builtins.toJSON cfg.user}'' ]
      (builtins.readFile ../systemd/rbee-hive.polkit.rules
        + lib.optionalString (lib.versionOlder config.systemd.package.version "257")
          (builtins.readFile ../systemd/rbee-hive-systemd-pre257.polkit.rules));

    # The port the hive listens on: settings win over the option.
    networking.firewall.allowedTCPPorts = lib.optional cfg.openFirewall cfg.settings.port;

    environment.systemPackages = lib.optional (cfg.package != null) cfg.package;
  };
}
