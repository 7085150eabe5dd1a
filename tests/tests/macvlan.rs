//! The macvlan driver: containers as hosts of the uplink's LAN, each with a
//! MAC address of its own. In the sandbox the parent is the host
//! namespace's `eth0` (a veth) and the world namespace plays the LAN
//! (198.18.0.0/24: the world's router at .1, the host at .2).

use std::{
    collections::BTreeSet, fs, os::unix::fs::MetadataExt as _, path::PathBuf, process::Command,
    time::Duration,
};

use dnet_sandbox::{
    Sandbox, UPLINK_IP, UPLINK6, WORLD_IP, WORLD6, ct, dual_stack_sandbox, in_netns, ok, out,
    sh_ok, wait_until,
};
use serde_json::Value;

const LAN: &str = "198.18.0.0/24";
/// The LAN's IPv6 subnet in the dual-stack sandboxes: the world's router
/// at ::1 ([`WORLD6`]), the host at ::2 ([`UPLINK6`]).
const LAN6: &str = "2001:2::/64";

/// `dnet network create -d macvlan --subnet SUBNET [ARGS...] NAME`; returns
/// the network as `network inspect` shows it.
fn macvlan(sb: &Sandbox, name: &str, subnet: &str, args: &[&str]) -> Value {
    let mut a = vec!["network", "create", "-d", "macvlan", "--subnet", subnet];
    a.extend(args);
    a.push(name);
    sb.dnet_ok(&a);
    inspect(sb, name)
}

fn inspect(sb: &Sandbox, name: &str) -> Value {
    sb.dnet_json(&["network", "inspect", name])[0].clone()
}

