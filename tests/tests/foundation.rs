//! The foundation: CLI, drivers none and host, predefined networks, bad
//! input, crash safety, two daemons side by side. Each test makes its own
//! sandbox and drives the real `dnet` binary.

use std::time::Duration;

use dnet_sandbox::{
    Sandbox, assert_consistent, ct, in_netns,
    leaks::{self, Run, Watch},
    ok, out, sh_ok, stdout, wait_until,
};
use serde_json::Value;

#[test]
fn none_network_has_only_loopback() {
    let sb = Sandbox::new();
    let out = sb.dnet_ok(&["run", "--network", "none", "--", "ip", "-o", "link"]);
    let names: Vec<&str> = out.lines().filter_map(|l| l.split(": ").nth(1)).collect();
    assert_eq!(names, ["lo"], "{out}");
    assert!(out.contains("UP"), "lo is up: {out}");
}

#[test]
fn host_network_runs_in_the_daemons_namespace() {
    let sb = Sandbox::new();
    let out = sb.dnet_ok(&["run", "--network", "host", "--", "ip", "-o", "link"]);
    let mut inside: Vec<String> = out
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap().to_owned())
        .collect();
    inside.sort();
    let mut host = sb.host_links();
    host.sort();
    assert_eq!(inside, host);
    assert!(inside.contains(&"eth0".to_owned()));
}

#[test]
fn the_commands_exit_code_is_dnets_and_the_container_goes() {
    let sb = Sandbox::new();
    for (net, code) in [("bridge", 7), ("none", 0), ("host", 3)] {
        let o = sb.dnet(&[
            "run",
            "--network",
            net,
            "--",
            "sh",
            "-c",
            &format!("exit {code}"),
        ]);
        assert_eq!(o.status.code(), Some(code), "{net}");
    }
    let o = sb.dnet(&["run", "--", "/no/such/program"]);
    assert_eq!(o.status.code(), Some(127));
    assert_eq!(
        sb.dnet_ok(&["ps", "-q"]),
        "",
        "foreground containers are removed"
    );
    assert!(sb.netns_files().is_empty());
}

#[test]
fn predefined_networks_exist_and_stay() {
    let sb = Sandbox::new();
    let nets = sb.dnet_json(&["network", "ls"]);
    let by_name = |n: &str| {
        nets.as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == n)
            .cloned()
    };
    let bridge = by_name("bridge").expect("bridge");
    assert_eq!(bridge["driver"], "bridge");
    assert_eq!(bridge["ipam"]["subnet"], "172.17.0.0/16");
    assert_eq!(bridge["ipam"]["gateway"], "172.17.0.1");
    assert_eq!(by_name("host").unwrap()["driver"], "host");
    assert_eq!(by_name("none").unwrap()["driver"], "none");
    for n in ["bridge", "host", "none"] {
        let e = sb.dnet_err(&["network", "rm", n]);
        assert!(
            e.contains("predefined network and cannot be removed"),
            "{e}"
        );
    }
}

#[test]
fn default_bridge_avoids_a_routed_range() {
    let mut sb = Sandbox::without_daemon();
    sh_ok(
        "ip",
        &[
            "-n",
            &sb.host_ns,
            "route",
            "add",
            "172.17.0.0/16",
            "via",
            "198.18.0.1",
        ],
    );
    sb.start_daemon();
    let bridge = sb.dnet_json(&["network", "inspect", "bridge"]);
    assert_eq!(bridge[0]["ipam"]["subnet"], "172.18.0.0/16");
    // A new network without --subnet takes the next free range.
    sb.dnet_ok(&["network", "create", "n1"]);
    assert_eq!(
        sb.dnet_json(&["network", "inspect", "n1"])[0]["ipam"]["subnet"],
        "172.19.0.0/16"
    );
}

