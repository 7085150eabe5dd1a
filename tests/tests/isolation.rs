//! Isolation on a multi-tenant host: what a container or a LAN host must not
//! get through dnet's hop (issue #10, items 7 to 9), with real traffic.

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

use dnet_sandbox::{Sandbox, UPLINK_IP, WORLD_IP, ct, ok, out, sh_ok, stdout, wait_until};

/// The default network's gateway MAC (Docker's `02:42:` + 172.17.0.1).
const GATEWAY_MAC: &str = "02:42:ac:11:00:01";

/// `Udp: InDatagrams` of a container: datagrams its sockets were given.
fn udp_in(sb: &Sandbox, container: &str) -> u64 {
    let snmp = sb.dnet_ok(&["exec", container, "--", "cat", "/proc/net/snmp"]);
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next().unwrap(), udp.next().unwrap());
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == "InDatagrams")
        .map(|(_, v)| v.parse().unwrap())
        .unwrap()
}

#[test]
fn a_tagged_frame_from_a_container_is_dropped_and_no_tag_leaves_the_uplink() {
    let sb = Sandbox::new();
    sb.sleeper("a", &[]);
    // Watches what arrives on the world's side of the uplink.
    let mut sniff = Command::new("nsenter")
        .arg(format!("--net={}", sb.world_netns_path().display()))
        .arg(ct())
        .args(["sniff", "--dev", "eth0", "--timeout", "4"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(sniff.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    let to = format!("{WORLD_IP}:53");
    let send = |tags: &[&str]| {
        let mut args = vec!["raw-udp", to.as_str(), "--dst-mac", GATEWAY_MAC];
        for t in tags {
            args.extend(["--vlan", t]);
        }
        let o = sb.conntest_in("a", &args);
        assert!(ok(&o), "{}", out(&o));
    };
    // The container's own MAC and address, in VLAN 100 (the kernel moves
    // the tag into the packet's metadata before dnet sees it); then VLAN
    // 200 inside VLAN 100 (the inner tag stays in the frame); then the
    // same datagram untagged, which dnet translates and forwards.
    send(&["100"]);
    send(&["100", "200"]);
    send(&[]);
    let seen: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let _ = sniff.wait();
    let summary = seen.last().expect("a summary line");
    assert!(
        summary.starts_with("0 tagged of ") && !summary.ends_with(" 0 frames"),
        "no tagged frame left the uplink, the untagged one did: {seen:?}"
    );
    assert_eq!(
        sb.drops("a", "vlan-tagged"),
        2,
        "both tagged frames counted"
    );
}

#[test]
fn a_lan_host_cannot_reach_containers_through_the_hosts_forwarding() {
    let sb = Sandbox::new();
    let ctb = ct();
    sb.dnet_ok(&[
        "network",
        "create",
        "--internal",
        "--subnet",
        "10.22.0.0/24",
        "closed",
    ]);
    for (name, net) in [("x", "closed"), ("y", "bridge")] {
        sb.dnet_ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            net,
            "--",
            &ctb,
            "serve",
            "udp",
            "5000",
        ]);
    }
    let (x, y) = (sb.ip_of("x"), sb.ip_of("y"));
    // The host itself reaches both (the servers are up), and their own
    // broadcast and ARP still work: what dnet delivers and the host sends
    // goes in.
    for ip in [&x, &y] {
        let to = format!("{ip}:5000");
        assert!(
            wait_until(Duration::from_secs(5), || ok(
                &sb.in_host(&ctb, &["udp", &to])
            )),
            "the host reaches {to}"
        );
    }
    assert!(ok(&sb.conntest_in("y", &["ping", "172.17.0.1"])));
    // Docker and Kubernetes leave forwarding on in the host's namespace,
    // and a LAN host may route the containers' subnets to the host.
    sh_ok(
        "ip",
        &[
            "netns",
            "exec",
            &sb.host_ns,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ],
    );
    for subnet in ["10.22.0.0/24", "172.17.0.0/16"] {
        sh_ok(
            "ip",
            &[
                "-n",
                &sb.world_ns,
                "route",
                "add",
                subnet,
                "via",
                &UPLINK_IP.to_string(),
            ],
        );
    }
    for (name, ip) in [("x", &x), ("y", &y)] {
        let before = udp_in(&sb, name);
        let o = sb.in_world(&ctb, &["udp", &format!("{ip}:5000"), "--timeout", "1.5"]);
        assert!(!ok(&o), "{name}: {}", out(&o));
        assert_eq!(
            udp_in(&sb, name),
            before,
            "{name}'s unpublished port got the LAN's datagrams"
        );
        assert!(sb.drops(name, "host-forwarded") > 0, "{name}: counted");
    }
    // What the host sends still goes in.
    let o = sb.in_host(&ctb, &["udp", &format!("{x}:5000")]);
    assert!(ok(&o), "{}", out(&o));
}

#[test]
fn published_ports_never_move_onto_an_internal_network() {
    let sb = Sandbox::new();
    let ctb = ct();
    sb.dnet_ok(&[
        "run", "-d", "--name", "web", "-p", "8080:80", "--", &ctb, "serve", "tcp", "80",
    ]);
    let port = format!("{UPLINK_IP}:8080");
    let reach = || ok(&sb.in_world(&ctb, &["tcp", &port, "--timeout", "1"]));
    assert!(wait_until(Duration::from_secs(5), reach), "published");
    sb.dnet_ok(&[
        "network",
        "create",
        "--internal",
        "--subnet",
        "10.23.0.0/24",
        "closed",
    ]);
    sb.dnet_ok(&["network", "connect", "closed", "web"]);
    sb.dnet_ok(&["network", "disconnect", "bridge", "web"]);
    // A container routes as it likes inside its own namespace.
    sb.dnet_ok(&[
        "exec",
        "web",
        "--",
        "ip",
        "route",
        "replace",
        "default",
        "via",
        "10.23.0.1",
        "dev",
        "eth1",
        "onlink",
    ]);
    assert!(
        !reach(),
        "the published port leads into an internal network"
    );
    assert!(
        !sb.flows().iter().any(|f| f["translated"]["dst"]
            .as_str()
            .unwrap_or("")
            .starts_with("10.23.")),
        "{:?}",
        sb.flows()
    );
    // On a bridge network again, the port leads there.
    sb.dnet_ok(&["network", "connect", "bridge", "web"]);
    sb.dnet_ok(&[
        "exec",
        "web",
        "--",
        "ip",
        "route",
        "replace",
        "default",
        "via",
        "172.17.0.1",
        "dev",
        "eth0",
        "onlink",
    ]);
    assert!(
        wait_until(Duration::from_secs(5), reach),
        "published again: {:?}",
        stdout(&sb.in_world(&ctb, &["tcp", &port, "--timeout", "1"]))
    );
}
