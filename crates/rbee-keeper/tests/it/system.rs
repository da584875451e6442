//! System mode for real: a Debian 12 container booted as a real systemd system manager
//! (with journald and polkit), rbee put in place the way a Debian user does it —
//! `rbee-keeper install --system`, `systemd-sysusers`, `systemctl start rbee-hive` — then:
//! the hive runs as the `rbee` user, its workers as sandboxed transient units with
//! `DynamicUser=`, inference works through `rbee-keeper` there, polkit lets `rbee` stop
//! worker units and nothing else by name, the hive's journal reads back through `rbee-keeper
//! logs`, and `rbee-keeper hive stop|start` drive the system unit (its workers stop with it).

use rbee_test_support::container::{rbee_container_or_skip, SystemContainer};
use rbee_test_support::model::model_and_worker;
use rbee_test_support::model::TempDir;
use rbee_test_support::process::{free_port, worker_ports};
use rbee_test_support::sshd::keygen;

use crate::common::Keeper;

/// The highest `systemd-analyze security` exposure allowed for a worker unit.
const WORKER_EXPOSURE_MAX: f64 = 2.0;
/// The highest for the hive's unit ("OK" in systemd-analyze's words).
const HIVE_EXPOSURE_MAX: f64 = 4.0;

fn exec(c: &SystemContainer, args: &[&str]) -> String {
    let (ok, out) = c.exec(args);
    assert!(ok, "{args:?}: {out}");
    out
}

/// `rbee-keeper` inside the container, with its config pointing at the hive.
fn keeper(c: &SystemContainer, args: &[&str]) -> (bool, String) {
    let mut all = vec![
        "env",
        "RBEE_CONFIG=/etc/rbee/keeper.toml",
        "/usr/local/bin/rbee-keeper",
    ];
    all.extend_from_slice(args);
    c.exec(&all)
}

/// `rbee-keeper infer` of `model` there, which must succeed with an answer.
fn infer_there(c: &SystemContainer, model: &str, max_tokens: &str) {
    let (ok, out) = keeper(
        c,
        &[
            "infer",
            "--model",
            model,
            "--prompt",
            "Bees",
            "--max-tokens",
            max_tokens,
        ],
    );
    assert!(ok && !out.trim().is_empty(), "{out}");
}