#[test]
fn ipam_hands_out_the_lowest_free_address_and_never_twice() {
    let sb = Sandbox::new();
    sb.dnet_ok(&[
        "network",
        "create",
        "--subnet",
        "10.30.0.0/24",
        "--ip-range",
        "10.30.0.16/28",
        "n",
    ]);
    sb.dnet_ok(&[
        "run",
        "-d",
        "--name",
        "a",
        "--network",
        "n",
        "--",
        "sleep",
        "300",
    ]);
    sb.dnet_ok(&[
        "run",
        "-d",
        "--name",
        "b",
        "--network",
        "n",
        "--",
        "sleep",
        "300",
    ]);
    sb.dnet_ok(&[
        "run",
        "-d",
        "--name",
        "s",
        "--network",
        "n",
        "--ip",
        "10.30.0.200",
        "--",
        "sleep",
        "300",
    ]);
    let ip = |name: &str| sb.ip_of(name);
    assert_eq!(ip("a"), "10.30.0.16");
    assert_eq!(ip("b"), "10.30.0.17");
    assert_eq!(ip("s"), "10.30.0.200");
    sb.dnet_ok(&["rm", "-f", "a"]);
    sb.dnet_ok(&[
        "run",
        "-d",
        "--name",
        "c",
        "--network",
        "n",
        "--",
        "sleep",
        "300",
    ]);
    assert_eq!(ip("c"), "10.30.0.16", "a freed address is reused");
    // The container sees its address and Docker's MAC.
    let out = sb.dnet_ok(&["exec", "c", "--", "ip", "-j", "addr", "show", "eth0"]);
    let j: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j[0]["address"], "02:42:0a:1e:00:10");
    assert_eq!(j[0]["addr_info"][0]["local"], "10.30.0.16");
    assert_eq!(j[0]["addr_info"][0]["prefixlen"], 24);
}

