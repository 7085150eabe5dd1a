//! Dual-stack networks: what the control plane makes of `--ipv6` (subnets,
//! addresses, links, routes, sysctls), what it refuses, and real IPv6
//! traffic through the eBPF datapath.

use dnet_sandbox::{
    Sandbox, UPLINK_IP, UPLINK6, WORLD_IP, WORLD6, conntest_bin, dnet_bin, dual_stack_sandbox, ok,
    out, sh_ok, wait_listening,
};
use serde_json::Value;

/// The host namespace's IPv6 addresses and dnet's IPv6 routes (the
/// kernel's own link-local routes come and go on their own).
fn snapshot6(sb: &Sandbox) -> String {
    let h = sb.host_ns.as_str();
    let addrs = sh_ok("ip", &["-n", h, "-6", "-o", "addr", "show"]);
    let addrs: Vec<&str> = addrs
        .lines()
        .filter(|l| !l.contains("scope link"))
        .map(|l| l.split("valid_lft").next().unwrap_or(l))
        .collect();
    let routes = sh_ok(
        "ip",
        &[
            "-n", h, "-6", "route", "show", "table", "all", "proto", "213",
        ],
    );
    let unreachable = sh_ok(
        "ip",
        &["-n", h, "-6", "route", "show", "type", "unreachable"],
    );
    format!("{}\n---\n{routes}\n---\n{unreachable}", addrs.join("\n"))
}

fn json_in(sb: &Sandbox, container: &str, args: &[&str]) -> Value {
    let mut a = vec!["exec", container, "--"];
    a.extend(args);
    serde_json::from_str(&sb.dnet_ok(&a)).unwrap()
}

fn sysctl_in(sb: &Sandbox, container: &str, name: &str) -> String {
    let path = format!("/proc/sys/net/ipv6/conf/{name}");
    sb.dnet_ok(&["exec", container, "--", "cat", &path])
        .trim()
        .to_owned()
}

