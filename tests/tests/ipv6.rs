//! Dual-stack networks: what the control plane makes of `--ipv6` (subnets,
//! addresses, links, routes, sysctls), what it refuses, and real IPv6
//! traffic through the eBPF datapath.

use dnet_sandbox::{Sandbox, conntest_bin, dnet_bin, ok, out, sh_ok};
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
    let sb = Sandbox::new();
    sb.dnet_ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "10.60.0.0/24",
        "--subnet",
        "fd00:60::/64",
        "dual",
    ]);
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
    create(
        &[
            "--ipv6",
            "-d",
            "macvlan",
            "--subnet",
            "10.62.0.0/24",
            "-o",
            "parent=eth0",
        ],
        "bridge networks only",
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
    sb.dnet_ok(&[
        "run",
        "-d",
        "--name",
        "b",
        "--network",
        "v4only",
        "--",
        "sleep",
        "300",
    ]);

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
    sb.dnet_ok(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "10.64.0.0/24",
        "--subnet",
        "fd00:64::/64",
        "dual",
    ]);
    sb.dnet_ok(&["network", "create", "--subnet", "10.65.0.0/24", "v4only"]);
    for (name, net) in [("web", "dual"), ("client", "dual"), ("old", "v4only")] {
        sb.dnet_ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            net,
            "--",
            "sleep",
            "300",
        ]);
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