/// Every bad input: a clear error, and nothing changed anywhere.
#[test]
fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let sb = Sandbox::new();
    // What the cases clash with.
    sb.dnet_ok(&["network", "create", "--subnet", "10.5.0.0/16", "net1"]);
    sb.dnet_ok(&["network", "create", "--subnet", "10.7.0.0/30", "tiny"]);
    sb.dnet_ok(&[
        "run",
        "-d",
        "--name",
        "c1",
        "--network",
        "net1",
        "--ip",
        "10.5.0.10",
        "--",
        "sleep",
        "300",
    ]);
    sb.dnet_ok(&[
        "run",
        "-d",
        "--name",
        "c2",
        "--network",
        "tiny",
        "--",
        "sleep",
        "300",
    ]);
    sb.dnet_ok(&[
        "run", "-d", "--name", "web", "-p", "8080:80", "--", "sleep", "300",
    ]);

    let cases: &[(&[&str], &str)] = &[
        (
            &["network", "create", "--subnet", "10.0.0.0/33", "x"],
            "invalid subnet \"10.0.0.0/33\"",
        ),
        (
            &["network", "create", "--subnet", "nonsense", "x"],
            "invalid subnet \"nonsense\"",
        ),
        (
            &["network", "create", "--subnet", "10.0.0.1/24", "x"],
            "host bits are set",
        ),
        (
            &["network", "create", "--subnet", "10.0.0.0/31", "x"],
            "/30 or shorter",
        ),
        (
            &[
                "network",
                "create",
                "--subnet",
                "10.0.0.0/24",
                "--gateway",
                "10.0.1.1",
                "x",
            ],
            "gateway 10.0.1.1 is not a usable address of subnet 10.0.0.0/24",
        ),
        (
            &[
                "network",
                "create",
                "--subnet",
                "10.0.0.0/24",
                "--gateway",
                "gw",
                "x",
            ],
            "invalid gateway \"gw\"",
        ),
        (
            &[
                "network",
                "create",
                "--subnet",
                "10.0.0.0/24",
                "--ip-range",
                "10.0.1.0/25",
                "x",
            ],
            "ip-range 10.0.1.0/25 is not inside subnet 10.0.0.0/24",
        ),
        (
            &["network", "create", "--gateway", "10.0.0.1", "x"],
            "need --subnet",
        ),
        (
            &["network", "create", "--subnet", "10.5.1.0/24", "x"],
            "overlaps 10.5.0.0/16 of network \"net1\"",
        ),
        (
            &["network", "create", "--subnet", "198.18.0.0/16", "x"],
            "overlaps the route to 198.18.0.0/24",
        ),
        (
            &["network", "create", "net1"],
            "network \"net1\" already exists",
        ),
        (
            &["network", "create", "bridge"],
            "network \"bridge\" already exists",
        ),
        (
            &["network", "create", "bad name"],
            "invalid network name \"bad name\"",
        ),
        (
            &["network", "create", "-d", "overlay", "x"],
            "unknown driver \"overlay\"",
        ),
        (
            &["network", "create", "-d", "host", "x"],
            "only one network with the host driver",
        ),
        (
            &["network", "create", "-o", "foo=bar", "x"],
            "unknown option \"foo\" for the bridge driver",
        ),
        (
            &["network", "create", "-o", "mtu=abc", "x"],
            "invalid mtu \"abc\"",
        ),
        (
            &["network", "create", "-o", "icc=maybe", "x"],
            "is not true or false",
        ),
        (
            &["network", "create", "-o", "novalue", "x"],
            "expected KEY=VALUE",
        ),
        (
            &["network", "rm", "net1"],
            "network net1 has active endpoints (containers: c1)",
        ),
        (
            &["network", "rm", "bridge"],
            "bridge is a predefined network",
        ),
        (&["network", "rm", "nosuch"], "network \"nosuch\" not found"),
        (
            &["network", "inspect", "nosuch"],
            "network \"nosuch\" not found",
        ),
        (
            &["network", "connect", "nosuch", "c1"],
            "network \"nosuch\" not found",
        ),
        (
            &["network", "connect", "net1", "nosuch"],
            "container \"nosuch\" not found",
        ),
        (
            &["network", "connect", "net1", "c1"],
            "already connected to network net1",
        ),
        (
            &["network", "connect", "host", "c1"],
            "cannot connect to the host network",
        ),
        (
            &["network", "connect", "net1", "--netns", "/nonexistent"],
            "/nonexistent is not a network namespace",
        ),
        (
            &["network", "disconnect", "bridge", "c1"],
            "container c1 is not connected to network bridge",
        ),
        (
            &["run", "--network", "nosuch", "--", "true"],
            "network \"nosuch\" not found",
        ),
        (
            &[
                "run",
                "--network",
                "net1",
                "--ip",
                "10.99.0.5",
                "--",
                "true",
            ],
            "address 10.99.0.5 is not a usable address of subnet 10.5.0.0/16",
        ),
        (
            &["run", "--network", "net1", "--ip", "10.5.0.1", "--", "true"],
            "address 10.5.0.1 is the network's gateway",
        ),
        (
            &[
                "run",
                "--network",
                "net1",
                "--ip",
                "10.5.0.10",
                "--",
                "true",
            ],
            "address 10.5.0.10 is already in use",
        ),
        (
            &["run", "--network", "net1", "--ip", "ten", "--", "true"],
            "invalid --ip \"ten\"",
        ),
        (
            &["run", "--network", "tiny", "--", "true"],
            "no free address left in 10.7.0.0/30",
        ),
        (
            &["run", "--name", "c1", "--", "true"],
            "container name \"c1\" is already in use",
        ),
        (
            &["run", "--name=-bad", "--", "true"],
            "invalid container name \"-bad\"",
        ),
        (
            &["run", "-p", "99999:80", "--", "true"],
            "invalid publish spec \"99999:80\"",
        ),
        (
            &["run", "-p", "80", "--", "true"],
            "invalid publish spec \"80\"",
        ),
        (
            &["run", "-p", "8000-8010:80", "--", "true"],
            "port ranges differ in length",
        ),
        (
            &["run", "-p", "8080:81", "--", "true"],
            "port 0.0.0.0:8080->81/tcp is already published by container web",
        ),
        (
            &["run", "-p", "9000:80", "-p", "9000:81", "--", "true"],
            "overlap",
        ),
        (
            &["run", "--network", "none", "-p", "9000:80", "--", "true"],
            "ports can only be published on a bridge network",
        ),
        (&["rm", "nosuch"], "container \"nosuch\" not found"),
        (
            &["rm", "c1"],
            "container c1 is running: stop it first or use `dnet rm -f`",
        ),
        (
            &["exec", "nosuch", "--", "true"],
            "container \"nosuch\" not found",
        ),
    ];
    for (args, want) in cases {
        let before = sb.snapshot();
        let err = sb.dnet_err(args);
        assert!(
            err.contains(want),
            "dnet {args:?}: expected {want:?} in {err:?}"
        );
        assert!(!err.contains("Error: Error"), "doubled prefix: {err}");
        let after = sb.snapshot();
        assert_eq!(before, after, "dnet {args:?} changed something");
    }
    // `dnet run` reports its own failures with 125, as `docker run` does.
    assert_eq!(
        sb.dnet(&["run", "--network", "nosuch", "--", "true"])
            .status
            .code(),
        Some(125)
    );
}

