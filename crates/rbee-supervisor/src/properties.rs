//! The properties of a worker's transient unit, as plain data: unit tests check them, the
//! D-Bus client turns them into `StartTransientUnit` arguments, and integration tests read
//! them back from the real manager.

use std::path::PathBuf;

/// Which manager runs the unit: they accept different properties.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManagerKind {
    /// The system manager (NixOS, servers): full sandbox, `DynamicUser`.
    System,
    /// A user's manager (`systemctl --user`): cannot switch users, so no `DynamicUser`.
    User,
}

/// A property value, in the D-Bus types systemd expects.
#[derive(Debug, Clone, PartialEq)]
pub enum Prop {
    /// `s`
    Str(String),
    /// `b`
    Bool(bool),
    /// `t`
    U64(u64),
    /// `i`
    I32(i32),
    /// `u`
    U32(u32),
    /// `(bas)`: an allow-list (true) or deny-list (false), e.g. RestrictAddressFamilies.
    List(bool, Vec<String>),
    /// `a(ssbt)`: BindReadOnlyPaths — source, destination, ignore-missing, flags.
    Binds(Vec<(String, String, bool, u64)>),
    /// `a(ss)`: DeviceAllow — device node, access (`rw`).
    Devices(Vec<(String, String)>),
    /// `as`
    Strs(Vec<String>),
    /// `a(sasb)`: ExecStart — path, argv (argv[0] included), ignore-failure.
    Exec(Vec<(String, Vec<String>, bool)>),
    /// `a(ss)`: LoadCredential — credential name, source file.
    Pairs(Vec<(String, String)>),
}

/// What the supervisor knows about the worker it starts.
#[derive(Debug, Clone)]
pub struct WorkerUnit {
    /// Unit name (`rbee-worker@….service`).
    pub name: String,
    /// Shown in `systemctl status`.
    pub description: String,
    /// The worker binary.
    pub binary: PathBuf,
    /// Its arguments (built by the caller from validated inputs only).
    pub args: Vec<String>,
    /// The model file, the one path the sandbox lets it read.
    pub model_path: PathBuf,
    /// Environment (`NAME=value`); never secrets.
    pub environment: Vec<String>,
    /// Memory limit from preflight, bytes.
    pub memory_max: Option<u64>,
    /// Watchdog interval.
    pub watchdog_usec: u64,
    /// Graceful stop time before systemd's SIGKILL.
    pub stop_timeout_usec: u64,
    /// GPU device nodes the worker may open (`/dev/nvidia0`, …).
    pub devices: Vec<String>,
    /// Where stdout and stderr go; `None` means the journal.
    pub log_file: Option<PathBuf>,
    /// `LoadCredential=` pairs (name, file) — how secrets reach a system unit. A user
    /// manager (systemd 252 seen here) starts the unit with an empty credentials directory,
    /// so callers use a 0600 file there instead.
    pub credentials: Vec<(String, PathBuf)>,
}

/// EPERM, the errno a filtered system call returns.
const fn libc_eperm() -> i32 {
    1
}

/// The slice every worker runs in.
pub const WORKERS_SLICE: &str = "rbee-workers.slice";

