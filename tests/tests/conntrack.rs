//! dnet's conntrack under a flood (issue 10, items 1 and 3): a bounded SYN
//! flood from the world at a published port, and a UDP flow flood from one
//! container, while another container's established flows (and its
//! queries to the flooded resolver) must keep working; the refusals are
//! counted.

use std::{process::Command, time::Duration};

use dnet_sandbox::{Sandbox, UPLINK_IP, WORLD_IP, ct, ok, out, stdout, wait_listening, wait_until};

/// The MAC of the host namespace's uplink (`eth0`), where the world sends.
fn uplink_mac(sb: &Sandbox) -> String {
    let o = sb.in_host("ip", &["-j", "link", "show", "eth0"]);
    assert!(ok(&o), "{}", out(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    v[0]["address"].as_str().unwrap().to_owned()
}

#[test]
fn ct_a_syn_flood_at_a_published_port_breaks_no_established_flow() {
    // Room for 256 flows; the flood brings 2,000.
    let mut sb = Sandbox::with_daemon_args(&["--ct-entries", "512"]);
    let w = sb.world_netns_path();
    sb.spawn_in(&w, &ct(), &["serve", "tcp", "80"]);
    wait_listening(&w, "tcp", 80);
    let ctb = ct();
    sb.dnet_ok(&[
        "run", "-d", "--name", "web", "-p", "8080:80", "--", &ctb, "serve", "tcp", "80",
    ]);
    sb.wait_server("web", "tcp", 80);
    sb.sleeper("b", &[]);
    // B opens 20 connections to the world and keeps them idle until the
    // flood is over, then uses each once more.
    let hold = sb.dir.join("hold");
    std::fs::write(&hold, "").unwrap();
    let to = format!("{WORLD_IP}:80");
    let child = Command::new(dnet_sandbox::dnet_bin())
        .arg("--socket")
        .arg(sb.socket())
        .args(["exec", "b", "--", &ct(), "connections", &to])
        .args([
            "--count",
            "20",
            "--timeout",
            "10",
            "--hold",
            "60",
            "--again",
        ])
        .args(["--hold-while", hold.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let established = |sb: &Sandbox| {
        sb.flows()
            .iter()
            .filter(|f| f["kind"] == "snat" && f["state"] == "established")
            .count()
    };
    assert!(
        wait_until(Duration::from_secs(20), || established(&sb) == 20),
        "{:?}",
        sb.flows()
    );
    // The world's kernel would answer the container's SYN-ACKs with RSTs
    // (it opened no such connection); a real flood's sources do not, and
    // its flows stay half-open.
    let o = sb.in_world(
        "nft",
        &[
            "table ip flood { chain out { type filter hook output priority 0; \
           tcp dport 8080 tcp flags & rst == rst drop; }; }",
        ],
    );
    assert!(ok(&o), "{}", out(&o));
    // The flood, from the world's own address, 2,000 source ports.
    let target = format!("{UPLINK_IP}:8080");
    let mac = uplink_mac(&sb);
    let o = sb.in_world(
        &ct(),
        &["syn-flood", &target, "--dst-mac", &mac, "--count", "2000"],
    );
    assert!(ok(&o), "{}", out(&o));
    assert!(stdout(&o).contains("sent 2000 SYNs"), "{}", out(&o));
    assert_eq!(established(&sb), 20, "B's flows are all still there");
    // The table filled and refused the rest, counted where users look.
    let refused = || {
        sb.dnet_json(&["stats"])["unattributed_drops"]["conntrack-full"]
            .as_u64()
            .unwrap_or(0)
    };
    assert!(
        wait_until(Duration::from_secs(5), || refused() >= 1000),
        "conntrack-full: {}",
        refused()
    );
    // What the flood got in was answered by the container and is
    // half-open (`syn-recv`, the short SYN timeout), never established: no
    // handshake completed. With what was refused it is no more than was
    // sent.
    let admitted = || -> Vec<serde_json::Value> {
        sb.flows()
            .into_iter()
            .filter(|f| f["kind"] == "dnat")
            .collect()
    };
    assert!(
        wait_until(Duration::from_secs(10), || {
            let a = admitted();
            !a.is_empty() && a.iter().all(|f| f["state"] == "syn-recv")
        }),
        "{:?}",
        admitted()
    );
    let admitted = admitted();
    assert!(
        admitted.len() as u64 + refused() <= 2000,
        "{} admitted, {} refused",
        admitted.len(),
        refused()
    );
    // B's idle flows work on, every one of them.
    std::fs::remove_file(&hold).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(ok(&o), "{}", out(&o));
    assert!(
        stdout(&o).contains("20 connections answered again"),
        "{}",
        out(&o)
    );
}

#[test]
fn ct_a_udp_flow_flood_from_one_container_leaves_others_their_flows_and_dns() {
    let mut sb = Sandbox::with_daemon_args(&[
        "--nat-ports-per-destination",
        "50",
        "--ct-flows-per-endpoint",
        "100",
    ]);
    let w = sb.world_netns_path();
    sb.spawn_in(&w, &ct(), &["serve", "tcp", "80"]);
    sb.spawn_in(&w, &ct(), &["serve", "udp", "53"]);
    wait_listening(&w, "tcp", 80);
    wait_listening(&w, "udp", 53);
    sb.sleeper("flood", &[]);
    sb.sleeper("b", &[]);
    // B holds a connection to the world through the flood, then uses it.
    let hold = sb.dir.join("hold");
    std::fs::write(&hold, "").unwrap();
    let child = Command::new(dnet_sandbox::dnet_bin())
        .arg("--socket")
        .arg(sb.socket())
        .args([
            "exec",
            "b",
            "--",
            &ct(),
            "connections",
            &format!("{WORLD_IP}:80"),
        ])
        .args(["--count", "1", "--timeout", "10", "--hold", "60", "--again"])
        .args(["--hold-while", hold.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let b_ip = sb.ip_of("b");
    let established = |sb: &Sandbox| {
        sb.flows()
            .iter()
            .filter(|f| {
                f["state"] == "established"
                    && f["original"]["src"]
                        .as_str()
                        .unwrap_or("")
                        .starts_with(&format!("{b_ip}:"))
            })
            .count()
    };
    assert!(
        wait_until(Duration::from_secs(20), || established(&sb) == 1),
        "{:?}",
        sb.flows()
    );
    // 500 new UDP flows from one container to the resolver's address.
    let dns = format!("{WORLD_IP}:53");
    let o = sb.conntest_in("flood", &["udp-flows", &dns, "--count", "500"]);
    assert!(ok(&o), "{}", out(&o));
    assert!(stdout(&o).contains("sent 500 flows"), "{}", out(&o));
    // Beyond 50 ports towards it, its flows were refused, counted on it.
    let refused = sb.drops("flood", "nat-destination-limit");
    assert!(refused >= 400, "nat-destination-limit: {refused}");
    let flood_ip = sb.ip_of("flood");
    let to_dns = sb
        .flows()
        .iter()
        .filter(|f| {
            f["original"]["src"]
                .as_str()
                .unwrap_or("")
                .starts_with(&format!("{flood_ip}:"))
        })
        .count();
    assert!(to_dns <= 50 + 2, "{to_dns} flows of the flood");
    // Other destinations: its total of 100 live flows holds.
    let o = sb.conntest_in(
        "flood",
        &["udp-flows", &format!("{WORLD_IP}:54"), "--count", "100"],
    );
    assert!(ok(&o), "{}", out(&o));
    assert!(sb.drops("flood", "conntrack-endpoint-limit") >= 40);
    // B's DNS-like queries to the same resolver are answered.
    let o = sb.conntest_in("b", &["udp", &dns, "--count", "5", "--interval", "0.05"]);
    assert!(ok(&o), "{}", out(&o));
    assert_eq!(sb.drops("b", "nat-destination-limit"), 0);
    // B's held connection works on.
    std::fs::remove_file(&hold).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(ok(&o), "{}", out(&o));
    assert!(
        stdout(&o).contains("1 connections answered again"),
        "{}",
        out(&o)
    );
}

#[test]
fn ct_many_short_nat_connections_from_one_container_all_succeed_with_the_default_limits() {
    // The daemon's default options: the per-container limits are on (three
    // quarters of the NAT ports per destination). A closed connection gives
    // its charge back as it closes, so one container's short connections
    // to one server (more than the limit, fewer than its own ephemeral
    // ports, which TIME_WAIT holds) never meet it.
    let mut sb = Sandbox::new();
    let connrate = dnet_sandbox::conntest_bin().with_file_name("connrate");
    let connrate = connrate.to_str().unwrap();
    let w = sb.world_netns_path();
    sb.spawn_in(&w, connrate, &["serve", "7000"]);
    wait_listening(&w, "tcp", 7000);
    sb.sleeper("a", &[]);
    const N: u64 = 25_000;
    // Bounded in count; the time bound only stops a broken run.
    let o = sb.dnet(&[
        "exec",
        "a",
        "--",
        connrate,
        "run",
        &format!("{WORLD_IP}:7000"),
        "--max",
        &N.to_string(),
        "--workers",
        "2",
        "--seconds",
        "300",
        "--timeout",
        "5",
    ]);
    assert!(ok(&o), "{}", out(&o));
    let r: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(
        (r["requests"].as_u64(), r["errors"].as_u64()),
        (Some(N), Some(0)),
        "{r}\nstats: {}",
        sb.dnet_json(&["stats"])
    );
    assert_eq!(sb.drops("a", "nat-destination-limit"), 0);
    assert_eq!(sb.drops("a", "conntrack-endpoint-limit"), 0);
}