#[test]
fn networks_and_allocations_survive_kill_and_restart() {
    let mut sb = Sandbox::new();
    sb.dnet_ok(&["network", "create", "--subnet", "10.40.0.0/24", "n"]);
    sb.dnet_ok(&[
        "run",
        "-d",
        "--name",
        "a",
        "--network",
        "n",
        "--",
        "sleep",
        "300",
    ]);
    sb.dnet_ok(&["run", "-d", "--name", "b", "--", "sleep", "300"]);
    let before_nets = sb.dnet_ok(&["network", "ls"]);
    let before_ps = sb.dnet_ok(&["ps"]);
    sb.stop_daemon(libc::SIGKILL);
    sb.start_daemon();
    assert_eq!(sb.dnet_ok(&["network", "ls"]), before_nets);
    assert_eq!(sb.dnet_ok(&["ps"]), before_ps);
    assert_consistent(&sb);
    // Allocations persisted: the next container gets the next address.
    sb.dnet_ok(&[
        "run",
        "-d",
        "--name",
        "c",
        "--network",
        "n",
        "--",
        "sleep",
        "300",
    ]);
    assert_eq!(sb.container("c")["networks"][0]["ip"], "10.40.0.3");
}

/// Stops the daemon (SIGKILL, from inside: `DNET_CRASH_AT`) at each step
/// where a crash could split an operation: after its kernel objects are
/// made and before the commit, after a removal's commit and before its
/// teardown, between a veth's creation and its alias. After each restart
/// the operation is whole or absent, the kernel agrees with the state, and
/// the same operation then succeeds.
#[test]
fn an_interrupted_operation_is_whole_or_absent() {
    let mut sb = Sandbox::new();
    // What the removals act on.
    sb.dnet_ok(&["network", "create", "--subnet", "10.81.0.0/24", "gone"]);
    sb.dnet_ok(&["network", "create", "--subnet", "10.81.1.0/24", "side"]);
    sb.dnet_ok(&["run", "-d", "--name", "old", "--", "sleep", "300"]);
    sb.dnet_ok(&["network", "connect", "side", "old"]);
    sb.dnet_ok(&["run", "-d", "--name", "keep", "--", "sleep", "300"]);
    // A namespace of another runtime: dnet removes nothing of it but its
    // own links, so a veth cut short there must be found by the daemon.
    let ext = sb.add_netns("e");
    let ext_s = ext.to_str().unwrap().to_owned();
    let attach_ext = [
        "network", "connect", "bridge", "--netns", &ext_s, "--name", "ext",
    ];
    let new_net = ["network", "create", "--subnet", "10.81.2.0/24", "n"];
    let new_ctr = ["run", "-d", "--name", "c", "--", "sleep", "300"];
    let has_net = |sb: &Sandbox, n: &str| sb.dnet(&["network", "inspect", n]).status.success();
    let has_ctr = |sb: &Sandbox, c: &str| sb.dnet(&["exec", c, "--", "true"]).status.success();
    let nets_of = |sb: &Sandbox, c: &str| -> Vec<String> {
        sb.container(c)["networks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["network"].as_str().unwrap().to_owned())
            .collect()
    };
    let cases: &[(&str, &[&str])] = &[
        ("network-create:made", &new_net),
        ("container-create:made", &new_ctr),
        ("veth:created", &new_ctr),
        ("veth:created", &attach_ext),
        ("connect:made", &["network", "connect", "side", "keep"]),
        ("container-remove:committed", &["rm", "-f", "old"]),
        (
            "disconnect:committed",
            &["network", "disconnect", "bridge", "keep"],
        ),
        ("network-remove:committed", &["network", "rm", "gone"]),
    ];
    for (point, op) in cases {
        sb.stop_daemon(libc::SIGTERM);
        sb.set_daemon_env(&[("DNET_CRASH_AT", point)]);
        sb.start_daemon();
        let o = sb.dnet(op);
        assert!(!o.status.success(), "{point}: {op:?} answered: {o:?}");
        let status = sb
            .wait_daemon_exit(Duration::from_secs(30))
            .unwrap_or_else(|| panic!("{point}: the daemon did not stop there"));
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(libc::SIGKILL),
            "{point}: {status}\n{}",
            sb.log_tail(20)
        );
        sb.set_daemon_env(&[]);
        sb.start_daemon();
        assert_consistent(&sb);
        match *point {
            "network-create:made" => {
                assert!(!has_net(&sb, "n"), "{point}: half a network kept");
                sb.dnet_ok(&new_net);
                sb.dnet_ok(&["network", "rm", "n"]);
            }
            "veth:created" if op[0] == "network" => {
                assert!(!has_ctr(&sb, "ext"), "{point}: half an attachment kept");
                let links = in_netns(&ext, "ip", &["-o", "link"]);
                assert!(ok(&links), "{}", out(&links));
                assert_eq!(
                    stdout(&links).lines().count(),
                    1,
                    "{point}: {}",
                    out(&links)
                );
                sb.dnet_ok(op);
                assert!(has_ctr(&sb, "ext"));
                sb.dnet_ok(&["network", "disconnect", "bridge", "ext"]);
            }
            "container-create:made" | "veth:created" => {
                assert!(!has_ctr(&sb, "c"), "{point}: half a container kept");
                sb.dnet_ok(&new_ctr);
                let o = sb.conntest_in("c", &["ping", "172.17.0.1"]);
                assert!(
                    o.status.success(),
                    "{point}: made again, it reaches its gateway"
                );
                sb.dnet_ok(&["rm", "-f", "c"]);
            }
            "connect:made" => {
                assert_eq!(nets_of(&sb, "keep"), ["bridge"], "{point}");
                sb.dnet_ok(op);
                assert_eq!(nets_of(&sb, "keep"), ["bridge", "side"], "{point}");
            }
            "container-remove:committed" => {
                assert!(!has_ctr(&sb, "old"), "{point}: removed, then back");
            }
            "disconnect:committed" => {
                assert_eq!(nets_of(&sb, "keep"), ["side"], "{point}");
            }
            "network-remove:committed" => {
                assert!(!has_net(&sb, "gone"), "{point}: removed, then back");
                sb.dnet_ok(&["network", "create", "--subnet", "10.81.0.0/24", "gone"]);
            }
            _ => unreachable!(),
        }
        assert_consistent(&sb);
    }
}

