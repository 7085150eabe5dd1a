//! dnet as a router at its own hop (issue #10, items 12 and 13): ICMP
//! "time exceeded" and "fragmentation needed" from the gateway, MTUs, and
//! an uplink that changes under a running daemon.

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

use dnet_sandbox::{Sandbox, UPLINK_IP, WORLD_IP, ct, ok, out, sh_ok, stdout, wait_until};

/// Starts a UDP conntest server in the world and waits until it answers.
fn world_udp_server(sb: &mut Sandbox, port: u16) {
    let w = sb.world_netns_path();
    sb.spawn_in(&w, &ct(), &["serve", "udp", &port.to_string()]);
    let to = format!("{WORLD_IP}:{port}");
    assert!(wait_until(Duration::from_secs(5), || ok(
        &sb.in_host(&ct(), &["udp", &to])
    )));
}

/// `ip` in the sandbox's host namespace.
fn host_ip(sb: &Sandbox, args: &[&str]) {
    let mut a = vec!["-n", sb.host_ns.as_str()];
    a.extend(args);
    sh_ok("ip", &a);
}

/// What a container's UDP request to the world's server shows: the address
/// the world saw it from, or the failure.
fn udp_from(sb: &Sandbox, container: &str) -> (bool, String) {
    let o = sb.conntest_in(
        container,
        &["udp", &format!("{WORLD_IP}:53"), "--timeout", "1.5"],
    );
    (ok(&o), out(&o).trim().to_owned())
}

#[test]
fn traceroute_through_a_dnet_network_shows_the_gateway() {
    let mut sb = Sandbox::new();
    world_udp_server(&mut sb, 53);
    sb.sleeper("a", &[]);
    let to = format!("{WORLD_IP}:53");
    // UDP probes, as traceroute sends them: TTL 1 runs out at dnet's hop,
    // TTL 2 reaches the world.
    let o = sb.conntest_in("a", &["probe", &to, "--ttl", "1"]);
    assert_eq!(stdout(&o), "time-exceeded from 172.17.0.1", "{}", out(&o));
    let o = sb.conntest_in("a", &["probe", &to, "--ttl", "2"]);
    assert!(
        stdout(&o).starts_with(&format!("answer {UPLINK_IP}:")),
        "{}",
        out(&o)
    );
    // ICMP echo (traceroute -I, ping -t 1).
    let o = sb.ping_from("a", &WORLD_IP.to_string(), &["-t", "1"]);
    assert!(
        out(&o).contains("From 172.17.0.1") && out(&o).contains("Time to live exceeded"),
        "{}",
        out(&o)
    );
    assert!(sb.drops("a", "ttl-exceeded") >= 2);
    // From the world to a published port, the uplink's address is the hop.
    sb.dnet_ok(&[
        "run",
        "-d",
        "--name",
        "dns",
        "-p",
        "5353:53/udp",
        "--",
        &ct(),
        "serve",
        "udp",
        "53",
    ]);
    let published = format!("{UPLINK_IP}:5353");
    assert!(wait_until(Duration::from_secs(5), || ok(
        &sb.in_world(&ct(), &["udp", &published])
    )));
    let o = sb.in_world(&ct(), &["probe", &published, "--ttl", "1"]);
    assert_eq!(
        stdout(&o),
        format!("time-exceeded from {UPLINK_IP}"),
        "{}",
        out(&o)
    );
    let o = sb.in_world(&ct(), &["probe", &published, "--ttl", "2"]);
    assert!(stdout(&o).starts_with("answer "), "{}", out(&o));
}

