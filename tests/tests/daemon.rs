//! The daemon's own hardening (issue 10 items 16, 17): refused starts
//! change nothing, one daemon per namespace, and what a detached command
//! starts with.

use std::{fs, os::unix::fs::PermissionsExt as _, path::Path, process::Command};

use dnet_sandbox::*;

/// `dnet daemon` started in the sandbox's host namespace with its own
/// folders under `tag`, expected to be refused: its stderr.
fn refused_start(sb: &Sandbox, tag: &str, bpffs: &Path, extra: &[&str]) -> String {
    let dir = sb.dir.join(tag);
    let o = Command::new("nsenter")
        .arg(format!("--net={}", sb.host_netns_path().display()))
        .arg(dnet_bin())
        .arg("--socket")
        .arg(dir.join("dnet.sock"))
        .arg("daemon")
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--bpffs")
        .arg(bpffs)
        .args(extra)
        .output()
        .expect("run dnet daemon");
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(
        !o.status.success(),
        "{tag}: the start was not refused:\n{err}"
    );
    // Nothing made: no folder, no socket, no state, no pin.
    assert!(!dir.exists(), "{tag}: {} was made", dir.display());
    assert!(!bpffs.exists(), "{tag}: {} was made", bpffs.display());
    err
}

#[test]
fn a_second_daemon_in_the_same_namespace_is_refused() {
    let sb = Sandbox::new();
    sb.dnet_ok(&[
        "run", "-d", "--name", "x", "-p", "8080:80", "--", "sleep", "300",
    ]);
    let before = sb.snapshot();
    let other = sb.bpffs.with_file_name(format!("{}b", sb.name));
    let err = refused_start(&sb, "second", &other, &[]);
    assert!(err.contains("another dnet daemon"), "{err}");
    // The first one is untouched: it answers, and its links, pins, maps,
    // reserved ports and state are as they were.
    sb.dnet_ok(&["info"]);
    assert_eq!(sb.snapshot(), before, "the refused start changed something");
}

#[test]
fn bad_daemon_options_are_refused_and_leave_nothing() {
    let sb = Sandbox::without_daemon();
    let bpffs = sb.bpffs.clone();
    let err = refused_start(&sb, "natports", &bpffs, &["--nat-ports", "1024-65535"]);
    assert!(err.contains("ip_local_port_range"), "{err}");
    let err = refused_start(&sb, "gc", &bpffs, &["--ct-gc-interval", "0"]);
    assert!(err.contains("--ct-gc-interval"), "{err}");
    let err = refused_start(&sb, "timeout", &bpffs, &["--ct-timeout-udp", "99999999999"]);
    assert!(err.contains("--ct-timeout-udp"), "{err}");
    // A table size the kernel could not make is refused before any pinned
    // table of another size is let go.
    let err = refused_start(&sb, "ctsize", &bpffs, &["--ct-entries", "4294967295"]);
    assert!(err.contains("--ct-entries"), "{err}");
    // Limits beyond what they limit (the table's flows, the NAT ports).
    let err = refused_start(
        &sb,
        "perep",
        &bpffs,
        &["--ct-entries", "512", "--ct-flows-per-endpoint", "257"],
    );
    assert!(
        err.contains("--ct-flows-per-endpoint 257: expected 0 (no limit) to 256"),
        "{err}"
    );
    let err = refused_start(
        &sb,
        "perdest",
        &bpffs,
        &[
            "--nat-ports",
            "50000-50099",
            "--nat-ports-per-destination",
            "101",
        ],
    );
    assert!(
        err.contains("--nat-ports-per-destination 101: expected 0 (no limit) to 100"),
        "{err}"
    );
    // A folder that is not on a bpffs is never mounted over.
    let plain = sb.dir.join("plain");
    fs::create_dir_all(&plain).unwrap();
    let err = refused_start(&sb, "bpffs", &plain.join("pins"), &[]);
    assert!(err.contains("is not on a bpffs"), "{err}");
    assert!(
        mounts_under(&sb.dir).is_empty(),
        "{:?}",
        mounts_under(&sb.dir)
    );
    // Positive control: the same sandbox starts with sane options.
    let mut sb = sb;
    sb.start_daemon();
    sb.dnet_ok(&["info"]);
}

#[test]
fn a_detached_command_starts_clean_in_a_cgroup_of_its_own() {
    let mut sb = Sandbox::without_daemon();
    sb.set_daemon_env(&[("DNET_TEST_SECRET", "leaked")]);
    sb.start_daemon();
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&sb.state_dir()), 0o700, "state folder");
    sb.sleeper("x", &[]);
    let c = sb.container("x");
    let pid = c["pid"].as_u64().expect("a running pid");
    let daemon = sb.daemon_pid().expect("daemon pid");
    // Positive control: the daemon itself has the variable.
    let env_of = |pid: u64| fs::read(format!("/proc/{pid}/environ")).unwrap();
    let has_secret = |env: &[u8]| {
        env.split(|b| *b == 0)
            .any(|v| v.starts_with(b"DNET_TEST_SECRET="))
    };
    assert!(has_secret(&env_of(u64::from(daemon))), "control");
    assert!(!has_secret(&env_of(pid)), "the daemon's environment leaked");
    let cg = |pid: u64| {
        fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .unwrap()
            .lines()
            .find(|l| l.starts_with("0::"))
            .map(str::to_owned)
            .unwrap_or_default()
    };
    let id = c["id"].as_str().unwrap();
    // Under the daemon's own folder, named after its namespace: whoever
    // removes the namespace finds the cgroups it left.
    let ours = daemon_cgroup(&sb.host_netns_path()).expect("cgroup v2");
    let root = cgroup2_root().unwrap();
    let rel = ours.strip_prefix(&root).unwrap().join(id);
    assert!(
        cg(pid).ends_with(&rel.display().to_string()),
        "{} not in {}",
        cg(pid),
        rel.display()
    );
    assert_ne!(cg(pid), cg(u64::from(daemon)));
    let log = sb.state_dir().join("logs").join(format!("{id}.log"));
    assert_eq!(mode(&log), 0o600, "log");
    sb.dnet_ok(&["rm", "-f", "x"]);
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists()
            || wait_until(std::time::Duration::from_secs(5), || !Path::new(&format!(
                "/proc/{pid}"
            ))
            .exists()),
        "the command outlived its container"
    );
}

#[test]
fn a_foreground_container_is_owned_by_the_connecting_process_not_a_claimed_pid() {
    let sb = Sandbox::new();
    // A long-lived process the client claims as the owner.
    let mut other = Command::new("sleep").arg("300").spawn().expect("sleep");
    let (code, body) = sb.api_post(
        "/v1/containers",
        &serde_json::json!({"name": "owned", "owner_pid": other.id(), "command": ["x"]}),
    );
    assert_eq!(code, 201, "{body}");
    // The owner is curl, the process on the socket, which is gone already:
    // the daemon removes the container at its next reaping, while the
    // claimed process still runs.
    let gone = wait_until(std::time::Duration::from_secs(30), || {
        !sb.dnet_json(&["ps"])
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "owned")
    });
    let still = other.try_wait().unwrap().is_none();
    let _ = other.kill();
    let _ = other.wait();
    assert!(still, "control: the claimed owner ran all along");
    assert!(gone, "the container took its owner from the request body");
}