/// `network disconnect` and `rm -f` answer once the removal is recorded
/// and the endpoint is out of the datapath; the veth pair and its pins go
/// in the background (`DNET_HOLD_AT` holds that work here for good). A
/// daemon killed before it finished leaves them, and its next start
/// removes them.
#[test]
fn a_removal_cut_short_by_a_kill_is_finished_by_the_next_start() {
    let mut sb = Sandbox::without_daemon();
    sb.set_daemon_env(&[("DNET_HOLD_AT", "reaper:remove")]);
    sb.start_daemon();
    let ext = sb.add_netns("e");
    let ext_s = ext.to_str().unwrap().to_owned();
    let attach = [
        "network", "connect", "bridge", "--netns", &ext_s, "--name", "ext",
    ];
    sb.dnet_ok(&attach);
    sb.dnet_ok(&["run", "-d", "--name", "c", "--", "sleep", "300"]);
    let veth = sb.container("ext")["networks"][0]["host_ifname"]
        .as_str()
        .expect("a host-side veth")
        .to_owned();

    sb.dnet_ok(&["network", "disconnect", "bridge", "ext"]);
    sb.dnet_ok(&["rm", "-f", "c"]);
    // Recorded and answered, the pairs not yet removed.
    assert_eq!(sb.state()["containers"], serde_json::json!({}));
    assert_eq!(sb.dnet_json(&["info"])["pending_removals"], 2);
    assert!(sb.host_links().contains(&veth), "{:?}", sb.host_links());
    assert!(
        sb.veth_programs(&veth).0.is_some(),
        "its programs stay until the pair goes"
    );
    let links = in_netns(&ext, "ip", &["-o", "link"]);
    assert_eq!(stdout(&links).lines().count(), 2, "{}", out(&links));

    sb.stop_daemon(libc::SIGKILL);
    sb.set_daemon_env(&[]);
    sb.start_daemon();
    assert_consistent(&sb);
    assert!(!sb.host_links().contains(&veth));
    let links = in_netns(&ext, "ip", &["-o", "link"]);
    assert_eq!(stdout(&links).lines().count(), 1, "{}", out(&links));
    // The namespace attaches again as eth0, and detaches.
    sb.dnet_ok(&attach);
    let o = in_netns(&ext, &ct(), &["ping", "172.17.0.1"]);
    assert!(
        ok(&o),
        "attached again, it reaches its gateway: {}",
        out(&o)
    );
    sb.dnet_ok(&["network", "disconnect", "bridge", "ext"]);
    assert_consistent(&sb);
}