/// The container's endpoint in `network`, as `dnet ps` shows it.
fn endpoint(sb: &Sandbox, name: &str, network: &str) -> Value {
    sb.container(name)["networks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["network"] == network)
        .unwrap_or_else(|| panic!("{name} is not on {network}"))
        .clone()
}

/// `ip -j -d ARGS` inside a container, parsed.
fn ip_in(sb: &Sandbox, container: &str, args: &[&str]) -> Value {
    let mut a = vec!["exec", container, "--", "ip", "-j", "-d"];
    a.extend(args);
    serde_json::from_str(&sb.dnet_ok(&a)).expect("ip -j")
}

fn ip_world(sb: &Sandbox, args: &[&str]) -> Value {
    let mut a = vec!["-j", "-n", sb.world_ns.as_str()];
    a.extend(args);
    serde_json::from_str(&sh_ok("ip", &a)).expect("ip -j")
}

fn mac_of_host_link(sb: &Sandbox, ifname: &str) -> String {
    sb.host_ip_json(&["link", "show", ifname])[0]["address"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// A second uplink `eth1` between the host and the world, the world at
/// `world_ip` on its end; the host's end is up without an address.
fn second_lan(sb: &Sandbox, world_ip: &str) {
    let (h, w) = (sb.host_ns.as_str(), sb.world_ns.as_str());
    sh_ok(
        "ip",
        &[
            "-n", h, "link", "add", "eth1", "type", "veth", "peer", "name", "eth1", "netns", w,
        ],
    );
    sh_ok("ip", &["-n", w, "addr", "add", world_ip, "dev", "eth1"]);
    sh_ok("ip", &["-n", w, "link", "set", "eth1", "up"]);
    sh_ok("ip", &["-n", h, "link", "set", "eth1", "up"]);
}

/// The host namespace's global IPv6 addresses and dnet's IPv6 routes there
/// (a macvlan network makes neither).
fn host6(sb: &Sandbox) -> String {
    let h = sb.host_ns.as_str();
    let addrs = sh_ok(
        "ip",
        &["-n", h, "-6", "-o", "addr", "show", "scope", "global"],
    );
    let addrs: Vec<&str> = addrs
        .lines()
        .map(|l| l.split("valid_lft").next().unwrap_or(l))
        .collect();
    let routes = sh_ok(
        "ip",
        &[
            "-n", h, "-6", "route", "show", "table", "all", "proto", "213",
        ],
    );
    format!("{}\n---\n{routes}", addrs.join("\n"))
}

/// A sysctl of `net.ipv6.conf` (`eth0/accept_ra`, say) in a container.
fn sysctl6_in(sb: &Sandbox, container: &str, name: &str) -> String {
    let path = format!("/proc/sys/net/ipv6/conf/{name}");
    sb.dnet_ok(&["exec", container, "--", "cat", &path])
        .trim()
        .to_owned()
}

/// Every network namespace on the machine that a process is in or that is
/// mounted somewhere (`/run/netns`, dnet's state folders), one path each.
fn all_namespaces() -> Vec<PathBuf> {
    let mut seen = BTreeSet::new();
    let mut paths = Vec::new();
    let mut consider = |p: PathBuf| {
        if let Ok(m) = fs::metadata(&p)
            && seen.insert((m.dev(), m.ino()))
        {
            paths.push(p);
        }
    };
    for e in fs::read_dir("/proc").unwrap().flatten() {
        if e.file_name().to_string_lossy().parse::<u32>().is_ok() {
            consider(e.path().join("ns/net"));
        }
    }
    for l in fs::read_to_string("/proc/self/mountinfo").unwrap().lines() {
        // Fields: ... mount-point ... - fstype source ...
        let f: Vec<&str> = l.split(' ').collect();
        let fstype = f.iter().position(|x| *x == "-").and_then(|i| f.get(i + 1));
        // Network namespaces only: containers' mount and UTS namespaces
        // are bound too (root `mnt:[...]`, `uts:[...]`).
        if fstype == Some(&"nsfs") && f.get(3).is_some_and(|r| r.starts_with("net:")) {
            consider(PathBuf::from(f[4]));
        }
    }
    paths
}

/// Links in any namespace whose alias contains `needle` (a network id),
/// as `namespace: ifname`.
fn links_with_alias_anywhere(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for ns in all_namespaces() {
        let o = in_netns(&ns, "ip", &["-j", "link", "show"]);
        if !ok(&o) {
            // A namespace whose last process or mount went since it was
            // listed: gone, nothing to look at. Any other failure is one.
            assert!(!ns.exists(), "ip link in {}: {}", ns.display(), out(&o));
            continue;
        }
        let links: Value = serde_json::from_slice(&o.stdout).expect("ip -j");
        for l in links.as_array().into_iter().flatten() {
            if l["ifalias"].as_str().is_some_and(|a| a.contains(needle)) {
                found.push(format!("{}: {}", ns.display(), l["ifname"]));
            }
        }
    }
    found
}

#[test]
fn a_container_is_a_host_of_the_lan_with_its_own_mac() {
    let mut sb = Sandbox::new();
    // No -o: the parent is the daemon's uplink, the mode bridge.
    let net = macvlan(&sb, "lan", LAN, &["--gateway", "198.18.0.1"]);
    assert_eq!(net["options"]["parent"], "eth0", "{net}");
    assert_eq!(net["options"]["macvlan_mode"], "bridge", "{net}");
    sb.server("a", "lan", "tcp", 80);

    // The first address after the gateway (.1) and the parent's own (.2).
    let ep = endpoint(&sb, "a", "lan");
    assert_eq!(ep["ip"], "198.18.0.3", "{ep}");
    assert_eq!(ep["mac"], "02:42:c6:12:00:03", "{ep}");
    let eth0 = &ip_in(&sb, "a", &["addr", "show", "eth0"])[0];
    assert_eq!(eth0["ifname"], "eth0");
    assert_eq!(eth0["address"], "02:42:c6:12:00:03", "{eth0}");
    assert_eq!(eth0["linkinfo"]["info_kind"], "macvlan", "{eth0}");
    assert_eq!(eth0["linkinfo"]["info_data"]["mode"], "bridge", "{eth0}");
    assert_eq!(eth0["mtu"], 1500, "the parent's MTU");
    let addrs = eth0["addr_info"].as_array().unwrap();
    assert_eq!(addrs.len(), 1, "one IPv4 address and no IPv6: {eth0}");
    assert_eq!(addrs[0]["family"], "inet");
    assert_eq!(addrs[0]["local"], "198.18.0.3");
    assert_eq!(addrs[0]["prefixlen"], 24);
    let routes = ip_in(&sb, "a", &["route"]);
    assert!(
        routes
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["dst"] == "default" && r["gateway"] == "198.18.0.1" && r["dev"] == "eth0"),
        "{routes}"
    );

    // The LAN reaches the container at its own address, no NAT on the way:
    // the server sees the world's address, and the world has learnt the
    // container's own MAC.
    let o = sb.in_world(&ct(), &["tcp", "198.18.0.3:80"]);
    assert!(ok(&o), "world -> container: {}", out(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).starts_with(&format!("{WORLD_IP}:")),
        "{}",
        out(&o)
    );
    let neigh = ip_world(&sb, &["neigh", "show", "198.18.0.3"]);
    assert_eq!(neigh[0]["lladdr"], "02:42:c6:12:00:03", "{neigh}");

    // And the container reaches the LAN from its own address.
    let world_ns = sb.world_netns_path();
    sb.spawn_in(&world_ns, &ct(), &["serve", "tcp", "198.18.0.1:7000"]);
    let mut last = None;
    assert!(
        wait_until(Duration::from_secs(5), || {
            let o = sb.conntest_in("a", &["tcp", "198.18.0.1:7000"]);
            let good = ok(&o);
            last = Some(o);
            good
        }),
        "container -> world: {}",
        out(last.as_ref().unwrap())
    );
    assert!(
        String::from_utf8_lossy(&last.unwrap().stdout).starts_with("198.18.0.3:"),
        "the world sees the container's own address"
    );

    // Nothing of it in the host namespace: no link, no route, no pin.
    let links = sb.host_ip_json(&["-d", "link", "show"]);
    for l in links.as_array().unwrap() {
        assert_ne!(l["linkinfo"]["info_kind"], "macvlan", "{l}");
    }
    let routes = sh_ok("ip", &["-n", &sb.host_ns, "route"]);
    assert!(!routes.contains("198.18.0.3"), "{routes}");
    assert!(
        sb.pins().iter().all(|p| !p.starts_with("links/")),
        "{:?}",
        sb.pins()
    );
}

#[test]
fn bridge_mode_containers_reach_each_other_and_private_mode_ones_cannot() {
    let sb = Sandbox::new();
    // A second subnet on the same LAN, for the private network; the world's
    // router has an address in it too.
    sh_ok(
        "ip",
        &[
            "-n",
            &sb.world_ns,
            "addr",
            "add",
            "198.18.1.1/24",
            "dev",
            "eth0",
        ],
    );
    macvlan(&sb, "lan", LAN, &["-o", "parent=eth0"]);
    let private = macvlan(
        &sb,
        "priv",
        "198.18.1.0/24",
        &["-o", "parent=eth0", "-o", "macvlan_mode=private"],
    );
    assert!(
        private["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str().unwrap().contains("cannot reach each other")),
        "{private}"
    );
    sb.server("a", "lan", "tcp", 80);
    sb.server("b", "lan", "udp", 53);
    sb.server("p1", "priv", "tcp", 80);
    sb.server("p2", "priv", "tcp", 80);
    let p1 = ip_in(&sb, "p1", &["link", "show", "eth0"]);
    assert_eq!(p1[0]["linkinfo"]["info_data"]["mode"], "private", "{p1}");

    // Bridge mode: straight from one child to the other, both ways.
    for (from, to) in [("a", "198.18.0.4"), ("b", "198.18.0.3")] {
        let o = sb.conntest_in(from, &["ping", to]);
        assert!(ok(&o), "ping {from} -> {to}: {}", out(&o));
    }
    let o = sb.conntest_in("b", &["tcp", "198.18.0.3:80"]);
    assert!(ok(&o), "{}", out(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).starts_with("198.18.0.4:"),
        "{}",
        out(&o)
    );
    let o = sb.conntest_in("a", &["udp", "198.18.0.4:53"]);
    assert!(ok(&o), "{}", out(&o));

    // Private mode: the LAN is reachable, the neighbour is not, though it
    // answers the LAN on the same path (ping and its TCP server).
    assert_eq!(endpoint(&sb, "p2", "priv")["ip"], "198.18.1.3");
    let o = sb.conntest_in("p1", &["ping", "198.18.1.1"]);
    assert!(ok(&o), "private -> LAN: {}", out(&o));
    for (what, args) in [
        ("ping", vec!["ping", "198.18.1.3", "198.18.1.2"]),
        ("tcp", vec!["tcp", "198.18.1.2:80"]),
    ] {
        let o = sb.in_world(&ct(), &args);
        assert!(ok(&o), "LAN -> private containers ({what}): {}", out(&o));
    }
    let o = sb.conntest_in("p1", &["ping", "198.18.1.3", "--timeout", "0.5"]);
    assert!(!ok(&o), "private -> private must fail: {}", out(&o));
    let o = sb.conntest_in("p2", &["tcp", "198.18.1.2:80", "--timeout", "0.5"]);
    assert!(!ok(&o), "private -> private must fail: {}", out(&o));
}

#[test]
fn the_host_reaches_its_containers_only_with_host_access() {
    let mut sb = Sandbox::new();
    let net = macvlan(&sb, "lan", LAN, &["-o", "parent=eth0"]);
    let notes = net["notes"].to_string();
    assert!(
        notes.contains("the host cannot reach this network's containers")
            && notes.contains("host_access=true"),
        "{net}"
    );
    assert!(net.get("host_address").is_none(), "{net}");
    sb.server("a", "lan", "tcp", 80);
    let h = |args: &[&str]| sb.in_host(&ct(), args);
    assert!(
        ok(&sb.in_world(&ct(), &["ping", "198.18.0.3"])),
        "the LAN does"
    );
    let o = h(&["ping", "198.18.0.3", "--timeout", "0.5"]);
    assert!(!ok(&o), "the host cannot reach its child: {}", out(&o));
    sb.dnet_ok(&["rm", "-f", "a"]);
    sb.dnet_ok(&["network", "rm", "lan"]);

    // With host access: an interface of the host's own on the parent, with
    // the first free address of the network.
    let eth0_mac = mac_of_host_link(&sb, "eth0");
    let net = macvlan(&sb, "lan", LAN, &["-o", "host_access=true"]);
    assert_eq!(net["host_address"], "198.18.0.3", "{net}");
    let id = net["id"].as_str().unwrap();
    let shim = format!("mvhost-{}", &id[..8]);
    assert!(net["notes"].to_string().contains(&shim), "{net}");
    let l = &sb.host_ip_json(&["-d", "addr", "show", &shim])[0];
    assert_eq!(l["linkinfo"]["info_kind"], "macvlan", "{l}");
    assert_eq!(l["linkinfo"]["info_data"]["mode"], "bridge", "{l}");
    assert_eq!(l["address"], "02:42:c6:12:00:03", "{l}");
    assert_eq!(l["ifalias"], format!("dnet:net:{id}"), "{l}");
    let addrs = l["addr_info"].as_array().unwrap();
    assert_eq!(addrs.len(), 1, "{l}");
    assert_eq!(
        (addrs[0]["local"].as_str(), addrs[0]["prefixlen"].as_u64()),
        (Some("198.18.0.3"), Some(32))
    );

    sb.server("a", "lan", "tcp", 80);
    sb.server("b", "lan", "udp", 53);
    assert_eq!(endpoint(&sb, "a", "lan")["ip"], "198.18.0.4");
    assert!(ok(&h(&["ping", "198.18.0.4", "198.18.0.5"])));
    let o = h(&["tcp", "198.18.0.4:80"]);
    assert!(ok(&o), "{}", out(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).starts_with("198.18.0.3:"),
        "the host speaks from its address on the network: {}",
        out(&o)
    );
    assert!(ok(&h(&["udp", "198.18.0.5:53"])));
    // The containers reach a host service at the host's address.
    let host_ns = sb.host_netns_path();
    sb.spawn_in(&host_ns, &ct(), &["serve", "tcp", "198.18.0.3:9000"]);
    assert!(wait_until(Duration::from_secs(5), || ok(
        &sb.conntest_in("a", &["tcp", "198.18.0.3:9000"])
    )));

    // The host's own way to the LAN has not moved, and the LAN still knows
    // the host's uplink address by the uplink's MAC.
    let get = |ip: &str| sh_ok("ip", &["-n", &sb.host_ns, "route", "get", ip]);
    assert!(get("198.18.0.1").contains("dev eth0 src 198.18.0.2"));
    assert!(get("198.18.0.77").contains("dev eth0 src 198.18.0.2"));
    assert!(get("198.18.0.4").contains(&format!("dev {shim} src 198.18.0.3")));
    // The host's interface on the parent hears the LAN's ARP requests too,
    // and must answer only for its own address.
    let o = sb.in_world(
        "arping",
        &["-c", "2", "-w", "2", "-I", "eth0", &UPLINK_IP.to_string()],
    );
    let macs: BTreeSet<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| {
            l.split_once('[')?
                .1
                .split_once(']')
                .map(|m| m.0.to_lowercase())
        })
        .collect();
    assert_eq!(macs, BTreeSet::from([eth0_mac.clone()]), "{}", out(&o));

    // A container's route goes with it, the interface with the network.
    sb.dnet_ok(&["rm", "-f", "a"]);
    let routes = sh_ok("ip", &["-n", &sb.host_ns, "route"]);
    assert!(!routes.contains("198.18.0.4"), "{routes}");
    assert!(routes.contains("198.18.0.5"), "{routes}");
    sb.dnet_ok(&["rm", "-f", "b"]);
    sb.dnet_ok(&["network", "rm", "lan"]);
    assert!(!sb.host_links().contains(&shim));
}

#[test]
fn stats_show_macvlan_endpoints_with_their_drops() {
    let sb = Sandbox::new();
    macvlan(&sb, "lan", LAN, &[]);
    sb.server("a", "lan", "udp", 53);
    let row = || -> Value {
        sb.dnet_json(&["stats"])["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["container"] == "a")
            .cloned()
            .expect("a row for the macvlan endpoint")
    };
    let n = |r: &Value, k: &str| r[k].as_u64().unwrap();
    let o = sb.in_world(
        &ct(),
        &[
            "udp",
            "198.18.0.3:53",
            "--count",
            "20",
            "--interval",
            "0.01",
        ],
    );
    assert!(ok(&o), "{}", out(&o));
    let r = row();
    assert_eq!(r["network"], "lan");
    assert_eq!(r["ip"], "198.18.0.3");
    for k in ["rx_packets", "tx_packets"] {
        assert!(n(&r, k) >= 20, "{k}: {r}");
    }
    for k in ["rx_bytes", "tx_bytes"] {
        assert!(n(&r, k) >= 20 * 42, "{k}: {r}");
    }

    // Direction: broadcasts from the LAN are delivered to the container
    // (tx, as a switch port counts) and it sends nothing back.
    for _ in 0..3 {
        let _ = sb.in_world(
            &ct(),
            &["udp", "198.18.0.255:9", "--broadcast", "--timeout", "0.2"],
        );
    }
    let after = row();
    let delivered = n(&after, "tx_packets") - n(&r, "tx_packets");
    let sent = n(&after, "rx_packets") - n(&r, "rx_packets");
    assert!(delivered >= 3 && sent < delivered, "{r} -> {after}");

    // Drops: with a parent that drops everything it is handed (a queue of
    // length 0), what the container sends is counted as dropped.
    assert!(after["drops"].as_object().unwrap().is_empty(), "{after}");
    sh_ok(
        "tc",
        &[
            "-n",
            &sb.host_ns,
            "qdisc",
            "add",
            "dev",
            "eth0",
            "root",
            "pfifo",
            "limit",
            "0",
        ],
    );
    let o = sb.conntest_in("a", &["ping", "198.18.0.1", "--timeout", "0.5"]);
    assert!(!ok(&o));
    let dropped = row();
    assert!(
        dropped["drops"]["send-dropped"].as_u64().unwrap_or(0) > 0,
        "{dropped}"
    );
    // The table shows the row too.
    let table = sb.dnet_ok(&["stats"]);
    let line = table
        .lines()
        .find(|l| l.starts_with("a "))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        line.contains("lan") && line.contains("198.18.0.3") && line.contains("send-dropped="),
        "{table}"
    );
}

#[test]
fn passthru_gives_the_parent_to_one_container() {
    let sb = Sandbox::new();
    second_lan(&sb, "198.19.0.1/24");
    let eth1_mac = mac_of_host_link(&sb, "eth1");
    let net = macvlan(
        &sb,
        "pt",
        "198.19.0.0/24",
        &["-o", "parent=eth1", "-o", "macvlan_mode=passthru"],
    );
    assert!(net["notes"].to_string().contains("passthru"), "{net}");
    sb.server("a", "pt", "tcp", 80);
    let l = &ip_in(&sb, "a", &["addr", "show", "eth0"])[0];
    assert_eq!(l["linkinfo"]["info_data"]["mode"], "passthru", "{l}");
    assert_eq!(l["address"], "02:42:c6:13:00:02", "{l}");
    assert_eq!(l["addr_info"][0]["local"], "198.19.0.2", "{l}");
    // The kernel sets a passthru child's MAC on the parent.
    assert_eq!(mac_of_host_link(&sb, "eth1"), "02:42:c6:13:00:02");
    let o = sb.in_world(&ct(), &["tcp", "198.19.0.2:80"]);
    assert!(ok(&o), "{}", out(&o));
    assert!(String::from_utf8_lossy(&o.stdout).starts_with("198.19.0.1:"));

    // A second endpoint: a clear error, nothing changed.
    sb.sleeper("c", &[]);
    let want = "network pt uses macvlan_mode=passthru: its parent eth1 carries one container, and a has it";
    for args in [
        &["run", "--network", "pt", "--", "true"][..],
        &["network", "connect", "pt", "c"],
    ] {
        let before = sb.snapshot();
        let err = sb.dnet_err(args);
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(before, sb.snapshot(), "{args:?} changed something");
    }

    // Gone, the parent has its own MAC again and takes another container.
    sb.dnet_ok(&["rm", "-f", "a"]);
    assert_eq!(mac_of_host_link(&sb, "eth1"), eth1_mac);
    sb.dnet_ok(&["network", "connect", "pt", "c"]);
    let l = &ip_in(&sb, "c", &["link", "show", "eth1"])[0];
    assert_eq!(l["linkinfo"]["info_data"]["mode"], "passthru", "{l}");
    assert!(ok(&sb.conntest_in("c", &["ping", "198.19.0.1"])));
}

#[test]
fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let sb = Sandbox::new();
    // What the cases clash with: a network on eth0, a link that is down, a
    // second LAN with a passthru network.
    macvlan(&sb, "lan", LAN, &["-o", "parent=eth0"]);
    sh_ok(
        "ip",
        &[
            "-n",
            &sb.host_ns,
            "link",
            "add",
            "down0",
            "type",
            "veth",
            "peer",
            "name",
            "down0p",
        ],
    );
    second_lan(&sb, "198.19.0.1/24");
    macvlan(
        &sb,
        "pt",
        "198.19.0.0/24",
        &["-o", "parent=eth1", "-o", "macvlan_mode=passthru"],
    );
    sb.sleeper("c1", &["--network", "lan"]);

    let cases: &[(&[&str], &str)] = &[
        (
            &["-o", "parent=nosuch", "--subnet", "10.30.0.0/24"],
            "parent interface \"nosuch\" does not exist",
        ),
        (
            &["-o", "parent=", "--subnet", "10.30.0.0/24"],
            "-o parent= needs an interface name",
        ),
        (
            &["-o", "parent=lo", "--subnet", "10.30.0.0/24"],
            "parent lo is a loopback interface",
        ),
        (
            &["-o", "parent=down0", "--subnet", "10.30.0.0/24"],
            "parent down0 is down",
        ),
        (
            &["-o", "parent=eth0", "--subnet", "198.18.0.128/25"],
            "subnet 198.18.0.128/25 overlaps 198.18.0.0/24 of macvlan network \"lan\" on the same parent eth0",
        ),
        (
            // The default parent is the uplink: the same parent.
            &["--subnet", "198.18.0.0/16"],
            "subnet 198.18.0.0/16 overlaps 198.18.0.0/24 of macvlan network \"lan\" on the same parent eth0",
        ),
        (
            &["-o", "parent=eth1", "--subnet", "198.18.0.0/24"],
            "subnet 198.18.0.0/24 overlaps 198.18.0.0/24 of network \"lan\"",
        ),
        (
            &["--subnet", "172.17.0.0/24"],
            "overlaps 172.17.0.0/16 of network \"bridge\"",
        ),
        (
            &["--subnet", "10.30.0.0/24", "--gateway", "10.31.0.1"],
            "gateway 10.31.0.1 is not a usable address of subnet 10.30.0.0/24",
        ),
        (&[], "a macvlan network needs --subnet"),
        (
            &["--subnet", "10.30.0.0/24", "-o", "macvlan_mode=source"],
            "invalid macvlan_mode \"source\": use bridge, private, vepa or passthru",
        ),
        (
            &[
                "--subnet",
                "10.30.0.0/24",
                "-o",
                "parent=eth0",
                "-o",
                "macvlan_mode=passthru",
            ],
            "parent eth0 is used by macvlan network \"lan\": a passthru network needs its parent to itself",
        ),
        (
            &["--subnet", "10.30.0.0/24", "-o", "parent=eth1"],
            "parent eth1 is used by macvlan network \"pt\": a passthru network needs its parent to itself",
        ),
        (
            &["--subnet", "10.30.0.0/24", "-o", "host_access=maybe"],
            "option host_access: \"maybe\" is not true or false",
        ),
        (
            &[
                "--subnet",
                "10.30.0.0/24",
                "-o",
                "host_access=true",
                "-o",
                "macvlan_mode=private",
            ],
            "host_access=true needs macvlan_mode=bridge",
        ),
        (
            &["--subnet", "10.30.0.0/24", "-o", "mtu=9000"],
            "mtu 9000 is larger than the MTU of parent eth0 (1500)",
        ),
        (
            &["--subnet", "10.30.0.0/24", "--internal"],
            "a macvlan network cannot be --internal",
        ),
        (
            &["--subnet", "10.30.0.0/24", "-o", "icc=false"],
            "unknown option \"icc\" for the macvlan driver (known: parent, macvlan_mode, host_access, mtu)",
        ),
    ];
    for (args, want) in cases {
        let mut a = vec!["network", "create", "-d", "macvlan"];
        a.extend(*args);
        a.push("x");
        let before = sb.snapshot();
        let err = sb.dnet_err(&a);
        assert!(
            err.contains(want),
            "dnet {a:?}: expected {want:?} in {err:?}"
        );
        assert_eq!(before, sb.snapshot(), "dnet {a:?} changed something");
    }

    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "run",
                "--network",
                "lan",
                "--ip",
                "198.18.0.2",
                "--",
                "true",
            ],
            "address 198.18.0.2 is already in use",
        ),
        (
            &[
                "run",
                "--network",
                "lan",
                "--ip",
                "198.18.0.1",
                "--",
                "true",
            ],
            "address 198.18.0.1 is the network's gateway",
        ),
        (
            &[
                "run",
                "--network",
                "lan",
                "--ip",
                "198.18.0.3",
                "--",
                "true",
            ],
            "address 198.18.0.3 is already in use",
        ),
        (
            &["run", "--network", "lan", "-p", "80:80", "--", "true"],
            "ports can only be published on a bridge network (lan uses the macvlan driver)",
        ),
        (
            &["network", "connect", "lan", "c1"],
            "container c1 is already connected to network lan",
        ),
        (
            &["network", "rm", "lan"],
            "network lan has active endpoints (containers: c1)",
        ),
    ];
    for (args, want) in cases {
        let before = sb.snapshot();
        let err = sb.dnet_err(args);
        assert!(
            err.contains(want),
            "dnet {args:?}: expected {want:?} in {err:?}"
        );
        assert_eq!(before, sb.snapshot(), "dnet {args:?} changed something");
    }
}

