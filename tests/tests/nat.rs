//! North-south in eBPF: outbound NAT, published ports, hairpin and host
//! access, with the datapath's own conntrack; servers in the world
//! namespace, real traffic, the real `dnet` binary.

use std::{process::Command, time::Duration};

use dnet_sandbox::{
    Sandbox, UPLINK_IP, WORLD_IP, ct, in_netns, ok, out, pids_in_netns, sh_ok, stdout,
    wait_listening, wait_until,
};

/// Starts conntest servers in the world namespace.
fn world_servers(sb: &mut Sandbox, tcp: &[u16], udp: &[u16]) {
    let w = sb.world_netns_path();
    for p in tcp {
        sb.spawn_in(&w, &ct(), &["serve", "tcp", &p.to_string()]);
    }
    for p in udp {
        sb.spawn_in(&w, &ct(), &["serve", "udp", &p.to_string()]);
    }
    // Ready when they listen (UDP ones too: a datagram sent before the
    // bind is lost), and a host-side client gets an answer.
    for p in tcp {
        wait_listening(&w, "tcp", *p);
        let a = format!("{WORLD_IP}:{p}");
        assert!(wait_until(Duration::from_secs(5), || ok(
            &sb.in_host(&ct(), &["tcp", &a])
        )));
    }
    for p in udp {
        wait_listening(&w, "udp", *p);
    }
}

/// The name of the nftables table [`track_in_kernel`] adds.
const PROBE: &str = "dnetprobe";

/// Turns the kernel's conntrack on in the host namespace: it tracks
/// nothing in a namespace where no rule needs it, so without this an empty
/// `conntrack -L` would prove nothing. Checks first that dnet made no
/// netfilter rule; call it before the flows under test.
fn track_in_kernel(sb: &Sandbox) {
    let nft = sb.in_host("nft", &["list", "ruleset"]);
    assert!(ok(&nft), "{}", out(&nft));
    assert_eq!(stdout(&nft), "", "no nftables rules in the host namespace");
    let rules = format!(
        "table ip {PROBE} {{ chain pre {{ type filter hook prerouting priority 0; ct state new counter; }}; \
         chain out {{ type filter hook output priority 0; ct state new counter; }}; }}"
    );
    let o = sb.in_host("nft", &[&rules]);
    assert!(ok(&o), "{}", out(&o));
}

/// No netfilter rule in the host namespace but the probe of
/// [`track_in_kernel`], and no kernel conntrack entry that names any of
/// `dnet_flows` (addresses and ports of dnet's flows): the NAT happened in
/// eBPF. A flow of the host's own to the world's TCP server at
/// `host_flow_port` shows first that the kernel's table lists what does
/// pass its stack.
fn assert_no_netfilter(sb: &Sandbox, host_flow_port: u16, dnet_flows: &[&str]) {
    let nft = sb.in_host("nft", &["list", "tables"]);
    assert!(ok(&nft), "{}", out(&nft));
    assert_eq!(stdout(&nft), format!("table ip {PROBE}"), "only the probe");
    let o = sb.in_host(&ct(), &["tcp", &format!("{WORLD_IP}:{host_flow_port}")]);
    assert!(ok(&o), "the host's own flow: {}", out(&o));
    let o = sb.in_host("conntrack", &["-L"]);
    assert!(ok(&o), "conntrack -L: {}", out(&o));
    let listing = stdout(&o);
    assert!(
        listing.lines().any(
            |l| l.contains(&format!("src={UPLINK_IP} dst={WORLD_IP} sport="))
                && l.contains(&format!("dport={host_flow_port} "))
        ),
        "the kernel lists the host's own flow: {listing}"
    );
    for f in dnet_flows {
        assert!(
            !listing.contains(f),
            "kernel conntrack holds dnet's flows ({f}): {listing}"
        );
    }
}