/// An attach into a namespace whose old interface is still being removed
/// waits for that removal (the old eth0 holds the name the new one takes),
/// without the engine's lock: the daemon answers and works meanwhile. The
/// removal is held (`DNET_HOLD_WHILE`) until the test has seen the attach
/// wait, so a quick reaper cannot make it pass. A removal that never ends
/// fails the attach after `--removal-wait`, with a clear error and nothing
/// made.
#[test]
fn an_attach_waits_for_the_removal_in_its_namespace_while_the_daemon_answers() {
    let mut sb = Sandbox::without_daemon();
    let held = sb.dir.join("hold");
    std::fs::write(&held, "").unwrap();
    let held_s = held.to_str().unwrap().to_owned();
    sb.set_daemon_env(&[
        ("DNET_HOLD_AT", "reaper:remove"),
        ("DNET_HOLD_WHILE", &held_s),
    ]);
    // Far longer than the test needs: the attach below must not give up.
    sb.set_daemon_args(&["--removal-wait", "600"]);
    sb.start_daemon();
    let ext = sb.add_netns("e");
    let ext_s = ext.to_str().unwrap().to_owned();
    let attach = [
        "network", "connect", "bridge", "--netns", &ext_s, "--name", "ext",
    ];
    sb.dnet_ok(&attach);
    sb.dnet_ok(&["network", "disconnect", "bridge", "ext"]);
    assert_eq!(sb.dnet_json(&["info"])["pending_removals"], 1);

    let mut again = std::process::Command::new(dnet_sandbox::dnet_bin())
        .arg("--socket")
        .arg(sb.socket())
        .args(attach)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The daemon answers while the attach waits, and says it waits.
    let mut last = Value::Null;
    let waits = wait_until(Duration::from_secs(60), || {
        last = sb.dnet_json(&["info"]);
        last["removal_waits"] == 1
    });
    assert!(waits, "the attach does not wait for the removal: {last}");
    // Other work goes on meanwhile.
    sb.dnet_ok(&["network", "create", "--subnet", "10.82.0.0/24", "other"]);
    assert!(
        again.try_wait().unwrap().is_none(),
        "the attach ended while the removal was held"
    );
    let links = in_netns(&ext, "ip", &["-o", "link"]);
    assert_eq!(stdout(&links).lines().count(), 2, "{}", out(&links));

    // The removal ends; the attach then makes the new eth0.
    std::fs::remove_file(&held).unwrap();
    let o = again.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", out(&o));
    let o = in_netns(&ext, &ct(), &["ping", "172.17.0.1"]);
    assert!(
        ok(&o),
        "attached again, it reaches its gateway: {}",
        out(&o)
    );
    assert_consistent(&sb);

    // A removal that never ends (held for good): the attach fails after
    // --removal-wait, with nothing made.
    sb.stop_daemon(libc::SIGTERM);
    sb.set_daemon_env(&[("DNET_HOLD_AT", "reaper:remove")]);
    sb.set_daemon_args(&["--removal-wait", "1"]);
    sb.start_daemon();
    sb.dnet_ok(&["network", "disconnect", "bridge", "ext"]);
    let err = sb.dnet_err(&attach);
    assert!(
        err.contains("still under way after 1s") && err.contains(&ext_s),
        "{err}"
    );
    assert_eq!(sb.state()["containers"], serde_json::json!({}));
    let links = in_netns(&ext, "ip", &["-o", "link"]);
    assert_eq!(stdout(&links).lines().count(), 2, "{}", out(&links));
    sb.dnet_ok(&["network", "rm", "other"]);
    // The next start removes the old pair; the namespace attaches again.
    sb.stop_daemon(libc::SIGKILL);
    sb.set_daemon_env(&[]);
    sb.set_daemon_args(&[]);
    sb.start_daemon();
    sb.dnet_ok(&attach);
    sb.dnet_ok(&["network", "disconnect", "bridge", "ext"]);
    assert_consistent(&sb);
}