/// The overall exposure `systemd-analyze security` gives `unit`, and its whole report.
fn exposure(c: &SystemContainer, unit: &str) -> (f64, String) {
    let (_, out) = c.exec(&["systemd-analyze", "security", "--no-pager", unit]);
    let level = out
        .lines()
        .find_map(|l| {
            l.split_once("Overall exposure level for")?
                .1
                .split(':')
                .nth(1)
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level for {unit}:\n{out}"));
    (level, out)
}

fn worker_units(c: &SystemContainer) -> Vec<String> {
    let (_, out) = c.systemctl(&["list-units", "--no-legend", "--plain", "rbee-worker@*"]);
    out.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|u| u.starts_with("rbee-worker@"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn install_system_runs_the_hive_as_rbee_with_sandboxed_workers_polkit_and_journald() {
    let Some(model) = model_and_worker() else {
        return;
    };
    let Some(c) = rbee_container_or_skip(&model) else {
        return;
    };
    let port = free_port();
    let ports = worker_ports(20, port);

    // What a Debian user does.
    let out = exec(
        &c,
        &[
            "/opt/rbee/rbee-keeper",
            "install",
            "--system",
            "--hive-port",
            &port.to_string(),
        ],
    );
    assert!(
        out.contains("49-rbee-hive-systemd-pre257.rules (systemd 252"),
        "Debian 12's systemd needs the pre-257 polkit rule:\n{out}"
    );
    exec(
        &c,
        &[
            "sh",
            "-c",
            &format!(
                "echo 'worker_ports = \"{ports}-{}\"' >> /etc/rbee/hive.toml && \
                 echo 'model_dirs = [\"/models\"]' >> /etc/rbee/hive.toml && \
                 printf '[nodes.localhost]\\nhive_url = \"http://127.0.0.1:{port}\"\\n' > /etc/rbee/keeper.toml",
                ports + 20
            ),
        ],
    );
    exec(&c, &["systemd-sysusers"]);
    exec(&c, &["systemd-tmpfiles", "--create", "rbee.conf"]);
    assert_eq!(
        exec(&c, &["stat", "-c", "%U:%G %a", "/var/lib/rbee"]).trim(),
        "rbee:rbee 750"
    );
    exec(&c, &["systemctl", "daemon-reload"]);
    let (ok, out) = c.systemctl(&["start", "rbee-hive"]);
    if !ok {
        let (_, journal) = c.exec(&["journalctl", "-u", "rbee-hive", "--no-pager", "-n", "40"]);
        panic!("systemctl start rbee-hive: {out}\n{journal}");
    }

    // The hive runs as rbee, not root.
    let pid = exec(
        &c,
        &["systemctl", "show", "-p", "MainPID", "--value", "rbee-hive"],
    );
    let uid = exec(&c, &["stat", "-c", "%u", &format!("/proc/{}", pid.trim())]);
    let rbee = exec(&c, &["id", "-u", "rbee"]);
    assert_eq!(uid.trim(), rbee.trim());
    // In a user namespace of its own (PrivateUsers=yes), and still able to start workers
    // over the bus below.
    let ns = |p: &str| exec(&c, &["readlink", &format!("/proc/{p}/ns/user")]);
    assert_ne!(
        ns(pid.trim()),
        ns("1"),
        "the hive has its own user namespace"
    );
    assert_ne!(uid.trim(), "0");
    let (hive_exposure, report) = exposure(&c, "rbee-hive.service");
    eprintln!("systemd-analyze security rbee-hive.service: {hive_exposure}");
    assert!(hive_exposure <= HIVE_EXPOSURE_MAX, "{report}");

    // A prompt through the keeper there: the hive (as rbee) starts a worker unit — polkit
    // allowed it — and the answer streams back.
    let name = model.file_name().unwrap().to_str().unwrap();
    let m = format!("file:///models/{name}");
    infer_there(&c, &m, "8");
    let units = worker_units(&c);
    assert_eq!(units.len(), 1, "{units:?}");
    let unit = &units[0];
    let props = exec(
        &c,
        &[
            "systemctl",
            "show",
            "-p",
            "DynamicUser,ProtectSystem,ProtectHome,PrivateTmp,NoNewPrivileges,Slice,PrivateUsers,PrivateDevices,ProtectProc,RestrictNamespaces,MemoryDenyWriteExecute,CapabilityBoundingSet",
            unit,
        ],
    );
    for expected in [
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "NoNewPrivileges=yes",
        "Slice=rbee-workers.slice",
        "PrivateUsers=yes",
        "PrivateDevices=yes",
        "ProtectProc=invisible",
        "RestrictNamespaces=yes",
        "MemoryDenyWriteExecute=yes",
        "CapabilityBoundingSet=\n",
    ] {
        assert!(props.contains(expected), "{expected} in:\n{props}");
    }
    let (worker_exposure, report) = exposure(&c, unit);
    eprintln!("systemd-analyze security {unit}: {worker_exposure}");
    assert!(worker_exposure <= WORKER_EXPOSURE_MAX, "{report}");

    // polkit: by name, rbee may stop a worker unit but no other unit.
    exec(&c, &["systemd-run", "--unit=not-rbee", "sleep", "600"]);
    let (ok, out) = c.exec(&[
        "runuser",
        "-u",
        "rbee",
        "--",
        "systemctl",
        "stop",
        "not-rbee.service",
    ]);
    assert!(!ok, "rbee stopped a unit that is not a worker: {out}");
    assert!(c.systemctl(&["is-active", "not-rbee.service"]).0);

    // The hive's journal, through the keeper: journald runs here.
    let (ok, log) = keeper(&c, &["logs", "--lines", "50"]);
    assert!(ok, "{log}");
    assert!(log.contains("rbee-hive"), "{log}");
    assert!(log.contains("rbee-hive ready"), "{log}");
    assert!(log.contains("supervisor chosen"), "{log}");

    // hive stop: the system unit, and its worker with it; hive start: back, answering.
    let (ok, out) = keeper(&c, &["hive", "stop"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("systemctl --system stop rbee-hive.service"),
        "{out}"
    );
    assert!(!c.systemctl(&["is-active", "rbee-hive"]).0);
    assert!(worker_units(&c).is_empty(), "{:?}", worker_units(&c));
    let (ok, out) = keeper(&c, &["hive", "start"]);
    assert!(ok, "{out}");
    let (ok, status) = keeper(&c, &["hive", "status"]);
    assert!(ok && status.contains("systemd-system"), "{status}");

    // systemctl restart (what nixos-rebuild switch does to a changed unit): the worker keeps
    // its process, and the new hive adopts it (a stop, above, stopped it).
    infer_there(&c, &m, "4");
    let unit = worker_units(&c).pop().expect("a worker again");
    let main_pid = |u: &str| {
        exec(&c, &["systemctl", "show", "-p", "MainPID", "--value", u])
            .trim()
            .to_owned()
    };
    let before = main_pid(&unit);
    let (ok, out) = c.systemctl(&["restart", "rbee-hive"]);
    assert!(ok, "{out}");
    assert_eq!(
        main_pid(&unit),
        before,
        "{unit} was restarted with the hive"
    );
    let (ok, list) = keeper(&c, &["workers", "list", "--json"]);
    assert!(ok, "{list}");
    let listed: serde_json::Value = list
        .find('[')
        .and_then(|i| serde_json::from_str(&list[i..]).ok())
        .unwrap_or_else(|| panic!("{list}"));
    assert_eq!(listed[0]["unit"], unit.as_str(), "not adopted: {list}");

    // And by name, rbee may stop a worker unit (what the hive does on shutdown).
    infer_there(&c, &m, "4");
    let (ok, out) = c.exec(&["runuser", "-u", "rbee", "--", "systemctl", "stop", &unit]);
    assert!(ok, "rbee may stop {unit}: {out}");
    assert!(!c.systemctl(&["is-active", &unit]).0);

    over_ssh(&c, port, &m);
}

/// The same system hive from this machine, as a registered node over real SSH (the
/// container's own sshd, on a port of its own): status, a prompt, the hive's journal,
/// `hive stop` and `hive start` — systemctl and journalctl run there.
fn over_ssh(c: &SystemContainer, hive_port: u16, model: &str) {
    let ssh_port = free_port();
    let keys = TempDir::new("container-ssh");
    let key = keys.join("id_ed25519");
    keygen(&key);
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    exec(
        c,
        &[
            "sh",
            "-c",
            &format!(
                "mkdir -p -m 700 /root/.ssh && echo '{}' > /root/.ssh/authorized_keys && \
                 printf 'Port {ssh_port}\\nListenAddress 127.0.0.1\\nPasswordAuthentication no\\n' \
                 > /etc/ssh/sshd_config.d/rbee-test.conf",
                public.trim()
            ),
        ],
    );
    exec(c, &["systemctl", "start", "ssh"]);
    let host_key = exec(c, &["cat", "/etc/ssh/ssh_host_ed25519_key.pub"]);
    let host_key: Vec<&str> = host_key.split_whitespace().take(2).collect();
    let known_hosts = keys.join("known_hosts");
    std::fs::write(
        &known_hosts,
        format!("[127.0.0.1]:{ssh_port} {}\n", host_key.join(" ")),
    )
    .unwrap();
    let k = Keeper::new(&known_hosts);
    let port = hive_port.to_string();
    let out = k.add_with("box", ssh_port, "root", &key, &["--hive-port", &port]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let ok = |args: &[&str]| {
        let out = k.run(args);
        assert_eq!(out.code, 0, "{args:?}: {}", out.stderr);
        out
    };
    let status = ok(&["hive", "status", "--node", "box"]).stdout;
    assert!(status.contains("systemd-system"), "{status}");
    let answer = ok(&[
        "infer",
        "--node",
        "box",
        "--model",
        model,
        "--prompt",
        "Bees",
        "--max-tokens",
        "4",
    ]);
    assert!(!answer.stdout.trim().is_empty());
    let log = ok(&["logs", "--node", "box", "--lines", "100"]).stdout;
    assert!(
        log.contains("rbee-hive ready"),
        "the journal over SSH:\n{log}"
    );
    let stop = ok(&["hive", "stop", "--node", "box"]);
    assert!(
        stop.stderr
            .contains("the hive on box stopped (systemctl --system stop rbee-hive.service)"),
        "{}",
        stop.stderr
    );
    assert!(!c.systemctl(&["is-active", "rbee-hive"]).0);
    assert!(worker_units(c).is_empty(), "{:?}", worker_units(c));
    ok(&["hive", "start", "--node", "box"]);
    assert!(c.systemctl(&["is-active", "rbee-hive"]).0);
}