#[test]
fn containers_reach_the_world_as_the_uplink_address() {
    let mut sb = Sandbox::new();
    world_servers(&mut sb, &[80, 81], &[53]);
    track_in_kernel(&sb);
    sb.sleeper("a", &[]);
    let seen = |o: std::process::Output| {
        assert!(ok(&o), "{}", out(&o));
        stdout(&o)
    };
    let tcp = seen(sb.conntest_in("a", &["tcp", &format!("{WORLD_IP}:80")]));
    assert!(
        tcp.starts_with(&format!("{UPLINK_IP}:")),
        "the world sees the uplink: {tcp}"
    );
    let udp = seen(sb.conntest_in("a", &["udp", &format!("{WORLD_IP}:53")]));
    assert!(udp.starts_with(&format!("{UPLINK_IP}:")), "{udp}");
    seen(sb.conntest_in("a", &["ping", &WORLD_IP.to_string()]));
    // The flows are in dnet's table, translated to the uplink.
    let f = sb.flows();
    for proto in ["tcp", "udp", "icmp"] {
        let x = f
            .iter()
            .find(|x| x["proto"] == proto)
            .unwrap_or_else(|| panic!("no {proto} flow: {f:?}"));
        assert_eq!(x["kind"], "snat");
        assert!(
            x["original"]["src"]
                .as_str()
                .unwrap()
                .starts_with("172.17.0.2")
        );
        assert!(
            x["translated"]["src"]
                .as_str()
                .unwrap()
                .starts_with(&UPLINK_IP.to_string())
        );
    }
    let s = sb.dnet_json(&["stats"]);
    assert!(
        s["endpoints"][0]["translated"].as_u64().unwrap() >= 6,
        "{s}"
    );
    assert_no_netfilter(&sb, 81, &["172.17.", "dport=80 ", "dport=53 ", "type=8 "]);
}

/// Datagrams larger than the uplink's MTU (1,500) cross the NAT in
/// fragments, both ways: UDP out and back, a big ping, and a published
/// UDP port from the world with an answer as big.
#[test]
fn datagrams_larger_than_the_mtu_cross_the_nat_in_fragments_both_ways() {
    let mut sb = Sandbox::new();
    let w = sb.world_netns_path();
    sb.spawn_in(&w, &ct(), &["serve", "udp-echo", "7"]);
    wait_listening(&w, "udp", 7);
    sb.sleeper("a", &[]);
    let world = format!("{WORLD_IP}:7");
    let o = sb.conntest_in("a", &["echo", &world, "--size", "4000"]);
    assert!(ok(&o), "a -> the world and back: {}", out(&o));
    let o = sb.conntest_in("a", &["ping", &WORLD_IP.to_string(), "--size", "3000"]);
    assert!(ok(&o), "a big ping: {}", out(&o));
    let ctb = ct();
    sb.dnet_ok(&[
        "run",
        "-d",
        "--name",
        "e",
        "-p",
        "7007:7/udp",
        "--",
        &ctb,
        "serve",
        "udp-echo",
        "7",
    ]);
    sb.wait_server("e", "udp", 7);
    let o = sb.in_world(
        &ct(),
        &["echo", &format!("{UPLINK_IP}:7007"), "--size", "6000"],
    );
    assert!(
        ok(&o),
        "the world -> e's published port and back: {}",
        out(&o)
    );
    for c in ["a", "e"] {
        assert_eq!(sb.drops(c, "fragment"), 0, "{c}");
    }
    // One flow each (the fragments of a datagram follow its first).
    let f = sb.flows();
    assert_eq!(f.iter().filter(|x| x["proto"] == "udp").count(), 2, "{f:?}");
}