#[test]
fn a_packet_too_big_for_the_uplink_gets_fragmentation_needed_from_the_gateway() {
    let mut sb = Sandbox::new();
    world_udp_server(&mut sb, 53);
    sb.sleeper("a", &[]);
    // The uplink's link shrinks under a running container (eth0 stays 1500).
    host_ip(&sb, &["link", "set", "eth0", "mtu", "1400"]);
    sh_ok(
        "ip",
        &["-n", &sb.world_ns, "link", "set", "eth0", "mtu", "1400"],
    );
    let to = format!("{WORLD_IP}:53");
    // 1,472 bytes of UDP payload: a 1,500-byte datagram with DF.
    let o = sb.conntest_in("a", &["probe", &to, "--df", "--size", "1472"]);
    assert_eq!(
        stdout(&o),
        "frag-needed mtu 1400 from 172.17.0.1",
        "{}",
        out(&o)
    );
    // The container learnt the path MTU; a datagram that fits goes through.
    let r = sb.dnet_ok(&[
        "exec",
        "a",
        "--",
        "ip",
        "route",
        "get",
        &WORLD_IP.to_string(),
    ]);
    assert!(r.contains("mtu 1400"), "path MTU learnt: {r}");
    let o = sb.conntest_in("a", &["probe", &to, "--df", "--size", "1372"]);
    assert!(stdout(&o).starts_with("answer "), "{}", out(&o));
    assert!(sb.drops("a", "frag-needed") >= 1);
    // TCP keeps working through the smaller link.
    let w = sb.world_netns_path();
    sb.spawn_in(&w, &ct(), &["serve", "tcp", "80"]);
    let tcp = format!("{WORLD_IP}:80");
    assert!(wait_until(Duration::from_secs(5), || ok(
        &sb.conntest_in("a", &["tcp", &tcp])
    )));
}

#[test]
fn a_bridge_mtu_above_the_uplinks_is_refused_and_changes_nothing() {
    let sb = Sandbox::new();
    let before = sb.snapshot();
    let e = sb.dnet_err(&["network", "create", "-o", "mtu=9000", "big"]);
    assert!(
        e.contains("mtu 9000 is larger than the MTU of the uplink eth0 (1500)"),
        "{e}"
    );
    assert_eq!(before, sb.snapshot());
    sb.dnet_ok(&["network", "create", "-o", "mtu=1500", "same"]);
}

#[test]
fn the_daemon_follows_a_renumbered_uplink() {
    let mut sb = Sandbox::new();
    world_udp_server(&mut sb, 53);
    sb.sleeper("a", &[]);
    let (done, seen) = udp_from(&sb, "a");
    assert!(done && seen.starts_with("198.18.0.2:"), "{seen}");
    // A DHCP client gives the host another address.
    host_ip(&sb, &["addr", "del", "198.18.0.2/24", "dev", "eth0"]);
    host_ip(&sb, &["addr", "add", "198.18.0.3/24", "dev", "eth0"]);
    host_ip(
        &sb,
        &["route", "replace", "default", "via", &WORLD_IP.to_string()],
    );
    let mut last = (false, String::new());
    assert!(
        wait_until(Duration::from_secs(10), || {
            last = udp_from(&sb, "a");
            last.0 && last.1.starts_with("198.18.0.3:")
        }),
        "translated to the new address: {last:?}"
    );
    assert!(
        !sb.flows()
            .iter()
            .any(|f| f.to_string().contains("198.18.0.2")),
        "the old address's flows are gone: {:?}",
        sb.flows()
    );
    // Published ports answer on the new address.
    let ctb = ct();
    sb.dnet_ok(&[
        "run", "-d", "--name", "web", "-p", "8080:80", "--", &ctb, "serve", "tcp", "80",
    ]);
    assert!(wait_until(Duration::from_secs(5), || ok(
        &sb.in_world(&ctb, &["tcp", "198.18.0.3:8080", "--timeout", "1"])
    )));
    let r = sb.in_host("cat", &["/proc/sys/net/ipv4/ip_local_reserved_ports"]);
    assert!(stdout(&r).contains("49152-60999"), "{}", out(&r));
}

/// Makes the sandbox's uplink pair again, as `Sandbox::without_daemon` does.
fn make_uplink(sb: &Sandbox) {
    sh_ok(
        "ip",
        &[
            "-n",
            &sb.host_ns,
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &sb.world_ns,
        ],
    );
    host_ip(
        sb,
        &["addr", "add", &format!("{UPLINK_IP}/24"), "dev", "eth0"],
    );
    sh_ok(
        "ip",
        &[
            "-n",
            &sb.world_ns,
            "addr",
            "add",
            &format!("{WORLD_IP}/24"),
            "dev",
            "eth0",
        ],
    );
    host_ip(sb, &["link", "set", "eth0", "up"]);
    sh_ok("ip", &["-n", &sb.world_ns, "link", "set", "eth0", "up"]);
    host_ip(
        sb,
        &["route", "replace", "default", "via", &WORLD_IP.to_string()],
    );
}