#[test]
fn two_daemons_run_side_by_side() {
    let mut a = Sandbox::new();
    let b = Sandbox::new();
    // The same address and the same published port in both; a's container
    // serves on 80, b's on 81 only.
    for (sb, port) in [(&a, 80), (&b, 81)] {
        let spec = format!("8080:{port}");
        let port_s = port.to_string();
        sb.dnet_ok(&[
            "run",
            "-d",
            "--name",
            "x",
            "-p",
            &spec,
            "--",
            &ct(),
            "serve",
            "tcp",
            &port_s,
        ]);
        sb.wait_server("x", "tcp", port);
    }
    for sb in [&a, &b] {
        let ps = sb.dnet_json(&["ps"]);
        assert_eq!(
            ps.as_array().unwrap().len(),
            1,
            "each daemon sees only its own"
        );
        assert_eq!(ps[0]["networks"][0]["ip"], "172.17.0.2");
        let o = sb.conntest_in("x", &["ping", "172.17.0.1"]);
        assert!(ok(&o), "{}", out(&o));
        assert!(
            sb.pins().contains(&"host/sock_connect4".to_owned()),
            "{:?}",
            sb.pins()
        );
    }
    // Both daemons' socket hooks sit on the one cgroup v2 root that every
    // namespace shares, and each must act in its own namespace only: were
    // a's hook to act in b's namespace, 127.0.0.1:8080 there would lead to
    // 172.17.0.2:80, where b's container does not listen (and b's to port
    // 81 in a's).
    let root = leaks::machine_view(&Watch::default())
        .unwrap()
        .cgroup_programs;
    for sb in [&a, &b] {
        let id = dnet_sandbox::bpf::link_prog_id(&sb.bpffs.join("host/sock_connect4")).unwrap();
        assert!(
            root.contains(&("connect4".to_owned(), id)),
            "{}'s hook {id} on the cgroup root: {root:?}",
            sb.name
        );
    }
    let host_to_8080 = |sb: &Sandbox| sb.in_host(&ct(), &["tcp", "127.0.0.1:8080"]);
    for sb in [&a, &b] {
        let o = host_to_8080(sb);
        assert!(ok(&o), "{}: {}", sb.name, out(&o));
    }
    // With a's daemon stopped (its pinned hooks stay, as its forwarding
    // does), b's host still reaches its own container.
    a.stop_daemon(libc::SIGTERM);
    let o = host_to_8080(&b);
    assert!(ok(&o), "{}", out(&o));
}