#[test]
fn published_ports_reach_the_container_with_the_clients_address() {
    let mut sb = Sandbox::new();
    world_servers(&mut sb, &[81], &[]);
    track_in_kernel(&sb);
    let ctb = ct();
    sb.dnet_ok(&[
        "run", "-d", "--name", "web", "-p", "8080:80", "--", &ctb, "serve", "tcp", "80",
    ]);
    sb.dnet_ok(&[
        "run",
        "-d",
        "--name",
        "dns",
        "-p",
        "5353:53/udp",
        "--",
        &ctb,
        "serve",
        "udp",
        "53",
    ]);
    sb.dnet_ok(&[
        "run",
        "-d",
        "--name",
        "many",
        "-p",
        "9000-9004:7000-7004",
        "--",
        "sh",
        "-c",
        &format!("for p in 7000 7001 7002 7003 7004; do {ctb} serve tcp $p & done; wait"),
    ]);
    sb.wait_server("dns", "udp", 53);
    for p in 7000..=7004 {
        sb.wait_server("many", "tcp", p);
    }
    sb.dnet_ok(&[
        "run",
        "-d",
        "--name",
        "bound",
        "-p",
        &format!("{UPLINK_IP}:8081:80"),
        "--",
        &ctb,
        "serve",
        "tcp",
        "80",
    ]);
    let w = |args: &[&str]| sb.in_world(&ctb, args);
    let up = UPLINK_IP.to_string();
    assert!(wait_until(Duration::from_secs(5), || ok(&w(&[
        "tcp",
        &format!("{up}:8080")
    ]))));
    let o = w(&["tcp", &format!("{up}:8080")]);
    assert!(
        stdout(&o).starts_with(&format!("{WORLD_IP}:")),
        "the container sees the client: {}",
        out(&o)
    );
    let o = w(&["udp", &format!("{up}:5353")]);
    assert!(
        ok(&o) && stdout(&o).starts_with(&format!("{WORLD_IP}:")),
        "{}",
        out(&o)
    );
    for p in 9000..=9004 {
        assert!(
            wait_until(Duration::from_secs(5), || ok(&w(&[
                "tcp",
                &format!("{up}:{p}")
            ]))),
            "range port {p}"
        );
    }
    assert!(
        ok(&w(&["tcp", &format!("{up}:8081")])),
        "bound to the uplink address"
    );
    // An unpublished port is the host's (nothing listens: refused).
    let o = w(&["tcp", &format!("{up}:8099"), "--timeout", "1"]);
    assert!(!ok(&o) && out(&o).contains("refused"), "{}", out(&o));
    let f = sb.flows();
    assert!(
        f.iter()
            .any(|x| x["kind"] == "dnat" && x["translated"]["dst"] == "172.17.0.2:80"),
        "{f:?}"
    );
    // Removing the container removes its ports and its flows.
    sb.dnet_ok(&["rm", "-f", "web"]);
    let o = w(&["tcp", &format!("{up}:8080"), "--timeout", "1"]);
    assert!(!ok(&o), "unpublished with its container");
    assert!(
        !sb.flows()
            .iter()
            .any(|x| x["translated"]["dst"] == "172.17.0.2:80")
    );
    assert_no_netfilter(
        &sb,
        81,
        &["172.17.", "dport=5353 ", "dport=9000 ", "dport=8081 "],
    );
}

#[test]
fn hairpin_reaches_a_published_port_from_containers() {
    let sb = Sandbox::new();
    let ctb = ct();
    sb.dnet_ok(&[
        "run", "-d", "--name", "web", "-p", "8080:80", "--", &ctb, "serve", "tcp", "80",
    ]);
    sb.dnet_ok(&["network", "create", "--subnet", "10.20.0.0/24", "other"]);
    sb.sleeper("client", &["--network", "other"]);
    let up = UPLINK_IP.to_string();
    let target = format!("{up}:8080");
    assert!(
        wait_until(Duration::from_secs(5), || ok(
            &sb.conntest_in("web", &["tcp", &target])
        )),
        "its own port"
    );
    let o = sb.conntest_in("client", &["tcp", &target]);
    assert!(
        ok(&o),
        "another container's port, from another network: {}",
        out(&o)
    );
    assert!(
        stdout(&o).starts_with("172.17.0.1:"),
        "the backend sees its gateway: {}",
        out(&o)
    );
    assert!(sb.flows().iter().any(|x| x["kind"] == "hairpin"));
}