fn host_sysctl(sb: &Sandbox, name: &str) -> String {
    let o = sb.in_host("cat", &[&format!("/proc/sys/net/ipv6/conf/{name}")]);
    assert!(ok(&o), "{}", out(&o));
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

#[test]
fn bad_ipv6_input_gets_a_clear_error_and_changes_nothing() {
    // The uplink's IPv6 address is there before the daemon starts: one it
    // gets later is taken up asynchronously (NAT66 follows it), which
    // would race with the snapshots below.
    let mut sb = Sandbox::without_daemon();
    // A prefix routed where the daemon runs (the uplink's, say).
    sh_ok(
        "ip",
        &[
            "-n",
            &sb.host_ns,
            "-6",
            "addr",
            "add",
            "2001:db8:5::2/64",
            "dev",
            "eth0",
            "nodad",
        ],
    );
    sb.start_daemon();
    sb.dual_stack_network("dual", "10.60.0.0/24", "fd00:60::/64");
    sb.dnet_ok(&["network", "create", "--subnet", "10.61.0.0/24", "v4only"]);
    sb.dnet_ok(&[
        "run",
        "-d",
        "--name",
        "c1",
        "--network",
        "dual",
        "--ip6",
        "fd00:60::10",
        "--",
        "sleep",
        "300",
    ]);
    let before = (sb.snapshot(), snapshot6(&sb));
    let create = |extra: &[&str], want: &str| {
        let mut a = vec!["network", "create"];
        a.extend(extra);
        a.push("bad");
        let e = sb.dnet_err(&a);
        assert!(e.contains(want), "{a:?}: {e:?} does not say {want:?}");
    };
    create(&["--subnet", "fd00:61::/64"], "needs --ipv6");
    create(&["--gateway", "fd00:61::1"], "needs --ipv6");
    create(&["--ipv6", "--subnet", "fd00:60:0:0:1::/80"], "overlaps");
    create(
        &["--ipv6", "--subnet", "2001:db8:5::/64"],
        "overlaps the route to 2001:db8:5::/64",
    );
    create(&["--ipv6", "--subnet", "fd00::/40"], "shorter than /48");
    create(&["--ipv6", "--subnet", "fd00:62::/126"], "/124 or shorter");
    create(&["--ipv6", "--subnet", "fe80::/64"], "link-local");
    create(
        &["--ipv6", "--subnet", "::ffff:10.0.0.0/120"],
        "IPv4-mapped",
    );
    create(&["--ipv6", "--subnet", "ff02::/64"], "multicast");
    create(&["--ipv6", "--subnet", "fd00:62::1/64"], "host bits");
    create(
        &[
            "--ipv6",
            "--subnet",
            "fd00:62::/64",
            "--subnet",
            "fd00:63::/64",
        ],
        "one per address family",
    );
    create(
        &[
            "--ipv6",
            "--subnet",
            "fd00:62::/64",
            "--gateway",
            "fd00:63::1",
        ],
        "not a usable address",
    );
    create(
        &["--ipv6", "--gateway", "fd00:62::1"],
        "needs an IPv6 --subnet",
    );
    create(
        &[
            "--ipv6",
            "--subnet",
            "fd00:62::/64",
            "--ip-range",
            "fd00:63::/80",
        ],
        "not inside",
    );
    create(
        &["--ipv6", "-o", "gateway_mode_ipv6=bogus"],
        "not nat or routed",
    );
    let run = |net: &str, ip6: &str, want: &str| {
        let e = sb.dnet_err(&[
            "run",
            "-d",
            "--name",
            "bad",
            "--network",
            net,
            "--ip6",
            ip6,
            "--",
            "sleep",
            "300",
        ]);
        assert!(e.contains(want), "--ip6 {ip6}: {e:?} does not say {want:?}");
    };
    run("dual", "fd00:61::5", "not a usable address");
    run("dual", "fd00:60::", "not a usable address");
    run("dual", "fd00:60::10", "already in use");
    run("dual", "fd00:60::1", "gateway");
    run("dual", "10.60.0.9", "expected an IPv6 address");
    run("v4only", "fd00:61::5", "not dual-stack");
    assert_eq!((sb.snapshot(), snapshot6(&sb)), before);

    // The daemon's own flags, refused before it starts.
    let o = sb.in_host(
        dnet_bin().to_str().unwrap(),
        &["daemon", "--fixed-cidr-v6", "fd00:70::/64"],
    );
    assert!(!ok(&o) && out(&o).contains("needs --ipv6"), "{}", out(&o));
    let o = sb.in_host(
        dnet_bin().to_str().unwrap(),
        &["daemon", "--ipv6", "--fixed-cidr-v6", "fd00:70::/80"],
    );
    assert!(!ok(&o) && out(&o).contains("/64 or shorter"), "{}", out(&o));
}

#[test]
fn a_dual_stack_container_gets_its_address_routes_and_sysctls() {
    let mut sb = Sandbox::with_daemon_args(&["--ipv6", "--fixed-cidr-v6", "fd00:17::/64"]);
    sb.dnet_ok(&["run", "-d", "--name", "a", "--", "sleep", "300"]);
    sb.dnet_ok(&["network", "create", "--subnet", "10.63.0.0/24", "v4only"]);
    sb.sleeper("b", &["--network", "v4only"]);

    // Inside: the address, at once usable and without a prefix route.
    let eth0 = &json_in(&sb, "a", &["ip", "-j", "-6", "addr", "show", "eth0"])[0];
    let global: Vec<&Value> = eth0["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["scope"] == "global")
        .collect();
    assert_eq!(global.len(), 1, "{eth0}");
    assert_eq!(global[0]["local"], "fd00:17::2");
    assert_eq!(global[0]["prefixlen"], 64);
    assert_eq!(global[0]["nodad"], true, "{eth0}");
    assert_eq!(global[0]["noprefixroute"], true, "{eth0}");
    assert_ne!(global[0]["tentative"], true, "{eth0}");
    let routes = json_in(&sb, "a", &["ip", "-j", "-6", "route", "show"]);
    let has = |dst: &str, gw: Option<&str>| {
        routes.as_array().unwrap().iter().any(|r| {
            r["dst"] == dst
                && r["dev"] == "eth0"
                && match gw {
                    Some(g) => r["gateway"] == g,
                    None => r["gateway"].is_null(),
                }
        })
    };
    assert!(has("fd00:17::1", None), "{routes}");
    assert!(has("fd00:17::/64", Some("fd00:17::1")), "{routes}");
    assert!(has("default", Some("fd00:17::1")), "{routes}");
    let lo = &json_in(&sb, "a", &["ip", "-j", "-6", "addr", "show", "lo"])[0];
    assert!(
        lo["addr_info"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["local"] == "::1"),
        "{lo}"
    );
    for (name, want) in [
        ("eth0/disable_ipv6", "0"),
        ("eth0/accept_ra", "0"),
        ("eth0/autoconf", "0"),
        ("eth0/accept_dad", "0"),
        ("eth0/router_solicitations", "0"),
        ("eth0/accept_redirects", "0"),
        ("lo/disable_ipv6", "0"),
    ] {
        assert_eq!(sysctl_in(&sb, "a", name), want, "{name} in a");
    }
    // The IPv4-only container next to it keeps IPv6 off.
    assert_eq!(sysctl_in(&sb, "b", "eth0/disable_ipv6"), "1");

    // The host side.
    let ps = sb.dnet_json(&["ps"]);
    let a = ps
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "a")
        .unwrap();
    let net = &a["networks"][0];
    assert_eq!(net["ip6"], "fd00:17::2", "{a}");
    assert_eq!(net["prefix6"], 64);
    assert_eq!(net["gateway6"], "fd00:17::1");
    let veth = net["host_ifname"].as_str().unwrap().to_owned();
    for (key, want) in [
        ("disable_ipv6", "0"),
        ("addr_gen_mode", "1"),
        ("accept_ra", "0"),
        ("forwarding", "1"),
    ] {
        assert_eq!(host_sysctl(&sb, &format!("{veth}/{key}")), want, "{key}");
    }
    assert_eq!(host_sysctl(&sb, "all/forwarding"), "0", "all.forwarding");
    let h = sb.host_ns.as_str();
    assert_eq!(
        sh_ok("ip", &["-n", h, "-6", "addr", "show", "dev", &veth]).trim(),
        "",
        "no address (not even link-local) on the host end"
    );
    let v6 = snapshot6(&sb);
    assert!(v6.contains("inet6 fd00:17::1/128"), "{v6}");
    assert!(v6.contains("unreachable fd00:17::/64"), "{v6}");
    assert!(v6.contains(&format!("fd00:17::2 dev {veth}")), "{v6}");
    let inspect = &sb.dnet_json(&["network", "inspect", "bridge"])[0];
    assert_eq!(inspect["ipam6"]["subnet"], "fd00:17::/64", "{inspect}");
    assert_eq!(inspect["ipam6"]["gateway"], "fd00:17::1", "{inspect}");

    // The datapath knows the network's and the endpoint's IPv6 side.
    let hex = |a: &str| {
        a.parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let section = |maps: &str, name: &str| -> String {
        maps.split(&format!("{name}:\n"))
            .nth(1)
            .map(|rest| {
                rest.lines()
                    .take_while(|l| l.contains(" => "))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default()
    };
    let maps = sb.map_contents();
    use dnet_common::maps::{ENDPOINT6_BY_IF, ENDPOINTS6_BY_IP, NETWORKS6, SUBNETS6};
    assert!(
        section(&maps, ENDPOINTS6_BY_IP).starts_with(&hex("fd00:17::2")),
        "{maps}"
    );
    assert!(
        section(&maps, ENDPOINT6_BY_IF).ends_with(&hex("fd00:17::2")),
        "{maps}"
    );
    assert!(
        section(&maps, NETWORKS6).contains(&format!("{}{}", hex("fd00:17::"), hex("fd00:17::1"))),
        "{maps}"
    );
    assert!(
        section(&maps, SUBNETS6).contains(&hex("fd00:17::")),
        "{maps}"
    );
    // b is IPv4-only: one entry each.
    assert_eq!(section(&maps, ENDPOINT6_BY_IF).lines().count(), 1, "{maps}");

    // A restart keeps all of it as it is.
    let before = (sb.snapshot(), snapshot6(&sb));
    sb.stop_daemon(libc::SIGKILL);
    sb.start_daemon();
    assert_eq!((sb.snapshot(), snapshot6(&sb)), before);

    // Without an IPv6 subnet: /64s of one ULA /48, kept in the state.
    for n in ["auto1", "auto2"] {
        sb.dnet_ok(&["network", "create", "--ipv6", n]);
    }
    let cidr = |s: &str| -> (std::net::Ipv6Addr, u8) {
        let (a, p) = s.split_once('/').unwrap();
        (a.parse().unwrap(), p.parse().unwrap())
    };
    let (ula, ula_prefix) = cidr(sb.state()["ula48"].as_str().unwrap());
    assert_eq!(ula_prefix, 48);
    assert_eq!(ula.octets()[0], 0xfd);
    let subnet = |n: &str| {
        cidr(
            sb.dnet_json(&["network", "inspect", n])[0]["ipam6"]["subnet"]
                .as_str()
                .unwrap(),
        )
    };
    let (s1, s2) = (subnet("auto1"), subnet("auto2"));
    assert!(s1.1 == 64 && s2.1 == 64 && s1 != s2, "{s1:?} {s2:?}");
    for s in [s1, s2] {
        assert_eq!(
            u128::from(s.0) >> 80,
            u128::from(ula) >> 80,
            "{s:?} in {ula}"
        );
    }
    let (s1, s2) = (s1.0, s2.0);

    // Removal undoes it all.
    sb.dnet_ok(&["rm", "-f", "a"]);
    sb.dnet_ok(&["network", "rm", "auto1"]);
    sb.settle();
    let v6 = snapshot6(&sb);
    assert!(!v6.contains("fd00:17::2"), "{v6}");
    assert!(!v6.contains(&s1.to_string()), "{v6}");
    assert!(v6.contains(&s2.to_string()), "{v6}");
    let maps = sb.map_contents();
    assert!(!maps.contains(&hex("fd00:17::2")), "{maps}");
    assert!(
        !section(&maps, SUBNETS6).contains(&hex(&s1.to_string())),
        "{maps}"
    );
}

#[test]
fn dual_stack_names_have_their_ipv6_address_in_hosts_and_dns() {
    let sb = Sandbox::new();
    sb.dual_stack_network("dual", "10.64.0.0/24", "fd00:64::/64");
    sb.dnet_ok(&["network", "create", "--subnet", "10.65.0.0/24", "v4only"]);
    for (name, net) in [("web", "dual"), ("client", "dual"), ("old", "v4only")] {
        sb.sleeper(name, &["--network", net]);
    }
    let hosts = sb.dnet_ok(&["exec", "web", "--", "cat", "/etc/hosts"]);
    let id = sb.container("web")["id"].as_str().unwrap().to_owned();
    let short = &id[..12];
    assert!(
        hosts.ends_with(&format!(
            "10.64.0.2\t{short} web\nfd00:64::2\t{short} web\n"
        )),
        "{hosts}"
    );
    let ct = conntest_bin();
    let ask = |name: &str, ty: &str| -> Vec<String> {
        let o = sb.dnet(&[
            "exec",
            "client",
            "--",
            ct.to_str().unwrap(),
            "dns",
            "query",
            "10.64.0.1",
            name,
            ty,
        ]);
        assert!(ok(&o), "{}", out(&o));
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(ask("web", "aaaa"), vec!["rcode NoError", "AAAA fd00:64::2"]);
    assert_eq!(ask("web.dual", "a"), vec!["rcode NoError", "A 10.64.0.2"]);
    let hosts = sb.dnet_ok(&["exec", "old", "--", "cat", "/etc/hosts"]);
    assert!(!hosts.contains("fd00:"), "{hosts}");
}

/// A daemon killed between the commit and the teardown of a dual-stack
/// network's or container's removal: the next start removes the IPv6
/// objects nobody owns (gateway on `lo`, unreachable route, map entries).
#[test]
fn an_interrupted_ipv6_removal_is_finished_at_the_next_start() {
    let mut sb = Sandbox::new();
    let clean = (sb.snapshot(), snapshot6(&sb));
    for (point, setup, op) in [
        (
            "network-remove:committed",
            &[&[
                "network",
                "create",
                "--ipv6",
                "--subnet",
                "fd00:66::/64",
                "gone",
            ][..]][..],
            &["network", "rm", "gone"][..],
        ),
        (
            "container-remove:committed",
            &[
                &[
                    "network",
                    "create",
                    "--ipv6",
                    "--subnet",
                    "fd00:67::/64",
                    "keep",
                ][..],
                &[
                    "run",
                    "-d",
                    "--name",
                    "c",
                    "--network",
                    "keep",
                    "--",
                    "sleep",
                    "300",
                ][..],
            ][..],
            &["rm", "-f", "c"][..],
        ),
    ] {
        for s in setup {
            sb.dnet_ok(s);
        }
        sb.stop_daemon(libc::SIGTERM);
        sb.set_daemon_env(&[("DNET_CRASH_AT", point)]);
        sb.start_daemon();
        assert!(!ok(&sb.dnet(op)), "{point}: {op:?} answered");
        assert!(
            sb.wait_daemon_exit(std::time::Duration::from_secs(30))
                .is_some(),
            "{point}: the daemon did not stop there"
        );
        sb.set_daemon_env(&[]);
        sb.start_daemon();
        dnet_sandbox::assert_consistent(&sb);
        if point == "container-remove:committed" {
            let maps = sb.map_contents();
            assert!(
                !maps.contains("fd006700000000000000000000000002"),
                "{point}: {maps}"
            );
            sb.dnet_ok(&["network", "rm", "keep"]);
        }
        sb.settle();
        assert_eq!((sb.snapshot(), snapshot6(&sb)), clean, "{point}");
    }
}

/// A conntest server on `[::]:PORT` (IPv6 and IPv4) in a new container.
fn ip6_of(sb: &Sandbox, name: &str) -> String {
    sb.container(name)["networks"][0]["ip6"]
        .as_str()
        .unwrap_or_else(|| panic!("{name} has no IPv6 address"))
        .to_owned()
}

/// What a conntest server saw of one request from `from` to `[to]:port`.
fn request6(sb: &Sandbox, from: &str, proto: &str, to: &str, port: u16) -> Option<String> {
    let o = sb.conntest_in(from, &[proto, &format!("[{to}]:{port}")]);
    ok(&o).then(|| String::from_utf8_lossy(&o.stdout).trim().to_owned())
}

#[test]
fn dual_stack_containers_reach_each_other_and_the_gateway_over_ipv6() {
    let sb = Sandbox::new();
    for (net, v4, v6) in [
        ("dual", "10.70.0.0/24", "fd00:70::/64"),
        ("other", "10.71.0.0/24", "fd00:71::/64"),
    ] {
        sb.dnet_ok(&[
            "network", "create", "--ipv6", "--subnet", v4, "--subnet", v6, net,
        ]);
    }
    sb.server6("tcp", "dual", "tcp", 80);
    sb.server6("udp", "dual", "udp", 53);
    sb.server6("far", "other", "tcp", 80);
    sb.sleeper("cli", &["--network", "dual"]);
    let (t, u, far, cli) = (
        ip6_of(&sb, "tcp"),
        ip6_of(&sb, "udp"),
        ip6_of(&sb, "far"),
        ip6_of(&sb, "cli"),
    );
    // The gateway and the peers, both ways; the server sees the client's
    // own address.
    assert!(sb.ping6("cli", "fd00:70::1"), "gateway");
    assert!(sb.ping6("cli", &t) && sb.ping6("tcp", &cli), "peers");
    for (proto, to, port) in [("tcp", &t, 80), ("udp", &u, 53)] {
        let seen = request6(&sb, "cli", proto, to, port)
            .unwrap_or_else(|| panic!("{proto} to [{to}]:{port}"));
        assert!(seen.starts_with(&format!("[{cli}]:")), "{proto}: {seen}");
    }
    // The same servers over IPv4 still.
    let seen = sb.conntest_in("cli", &["tcp", &format!("{}:80", sb.ip_of("tcp"))]);
    assert!(ok(&seen), "{}", out(&seen));
    // Another network's container is out of reach, over IPv6 as over IPv4.
    assert!(
        request6(&sb, "cli", "tcp", &far, 80).is_none(),
        "reached another network"
    );
    assert!(!sb.ping6("cli", &far));
    // The host reaches a container at its IPv6 address, from the gateway.
    let o = sb.in_host("ping", &["-6", "-n", "-c", "1", "-W", "2", &t]);
    assert!(ok(&o), "host to {t}: {}", out(&o));
}

#[test]
fn an_ipv4_only_network_next_to_a_dual_stack_one_drops_ipv6() {
    let sb = Sandbox::new();
    sb.dual_stack_network("dual", "10.72.0.0/24", "fd00:72::/64");
    sb.dnet_ok(&["network", "create", "--subnet", "10.73.0.0/24", "v4"]);
    sb.server6("srv", "dual", "tcp", 80);
    sb.sleeper("v4c", &["--network", "v4"]);
    // The IPv4-only container turns IPv6 on by itself, takes an address of
    // the dual-stack subnet and sends to it: the datapath drops all of
    // it with the `ipv6` reason (its network has no IPv6).
    sb.dnet_ok(&[
        "exec",
        "v4c",
        "--",
        "sh",
        "-c",
        "echo 0 > /proc/sys/net/ipv6/conf/eth0/disable_ipv6 && \
         ip -6 addr add fd00:72::99/64 dev eth0 nodad && \
         ip -6 route add default dev eth0",
    ]);
    let before = sb.drops("v4c", "ipv6");
    let srv = ip6_of(&sb, "srv");
    assert!(request6(&sb, "v4c", "tcp", &srv, 80).is_none());
    assert!(sb.drops("v4c", "ipv6") > before, "counted");
    // The dual-stack side is not disturbed.
    sb.sleeper("cli", &["--network", "dual"]);
    assert!(request6(&sb, "cli", "tcp", &srv, 80).is_some());
}

#[test]
fn ipv6_forwarding_goes_on_while_the_daemon_is_down_and_after_a_restart() {
    let mut sb = Sandbox::with_daemon_args(&["--ipv6", "--fixed-cidr-v6", "fd00:74::/64"]);
    sb.server6("srv", "bridge", "tcp", 80);
    sb.dnet_ok(&["run", "-d", "--name", "cli", "--", "sleep", "300"]);
    let srv = ip6_of(&sb, "srv");
    assert!(request6(&sb, "cli", "tcp", &srv, 80).is_some());
    let before = (sb.snapshot(), snapshot6(&sb));
    let cli_ns = sb.netns_of("cli");
    sb.stop_daemon(libc::SIGKILL);
    // No daemon: the pinned programs and maps go on (`dnet exec` needs
    // the daemon, so from the container's namespace directly).
    let ct = conntest_bin();
    let o = dnet_sandbox::in_netns(
        &cli_ns,
        ct.to_str().unwrap(),
        &["tcp", &format!("[{srv}]:80")],
    );
    assert!(ok(&o), "while the daemon is down: {}", out(&o));
    sb.start_daemon();
    assert_eq!((sb.snapshot(), snapshot6(&sb)), before);
    assert!(request6(&sb, "cli", "tcp", &srv, 80).is_some());
    assert!(sb.ping6("cli", "fd00:74::1"));
    // A new dual-stack container after the restart reaches the old ones.
    sb.dnet_ok(&["run", "-d", "--name", "new", "--", "sleep", "300"]);
    assert_eq!(ip6_of(&sb, "new"), "fd00:74::4");
    assert!(request6(&sb, "new", "tcp", &srv, 80).is_some());
}

#[test]
fn a_dual_stack_network_connected_later_and_internal_ones_route_as_ipv4_does() {
    let sb = Sandbox::new();
    sb.dual_stack_network("dual", "10.77.0.0/24", "fd00:77::/64");
    sb.dnet_ok(&[
        "network",
        "create",
        "--internal",
        "--ipv6",
        "--subnet",
        "10.78.0.0/24",
        "--subnet",
        "fd00:78::/64",
        "closed",
    ]);
    let map6 = |sb: &Sandbox| {
        let m = sb.map_contents();
        m.split("\n")
            .filter(|l| l.contains(" => "))
            .filter(|l| l.contains("fd0000770000") || l.contains("fd0000780000"))
            .count()
    };
    let before = (sb.snapshot(), snapshot6(&sb), map6(&sb));
    // On the default (IPv4-only) bridge first, then connected to dual.
    sb.dnet_ok(&["run", "-d", "--name", "a", "--", "sleep", "300"]);
    sb.dnet_ok(&["network", "connect", "--ip6", "fd00:77::77", "dual", "a"]);
    let eth1 = &json_in(&sb, "a", &["ip", "-j", "-6", "addr", "show", "eth1"])[0];
    assert!(
        eth1["addr_info"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["local"] == "fd00:77::77"),
        "{eth1}"
    );
    assert_eq!(sysctl_in(&sb, "a", "eth0/disable_ipv6"), "1");
    assert!(sb.ping6("a", "fd00:77::1"), "the gateway through eth1");
    let routes = json_in(&sb, "a", &["ip", "-j", "-6", "route", "show"]);
    // The IPv4 default route is eth0's: no IPv6 default either (as the
    // IPv4 default goes, so goes the IPv6 one).
    assert!(
        !routes
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["dst"] == "default"),
        "{routes}"
    );
    // An internal dual-stack network gives no default route.
    sb.sleeper("b", &["--network", "closed"]);
    let routes = json_in(&sb, "b", &["ip", "-j", "-6", "route", "show"]);
    let rs = routes.as_array().unwrap();
    assert!(!rs.iter().any(|r| r["dst"] == "default"), "{routes}");
    assert!(rs.iter().any(|r| r["dst"] == "fd00:78::/64"), "{routes}");
    assert!(sb.ping6("b", "fd00:78::1"), "the internal gateway");
    // Disconnect and removal leave nothing.
    sb.dnet_ok(&["network", "disconnect", "dual", "a"]);
    let o = sb.dnet(&["exec", "a", "--", "ip", "link", "show", "eth1"]);
    assert!(!ok(&o), "eth1 is gone");
    sb.dnet_ok(&["rm", "-f", "a", "b"]);
    sb.settle();
    assert_eq!((sb.snapshot(), snapshot6(&sb), map6(&sb)), before);
}

/// The host's `getpeername()` of a TCP connection to `[addr]:port`.
fn host_peername6(sb: &Sandbox, addr: &str, port: u16) -> String {
    let py = format!(
        "import socket; s = socket.create_connection(('{addr}', {port}), 3); print(s.getpeername()[:2])"
    );
    let o = sb.in_host("python3", &["-c", &py]);
    assert!(ok(&o), "{}", out(&o));
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

#[test]
fn the_host_reaches_ports_published_by_dual_stack_containers_over_ipv6() {
    let sb = dual_stack_sandbox();
    let ct = conntest_bin();
    let ct = ct.to_str().unwrap();
    sb.dual_stack_network("dual", "10.72.0.0/24", "fd00:72::/64");
    let serve = |name: &str, net: &str, p: &[&str], proto: &str, port: u16| {
        let mut a = vec!["run", "-d", "--name", name, "--network", net];
        for p in p {
            a.extend(["-p", p]);
        }
        let listen = format!("[::]:{port}");
        a.extend(["--", ct, "serve", proto, &listen]);
        sb.dnet_ok(&a);
        sb.wait_server(name, proto, port);
    };
    serve("web", "dual", &["8080:80"], "tcp", 80);
    serve("dns", "dual", &["5353:53/udp"], "udp", 53);
    serve("v6only", "dual", &["[::1]:8081:80"], "tcp", 80);
    serve("v4only", "dual", &["127.0.0.1:8083:80"], "tcp", 80);
    serve("old", "bridge", &["8082:80"], "tcp", 80);
    let host = |proto: &str, to: &str| sb.in_host(ct, &[proto, to]);
    // [::1] and the uplink's IPv6 address lead to the container's IPv6
    // address, and it sees the host's own address (the gateway it routes
    // from), not ::1 and not a proxy's.
    for to in [
        "[::1]:8080".to_owned(),
        format!("[{UPLINK6}]:8080"),
        "[::1]:8081".to_owned(),
    ] {
        let o = host("tcp", &to);
        assert!(ok(&o), "host to {to}: {}", out(&o));
        let seen = String::from_utf8_lossy(&o.stdout).trim().to_owned();
        assert!(
            seen.starts_with("[fd00:72::1]:") || seen.starts_with(&format!("[{UPLINK6}]:")),
            "{to}: the container saw {seen}"
        );
    }
    let o = host("udp", "[::1]:5353");
    assert!(ok(&o), "host UDP to [::1]:5353: {}", out(&o));
    // Unconnected, as glibc's resolver: sendmsg6 leads the datagram in and
    // recvmsg6 makes the answer read as coming from [::1]:5353.
    let py = [
        "import socket",
        "s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)",
        "s.settimeout(1)",
        "for _ in range(3):",
        "    s.sendto(b'hello', ('::1', 5353))",
        "    try:",
        "        print(s.recvfrom(512)[1][:2]); break",
        "    except socket.timeout:",
        "        pass",
    ]
    .join("\n");
    let o = sb.in_host("python3", &["-c", &py]);
    assert!(ok(&o), "{}", out(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "('::1', 5353)");
    // IPv4 still, for the port published on every address.
    let o = host("tcp", "127.0.0.1:8080");
    assert!(ok(&o), "{}", out(&o));
    // The socket reads as connected to the published port (getpeername6).
    assert_eq!(host_peername6(&sb, "::1", 8080), "('::1', 8080)");
    assert_eq!(
        host_peername6(&sb, UPLINK6, 8080),
        format!("('{UPLINK6}', 8080)")
    );
    // A port published on one family's address is not in the other's; an
    // IPv4-only container's ports are refused over IPv6 (no proxy).
    for (proto, to) in [
        ("tcp", "127.0.0.1:8081"),
        ("tcp", "[::1]:8083"),
        ("tcp", "[::1]:8082"),
    ] {
        let o = host(proto, to);
        assert!(!ok(&o), "{to} answered: {}", out(&o));
        assert!(out(&o).contains("refused"), "{to}: {}", out(&o));
    }
    let o = host("tcp", "127.0.0.1:8082");
    assert!(ok(&o), "the IPv4-only container over IPv4: {}", out(&o));
    // Gone with its container.
    sb.dnet_ok(&["rm", "-f", "web"]);
    let o = host("tcp", "[::1]:8080");
    assert!(!ok(&o), "{}", out(&o));
    // A published IPv6 address must be one the datapath answers on.
    let o = sb.dnet(&[
        "run",
        "--network",
        "dual",
        "-p",
        "[fd00:99::5]:9000:80",
        "--",
        "true",
    ]);
    assert!(!ok(&o));
    assert!(out(&o).contains("not on fd00:99::5"), "{}", out(&o));
    // An IPv6 host address on an IPv4-only network publishes nothing: refused.
    let e = sb.dnet_err(&[
        "run",
        "--network",
        "bridge",
        "-p",
        "[::1]:9001:80",
        "--",
        "true",
    ]);
    assert!(e.contains("IPv4-only"), "{e}");
    // A host service on [::1] alone keeps its port from a dual-stack publish.
    let py = "import socket, subprocess, sys\n\
s = socket.socket(socket.AF_INET6)\n\
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)\n\
s.bind(('::1', 9002)); s.listen()\n\
r = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n\
print(r.returncode, r.stdout, r.stderr)\n";
    let (dnet, sock) = (dnet_bin(), sb.socket());
    let o = sb.in_host(
        "python3",
        &[
            "-c",
            py,
            dnet.to_str().unwrap(),
            "--socket",
            sock.to_str().unwrap(),
            "run",
            "--network",
            "dual",
            "-p",
            "9002:80",
            "--",
            "true",
        ],
    );
    assert!(ok(&o), "{}", out(&o));
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(!said.starts_with("0 "), "the publish was accepted: {said}");
    assert!(said.contains("in use"), "{said}");
}

#[test]
fn the_resolver_answers_on_the_ipv6_gateway_of_a_dual_stack_network() {
    let sb = Sandbox::new();
    sb.dual_stack_network("dual", "10.74.0.0/24", "fd00:74::/64");
    sb.dnet_ok(&["network", "create", "--subnet", "10.75.0.0/24", "v4only"]);
    for (name, net) in [("web", "dual"), ("client", "dual"), ("old", "v4only")] {
        sb.sleeper(name, &["--network", net]);
    }
    // resolv.conf lists the IPv6 gateway after the IPv4 one, where it
    // works only.
    let rc = sb.dnet_ok(&["exec", "client", "--", "cat", "/etc/resolv.conf"]);
    assert!(
        rc.contains("nameserver 10.74.0.1\nnameserver fd00:74::1\n"),
        "{rc}"
    );
    let rc = sb.dnet_ok(&["exec", "old", "--", "cat", "/etc/resolv.conf"]);
    assert!(
        rc.contains("nameserver 10.75.0.1\n") && !rc.contains("fd00:"),
        "{rc}"
    );
    // Queries over IPv6 only, UDP and TCP: the client is known by its
    // IPv6 source and sees its own networks' names.
    let ct = conntest_bin();
    let ask = |name: &str, ty: &str, tcp: bool| -> Vec<String> {
        let mut a = vec![
            "exec",
            "client",
            "--",
            ct.to_str().unwrap(),
            "dns",
            "query",
            "[fd00:74::1]:53",
            name,
            ty,
        ];
        if tcp {
            a.push("--tcp");
        }
        let o = sb.dnet(&a);
        assert!(ok(&o), "{}", out(&o));
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    };
    for tcp in [false, true] {
        assert_eq!(
            ask("web", "aaaa", tcp),
            vec!["rcode NoError", "AAAA fd00:74::2"]
        );
        assert_eq!(
            ask("web.dual", "a", tcp),
            vec!["rcode NoError", "A 10.74.0.2"]
        );
        // Another network's container is not its to know: forwarded (and
        // the sandbox has no upstream), never answered with its address.
        let a = ask("old", "a", tcp);
        assert!(!a.iter().any(|l| l.starts_with("A ")), "scoped: {a:?}");
    }
}

#[test]
fn a_dual_stack_container_reaches_the_world_over_ipv6_as_the_uplink() {
    let mut sb = dual_stack_sandbox();
    sb.route6_via_world();
    let w = sb.world_netns_path();
    let ct = conntest_bin();
    let ct = ct.to_str().unwrap();
    sb.spawn_in(&w, ct, &["serve", "tcp", "[::]:80"]);
    sb.spawn_in(&w, ct, &["serve", "udp", "[::]:53"]);
    wait_listening(&w, "tcp", 80);
    wait_listening(&w, "udp", 53);
    sb.dual_stack_network("nat6", "10.72.0.0/24", "fd00:72::/64");
    sb.sleeper("cli", &["--network", "nat6"]);
    // The world sees the uplink's IPv6 address, never the container's.
    for (proto, port) in [("tcp", 80), ("udp", 53)] {
        let seen = request6(&sb, "cli", proto, WORLD6, port)
            .unwrap_or_else(|| panic!("{proto} to [{WORLD6}]:{port}"));
        assert!(
            seen.starts_with(&format!("[{UPLINK6}]:")),
            "{proto}: {seen}"
        );
    }
    assert!(sb.ping6("cli", WORLD6), "ping over NAT66");
    // The flows are in dnet's IPv6 table, translated to the uplink.
    let f = sb.flows();
    for proto in ["tcp", "udp", "icmpv6"] {
        let x = f
            .iter()
            .find(|x| x["proto"] == proto)
            .unwrap_or_else(|| panic!("no {proto} flow: {f:?}"));
        assert_eq!(x["kind"], "snat");
        let src = x["translated"]["src"].as_str().unwrap();
        // `[addr]:port`, or `addr id N` for an echo.
        assert!(
            src.starts_with(&format!("[{UPLINK6}]")) || src.starts_with(UPLINK6),
            "{x}"
        );
    }
}

/// IPv6 fragments across NAT66 (issue 13), as IPv4's cross the NAT:
/// datagrams larger than the path MTU go out and come back in fragments,
/// a 4,000-byte UDP echo and a 3,000-byte ping from a container to the
/// world, and a 6,000-byte echo from the world through a port published
/// over IPv6; nothing is dropped for being a fragment, and each datagram's
/// fragments follow its first's flow.
#[test]
fn ipv6_datagrams_larger_than_the_mtu_cross_nat66_in_fragments_both_ways() {
    let mut sb = dual_stack_sandbox();
    sb.route6_via_world();
    let w = sb.world_netns_path();
    let ct = conntest_bin();
    let ct = ct.to_str().unwrap();
    sb.spawn_in(&w, ct, &["serve", "udp-echo", "[::]:7"]);
    wait_listening(&w, "udp", 7);
    sb.dual_stack_network("frag6", "10.74.0.0/24", "fd00:74::/64");
    sb.sleeper("a", &["--network", "frag6"]);
    let world = format!("[{WORLD6}]:7");
    let o = sb.conntest_in("a", &["echo", &world, "--size", "4000"]);
    assert!(ok(&o), "a -> the world and back: {}", out(&o));
    let o = sb.dnet(&[
        "exec", "a", "--", "ping", "-6", "-n", "-c", "1", "-W", "3", "-s", "3000", WORLD6,
    ]);
    assert!(ok(&o), "a big ping: {}", out(&o));
    sb.dnet_ok(&[
        "run",
        "-d",
        "--name",
        "e",
        "--network",
        "frag6",
        "-p",
        "7007:7/udp",
        "--",
        ct,
        "serve",
        "udp-echo",
        "[::]:7",
    ]);
    sb.wait_server("e", "udp", 7);
    let o = sb.in_world(
        ct,
        &["echo", &format!("[{UPLINK6}]:7007"), "--size", "6000"],
    );
    assert!(
        ok(&o),
        "the world -> e's port published over IPv6 and back: {}",
        out(&o)
    );
    for c in ["a", "e"] {
        assert_eq!(sb.drops(c, "fragment"), 0, "{c}");
    }
    // One flow per datagram's tuple: the fragments followed their first.
    let f = sb.flows();
    assert_eq!(f.iter().filter(|x| x["proto"] == "udp").count(), 2, "{f:?}");
    assert!(f.iter().any(|x| x["proto"] == "icmpv6"), "{f:?}");
}

#[test]
fn nat66_follows_an_ipv6_address_the_uplink_gets_after_the_daemon_started() {
    let mut sb = Sandbox::new();
    let w = sb.world_netns_path();
    let ct = conntest_bin();
    sb.spawn_in(&w, ct.to_str().unwrap(), &["serve", "tcp", "[::]:80"]);
    wait_listening(&w, "tcp", 80);
    sb.dual_stack_network("nat6late", "10.73.0.0/24", "fd00:73::/64");
    sb.sleeper("cli", &["--network", "nat6late"]);
    // No IPv6 on the uplink yet: nothing leaves (no-nat-address).
    assert!(request6(&sb, "cli", "tcp", WORLD6, 80).is_none());
    sb.add_uplink6();
    sb.route6_via_world();
    // The daemon hears of the address (netlink) and translates to it.
    let mut seen = None;
    for _ in 0..50 {
        seen = request6(&sb, "cli", "tcp", WORLD6, 80);
        if seen.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let seen = seen.expect("NAT66 after the uplink got its IPv6 address");
    assert!(seen.starts_with(&format!("[{UPLINK6}]:")), "{seen}");
}

/// Runs `web` (TCP, `-p 8080:80`) and `dns` (UDP, `-p 5353:53/udp`),
/// conntest servers listening on `[::]`, on `network`, and waits for both.
fn publish_web_and_dns(sb: &Sandbox, network: &str) {
    let ct = conntest_bin();
    let ct = ct.to_str().unwrap();
    for (name, p, proto, port) in [
        ("web", "8080:80", "tcp", 80),
        ("dns", "5353:53/udp", "udp", 53),
    ] {
        let listen = format!("[::]:{port}");
        sb.dnet_ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            network,
            "-p",
            p,
            "--",
            ct,
            "serve",
            proto,
            &listen,
        ]);
        sb.wait_server(name, proto, port);
    }
}

/// Published ports from the world over IPv6 (issue 13): the world reaches
/// a dual-stack container's `-p H:C` at `[uplink6]:H` over IPv6 and at
/// the uplink's IPv4 `:H` over IPv4, TCP and UDP, and the container sees
/// the world's own address each time (no proxy); a port nobody published
/// is the host's (refused).
#[test]
fn the_world_reaches_a_dual_stack_containers_published_ports_over_ipv6_and_ipv4() {
    let sb = dual_stack_sandbox();
    let ct = conntest_bin();
    let ct = ct.to_str().unwrap();
    sb.dual_stack_network("dual", "10.73.0.0/24", "fd00:73::/64");
    publish_web_and_dns(&sb, "dual");
    let world = |proto: &str, to: &str| sb.in_world(ct, &[proto, to]);
    for (proto, to, seen) in [
        ("tcp", format!("[{UPLINK6}]:8080"), format!("[{WORLD6}]:")),
        ("udp", format!("[{UPLINK6}]:5353"), format!("[{WORLD6}]:")),
        ("tcp", format!("{UPLINK_IP}:8080"), format!("{WORLD_IP}:")),
        ("udp", format!("{UPLINK_IP}:5353"), format!("{WORLD_IP}:")),
    ] {
        let o = world(proto, &to);
        assert!(ok(&o), "the world to {proto} {to}: {}", out(&o));
        let got = String::from_utf8_lossy(&o.stdout).trim().to_owned();
        // The server listens on [::]: an IPv4 client reads v4-mapped.
        let got = got.replace("[::ffff:", "").replace("]:", ":");
        let seen = seen.replace("]:", ":");
        assert!(
            got.starts_with(&seen),
            "{proto} {to}: the container saw {got}"
        );
    }
    // The IPv6 flows are DNAT flows in dnet's IPv6 table, to the
    // container's IPv6 address.
    let web6 = ip6_of(&sb, "web");
    let f = sb.flows();
    assert!(
        f.iter().any(|x| x["proto"] == "tcp"
            && x["kind"] == "dnat"
            && x["translated"]["dst"] == format!("[{web6}]:80")),
        "no IPv6 DNAT flow to [{web6}]:80: {f:?}"
    );
    // A port nobody published is the host's: nothing listens there.
    let o = sb.in_world(ct, &["tcp", &format!("[{UPLINK6}]:8081"), "--timeout", "1"]);
    assert!(!ok(&o), "{}", out(&o));
    assert!(out(&o).contains("refused"), "{}", out(&o));
}

/// Hairpin over IPv6 (issue 13): containers reach a port published at
/// `[uplink6]:H`, TCP and UDP, from another network and from the
/// publishing container itself, as over IPv4; the server sees its own
/// network's IPv6 gateway (the source it answers through the datapath, as
/// IPv4's hairpin gives), and the flows are hairpin flows of dnet's IPv6
/// table.
#[test]
fn containers_reach_ports_published_on_the_uplinks_ipv6_address_by_hairpin() {
    let sb = dual_stack_sandbox();
    sb.dual_stack_network("dual", "10.74.0.0/24", "fd00:74::/64");
    sb.dual_stack_network("other", "10.75.0.0/24", "fd00:75::/64");
    publish_web_and_dns(&sb, "dual");
    sb.sleeper("client", &["--network", "other"]);
    for (from, proto, port) in [
        ("client", "tcp", 8080),
        ("client", "udp", 5353),
        ("web", "tcp", 8080),
        ("dns", "udp", 5353),
    ] {
        let seen = request6(&sb, from, proto, UPLINK6, port)
            .unwrap_or_else(|| panic!("{from} to {proto} [{UPLINK6}]:{port} got no answer"));
        assert!(
            seen.starts_with("[fd00:74::1]:"),
            "{from} to {proto} [{UPLINK6}]:{port}: the server saw {seen}"
        );
    }
    let web6 = ip6_of(&sb, "web");
    let f = sb.flows();
    assert!(
        f.iter().any(|x| x["proto"] == "tcp"
            && x["kind"] == "hairpin"
            && x["translated"]["dst"] == format!("[{web6}]:80")),
        "no IPv6 hairpin flow to [{web6}]:80: {f:?}"
    );
    // A port nobody published on the uplink's IPv6 address is the host's:
    // nothing listens there.
    let o = sb.conntest_in(
        "client",
        &["tcp", &format!("[{UPLINK6}]:8081"), "--timeout", "1"],
    );
    assert!(!ok(&o), "{}", out(&o));
    assert!(out(&o).contains("refused"), "{}", out(&o));
}

/// A dual-stack host socket (`AF_INET6`) reaching an IPv4 published port at
/// a v4-mapped address (`::ffff:127.0.0.1`, `::ffff:UPLINK4`) gets there
/// as `127.0.0.1:H` does, and reads the mapped published address back
/// (`getpeername()`, `recvfrom()`).
#[test]
fn a_dual_stack_host_socket_reaches_ipv4_published_ports_at_v4_mapped_addresses() {
    let sb = Sandbox::new();
    let ct = conntest_bin();
    let ct = ct.to_str().unwrap();
    for (name, p, proto, port) in [
        ("web", "8080:80", "tcp", "80"),
        ("dns", "5353:53/udp", "udp", "53"),
    ] {
        sb.dnet_ok(&[
            "run", "-d", "--name", name, "-p", p, "--", ct, "serve", proto, port,
        ]);
        sb.wait_server(name, proto, port.parse().unwrap());
    }
    let up = UPLINK_IP.to_string();
    for addr in ["::ffff:127.0.0.1".to_owned(), format!("::ffff:{up}")] {
        // TCP: connect6 points it at the container; getpeername6 reads back
        // the published address; the server's answer names the host's
        // gateway-side address it saw.
        let py = format!(
            "import socket\n\
s = socket.socket(socket.AF_INET6)\n\
s.settimeout(3)\n\
s.connect(('{addr}', 8080))\n\
print(s.getpeername()[:2])\n\
s.sendall(b'hello\\n')\n\
print(s.recv(512).decode().strip())\n"
        );
        let o = sb.in_host("python3", &["-c", &py]);
        assert!(ok(&o), "TCP to [{addr}]:8080: {}", out(&o));
        let said = String::from_utf8_lossy(&o.stdout);
        let mut lines = said.lines();
        assert_eq!(lines.next(), Some(format!("('{addr}', 8080)").as_str()));
        assert!(
            lines.next().is_some_and(|l| !l.is_empty()),
            "no answer from the server: {said}"
        );
        // UDP, unconnected: the answer reads as from the published port.
        let py = [
            "import socket",
            "s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)",
            "s.settimeout(1)",
            "for _ in range(3):",
            &format!("    s.sendto(b'hello', ('{addr}', 5353))"),
            "    try:",
            "        print(s.recvfrom(512)[1][:2]); break",
            "    except socket.timeout:",
            "        pass",
        ]
        .join("\n");
        let o = sb.in_host("python3", &["-c", &py]);
        assert!(ok(&o), "{}", out(&o));
        assert_eq!(
            String::from_utf8_lossy(&o.stdout).trim(),
            format!("('{addr}', 5353)")
        );
    }
}

#[test]
fn a_routed_ipv6_network_reaches_the_world_and_is_reached_on_its_published_ports() {
    let mut sb = dual_stack_sandbox();
    let h = sb.host_ns.clone();
    let world_ns = sb.world_ns.clone();
    // The host's default IPv6 route: via the world; the world routes the
    // routed subnet to the host's uplink address (so it never asks for
    // the containers' addresses on its link: no proxy NDP).
    sh_ok(
        "ip",
        &["-n", &h, "-6", "route", "add", "default", "via", WORLD6],
    );
    sh_ok(
        "ip",
        &[
            "-n",
            &world_ns,
            "-6",
            "route",
            "add",
            "fd00:75::/64",
            "via",
            UPLINK6,
        ],
    );
    // dnet forwards, not the host: its forwarding stays off.
    assert_eq!(host_sysctl(&sb, "all/forwarding"), "0");
    let w = sb.world_netns_path();
    let ct = conntest_bin();
    let ct = ct.to_str().unwrap();
    sb.spawn_in(&w, ct, &["serve", "tcp", "[::]:80"]);
    sb.spawn_in(&w, ct, &["serve", "udp-echo", "[::]:7"]);
    wait_listening(&w, "tcp", 80);
    wait_listening(&w, "udp", 7);
    sb.dnet_ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "10.75.0.0/24",
        "--subnet",
        "fd00:75::/64",
        "-o",
        "gateway_mode_ipv6=routed",
        "routed",
    ]);
    sb.dnet_ok(&[
        "run",
        "-d",
        "--name",
        "cli",
        "--network",
        "routed",
        "--",
        "sleep",
        "300",
    ]);
    sb.dnet_ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "routed",
        "-p",
        "8080:80",
        "--",
        ct,
        "serve",
        "tcp",
        "[::]:80",
    ]);
    sb.wait_server("web", "tcp", 80);
    let cli6 = ip6_of(&sb, "cli");
    let web6 = ip6_of(&sb, "web");

    // Out: the world sees the container's own address.
    let seen = request6(&sb, "cli", "tcp", WORLD6, 80).expect("tcp to the world");
    assert!(seen.starts_with(&format!("[{cli6}]:")), "{seen}");
    assert!(sb.ping6("cli", WORLD6), "ping the world");
    // In: the published port at the container's own address, from the
    // world's own address.
    let o = sb.in_world(ct, &["tcp", &format!("[{web6}]:80")]);
    assert!(ok(&o), "the world to [{web6}]:80: {}", out(&o));
    let got = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    assert!(got.starts_with(&format!("[{WORLD6}]:")), "{got}");
    // Echo is let in; a port the container did not publish is not.
    let o = sb.in_world("ping", &["-6", "-n", "-c", "1", "-W", "2", &web6]);
    assert!(ok(&o), "the world pings {web6}: {}", out(&o));
    // Datagrams larger than the MTU cross in fragments both ways: a
    // 4,000-byte UDP echo from the container, a 3,000-byte ping from the
    // world.
    let o = sb.conntest_in("cli", &["echo", &format!("[{WORLD6}]:7"), "--size", "4000"]);
    assert!(ok(&o), "a fragmented echo to the world: {}", out(&o));
    let o = sb.in_world(
        "ping",
        &["-6", "-n", "-c", "1", "-W", "2", "-s", "3000", &web6],
    );
    assert!(ok(&o), "a fragmented ping from the world: {}", out(&o));
    for c in ["cli", "web"] {
        assert_eq!(sb.drops(c, "fragment"), 0, "{c}");
    }
    // A ping whose hop limit runs out at dnet's hop is answered "time
    // exceeded" from the uplink's address, as a router's (traceroute).
    let o = sb.in_world(
        "ping",
        &["-6", "-n", "-c", "1", "-W", "2", "-t", "1", &web6],
    );
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(
        said.contains(&format!("From {UPLINK6}")) && said.contains("Time exceeded"),
        "{}",
        out(&o)
    );
    assert!(sb.drops("web", "ttl-exceeded") > 0, "counted");
    let o = sb.in_world(ct, &["tcp", &format!("[{cli6}]:80"), "--timeout", "1"]);
    assert!(!ok(&o), "{}", out(&o));
    assert!(sb.drops("cli", "not-published") > 0, "counted");
    assert_eq!(host_sysctl(&sb, "all/forwarding"), "0");

    // A connection from the world lives on through the daemon's kill and
    // restart.
    let hold = sb.dir.join("hold-routed");
    std::fs::write(&hold, "").unwrap();
    let conn = std::process::Command::new("nsenter")
        .arg(format!("--net={}", w.display()))
        .args([ct, "connections", &format!("[{web6}]:80"), "--count", "1"])
        .args([
            "--hold",
            "30",
            "--hold-while",
            hold.to_str().unwrap(),
            "--again",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let open = dnet_sandbox::wait_until(std::time::Duration::from_secs(10), || {
        sb.flows()
            .iter()
            .any(|x| x["proto"] == "tcp" && x["state"] == "established")
    });
    assert!(open, "the connection is established: {:?}", sb.flows());
    // Listed as routed (nothing translated), not as a DNAT flow.
    let f = sb.flows();
    assert!(
        f.iter().any(|x| x["proto"] == "tcp"
            && x["kind"] == "routed"
            && x["translated"]["dst"] == format!("[{web6}]:80")),
        "a routed flow to [{web6}]:80: {f:?}"
    );
    sb.stop_daemon(libc::SIGKILL);
    let o = sb.in_world(ct, &["tcp", &format!("[{web6}]:80")]);
    assert!(ok(&o), "while the daemon is down: {}", out(&o));
    sb.start_daemon();
    std::fs::remove_file(&hold).unwrap();
    let o = conn.wait_with_output().unwrap();
    assert!(ok(&o), "the held connection: {}", out(&o));
    let seen = request6(&sb, "cli", "tcp", WORLD6, 80).expect("after the restart");
    assert!(seen.starts_with(&format!("[{cli6}]:")), "{seen}");
}

/// Removes a namespace the test made beside its sandbox's.
struct NsGuard(String);
impl Drop for NsGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .output();
    }
}

/// The far network's server, behind the world's router.
const FAR6: &str = "2001:db8:f::2";

/// A router in the world towards a "far" IPv6 network 2001:db8:f::/64
/// whose link (its side of it) has an MTU of 1280, IPv6's minimum: what
/// does not fit is answered "packet too big" to the uplink's address.
fn far_network6(sb: &Sandbox) -> String {
    let far = format!("{}f", sb.name);
    sh_ok("ip", &["netns", "add", &far]);
    let w = sb.world_ns.as_str();
    sh_ok(
        "ip",
        &[
            "-n", w, "link", "add", "eth1", "type", "veth", "peer", "name", "eth0", "netns", &far,
        ],
    );
    for (ns, dev, a) in [
        (w, "eth1", "2001:db8:f::1/64"),
        (far.as_str(), "eth0", "2001:db8:f::2/64"),
    ] {
        sh_ok("ip", &["-n", ns, "addr", "add", a, "dev", dev, "nodad"]);
        sh_ok("ip", &["-n", ns, "link", "set", dev, "up"]);
    }
    // Only the router's side is small: the far server's own MTU (1500)
    // makes it announce a TCP MSS the router's link cannot carry.
    sh_ok("ip", &["-n", w, "link", "set", "eth1", "mtu", "1280"]);
    sh_ok("ip", &["-n", &far, "link", "set", "lo", "up"]);
    sh_ok(
        "ip",
        &[
            "-n",
            &far,
            "-6",
            "route",
            "add",
            "default",
            "via",
            "2001:db8:f::1",
        ],
    );
    sh_ok(
        "ip",
        &[
            "netns",
            "exec",
            w,
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.forwarding=1",
        ],
    );
    far
}

#[test]
fn path_mtu_discovery_works_over_nat66_through_a_smaller_link_in_the_world() {
    let mut sb = dual_stack_sandbox();
    let _far = NsGuard(far_network6(&sb));
    sh_ok(
        "ip",
        &[
            "-n",
            &sb.host_ns,
            "-6",
            "route",
            "add",
            "default",
            "via",
            WORLD6,
        ],
    );
    let far_ns = std::path::PathBuf::from("/run/netns").join(&_far.0);
    let ct = conntest_bin();
    sb.spawn_in(&far_ns, ct.to_str().unwrap(), &["serve", "tcp", "[::]:80"]);
    wait_listening(&far_ns, "tcp", 80);
    sb.dnet_ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "10.73.0.0/24",
        "--subnet",
        "fd00:73::/64",
        "pmtu6",
    ]);
    sb.dnet_ok(&[
        "run",
        "-d",
        "--name",
        "big",
        "--network",
        "pmtu6",
        "--",
        "sleep",
        "300",
    ]);
    // 300 kB in one line: full-sized segments (the container's link has
    // the uplink's MTU, 1500) that the far link cannot carry. Without
    // "packet too big" translated back into the container, TCP would stall
    // (a path-MTU black hole) until the timeout.
    let py = format!(
        "import socket\n\
         s = socket.create_connection(('{FAR6}', 80), 5)\n\
         s.settimeout(15)\n\
         s.sendall(b'x' * 300000 + b'\\n')\n\
         print(s.makefile().readline().strip())\n"
    );
    let o = sb.dnet(&["exec", "big", "--", "python3", "-c", &py]);
    assert!(ok(&o), "the transfer completed: {}", out(&o));
    let seen = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    assert!(
        seen.starts_with(&format!("[{UPLINK6}]:")),
        "the far server saw the uplink's address: {seen}"
    );
    let r = sb.dnet_ok(&["exec", "big", "--", "ip", "-6", "route", "get", FAR6]);
    assert!(r.contains("mtu 1280"), "path MTU learned through dnet: {r}");
}