#[test]
fn without_an_uplink_a_macvlan_network_needs_a_parent() {
    let mut sb = Sandbox::without_daemon();
    sh_ok("ip", &["-n", &sb.host_ns, "route", "del", "default"]);
    sb.start_daemon();
    let before = sb.snapshot();
    let err = sb.dnet_err(&["network", "create", "-d", "macvlan", "--subnet", LAN, "x"]);
    assert!(
        err.contains(
            "a macvlan network needs -o parent=IFACE: the daemon has no uplink to default to"
        ),
        "{err}"
    );
    assert_eq!(before, sb.snapshot());
    let net = macvlan(&sb, "x", LAN, &["-o", "parent=eth0"]);
    assert_eq!(net["options"]["parent"], "eth0");
}

#[test]
fn endpoints_and_networks_leave_nothing_behind() {
    let sb = Sandbox::new();
    let empty = sb.snapshot();
    let net = macvlan(&sb, "lan", LAN, &["-o", "host_access=true"]);
    let id = net["id"].as_str().unwrap().to_owned();
    sb.sleeper("a", &["--network", "lan"]);
    // A bridge container joins the LAN as its second interface.
    sb.sleeper("b", &[]);
    sb.dnet_ok(&["network", "connect", "lan", "b"]);
    let eth1 = &ip_in(&sb, "b", &["addr", "show", "eth1"])[0];
    assert_eq!(eth1["linkinfo"]["info_kind"], "macvlan", "{eth1}");
    assert_eq!(eth1["address"], "02:42:c6:12:00:05", "{eth1}");
    assert_eq!(eth1["addr_info"][0]["local"], "198.18.0.5", "{eth1}");
    // Its default route stays on the bridge network.
    let routes = ip_in(&sb, "b", &["route"]);
    let default: Vec<&Value> = routes
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["dst"] == "default")
        .collect();
    assert_eq!(default.len(), 1, "{routes}");
    assert_eq!(default[0]["dev"], "eth0", "{routes}");
    assert!(ok(
        &sb.conntest_in("b", &["ping", "198.18.0.1", "198.18.0.4"])
    ));
    assert_eq!(links_with_alias_anywhere(&id).len(), 3, "a, b and the host");

    sb.dnet_ok(&["network", "disconnect", "lan", "b"]);
    let links = sb.dnet_ok(&["exec", "b", "--", "ip", "-o", "link"]);
    assert!(!links.contains("eth1"), "{links}");
    sb.dnet_ok(&["rm", "-f", "a", "b"]);
    sb.dnet_ok(&["network", "rm", "lan"]);
    // Without the state file (the last part).
    let strip = |s: &str| s.rsplit_once("\n---\n").expect("parts").0.to_owned();
    assert_eq!(strip(&sb.snapshot()), strip(&empty));
    // No macvlan interface of the network in any namespace of the machine.
    assert_eq!(links_with_alias_anywhere(&id), Vec::<String>::new());
}