#[test]
fn the_host_reaches_published_ports_without_a_proxy_and_other_namespaces_are_left_alone() {
    let mut sb = Sandbox::new();
    let ctb = ct();
    sb.dnet_ok(&[
        "run", "-d", "--name", "web", "-p", "8080:80", "--", &ctb, "serve", "tcp", "80",
    ]);
    sb.dnet_ok(&[
        "run",
        "-d",
        "--name",
        "dns",
        "-p",
        "5353:53/udp",
        "--",
        &ctb,
        "serve",
        "udp",
        "53",
    ]);
    sb.dnet_ok(&[
        "run",
        "-d",
        "--name",
        "local",
        "-p",
        "127.0.0.1:8082:80",
        "--",
        &ctb,
        "serve",
        "tcp",
        "80",
    ]);
    sb.wait_server("dns", "udp", 53);
    let h = |args: &[&str]| sb.in_host(&ctb, args);
    let up = UPLINK_IP.to_string();
    for a in [
        format!("{up}:8080"),
        "127.0.0.1:8080".to_owned(),
        "127.0.0.1:8082".to_owned(),
    ] {
        assert!(
            wait_until(Duration::from_secs(5), || ok(&h(&["tcp", &a]))),
            "host to {a}"
        );
    }
    let o = h(&["udp", "127.0.0.1:5353"]);
    assert!(
        ok(&o),
        "host UDP to 127.0.0.1, answer read as from the port: {}",
        out(&o)
    );
    // No proxy process: the daemon is the only process of the host
    // namespace (the containers' servers run in their own). No
    // route_localnet.
    assert_eq!(
        pids_in_netns(&sb.host_netns_path()),
        [sb.daemon_pid().unwrap()],
        "processes in the host namespace"
    );
    let rl = sb.in_host("cat", &["/proc/sys/net/ipv4/conf/all/route_localnet"]);
    assert_eq!(stdout(&rl), "0");
    // A 127.0.0.1-only port is not reachable from the world, where a port
    // published on all addresses is; the host itself answers (nothing
    // listens: refused).
    let o = sb.in_world(&ctb, &["tcp", &format!("{up}:8080")]);
    assert!(
        ok(&o),
        "the world reaches a port on all addresses: {}",
        out(&o)
    );
    let o = sb.in_world(&ctb, &["tcp", &format!("{up}:8082"), "--timeout", "1"]);
    assert!(
        !ok(&o) && out(&o).contains("refused"),
        "127.0.0.1:8082 must not be reachable from the world: {}",
        out(&o)
    );
    // The socket hook sits on the machine-wide cgroup, but acts only in the
    // daemon's namespace: in the world namespace, 127.0.0.1:8080 is the
    // world's own (a server of its own answers; no container is involved).
    let w = sb.world_netns_path();
    sb.spawn_in(&w, &ctb, &["serve", "tcp", "127.0.0.1:8080"]);
    assert!(wait_until(Duration::from_secs(5), || ok(&in_netns(
        &w,
        &ctb,
        &["tcp", "127.0.0.1:8080"]
    ))));
    let o = in_netns(&w, &ctb, &["tcp", "127.0.0.1:8080"]);
    assert!(
        stdout(&o).starts_with("127.0.0.1:"),
        "left alone: {}",
        out(&o)
    );
    // And in the machine's own namespace too: its own loopback answers,
    // with a refusal when nothing listens there (a hook acting there would
    // send the connection to a container address the machine cannot
    // reach: a time-out or an unreachable, not a refusal).
    let o = Command::new(&ctb)
        .args(["tcp", "127.0.0.1:8080", "--timeout", "1"])
        .output()
        .unwrap();
    let listens = std::net::TcpStream::connect_timeout(
        &"127.0.0.1:8080".parse().unwrap(),
        Duration::from_secs(1),
    )
    .is_ok();
    assert!(
        ok(&o) == listens && (listens || out(&o).contains("refused")),
        "the machine's own namespace is left alone: {}",
        out(&o)
    );
}

#[test]
fn publishing_a_busy_or_taken_port_is_refused_and_changes_nothing() {
    let mut sb = Sandbox::new();
    let h = sb.host_netns_path();
    sb.spawn_in(&h, &ct(), &["serve", "tcp", "7777"]);
    assert!(wait_until(Duration::from_secs(5), || ok(
        &sb.in_host(&ct(), &["tcp", "127.0.0.1:7777"])
    )));
    sb.dnet_ok(&[
        "run", "-d", "--name", "web", "-p", "8080:80", "--", "sleep", "300",
    ]);
    sb.dnet_ok(&[
        "network",
        "create",
        "--internal",
        "--subnet",
        "10.21.0.0/24",
        "closed",
    ]);
    for (args, want) in [
        (
            vec!["run", "-p", "7777:80", "--", "true"],
            "host port 7777/tcp is in use on this host",
        ),
        (
            vec!["run", "-p", "8080:81", "--", "true"],
            "already published by container web",
        ),
        (
            vec!["run", "-p", "10.9.9.9:8090:80", "--", "true"],
            "ports can be published on the uplink's address (198.18.0.2), on a loopback address or on all addresses, not on 10.9.9.9",
        ),
        (
            vec!["run", "-p", "172.17.0.1:8092:80", "--", "true"],
            "not on 172.17.0.1",
        ),
        (
            vec!["run", "--network", "closed", "-p", "8091:80", "--", "true"],
            "internal: it cannot publish ports",
        ),
    ] {
        let before = sb.snapshot();
        let e = sb.dnet_err(&args);
        assert!(e.contains(want), "{args:?}: {e}");
        assert_eq!(before, sb.snapshot(), "{args:?} changed something");
    }
}