#[test]
fn a_recreated_uplink_gets_the_uplink_program_and_nat_again() {
    let mut sb = Sandbox::new();
    world_udp_server(&mut sb, 53);
    let ctb = ct();
    sb.sleeper("a", &[]);
    sb.dnet_ok(&[
        "run", "-d", "--name", "web", "-p", "8080:80", "--", &ctb, "serve", "tcp", "80",
    ]);
    assert!(udp_from(&sb, "a").0);
    // The uplink goes (and the world's end with it), then comes back as a
    // new link with a new ifindex.
    host_ip(&sb, &["link", "del", "eth0"]);
    let (done, seen) = udp_from(&sb, "a");
    assert!(!done, "no uplink, no way out: {seen}");
    // (No route at all: the host answers "unreachable".)
    make_uplink(&sb);
    // The world's server still listens; the host reaches it again.
    let to = format!("{WORLD_IP}:53");
    assert!(wait_until(Duration::from_secs(5), || ok(
        &sb.in_host(&ct(), &["udp", &to])
    )));
    let mut last = (false, String::new());
    assert!(
        wait_until(Duration::from_secs(10), || {
            last = udp_from(&sb, "a");
            last.0 && last.1.starts_with("198.18.0.2:")
        }),
        "translated again: {last:?}"
    );
    assert!(
        wait_until(Duration::from_secs(5), || ok(&sb.in_world(
            &ctb,
            &["tcp", &format!("{UPLINK_IP}:8080"), "--timeout", "1"]
        ))),
        "the published port answers through the new link's program"
    );
}

#[test]
fn without_a_nat_address_nothing_leaves_untranslated_and_nat_starts_with_the_address() {
    let mut sb = Sandbox::without_daemon();
    // The uplink has no address yet (a DHCP client still asking), but the
    // host can route through it.
    host_ip(
        &sb,
        &["addr", "del", &format!("{UPLINK_IP}/24"), "dev", "eth0"],
    );
    host_ip(
        &sb,
        &["route", "add", &format!("{WORLD_IP}/32"), "dev", "eth0"],
    );
    host_ip(
        &sb,
        &["route", "replace", "default", "via", &WORLD_IP.to_string()],
    );
    sb.start_daemon();
    let w = sb.world_netns_path();
    sb.spawn_in(&w, &ct(), &["serve", "udp", "53"]);
    sb.sleeper("a", &[]);
    // Whatever reaches the world is seen there.
    let mut sniff = Command::new("nsenter")
        .arg(format!("--net={}", w.display()))
        .arg(ct())
        .args(["sniff", "--dev", "eth0", "--timeout", "3"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(sniff.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    let (done, seen) = udp_from(&sb, "a");
    assert!(!done, "{seen}");
    let frames: Vec<String> = lines.map(|l| l.unwrap()).collect();
    let _ = sniff.wait();
    assert!(
        !frames.iter().any(|l| l.starts_with("ipv4 172.17.")),
        "left untranslated: {frames:?}"
    );
    assert!(sb.drops("a", "no-nat-address") > 0);
    // The address comes: NAT starts, and the NAT ports are held.
    host_ip(
        &sb,
        &["addr", "add", &format!("{UPLINK_IP}/24"), "dev", "eth0"],
    );
    let mut last = (false, String::new());
    assert!(
        wait_until(Duration::from_secs(10), || {
            last = udp_from(&sb, "a");
            last.0 && last.1.starts_with("198.18.0.2:")
        }),
        "translated once the address is there: {last:?}"
    );
    let r = sb.in_host("cat", &["/proc/sys/net/ipv4/ip_local_reserved_ports"]);
    assert!(stdout(&r).contains("49152-60999"), "{}", out(&r));
}
