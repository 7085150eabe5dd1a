//! The bridge driver without a bridge: the eBPF datapath between
//! containers, the gateway and the host, in a sandbox, with real traffic.

use std::{process::Command, time::Duration};

use dnet_sandbox::{Sandbox, assert_consistent, ct, in_netns, ok, out, sh_ok, wait_until};
use serde_json::Value;

#[test]
fn the_first_container_looks_as_on_docker0() {
    let sb = Sandbox::new();
    sb.dnet_ok(&["run", "-d", "--name", "a", "--", "sleep", "300"]);
    let addr: Value =
        serde_json::from_str(&sb.dnet_ok(&["exec", "a", "--", "ip", "-j", "addr", "show", "eth0"]))
            .unwrap();
    let eth0 = &addr[0];
    assert_eq!(eth0["ifname"], "eth0");
    assert_eq!(eth0["address"], "02:42:ac:11:00:02");
    assert_eq!(eth0["mtu"], 1500, "the uplink's MTU");
    let v4: Vec<&Value> = eth0["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["family"] == "inet")
        .collect();
    assert_eq!(v4.len(), 1);
    assert_eq!(v4[0]["local"], "172.17.0.2");
    assert_eq!(v4[0]["prefixlen"], 16);
    assert_eq!(v4[0]["broadcast"], "172.17.255.255");
    assert!(
        !eth0["addr_info"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["family"] == "inet6"),
        "no IPv6 on eth0: {eth0}"
    );
    let routes: Value =
        serde_json::from_str(&sb.dnet_ok(&["exec", "a", "--", "ip", "-j", "route"])).unwrap();
    assert!(
        routes
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["dst"] == "default" && r["gateway"] == "172.17.0.1" && r["dev"] == "eth0"),
        "{routes}"
    );
    let v6 = sb.dnet_ok(&[
        "exec",
        "a",
        "--",
        "cat",
        "/proc/sys/net/ipv6/conf/eth0/disable_ipv6",
    ]);
    assert_eq!(v6.trim(), "1");

    // No bridge, no netfilter: the host namespace has no link of kind
    // bridge and no nftables rules.
    let links = sb.host_ip_json(&["-d", "link", "show"]);
    for l in links.as_array().unwrap() {
        assert_ne!(l["linkinfo"]["info_kind"], "bridge", "{l}");
    }
    let nft = sb.in_host("nft", &["list", "ruleset"]);
    assert!(ok(&nft), "{}", out(&nft));
    assert_eq!(
        String::from_utf8_lossy(&nft.stdout).trim(),
        "",
        "no nftables rules"
    );
    // The host side: veth named as Docker's, the container programs in its
    // clsact filters.
    let veth = sb.dnet_json(&["ps"])[0]["networks"][0]["host_ifname"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(veth.len() == 11 && veth.starts_with("veth"), "{veth}");
    assert_eq!(
        sb.veth_programs(&veth),
        (
            Some("lxc_from_container".to_owned()),
            Some("lxc_to_container".to_owned())
        )
    );
}

#[test]
fn mtu_follows_the_uplink_or_the_option() {
    let mut sb = Sandbox::without_daemon();
    sh_ok(
        "ip",
        &["-n", &sb.host_ns, "link", "set", "eth0", "mtu", "1450"],
    );
    sb.start_daemon();
    sb.dnet_ok(&["network", "create", "-o", "mtu=1400", "small"]);
    sb.dnet_ok(&["run", "-d", "--name", "a", "--", "sleep", "300"]);
    sb.dnet_ok(&[
        "run",
        "-d",
        "--name",
        "b",
        "--network",
        "small",
        "--",
        "sleep",
        "300",
    ]);
    let mtu = |c: &str| -> u64 {
        let j: Value = serde_json::from_str(
            &sb.dnet_ok(&["exec", c, "--", "ip", "-j", "link", "show", "eth0"]),
        )
        .unwrap();
        j[0]["mtu"].as_u64().unwrap()
    };
    assert_eq!(mtu("a"), 1450);
    assert_eq!(mtu("b"), 1400);
}

#[test]
fn containers_reach_each_other_by_ping_tcp_and_udp_both_ways() {
    let sb = Sandbox::new();
    sb.server("a", "bridge", "tcp", 80);
    sb.server("b", "bridge", "tcp", 80);
    sb.server("ua", "bridge", "udp", 53);
    sb.server("ub", "bridge", "udp", 53);
    let (a, b, ua, ub) = (sb.ip_of("a"), sb.ip_of("b"), sb.ip_of("ua"), sb.ip_of("ub"));
    for (from, to, from_ip) in [("a", &b, &a), ("b", &a, &b)] {
        let o = sb.conntest_in(from, &["ping", to]);
        assert!(ok(&o), "ping {from} -> {to}: {}", out(&o));
        let o = sb.conntest_in(from, &["tcp", &format!("{to}:80")]);
        assert!(ok(&o), "tcp {from} -> {to}: {}", out(&o));
        // The server saw the client's own address: nothing in between rewrites it.
        assert!(
            String::from_utf8_lossy(&o.stdout).starts_with(&format!("{from_ip}:")),
            "{}",
            out(&o)
        );
    }
    for (from, to) in [("ua", &ub), ("ub", &ua)] {
        let o = sb.conntest_in(from, &["udp", &format!("{to}:53")]);
        assert!(ok(&o), "udp {from} -> {to}: {}", out(&o));
    }
    // Peers are reached through the gateway's MAC (one neighbour entry per
    // container); asked directly, the datapath answers with a peer's own MAC.
    let neigh = sb.dnet_ok(&["exec", "a", "--", "ip", "neigh", "show"]);
    assert!(
        neigh.contains("172.17.0.1 dev eth0 lladdr 02:42:ac:11:00:01"),
        "{neigh}"
    );
    let o = sb.dnet(&["exec", "a", "--", "arping", "-c", "1", "-I", "eth0", &b]);
    assert!(
        ok(&o) && out(&o).contains("[02:42:AC:11:00:03]"),
        "{}",
        out(&o)
    );
    // Both directions counted.
    let s = sb.dnet_json(&["stats"]);
    let row = s["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["container"] == "a")
        .unwrap()
        .clone();
    assert!(
        row["rx_packets"].as_u64().unwrap() > 0 && row["tx_packets"].as_u64().unwrap() > 0,
        "{row}"
    );
}

/// East-west packets go from the sender's host-side veth straight into the
/// receiver's namespace (`bpf_redirect_peer`): the receiver's host-side veth
/// never transmits them. A fallback through that veth's egress (`bpf_redirect`)
/// or the host stack would count every packet there (and cost the latency
/// the bench measures).
#[test]
fn east_west_packets_skip_the_receivers_host_side_veth() {
    let sb = Sandbox::new();
    sb.server("a", "bridge", "tcp", 80);
    sb.server("b", "bridge", "tcp", 80);
    let b = sb.ip_of("b");
    // `network inspect` answers a list, one object per network asked.
    let net = sb.dnet_json(&["network", "inspect", "bridge"]);
    let veth = net[0]["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .find(|c| c["container"] == "b")
        .and_then(|c| c["host_ifname"].as_str())
        .expect("b's host-side veth")
        .to_owned();
    let tx = || {
        sb.host_ip_json(&["-s", "link", "show", "dev", &veth])[0]["stats64"]["tx"]["packets"]
            .as_u64()
            .expect("tx packets")
    };
    // Neighbours settled first: dnet's ARP answers do go out of the asker's
    // own host-side veth.
    let o = sb.conntest_in("a", &["tcp", &format!("{b}:80")]);
    assert!(ok(&o), "tcp a -> b: {}", out(&o));
    let (tx0, rx0) = (tx(), sb.rx_packets(&sb.netns_of("b"), "eth0"));
    for _ in 0..20 {
        let o = sb.conntest_in("a", &["tcp", &format!("{b}:80")]);
        assert!(ok(&o), "tcp a -> b: {}", out(&o));
    }
    let (tx1, rx1) = (tx(), sb.rx_packets(&sb.netns_of("b"), "eth0"));
    assert!(rx1 - rx0 >= 60, "b received {} packets", rx1 - rx0);
    // A stray ARP refresh at most, never the flows' packets.
    assert!(
        tx1 - tx0 <= 4,
        "b's host-side veth sent {} packets",
        tx1 - tx0
    );
}

#[test]
fn gateway_and_host_reach_containers_and_back() {
    let mut sb = Sandbox::new();
    sb.server("web", "bridge", "tcp", 80);
    sb.server("dns", "bridge", "udp", 53);
    let (web, dns) = (sb.ip_of("web"), sb.ip_of("dns"));
    // A host service listening on the gateway address.
    let host_ns = sb.host_netns_path();
    sb.spawn_in(&host_ns, &ct(), &["serve", "tcp", "172.17.0.1:9000"]);
    let ok_soon = |sb: &Sandbox, args: &[&str]| {
        wait_until(Duration::from_secs(5), || ok(&sb.conntest_in("web", args)))
    };
    assert!(ok_soon(&sb, &["ping", "172.17.0.1"]));
    assert!(
        ok_soon(&sb, &["tcp", "172.17.0.1:9000"]),
        "host service on the gateway"
    );
    // The host reaches every container.
    let h = |args: &[&str]| sb.in_host(&ct(), args);
    assert!(ok(&h(&["ping", &web, &dns])));
    let o = h(&["tcp", &format!("{web}:80")]);
    assert!(ok(&o), "{}", out(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).starts_with("172.17.0.1:"),
        "the host speaks from the gateway address: {}",
        out(&o)
    );
    assert!(ok(&h(&["udp", &format!("{dns}:53")])));
    // An unused address of the subnet never leaves through the uplink.
    let o = sb.in_host("ip", &["route", "get", "172.17.0.77"]);
    assert!(
        !ok(&o) && out(&o).contains("No route to host"),
        "{}",
        out(&o)
    );
    let o = h(&["ping", "172.17.0.77", "--timeout", "0.5"]);
    assert!(!ok(&o));
}

#[test]
fn networks_are_isolated_and_the_drop_is_counted() {
    let sb = Sandbox::new();
    sb.dnet_ok(&["network", "create", "--subnet", "10.10.0.0/24", "blue"]);
    sb.server("red1", "bridge", "tcp", 80);
    sb.server("blue1", "blue", "tcp", 80);
    sb.server("blue2", "blue", "tcp", 80);
    let (red1, blue1) = (sb.ip_of("red1"), sb.ip_of("blue1"));
    assert!(
        ok(&sb.conntest_in("blue2", &["tcp", &format!("{blue1}:80")])),
        "same network works"
    );
    let o = sb.conntest_in("red1", &["tcp", &format!("{blue1}:80"), "--timeout", "0.5"]);
    assert!(!ok(&o), "bridge -> blue must fail");
    let o = sb.conntest_in("blue1", &["ping", &red1, "--timeout", "0.5"]);
    assert!(!ok(&o), "blue -> bridge must fail");
    assert!(sb.drops("red1", "cross-network") > 0);
    assert!(sb.drops("blue1", "cross-network") > 0);
    // Each network's gateway is a host address like any other.
    assert!(ok(&sb.conntest_in("blue1", &["ping", "172.17.0.1"])));
}

#[test]
fn icc_false_keeps_containers_apart_but_not_from_the_gateway() {
    let mut sb = Sandbox::new();
    sb.dnet_ok(&[
        "network",
        "create",
        "-o",
        "icc=false",
        "--subnet",
        "10.11.0.0/24",
        "lonely",
    ]);
    sb.server("x", "lonely", "tcp", 80);
    sb.server("y", "lonely", "tcp", 80);
    let y = sb.ip_of("y");
    let o = sb.conntest_in("x", &["tcp", &format!("{y}:80"), "--timeout", "0.5"]);
    assert!(!ok(&o));
    assert!(sb.drops("x", "icc-disabled") > 0);
    assert!(ok(&sb.conntest_in("x", &["ping", "10.11.0.1"])));
    let host_ns = sb.host_netns_path();
    sb.spawn_in(&host_ns, &ct(), &["serve", "tcp", "198.18.0.2:7000"]);
    assert!(wait_until(Duration::from_secs(5), || ok(
        &sb.conntest_in("x", &["tcp", "198.18.0.2:7000"])
    )));
}

#[test]
fn broadcast_reaches_the_other_members() {
    let sb = Sandbox::new();
    sb.server("listener", "bridge", "udp", 5353);
    sb.dnet_ok(&["run", "-d", "--name", "talker", "--", "sleep", "300"]);
    let o = sb.conntest_in("talker", &["udp", "172.17.255.255:5353", "--broadcast"]);
    assert!(ok(&o), "subnet broadcast: {}", out(&o));
    let talker = sb.ip_of("talker");
    assert!(
        String::from_utf8_lossy(&o.stdout).starts_with(&format!("{talker}:")),
        "{}",
        out(&o)
    );
    let o = sb.conntest_in("talker", &["udp", "255.255.255.255:5353", "--broadcast"]);
    assert!(ok(&o), "limited broadcast: {}", out(&o));
}

#[test]
fn broadcast_reaches_every_member_of_a_big_network() {
    // More members than the 64 copies older builds made: the talker
    // first, then 68 others, then a listener as the last member.
    const OTHERS: usize = 68;
    let sb = Sandbox::new();
    sb.dnet_ok(&["run", "-d", "--name", "talker", "--", "sleep", "300"]);
    let names: Vec<String> = (0..OTHERS).map(|i| format!("m{i}")).collect();
    for n in &names {
        sb.dnet_ok(&["run", "-d", "--name", n, "--", "sleep", "300"]);
    }
    sb.server("last", "bridge", "udp", 5353);
    let rx = |n: &str| sb.rx_packets(&sb.netns_of(n), "eth0");
    let before: Vec<u64> = names.iter().map(|n| rx(n)).collect();
    let o = sb.conntest_in("talker", &["udp", "172.17.255.255:5353", "--broadcast"]);
    assert!(ok(&o), "the last member answers the broadcast: {}", out(&o));
    let talker = sb.ip_of("talker");
    assert!(
        String::from_utf8_lossy(&o.stdout).starts_with(&format!("{talker}:")),
        "{}",
        out(&o)
    );
    let missed: Vec<&String> = names
        .iter()
        .zip(&before)
        .filter(|(n, b)| rx(n) <= **b)
        .map(|(n, _)| n)
        .collect();
    assert!(missed.is_empty(), "members without a copy: {missed:?}");
    assert_eq!(sb.drops("talker", "fanout-limit"), 0);
}

#[test]
fn a_container_that_changes_its_own_ip_or_mac_is_dropped_and_counted() {
    let sb = Sandbox::new();
    sb.server("victim", "bridge", "udp", 53);
    sb.dnet_ok(&["run", "-d", "--name", "liar", "--", "sleep", "300"]);
    let victim = sb.ip_of("victim");
    assert!(
        ok(&sb.conntest_in("liar", &["udp", &format!("{victim}:53")])),
        "honest first"
    );
    let sh = |cmd: &str| sb.dnet_ok(&["exec", "liar", "--", "sh", "-c", cmd]);
    let honest = |r: &str| sb.drops("liar", r);
    let (arp0, ip0, mac0) = (
        honest("arp-reply-from-container"),
        honest("spoofed-ip"),
        honest("spoofed-mac"),
    );
    assert_eq!(
        (arp0, ip0, mac0),
        (0, 0, 0),
        "an honest container drops nothing"
    );
    // A gratuitous ARP for its own address is an announcement: dropped.
    let o = sb.dnet(&[
        "exec",
        "liar",
        "--",
        "arping",
        "-c",
        "1",
        "-U",
        "-I",
        "eth0",
        "172.17.0.3",
    ]);
    assert!(ok(&o), "arping ran: {}", out(&o));
    assert!(sb.drops("liar", "arp-reply-from-container") > arp0);
    // A new address, with the victim's MAC already known (no ARP needed).
    sh(
        "ip addr flush dev eth0 && ip addr add 172.17.0.50/16 dev eth0 && ip route add default via 172.17.0.1",
    );
    sh(&format!(
        "ip neigh replace {victim} lladdr 02:42:ac:11:00:02 dev eth0 nud permanent"
    ));
    let o = sb.conntest_in(
        "liar",
        &["udp", &format!("{victim}:53"), "--timeout", "0.5"],
    );
    assert!(!ok(&o));
    assert!(sb.drops("liar", "spoofed-ip") > ip0);
    // Its own address back, another MAC.
    sh(
        "ip addr flush dev eth0 && ip addr add 172.17.0.3/16 dev eth0 && ip link set eth0 address 02:42:00:00:00:99",
    );
    let o = sb.conntest_in(
        "liar",
        &["udp", &format!("{victim}:53"), "--timeout", "0.5"],
    );
    assert!(!ok(&o));
    assert!(sb.drops("liar", "spoofed-mac") > mac0);
}

#[test]
fn ipv6_is_dropped_with_its_reason() {
    let sb = Sandbox::new();
    sb.dnet_ok(&["run", "-d", "--name", "a", "--", "sleep", "300"]);
    // Turning IPv6 on makes the kernel send router and neighbour
    // solicitations at once.
    sb.dnet_ok(&[
        "exec",
        "a",
        "--",
        "sh",
        "-c",
        "echo 0 > /proc/sys/net/ipv6/conf/eth0/disable_ipv6",
    ]);
    assert!(wait_until(Duration::from_secs(10), || sb
        .drops("a", "ipv6")
        > 0));
}

#[test]
fn removing_an_endpoint_leaves_nothing_behind() {
    let sb = Sandbox::new();
    let empty = sb.snapshot();
    sb.dnet_ok(&["network", "create", "--subnet", "10.12.0.0/24", "n"]);
    let with_net = sb.snapshot();
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
    sb.dnet_ok(&["network", "connect", "bridge", "a"]);
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
    assert_consistent(&sb);
    sb.dnet_ok(&["network", "disconnect", "bridge", "a"]);
    assert_consistent(&sb);
    sb.dnet_ok(&["rm", "-f", "a", "b"]);
    assert_consistent(&sb);
    let routes = sh_ok("ip", &["-n", &sb.host_ns, "route"]);
    assert!(
        !routes.contains("10.12.0.2 ") && !routes.contains("172.17.0.2 "),
        "{routes}"
    );
    let neigh = sh_ok("ip", &["-n", &sb.host_ns, "neigh"]);
    assert!(!neigh.contains("10.12.0."), "{neigh}");
    // Compare without the state file (the last part), which now holds
    // the network.
    let strip = |s: &str| s.rsplit_once("\n---\n").expect("parts").0.to_owned();
    assert_eq!(strip(&sb.snapshot()), strip(&with_net));
    sb.dnet_ok(&["network", "rm", "n"]);
    assert_eq!(strip(&sb.snapshot()), strip(&empty));
}

#[test]
fn endpoints_come_and_go_without_disturbing_a_flow() {
    let sb = Sandbox::new();
    sb.server("srv", "bridge", "udp", 53);
    sb.dnet_ok(&["run", "-d", "--name", "cli", "--", "sleep", "300"]);
    let srv = sb.ip_of("srv");
    // A flow that runs until the churn is over (bounded by its count),
    // started before it.
    let run = sb.dir.join("flow-runs");
    std::fs::write(&run, "").unwrap();
    let mut flow = Command::new(dnet_sandbox::dnet_bin())
        .arg("--socket")
        .arg(sb.socket())
        .args([
            "exec",
            "cli",
            "--",
            &ct(),
            "udp",
            &format!("{srv}:53"),
            "--count",
            "3000",
            "--interval",
            "0.01",
            "--timeout",
            "1",
            "--while",
            run.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let cli = sb.netns_of("cli");
    let answers = |sb: &Sandbox| sb.rx_packets(&cli, "eth0");
    let a0 = answers(&sb);
    assert!(
        wait_until(Duration::from_secs(10), || answers(&sb) >= a0 + 20),
        "the flow runs"
    );
    for i in 0..5 {
        let n = format!("churn{i}");
        sb.dnet_ok(&["run", "-d", "--name", &n, "--", "sleep", "300"]);
        sb.dnet_ok(&["rm", "-f", &n]);
    }
    // The churn happened while the flow ran, and it goes on after it.
    assert!(
        flow.try_wait().unwrap().is_none(),
        "the flow ended before the churn did"
    );
    let a1 = answers(&sb);
    assert!(
        wait_until(Duration::from_secs(10), || answers(&sb) >= a1 + 20),
        "the flow goes on after the churn"
    );
    std::fs::remove_file(&run).unwrap();
    let o = flow.wait_with_output().unwrap();
    assert!(ok(&o), "{}", out(&o));
}

#[test]
fn a_flow_survives_kill_9_and_a_restart_of_the_daemon() {
    let mut sb = Sandbox::new();
    sb.server("srv", "bridge", "udp", 53);
    sb.dnet_ok(&["run", "-d", "--name", "cli", "--", "sleep", "300"]);
    let srv = sb.ip_of("srv");
    let cli_pid = sb.container("cli")["pid"].as_u64().unwrap();
    let before = sb.pins();
    // The flow runs in the container's namespace without the daemon's help.
    let flow = Command::new("nsenter")
        .args(["-t", &cli_pid.to_string(), "-n"])
        .args([
            &ct(),
            "udp",
            &format!("{srv}:53"),
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
    let cli = sb.netns_of("cli");
    sb.kill_9_and_restart_during_flow(|sb| sb.rx_packets(&cli, "eth0"));
    let o = flow.wait_with_output().unwrap();
    assert!(ok(&o), "lost packets across the restart: {}", out(&o));
    assert_eq!(
        sb.pins(),
        before,
        "the restarted daemon adopted the pins as they were"
    );
    assert!(
        !sb.log_tail(100).contains("making its endpoint again"),
        "{}",
        sb.log_tail(30)
    );
}

#[test]
fn a_restarted_daemon_puts_missing_programs_back_in_place() {
    let mut sb = Sandbox::new();
    sb.dnet_ok(&["run", "-d", "--name", "a", "--", "sleep", "300"]);
    sb.dnet_ok(&["run", "-d", "--name", "b", "--", "sleep", "300"]);
    let b = sb.ip_of("b");
    let veth = sb.container("a")["networks"][0]["host_ifname"]
        .as_str()
        .unwrap()
        .to_owned();
    let ifindex = |sb: &Sandbox| sb.host_ip_json(&["link", "show", &veth])[0]["ifindex"].clone();
    let before = ifindex(&sb);
    // With the daemon down, a's ingress filter goes.
    sb.stop_daemon(libc::SIGKILL);
    sb_tc(&sb, &["filter", "del", "dev", &veth, "ingress"]);
    assert_eq!(sb.veth_programs(&veth).0, None);
    sb.start_daemon();
    assert_eq!(
        sb.veth_programs(&veth).0.as_deref(),
        Some("lxc_from_container"),
        "the filter is back"
    );
    assert_eq!(
        ifindex(&sb),
        before,
        "the endpoint was kept, not made again"
    );
    let log = sb.log_tail(100);
    assert!(log.contains("attaching this build's programs"), "{log}");
    assert!(!log.contains("making its endpoint again"), "{log}");
    // rx: what the datapath received from a, counted by its ingress program.
    let sent = |sb: &Sandbox| {
        let s = sb.dnet_json(&["stats"]);
        s["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["container"] == "a")
            .unwrap()["rx_packets"]
            .as_u64()
            .unwrap()
    };
    let n = sent(&sb);
    let o = sb.dnet(&["exec", "a", "--", "ping", "-c", "2", "-W", "2", &b]);
    assert!(ok(&o), "{}", out(&o));
    assert!(
        sent(&sb) >= n + 2,
        "a's packets go through its program again"
    );
    assert_consistent(&sb);
}

#[test]
fn fifty_containers_on_one_network_all_reach_each_other() {
    let sb = Sandbox::new();
    let n = 50;
    for i in 0..n {
        sb.dnet_ok(&[
            "run",
            "-d",
            "--name",
            &format!("c{i}"),
            "--",
            "sleep",
            "600",
        ]);
    }
    let ips: Vec<String> = (0..n).map(|i| format!("172.17.0.{}", i + 2)).collect();
    for i in 0..n {
        let others: Vec<&str> = ips
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, s)| s.as_str())
            .collect();
        let mut args = vec!["ping"];
        args.extend(others);
        let o = sb.conntest_in(&format!("c{i}"), &args);
        assert!(ok(&o), "c{i}: {}", out(&o));
    }
    assert_consistent(&sb);
}

/// A `--gateway` the host already has is refused (issue 10 item 11): dnet
/// would take the address over and remove it with the network.
#[test]
fn a_gateway_that_is_already_a_host_address_is_refused() {
    let sb = Sandbox::new();
    let host = sb.host_netns_path();
    let ip = |args: &[&str]| {
        let o = in_netns(&host, "ip", args);
        assert!(o.status.success(), "ip {args:?}: {o:?}");
    };
    // The host's own address, on a /32 that no route check sees.
    ip(&["addr", "add", "10.77.0.1/32", "dev", "lo"]);
    let before = sb.snapshot();
    let err = sb.dnet_err(&[
        "network",
        "create",
        "--subnet",
        "10.77.0.0/24",
        "--gateway",
        "10.77.0.1",
        "taken",
    ]);
    assert!(
        err.contains("gateway 10.77.0.1 is already an address of this host"),
        "{err}"
    );
    assert_eq!(sb.snapshot(), before, "a refused create changed something");
    // Positive control: another gateway in the same subnet is fine, and
    // removing that network leaves the host's address alone.
    sb.dnet_ok(&[
        "network",
        "create",
        "--subnet",
        "10.77.0.0/24",
        "--gateway",
        "10.77.0.2",
        "ok",
    ]);
    sb.dnet_ok(&["network", "rm", "ok"]);
    let addrs = sb.host_ip_json(&["addr", "show", "dev", "lo"]);
    assert!(
        addrs.to_string().contains("\"10.77.0.1\""),
        "the host lost its address: {addrs}"
    );
}

/// `tc` in the sandbox's host namespace.
fn sb_tc(sb: &Sandbox, args: &[&str]) {
    let mut a = vec!["-n", sb.host_ns.as_str()];
    a.extend(args);
    sh_ok("tc", &a);
}