#[test]
fn internal_networks_have_no_outbound() {
    let mut sb = Sandbox::new();
    world_servers(&mut sb, &[80], &[]);
    sb.dnet_ok(&[
        "network",
        "create",
        "--internal",
        "--subnet",
        "10.22.0.0/24",
        "closed",
    ]);
    sb.sleeper("x", &["--network", "closed"]);
    // No default route (as Docker): the world is unreachable at once.
    let o = sb.conntest_in("x", &["tcp", &format!("{WORLD_IP}:80"), "--timeout", "1"]);
    assert!(out(&o).contains("Network is unreachable"), "{}", out(&o));
    // A default route the container makes itself leads nowhere either:
    // the datapath drops what would leave the network.
    sb.dnet_ok(&[
        "exec",
        "x",
        "--",
        "ip",
        "route",
        "add",
        "default",
        "via",
        "10.22.0.1",
        "dev",
        "eth0",
        "onlink",
    ]);
    let o = sb.conntest_in("x", &["tcp", &format!("{WORLD_IP}:80"), "--timeout", "1"]);
    assert!(!ok(&o));
    assert!(sb.drops("x", "internal-network") > 0);
    assert!(
        ok(&sb.conntest_in("x", &["ping", "10.22.0.1"])),
        "the gateway stays reachable"
    );
    assert!(sb.flows().is_empty());
}

#[test]
fn when_the_nat_ports_run_out_the_next_flow_fails_and_established_ones_continue() {
    // Each container may take every port towards one destination, so the
    // per-destination limit never speaks first: this is about the range
    // running out, shared by two containers.
    let mut sb = Sandbox::with_daemon_args(&[
        "--nat-ports",
        "50000-50004",
        "--nat-ports-per-destination",
        "5",
    ]);
    world_servers(&mut sb, &[], &[53]);
    for c in ["a", "b"] {
        sb.sleeper(c, &[]);
    }
    let to = format!("{WORLD_IP}:53");
    for (c, sport) in [
        ("a", 1001),
        ("a", 1002),
        ("a", 1003),
        ("b", 1004),
        ("b", 1005),
    ] {
        let o = sb.conntest_in(c, &["udp", &to, "--bind", &sport.to_string()]);
        assert!(ok(&o), "flow {sport}: {}", out(&o));
        let port: u16 = stdout(&o).rsplit(':').next().unwrap().parse().unwrap();
        assert!(
            (50000..=50004).contains(&port),
            "NAT port {port} outside the range"
        );
    }
    let o = sb.conntest_in("a", &["udp", &to, "--bind", "1006", "--timeout", "1"]);
    assert!(!ok(&o), "a sixth flow has no port");
    assert!(sb.drops("a", "nat-ports-exhausted") > 0);
    let o = sb.conntest_in("a", &["udp", &to, "--bind", "1003"]);
    assert!(ok(&o), "an established flow goes on: {}", out(&o));
    // The NAT ports are reserved from the host's own ephemeral ports.
    let r = sb.in_host("cat", &["/proc/sys/net/ipv4/ip_local_reserved_ports"]);
    assert!(stdout(&r).contains("50000-50004"), "{}", out(&r));
}