#[test]
fn a_restart_keeps_healthy_endpoints_and_mends_the_rest() {
    let mut sb = Sandbox::new();
    let net = macvlan(&sb, "lan", LAN, &["-o", "host_access=true"]);
    let id = net["id"].as_str().unwrap().to_owned();
    sb.server("a", "lan", "udp", 53);
    sb.server("b", "lan", "tcp", 80);
    let ifindex =
        |sb: &Sandbox, c: &str| ip_in(sb, c, &["link", "show", "eth0"])[0]["ifindex"].clone();
    let a_index = ifindex(&sb, "a");

    // A flow from the LAN goes on while the daemon is killed and restarted.
    let flow = Command::new("nsenter")
        .arg(format!("--net={}", sb.world_netns_path().display()))
        .args([
            &ct(),
            "udp",
            "198.18.0.4:53",
            "--count",
            "1500",
            "--interval",
            "0.01",
            "--timeout",
            "1",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The answers that reach the world, before the kill and while the
    // daemon is down.
    let world = sb.world_netns_path();
    sb.kill_9_and_restart_during_flow(|sb| sb.rx_packets(&world, "eth0"));
    let o = flow.wait_with_output().unwrap();
    assert!(ok(&o), "{}", out(&o));
    assert!(
        !sb.log_tail(200).contains("making its endpoint again")
            && !sb.log_tail(200).contains("making its kernel objects again"),
        "{}",
        sb.log_tail(40)
    );
    assert_eq!(
        ifindex(&sb, "a"),
        a_index,
        "a healthy endpoint is left alone"
    );

    // Break b's endpoint, and leave what a crash would: a child in a that no
    // endpoint explains, and a host interface of a network that is gone.
    sb.dnet_ok(&["exec", "b", "--", "ip", "link", "del", "eth0"]);
    let a_ns = endpoint_netns(&sb, "a");
    sh_ok(
        "ip",
        &[
            "-n",
            &sb.host_ns,
            "link",
            "add",
            "stray",
            "link",
            "eth0",
            "type",
            "macvlan",
            "mode",
            "bridge",
        ],
    );
    sh_ok(
        "ip",
        &[
            "-n",
            &sb.host_ns,
            "link",
            "set",
            "stray",
            "alias",
            &format!("dnet:mv:{id}"),
        ],
    );
    // Move it into a as eth7 (as `network connect` would have made it).
    let a_pid = container_pid(&sb, "a");
    sh_ok(
        "ip",
        &[
            "-n",
            &sb.host_ns,
            "link",
            "set",
            "stray",
            "netns",
            &a_pid.to_string(),
            "name",
            "eth7",
        ],
    );
    sh_ok(
        "ip",
        &[
            "-n",
            &sb.host_ns,
            "link",
            "add",
            "mvhost-deadbeef",
            "link",
            "eth0",
            "type",
            "macvlan",
        ],
    );
    sh_ok(
        "ip",
        &[
            "-n",
            &sb.host_ns,
            "link",
            "set",
            "mvhost-deadbeef",
            "alias",
            "dnet:net:deadbeef",
        ],
    );
    sb.stop_daemon(libc::SIGKILL);
    sb.start_daemon();
    assert!(
        sb.log_tail(200).contains("making its endpoint again"),
        "{}",
        sb.log_tail(40)
    );
    let eth0 = &ip_in(&sb, "b", &["addr", "show", "eth0"])[0];
    assert_eq!(eth0["address"], "02:42:c6:12:00:05", "{eth0}");
    assert_eq!(eth0["addr_info"][0]["local"], "198.18.0.5", "{eth0}");
    assert!(ok(&sb.in_world(&ct(), &["tcp", "198.18.0.5:80"])));
    assert!(
        ok(&sb.in_host(&ct(), &["tcp", "198.18.0.5:80"])),
        "host route"
    );
    let links = in_netns(&a_ns, "ip", &["-o", "link"]);
    assert!(ok(&links), "{}", out(&links));
    assert!(out(&links).contains("eth0"), "{}", out(&links));
    assert!(!out(&links).contains("eth7"), "{}", out(&links));
    assert!(!sb.host_links().contains(&"mvhost-deadbeef".to_owned()));
    assert_eq!(ifindex(&sb, "a"), a_index);
}

#[test]
fn a_dual_stack_network_gives_containers_the_lans_ipv6() {
    // The host's uplink (the parent) and the world's router are on the
    // LAN's IPv6 subnet too.
    let mut sb = dual_stack_sandbox();
    let empty = (sb.snapshot(), host6(&sb));
    let net = macvlan(&sb, "lan6", LAN, &["--ipv6", "--subnet", LAN6]);
    let id = net["id"].as_str().unwrap().to_owned();
    // The gateway defaults to the subnet's first address, as for IPv4.
    assert_eq!(net["ipam6"]["subnet"], LAN6, "{net}");
    assert_eq!(net["ipam6"]["gateway"], WORLD6, "{net}");
    assert_eq!(net["ipam"]["gateway"], "198.18.0.1", "{net}");
    sb.server6("a", "lan6", "tcp", 80);
    sb.sleeper("b", &["--network", "lan6"]);
    sb.sleeper("c", &["--network", "lan6", "--ip6", "2001:2::99"]);

    // The first addresses after the gateway and the parent's own (::2),
    // and the one asked for.
    for (c, ip, ip6) in [
        ("a", "198.18.0.3", "2001:2::3"),
        ("b", "198.18.0.4", "2001:2::4"),
        ("c", "198.18.0.5", "2001:2::99"),
    ] {
        let ep = endpoint(&sb, c, "lan6");
        assert_eq!(
            (ep["ip"].as_str(), ep["ip6"].as_str()),
            (Some(ip), Some(ip6)),
            "{ep}"
        );
        assert_eq!(ep["prefix6"], 64, "{ep}");
        assert_eq!(ep["gateway6"], WORLD6, "{ep}");
    }

    // Inside: the address on eth0, at once usable; the subnet on the link,
    // the default route via the LAN's router; the sysctls of a dual-stack
    // bridge container.
    let eth0 = &ip_in(&sb, "a", &["-6", "addr", "show", "eth0"])[0];
    let global: Vec<&Value> = eth0["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["scope"] == "global")
        .collect();
    assert_eq!(global.len(), 1, "{eth0}");
    assert_eq!(global[0]["local"], "2001:2::3", "{eth0}");
    assert_eq!(global[0]["prefixlen"], 64, "{eth0}");
    assert_eq!(global[0]["nodad"], true, "{eth0}");
    assert_ne!(global[0]["tentative"], true, "{eth0}");
    let routes = ip_in(&sb, "a", &["-6", "route", "show"]);
    let routes = routes.as_array().unwrap();
    assert!(
        routes
            .iter()
            .any(|r| r["dst"] == LAN6 && r["dev"] == "eth0" && r["gateway"].is_null()),
        "{routes:?}"
    );
    assert!(
        routes
            .iter()
            .any(|r| r["dst"] == "default" && r["gateway"] == WORLD6 && r["dev"] == "eth0"),
        "{routes:?}"
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
        assert_eq!(sysctl6_in(&sb, "a", name), want, "{name}");
    }
    let lo = &ip_in(&sb, "a", &["-6", "addr", "show", "lo"])[0];
    assert!(
        lo["addr_info"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["local"] == "::1"),
        "{lo}"
    );

    // The containers reach each other over IPv6, straight through the
    // parent's children: ping and TCP, the server seeing the client's own
    // address.
    assert!(sb.ping6("b", "2001:2::3"), "b -> a");
    assert!(sb.ping6("a", "2001:2::99"), "a -> c");
    let o = sb.conntest_in("b", &["tcp", "[2001:2::3]:80"]);
    assert!(ok(&o), "b -> a over TCP: {}", out(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).starts_with("[2001:2::4]:"),
        "{}",
        out(&o)
    );

    // The LAN: its router answers, reaches the container at its own
    // address (no NAT), and has learnt the container's own MAC.
    assert!(sb.ping6("a", WORLD6), "a -> the LAN's router");
    let o = sb.in_world(&ct(), &["tcp", "[2001:2::3]:80"]);
    assert!(ok(&o), "world -> a: {}", out(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).starts_with(&format!("[{WORLD6}]:")),
        "{}",
        out(&o)
    );
    let neigh = ip_world(&sb, &["-6", "neigh", "show", "2001:2::3"]);
    assert_eq!(neigh[0]["lladdr"], "02:42:c6:12:00:03", "{neigh}");
    let world_ns = sb.world_netns_path();
    sb.spawn_in(
        &world_ns,
        &ct(),
        &["serve", "tcp", &format!("[{WORLD6}]:7000")],
    );
    let mut last = None;
    assert!(
        wait_until(Duration::from_secs(5), || {
            let o = sb.conntest_in("c", &["tcp", &format!("[{WORLD6}]:7000")]);
            let good = ok(&o);
            last = Some(o);
            good
        }),
        "c -> world: {}",
        out(last.as_ref().unwrap())
    );
    assert!(
        String::from_utf8_lossy(&last.unwrap().stdout).starts_with("[2001:2::99]:"),
        "the world sees the container's own IPv6 address"
    );
    // The host's own IPv6 on the parent is left as it was.
    assert_eq!(host6(&sb), empty.1);

    // A restart leaves a healthy dual-stack endpoint alone and mends one
    // that lost its IPv6 address.
    let ifindex =
        |sb: &Sandbox, c: &str| ip_in(sb, c, &["link", "show", "eth0"])[0]["ifindex"].clone();
    let a_index = ifindex(&sb, "a");
    sb.dnet_ok(&[
        "exec",
        "b",
        "--",
        "ip",
        "-6",
        "addr",
        "del",
        "2001:2::4/64",
        "dev",
        "eth0",
    ]);
    sb.stop_daemon(libc::SIGKILL);
    sb.start_daemon();
    assert_eq!(
        ifindex(&sb, "a"),
        a_index,
        "a healthy endpoint is left alone"
    );
    assert!(
        sb.log_tail(200).contains("making its endpoint again"),
        "{}",
        sb.log_tail(40)
    );
    assert!(sb.ping6("a", "2001:2::4"), "b mended");

    // Removal leaves nothing behind.
    sb.dnet_ok(&["rm", "-f", "a", "b", "c"]);
    sb.dnet_ok(&["network", "rm", "lan6"]);
    let strip = |s: &str| s.rsplit_once("\n---\n").expect("parts").0.to_owned();
    assert_eq!(strip(&sb.snapshot()), strip(&empty.0));
    assert_eq!(host6(&sb), empty.1);
    assert_eq!(links_with_alias_anywhere(&id), Vec::<String>::new());
}

#[test]
fn with_host_access_the_host_reaches_dual_stack_containers_over_both_families() {
    let mut sb = dual_stack_sandbox();
    let empty = (sb.snapshot(), host6(&sb));
    let eth0_mac = mac_of_host_link(&sb, "eth0");
    let net = macvlan(
        &sb,
        "lan6",
        LAN,
        &["--ipv6", "--subnet", LAN6, "-o", "host_access=true"],
    );
    let id = net["id"].as_str().unwrap().to_owned();
    // The first free address of each family: after the gateway (::1) and
    // the parent's own (::2).
    assert_eq!(net["host_address"], "198.18.0.3", "{net}");
    assert_eq!(net["host_address6"], "2001:2::3", "{net}");
    let notes = net["notes"].to_string();
    assert!(
        notes.contains("at 198.18.0.3 and 2001:2::3") && !notes.contains("IPv4 only"),
        "{net}"
    );
    let shim = format!("mvhost-{}", &id[..8]);
    let l = &sb.host_ip_json(&["-6", "addr", "show", &shim])[0];
    let global: Vec<&Value> = l["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["scope"] == "global")
        .collect();
    assert_eq!(global.len(), 1, "{l}");
    assert_eq!(global[0]["local"], "2001:2::3", "{l}");
    assert_eq!(global[0]["prefixlen"], 128, "{l}");
    assert_ne!(global[0]["tentative"], true, "{l}");
    // Nothing taken from the LAN's routers.
    for key in [
        "accept_ra",
        "autoconf",
        "accept_dad",
        "router_solicitations",
    ] {
        let o = sb.in_host("cat", &[&format!("/proc/sys/net/ipv6/conf/{shim}/{key}")]);
        assert_eq!(out(&o).trim(), "0", "{key}");
    }

    sb.server6("a", "lan6", "tcp", 80);
    sb.sleeper("b", &["--network", "lan6"]);
    let ep = endpoint(&sb, "a", "lan6");
    assert_eq!(
        (ep["ip"].as_str(), ep["ip6"].as_str()),
        (Some("198.18.0.4"), Some("2001:2::4")),
        "the host's addresses are never handed out: {ep}"
    );
    let ping6 = |sb: &Sandbox, to: &str| {
        sb.in_host("ping", &["-6", "-n", "-c", "2", "-i", "0.2", "-W", "2", to])
    };
    let o = ping6(&sb, "2001:2::4");
    assert!(ok(&o), "host -> a over IPv6: {}", out(&o));
    assert!(ok(&ping6(&sb, "2001:2::5")), "host -> b over IPv6");
    assert!(ok(&sb.in_host(&ct(), &["ping", "198.18.0.4"])), "and IPv4");
    let o = sb.in_host(&ct(), &["tcp", "[2001:2::4]:80"]);
    assert!(ok(&o), "{}", out(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).starts_with("[2001:2::3]:"),
        "the host speaks from its IPv6 address on the network: {}",
        out(&o)
    );
    // The containers reach a host service at the host's IPv6 address.
    let host_ns = sb.host_netns_path();
    sb.spawn_in(&host_ns, &ct(), &["serve", "tcp", "[2001:2::3]:9000"]);
    assert!(wait_until(Duration::from_secs(5), || ok(
        &sb.conntest_in("a", &["tcp", "[2001:2::3]:9000"])
    )));

    // The host's own way to the LAN has not moved, and the LAN still
    // knows the host's uplink IPv6 address by the uplink's MAC.
    let get = |ip: &str| sh_ok("ip", &["-n", &sb.host_ns, "-6", "route", "get", ip]);
    let world = get(WORLD6);
    assert!(
        world.contains("dev eth0") && world.contains(&format!("src {UPLINK6}")),
        "{world}"
    );
    assert!(
        get("2001:2::77").contains("dev eth0"),
        "{}",
        get("2001:2::77")
    );
    assert!(
        get("2001:2::4").contains(&format!("dev {shim}"))
            && get("2001:2::4").contains("src 2001:2::3"),
        "{}",
        get("2001:2::4")
    );
    sh_ok(
        "ip",
        &["-n", &sb.world_ns, "-6", "neigh", "flush", "dev", "eth0"],
    );
    assert!(ok(&sb.in_world(
        "ping",
        &["-6", "-n", "-c", "2", "-i", "0.2", "-W", "2", UPLINK6]
    )));
    let neigh = ip_world(&sb, &["-6", "neigh", "show", UPLINK6]);
    assert_eq!(neigh[0]["lladdr"], eth0_mac, "{neigh}");

    // A restart mends a container's lost IPv6 host route.
    sh_ok(
        "ip",
        &[
            "-n",
            &sb.host_ns,
            "-6",
            "route",
            "del",
            "2001:2::5/128",
            "dev",
            &shim,
        ],
    );
    assert!(!ok(&ping6(&sb, "2001:2::5")), "b is cut off");
    sb.stop_daemon(libc::SIGKILL);
    sb.start_daemon();
    assert!(ok(&ping6(&sb, "2001:2::5")), "b mended");
    assert!(ok(&ping6(&sb, "2001:2::4")), "a untouched");

    // A container's routes go with it, the interface with the network.
    sb.dnet_ok(&["rm", "-f", "a"]);
    let routes = sh_ok("ip", &["-n", &sb.host_ns, "-6", "route"]);
    assert!(!routes.contains("2001:2::4"), "{routes}");
    assert!(routes.contains("2001:2::5"), "{routes}");
    sb.dnet_ok(&["rm", "-f", "b"]);
    sb.dnet_ok(&["network", "rm", "lan6"]);
    assert!(!sb.host_links().contains(&shim));
    let strip = |s: &str| s.rsplit_once("\n---\n").expect("parts").0.to_owned();
    assert_eq!(strip(&sb.snapshot()), strip(&empty.0));
    assert_eq!(host6(&sb), empty.1);
}

#[test]
fn bad_dual_stack_input_gets_a_clear_error_and_changes_nothing() {
    let sb = dual_stack_sandbox();
    macvlan(&sb, "lan6", LAN, &["--ipv6", "--subnet", LAN6]);
    macvlan(&sb, "lan4", "198.18.1.0/24", &[]);
    sb.dual_stack_network("dual", "10.60.0.0/24", "fd00:60::/64");
    let v4 = ["--subnet", "10.30.0.0/24"];
    let cases: &[(&[&str], &str)] = &[
        (
            &["--ipv6"],
            "a dual-stack macvlan network needs an IPv6 --subnet (the parent LAN's)",
        ),
        (
            &["--ipv6", "--gateway", "2001:db8:7::1"],
            "an IPv6 --gateway or --ip-range needs an IPv6 --subnet",
        ),
        (
            &["--subnet", "2001:db8:7::/64"],
            "an IPv6 subnet or gateway needs --ipv6",
        ),
        (&["--ipv6", "--subnet", "fe80::/64"], "link-local"),
        (
            &["--ipv6", "--subnet", "2001:2::/80"],
            "IPv6 subnet 2001:2::/80 overlaps 2001:2::/64 of macvlan network \"lan6\" on the same parent eth0",
        ),
        (
            &["--ipv6", "--subnet", "fd00:60::/64"],
            "IPv6 subnet fd00:60::/64 overlaps fd00:60::/64 of network \"dual\"",
        ),
        (
            &[
                "--ipv6",
                "--subnet",
                "2001:db8:7::/64",
                "--gateway",
                "2001:db8:8::1",
            ],
            "not a usable address",
        ),
    ];
    for (args, want) in cases {
        let mut a = vec!["network", "create", "-d", "macvlan"];
        a.extend(v4);
        a.extend(*args);
        a.push("x");
        let before = (sb.snapshot(), host6(&sb));
        let err = sb.dnet_err(&a);
        assert!(
            err.contains(want),
            "dnet {a:?}: expected {want:?} in {err:?}"
        );
        assert_eq!(
            before,
            (sb.snapshot(), host6(&sb)),
            "dnet {a:?} changed something"
        );
    }
    // A bridge network may not take a LAN's IPv6 subnet either.
    let err = sb.dnet_err(&[
        "network",
        "create",
        "--ipv6",
        "--subnet",
        "10.31.0.0/24",
        "--subnet",
        "2001:2::/96",
        "y",
    ]);
    assert!(
        err.contains("overlaps 2001:2::/64 of network \"lan6\""),
        "{err}"
    );

    let run = |net: &str, ip6: &str, want: &str| {
        let before = (sb.snapshot(), host6(&sb));
        let e = sb.dnet_err(&["run", "--network", net, "--ip6", ip6, "--", "true"]);
        assert!(e.contains(want), "--ip6 {ip6}: {e:?} does not say {want:?}");
        assert_eq!(
            before,
            (sb.snapshot(), host6(&sb)),
            "--ip6 {ip6} changed something"
        );
    };
    run("lan6", "2001:db8:9::5", "not a usable address");
    run("lan6", UPLINK6, "already in use");
    run("lan6", WORLD6, "gateway");
    run("lan4", "2001:2::5", "not dual-stack");
}

/// The namespace file of a container.
fn endpoint_netns(sb: &Sandbox, name: &str) -> PathBuf {
    PathBuf::from(sb.container(name)["netns_path"].as_str().unwrap())
}

fn container_pid(sb: &Sandbox, name: &str) -> u64 {
    sb.container(name)["pid"].as_u64().unwrap()
}