/// The leak check of `cargo xtask test` sees what dnet could leave behind:
/// a container namespace bind-mounted under a sandbox folder (which keeps
/// its links alive and which `ip netns list` does not show), a namespace,
/// and a process in it.
#[test]
fn the_leak_check_sees_a_leaked_container_namespace() {
    let mut sb = Sandbox::without_daemon();
    let ns = sb.add_netns("c");
    let nsdir = sb.dir.join("state/netns");
    std::fs::create_dir_all(&nsdir).unwrap();
    let nsfile = nsdir.join("0123abcd");
    std::fs::write(&nsfile, "").unwrap();
    sh_ok(
        "mount",
        &["--bind", ns.to_str().unwrap(), nsfile.to_str().unwrap()],
    );
    sb.spawn_in(&ns, "sleep", &["600"]);
    // Until nsenter has made itself `sleep`, the pid names nsenter.
    assert!(wait_until(Duration::from_secs(5), || {
        dnet_sandbox::pids_in_netns(&ns).first().is_some_and(|p| {
            std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "sleep")
        })
    }));
    let sleeper = dnet_sandbox::pids_in_netns(&ns)[0];
    // A run of its own, whose only pid is this test process.
    let run = Run {
        dir: std::env::temp_dir().join(format!("dnet-run-check-{}", std::process::id())),
        bins: Vec::new(),
    };
    std::fs::create_dir_all(run.dir.join("pids")).unwrap();
    std::fs::write(
        run.dir.join("pids").join(std::process::id().to_string()),
        "",
    )
    .unwrap();
    let found = run.leftovers(&Watch::default(), &[]);
    let _ = sh_ok("umount", &[nsfile.to_str().unwrap()]);
    let _ = std::fs::remove_dir_all(&run.dir);
    let found = found.unwrap();
    for want in [
        format!("nsfs mount {}", nsfile.display()),
        format!("nsfs mount {}", ns.display()),
        sb.dir.display().to_string(),
        ns.display().to_string(),
        format!("process {sleeper} (sleep, "),
    ] {
        assert!(
            found.iter().any(|f| f.starts_with(&want)),
            "{want} in {found:#?}"
        );
    }
    // Another run's sandbox (a pid not recorded) is not this run's.
    assert!(!found.iter().any(|f| f.contains("dnt1x")), "{found:#?}");
}

#[test]
fn what_a_killed_run_left_is_reaped_by_the_next() {
    // A run that died without its Drop: its pid is gone, its namespace
    // (with a process in it), a mount of that namespace under its folder
    // and its bpffs folder are still there.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let pid = gone.id();
    gone.wait().unwrap();
    let name = format!("dnt{pid}x0");
    // Its names count as this run's for the leak check.
    dnet_sandbox::leaks::record_pid(pid);
    let ns = format!("{name}h");
    let dir = std::env::temp_dir().join(&name);
    let bpffs = std::path::Path::new("/sys/fs/bpf").join(&name);
    sh_ok("ip", &["netns", "add", &ns]);
    let mut lingering = std::process::Command::new("ip")
        .args(["netns", "exec", &ns, "sleep", "600"])
        .spawn()
        .unwrap();
    let netns_of = |pid: u32| std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
    let ours = netns_of(std::process::id());
    assert!(wait_until(Duration::from_secs(5), || netns_of(
        lingering.id()
    ) != ours));
    std::fs::create_dir_all(dir.join("state/netns")).unwrap();
    let nsfile = dir.join("state/netns/c1");
    std::fs::write(&nsfile, "").unwrap();
    sh_ok(
        "mount",
        &[
            "--bind",
            &format!("/run/netns/{ns}"),
            nsfile.to_str().unwrap(),
        ],
    );
    std::fs::create_dir_all(bpffs.join("maps")).unwrap();
    let live = Sandbox::without_daemon();

    // Only what this test made (the dead run's and a live sandbox): other
    // leftovers are the leak check's.
    let removed =
        dnet_sandbox::reap_stale_where(|n| n.starts_with(&name) || n.starts_with(&live.name));

    assert!(removed.contains(&format!("netns {ns}")), "{removed:?}");
    assert!(!std::path::Path::new(&format!("/run/netns/{ns}")).exists());
    assert!(!dir.exists() && !bpffs.exists(), "{removed:?}");
    assert!(dnet_sandbox::mounts_under(&dir).is_empty());
    assert!(
        wait_until(Duration::from_secs(5), || matches!(
            lingering.try_wait(),
            Ok(Some(_))
        )),
        "the process in the stale namespace is killed"
    );
    // A sandbox whose run is alive is left alone.
    assert!(
        !removed.iter().any(|r| r.contains(&live.name)),
        "{removed:?}"
    );
    assert!(live.host_netns_path().exists() && live.dir.exists());
}