#[test]
fn a_pinned_conntrack_table_is_made_anew_at_another_size() {
    let ct_size = |sb: &Sandbox| {
        let info = sb.dnet_json(&["info"]);
        info["maps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == "DNET_CT")
            .map(|m| m["max_entries"].as_u64().unwrap())
            .unwrap()
    };
    let mut sb = Sandbox::with_daemon_args(&["--ct-entries", "4096"]);
    world_servers(&mut sb, &[], &[53]);
    sb.sleeper("a", &[]);
    sb.sleeper("b", &[]);
    // UDP: its flow stays in the table for a minute once answered.
    let to = format!("{WORLD_IP}:53");
    let o = sb.conntest_in("a", &["udp", &to]);
    assert!(ok(&o), "{}", out(&o));
    assert_eq!(ct_size(&sb), 4096);
    assert!(!sb.log_tail(200).contains("replacing a pinned map"));
    assert!(!sb.flows().is_empty(), "the flow is in the table");
    sb.stop_daemon(libc::SIGTERM);
    sb.set_daemon_args(&["--ct-entries", "8192"]);
    sb.start_daemon();
    // The kernel's own figure for the pinned map (`dnet info` reads it
    // from the map's descriptor).
    assert_eq!(ct_size(&sb), 8192, "made anew at the flag's size");
    let log = sb.log_tail(200);
    assert!(
        log.contains("replacing a pinned map of another shape") && log.contains("DNET_CT"),
        "{log}"
    );
    assert!(sb.flows().is_empty(), "the new table starts empty");
    // Forwarding goes on over the new maps: NAT to the world (its reply
    // is found in the new table by the uplink's program), and container
    // to container.
    let o = sb.conntest_in("a", &["udp", &to]);
    assert!(ok(&o), "{}", out(&o));
    assert!(!sb.flows().is_empty(), "the new flow is in the new table");
    let b = sb.ip_of("b");
    let o = sb.ping_from("a", &b, &[]);
    assert!(ok(&o), "{}", out(&o));
    // The same size again: the table is kept.
    sb.stop_daemon(libc::SIGTERM);
    sb.start_daemon();
    assert!(!sb.flows().is_empty(), "kept, with its flow");
    assert_eq!(ct_size(&sb), 8192);
}

#[test]
fn expired_flows_are_collected() {
    // A flow seen with a long timeout, then a daemon whose UDP timeout is
    // 1 s: no race between the first look and the collection.
    let mut sb = Sandbox::with_daemon_args(&["--ct-timeout-udp", "600", "--ct-gc-interval", "1"]);
    world_servers(&mut sb, &[], &[53]);
    sb.sleeper("a", &[]);
    assert!(ok(&sb.conntest_in("a", &["udp", &format!("{WORLD_IP}:53")])));
    assert!(
        sb.flows().iter().any(|f| f["proto"] == "udp"),
        "the flow is there"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        sb.flows().iter().any(|f| f["proto"] == "udp"),
        "not yet expired with a 600 s timeout"
    );
    sb.stop_daemon(libc::SIGTERM);
    sb.set_daemon_args(&["--ct-timeout-udp", "1", "--ct-gc-interval", "1"]);
    sb.start_daemon();
    assert!(
        wait_until(Duration::from_secs(15), || sb.flows().is_empty()),
        "and then collected"
    );
}

#[test]
fn conntrack_flush_empties_the_table_and_new_flows_go_on() {
    let mut sb = Sandbox::new();
    world_servers(&mut sb, &[80], &[53]);
    sb.sleeper("a", &[]);
    for args in [
        vec!["tcp".to_owned(), format!("{WORLD_IP}:80")],
        vec!["udp".to_owned(), format!("{WORLD_IP}:53")],
        vec!["ping".to_owned(), WORLD_IP.to_string()],
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = sb.conntest_in("a", &args);
        assert!(ok(&o), "{args:?}: {}", out(&o));
    }
    let n = sb.flows().len();
    assert!(n >= 3, "{:?}", sb.flows());
    let o = sb.dnet_ok(&["conntrack", "flush"]);
    assert_eq!(
        o.trim(),
        format!("{} entries removed", 2 * n),
        "two entries per flow"
    );
    assert!(sb.flows().is_empty(), "{:?}", sb.flows());
    // Flows start again, translated as before.
    let o = sb.conntest_in("a", &["udp", &format!("{WORLD_IP}:53")]);
    assert!(
        ok(&o) && stdout(&o).starts_with(&format!("{UPLINK_IP}:")),
        "{}",
        out(&o)
    );
    assert_eq!(sb.flows().len(), 1);
}

#[test]
fn a_thousand_concurrent_flows_from_ten_containers_are_all_translated() {
    let mut sb = Sandbox::new();
    world_servers(&mut sb, &[80], &[]);
    for i in 0..10 {
        sb.sleeper(&format!("c{i}"), &[]);
    }
    let to = format!("{WORLD_IP}:80");
    // Each container opens 100 connections and keeps them open until the
    // test has looked at them (60 s at most).
    let hold = sb.dir.join("hold");
    std::fs::write(&hold, "").unwrap();
    let hold_s = hold.to_str().unwrap().to_owned();
    let children: Vec<_> = (0..10)
        .map(|i| {
            Command::new(dnet_sandbox::dnet_bin())
                .arg("--socket")
                .arg(sb.socket())
                .args(["exec", &format!("c{i}"), "--", &ct(), "connections", &to])
                .args(["--count", "100", "--timeout", "10", "--hold", "60"])
                .args(["--hold-while", &hold_s])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    // All 1,000 at once in dnet's table, each with a NAT port of its own.
    let open = |f: &[serde_json::Value]| {
        f.iter()
            .filter(|x| x["proto"] == "tcp" && x["state"] == "established")
            .count()
    };
    let mut flows = Vec::new();
    let all_open = wait_until(Duration::from_secs(30), || {
        flows = sb.flows();
        open(&flows) >= 1000
    });
    assert!(all_open, "{} established flows at most", open(&flows));
    let ports: std::collections::BTreeSet<&str> = flows
        .iter()
        .filter(|x| x["proto"] == "tcp")
        .map(|x| x["translated"]["src"].as_str().unwrap())
        .collect();
    assert!(
        ports.len() >= 1000,
        "{} distinct translated sources",
        ports.len()
    );
    std::fs::remove_file(&hold).unwrap();
    for (i, c) in children.into_iter().enumerate() {
        let o = c.wait_with_output().unwrap();
        assert!(ok(&o), "c{i}: {}", out(&o));
        assert!(
            stdout(&o).contains("100 connections answered"),
            "{}",
            out(&o)
        );
    }
}

#[test]
fn a_translated_flow_survives_kill_9_and_a_restart() {
    let mut sb = Sandbox::new();
    world_servers(&mut sb, &[], &[53]);
    sb.sleeper("a", &[]);
    let pid = sb.dnet_json(&["ps"])[0]["pid"]
        .as_u64()
        .unwrap()
        .to_string();
    let flow = Command::new("nsenter")
        .args([
            "-t",
            &pid,
            "-n",
            &ct(),
            "udp",
            &format!("{WORLD_IP}:53"),
            "--count",
            "1500",
            "--interval",
            "0.01",
            "--timeout",
            "3",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The answers that reach the container.
    let a = sb.netns_of("a");
    sb.kill_9_and_restart_during_flow(|sb| sb.rx_packets(&a, "eth0"));
    let o = flow.wait_with_output().unwrap();
    assert!(ok(&o), "lost answers across the restart: {}", out(&o));
    assert!(
        sb.flows().iter().any(|x| x["proto"] == "udp"),
        "the flow survived in the pinned map"
    );
}

/// A router in the world towards a "far" network 203.0.113.0/24 whose link
/// has an MTU of 1280: ICMP errors about translated flows come back.
fn far_network(sb: &Sandbox) -> String {
    let far = format!("{}f", sb.name);
    sh_ok("ip", &["netns", "add", &far]);
    sh_ok(
        "ip",
        &[
            "-n",
            &sb.world_ns,
            "link",
            "add",
            "eth1",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &far,
        ],
    );
    sh_ok(
        "ip",
        &[
            "-n",
            &sb.world_ns,
            "addr",
            "add",
            "203.0.113.1/24",
            "dev",
            "eth1",
        ],
    );
    sh_ok(
        "ip",
        &["-n", &far, "addr", "add", "203.0.113.2/24", "dev", "eth0"],
    );
    for (ns, dev) in [(sb.world_ns.as_str(), "eth1"), (far.as_str(), "eth0")] {
        sh_ok("ip", &["-n", ns, "link", "set", dev, "mtu", "1280", "up"]);
    }
    sh_ok("ip", &["-n", &far, "link", "set", "lo", "up"]);
    sh_ok(
        "ip",
        &["-n", &far, "route", "add", "default", "via", "203.0.113.1"],
    );
    sh_ok(
        "ip",
        &[
            "netns",
            "exec",
            &sb.world_ns,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ],
    );
    sh_ok(
        "ip",
        &[
            "-n",
            &sb.host_ns,
            "route",
            "add",
            "203.0.113.0/24",
            "via",
            &WORLD_IP.to_string(),
        ],
    );
    far
}

struct NsGuard(String);
impl Drop for NsGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

#[test]
fn icmp_errors_about_translated_flows_are_translated_back() {
    let mut sb = Sandbox::new();
    world_servers(&mut sb, &[], &[53]);
    let _far = NsGuard(far_network(&sb));
    sb.sleeper("a", &[]);
    // Port unreachable: the world has nothing on UDP 9.
    let o = sb.conntest_in("a", &["udp", &format!("{WORLD_IP}:9"), "--timeout", "2"]);
    assert!(
        !ok(&o) && out(&o).contains("Connection refused"),
        "port unreachable reached the socket: {}",
        out(&o)
    );
    // Time exceeded: TTL 2 dies at the world's router, one hop past dnet.
    let o = sb.ping_from("a", "203.0.113.2", &["-t", "2"]);
    assert!(out(&o).contains("Time to live exceeded"), "{}", out(&o));
    // Fragmentation needed: the far link's MTU is 1280; the container learns it.
    let _ = sb.ping_from("a", "203.0.113.2", &["-M", "do", "-s", "1400"]);
    let r = sb.dnet_ok(&["exec", "a", "--", "ip", "route", "get", "203.0.113.2"]);
    assert!(r.contains("mtu 1280"), "path MTU learned through dnet: {r}");
    let o = sb.ping_from("a", "203.0.113.2", &["-M", "do", "-s", "1252"]);
    assert!(ok(&o), "a packet that fits gets through: {}", out(&o));
}

/// The host's own ping on the identifier a container's ping was translated
/// to (ping sockets and raw ones ignore `ip_local_reserved_ports`): both get
/// their replies (issue 10 item 6).
#[test]
fn a_host_ping_on_a_containers_nat_identifier_and_the_containers_both_get_replies() {
    let mut sb = Sandbox::new();
    sb.sleeper("a", &[]);
    let world = WORLD_IP.to_string();
    let ping_a = || sb.conntest_in("a", &["ping", &world, "--id", "4660", "--timeout", "2"]);
    let o = ping_a();
    assert!(ok(&o), "{}", out(&o));
    let from = format!("{} id 4660", sb.ip_of("a"));
    let flows = sb.flows();
    let f = flows
        .iter()
        .find(|f| f["original"]["src"] == from.as_str())
        .unwrap_or_else(|| panic!("a's echo flow: {flows:?}"));
    let nat_id = f["translated"]["src"]
        .as_str()
        .and_then(|s| s.rsplit(' ').next())
        .unwrap()
        .to_owned();
    let o = sb.in_host(&ct(), &["ping", &world, "--id", &nat_id, "--timeout", "2"]);
    assert!(ok(&o), "the host's ping on id {nat_id}: {}", out(&o));
    let o = ping_a();
    assert!(ok(&o), "a's ping again: {}", out(&o));
    let host_flows = |sb: &Sandbox| {
        sb.flows()
            .into_iter()
            .filter(|f| f["kind"] == "host")
            .count()
    };
    assert_eq!(host_flows(&sb), 1, "{:?}", sb.flows());
    // A restarted daemon keeps the host's flow (it is no container's).
    sb.stop_daemon(libc::SIGTERM);
    sb.start_daemon();
    assert_eq!(host_flows(&sb), 1, "{:?}", sb.flows());
}

/// `dnet daemon --publish-from CIDR`: published-port traffic never meets
/// the host's netfilter, so the daemon keeps the source allow-list. A
/// source not listed is dropped (`source-not-allowed`, on the port's
/// container); restarted with the world's address listed, it goes in.
#[test]
fn publish_from_keeps_unlisted_sources_out_of_published_ports() {
    let mut sb = Sandbox::with_daemon_args(&["--publish-from", "10.0.0.0/8"]);
    let ctb = ct();
    sb.dnet_ok(&[
        "run", "-d", "--name", "web", "-p", "8080:80", "--", &ctb, "serve", "tcp", "80",
    ]);
    sb.wait_server("web", "tcp", 80);
    let port = format!("{UPLINK_IP}:8080");
    let reach = |sb: &Sandbox| ok(&sb.in_world(&ctb, &["tcp", &port, "--timeout", "1"]));
    assert!(!reach(&sb), "an unlisted source reached the port");
    assert!(sb.drops("web", "source-not-allowed") > 0);
    // The host and containers are not concerned.
    assert!(ok(&sb.in_host(&ctb, &["tcp", "127.0.0.1:8080"])));
    sb.stop_daemon(libc::SIGTERM);
    sb.set_daemon_args(&[
        "--publish-from",
        "10.0.0.0/8",
        "--publish-from",
        &format!("{WORLD_IP}/32"),
    ]);
    sb.start_daemon();
    assert!(
        wait_until(Duration::from_secs(5), || reach(&sb)),
        "a listed source is let in"
    );
}