/// The properties for `unit` on a manager of `kind`.
pub fn worker_properties(unit: &WorkerUnit, kind: ManagerKind) -> Vec<(&'static str, Prop)> {
    let binary = unit.binary.display().to_string();
    let mut argv = vec![binary.clone()];
    argv.extend(unit.args.iter().cloned());
    let mut p = vec![
        ("Description", Prop::Str(unit.description.clone())),
        ("ExecStart", Prop::Exec(vec![(binary, argv, false)])),
        ("Type", Prop::Str("notify".into())),
        ("NotifyAccess", Prop::Str("main".into())),
        ("WatchdogUSec", Prop::U64(unit.watchdog_usec)),
        ("TimeoutStopUSec", Prop::U64(unit.stop_timeout_usec)),
        ("Slice", Prop::Str(WORKERS_SLICE.into())),
        ("CollectMode", Prop::Str("inactive-or-failed".into())),
        ("KillSignal", Prop::I32(15)),
        ("Environment", Prop::Strs(unit.environment.clone())),
        ("NoNewPrivileges", Prop::Bool(true)),
        (
            "RestrictAddressFamilies",
            Prop::List(
                true,
                vec!["AF_INET".into(), "AF_INET6".into(), "AF_UNIX".into()],
            ),
        ),
    ];
    if let Some(max) = unit.memory_max {
        p.push(("MemoryMax", Prop::U64(max)));
    }
    if let Some(log) = &unit.log_file {
        let log = log.display().to_string();
        p.push(("StandardOutputFileToAppend", Prop::Str(log.clone())));
        p.push(("StandardErrorFileToAppend", Prop::Str(log)));
    }
    if !unit.credentials.is_empty() {
        let creds = unit
            .credentials
            .iter()
            .map(|(name, path)| (name.clone(), path.display().to_string()))
            .collect();
        p.push(("LoadCredential", Prop::Pairs(creds)));
    }
    if kind == ManagerKind::System {
        let model = unit.model_path.display().to_string();
        // Only the system manager can switch users and build these namespaces.
        p.extend([
            ("DynamicUser", Prop::Bool(true)),
            // A user manager cannot set up the mount namespace PrivateTmp needs.
            ("PrivateTmp", Prop::Bool(true)),
            ("ProtectSystem", Prop::Str("strict".into())),
            ("ProtectHome", Prop::Str("yes".into())),
            ("ProtectKernelTunables", Prop::Bool(true)),
            ("ProtectControlGroups", Prop::Bool(true)),
            (
                "SystemCallFilter",
                Prop::List(true, vec!["@system-service".into()]),
            ),
            // Minus what a worker never needs: the privileged calls, and for a CPU worker
            // scheduling and memory policy too (the CUDA driver uses mbind and affinity
            // for pinned memory). A filtered call fails with EPERM instead of killing it.
            (
                "SystemCallFilter",
                Prop::List(
                    false,
                    if unit.devices.is_empty() {
                        vec!["@privileged".into(), "@resources".into()]
                    } else {
                        vec!["@privileged".into()]
                    },
                ),
            ),
            ("SystemCallErrorNumber", Prop::I32(libc_eperm())),
            ("SystemCallArchitectures", Prop::Strs(vec!["native".into()])),
            // No capabilities, no other users, no other processes in /proc.
            ("CapabilityBoundingSet", Prop::U64(0)),
            ("PrivateUsers", Prop::Bool(true)),
            ("ProtectProc", Prop::Str("invisible".into())),
            ("ProtectKernelModules", Prop::Bool(true)),
            ("ProtectKernelLogs", Prop::Bool(true)),
            ("ProtectClock", Prop::Bool(true)),
            ("ProtectHostname", Prop::Bool(true)),
            // No namespaces of its own (RestrictNamespaces=yes: the allowed set is empty).
            ("RestrictNamespaces", Prop::U64(0)),
            ("RestrictRealtime", Prop::Bool(true)),
            ("RestrictSUIDSGID", Prop::Bool(true)),
            ("LockPersonality", Prop::Bool(true)),
            ("UMask", Prop::U32(0o077)),
            (
                "BindReadOnlyPaths",
                Prop::Binds(vec![(model.clone(), model, false, 0)]),
            ),
            // PrivateDevices=yes would hide /dev/nvidia*: an explicit allow-list instead.
            ("DevicePolicy", Prop::Str("closed".into())),
        ]);
        if unit.devices.is_empty() {
            // A CPU worker: no devices at all, and no writable+executable memory. (A GPU
            // worker keeps both: the CUDA driver JIT-compiles kernels into such memory.)
            p.push(("PrivateDevices", Prop::Bool(true)));
            p.push(("MemoryDenyWriteExecute", Prop::Bool(true)));
        } else {
            let allow = unit
                .devices
                .iter()
                .map(|d| (d.clone(), "rw".to_owned()))
                .collect();
            p.push(("DeviceAllow", Prop::Devices(allow)));
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit() -> WorkerUnit {
        WorkerUnit {
            name: "rbee-worker@smol.service".into(),
            description: "rbee worker smol".into(),
            binary: "/opt/rbee/llm-worker-rbee".into(),
            args: vec!["--model".into(), "/m.gguf".into()],
            model_path: "/m.gguf".into(),
            environment: vec![],
            memory_max: Some(1 << 30),
            watchdog_usec: 30_000_000,
            stop_timeout_usec: 40_000_000,
            devices: vec!["/dev/nvidia0".into()],
            log_file: Some("/var/lib/rbee/logs/smol.log".into()),
            credentials: vec![("key".into(), "/var/lib/rbee/k".into())],
        }
    }

    fn get<'a>(p: &'a [(&str, Prop)], k: &str) -> Option<&'a Prop> {
        p.iter().find(|(n, _)| *n == k).map(|(_, v)| v)
    }

    #[test]
    fn every_worker_is_a_notify_unit_in_the_workers_slice() {
        for kind in [ManagerKind::System, ManagerKind::User] {
            let p = worker_properties(&unit(), kind);
            assert_eq!(get(&p, "Type"), Some(&Prop::Str("notify".into())));
            assert_eq!(get(&p, "Slice"), Some(&Prop::Str(WORKERS_SLICE.into())));
            assert_eq!(get(&p, "MemoryMax"), Some(&Prop::U64(1 << 30)));
            let log = Prop::Str("/var/lib/rbee/logs/smol.log".into());
            assert_eq!(get(&p, "StandardOutputFileToAppend"), Some(&log));
            assert_eq!(get(&p, "StandardErrorFileToAppend"), Some(&log));
            assert_eq!(
                get(&p, "LoadCredential"),
                Some(&Prop::Pairs(vec![("key".into(), "/var/lib/rbee/k".into())]))
            );
            let Some(Prop::Exec(exec)) = get(&p, "ExecStart") else {
                panic!()
            };
            assert_eq!(
                exec[0].1,
                ["/opt/rbee/llm-worker-rbee", "--model", "/m.gguf"]
            );
        }
    }

    #[test]
    fn only_the_system_manager_gets_user_switching_and_device_rules() {
        let sys = worker_properties(&unit(), ManagerKind::System);
        assert_eq!(get(&sys, "DynamicUser"), Some(&Prop::Bool(true)));
        assert_eq!(
            get(&sys, "DeviceAllow"),
            Some(&Prop::Devices(vec![("/dev/nvidia0".into(), "rw".into())]))
        );
        assert!(get(&sys, "PrivateDevices").is_none(), "would hide the GPU");
        assert!(get(&sys, "MemoryDenyWriteExecute").is_none(), "CUDA JIT");
        assert_eq!(get(&sys, "CapabilityBoundingSet"), Some(&Prop::U64(0)));
        let mut cpu_only = unit();
        cpu_only.devices.clear();
        let cpu = worker_properties(&cpu_only, ManagerKind::System);
        assert_eq!(get(&cpu, "PrivateDevices"), Some(&Prop::Bool(true)));
        assert_eq!(get(&cpu, "MemoryDenyWriteExecute"), Some(&Prop::Bool(true)));
        let denied = |p: &[(&str, Prop)]| {
            p.iter()
                .find_map(|(n, v)| match v {
                    Prop::List(false, l) if *n == "SystemCallFilter" => Some(l.clone()),
                    _ => None,
                })
                .unwrap_or_default()
        };
        assert_eq!(denied(&cpu), ["@privileged", "@resources"]);
        assert_eq!(denied(&sys), ["@privileged"], "CUDA pins memory with mbind");
        let user = worker_properties(&unit(), ManagerKind::User);
        assert!(get(&user, "DynamicUser").is_none());
        assert!(get(&user, "DeviceAllow").is_none());
    }
}
