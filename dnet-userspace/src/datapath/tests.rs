//! The container programs on hand-made frames, through `BPF_PROG_TEST_RUN`:
//! verdicts, rewritten bytes and counters. Needs root (CAP_BPF, CAP_NET_ADMIN).
//!
//! Each test runs on its own thread inside a fresh network namespace, so
//! nothing it does (a broadcast copy, say) can reach the machine's network.

use std::net::Ipv4Addr;

use aya::programs::{TestRun as _, TestRunOptions};
use dnet_common::{
    DropReason, Endpoint, Network,
    addr::{docker_mac, ipv4_be},
    network::{NET_F_INTERNAL, NET_F_NO_ICC},
};

use super::*;

const OK: u32 = 0;
const SHOT: u32 = 2;
const REDIRECT: u32 = 7;

/// The interface `BPF_PROG_TEST_RUN` puts a packet on: loopback.
const TEST_IFINDEX: u32 = 1;

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// Runs `f` on a new thread in a new, empty network namespace. Without
/// the privileges for it (plain `cargo test` as a user), the test is
/// skipped with a message: `cargo xtask test` runs it as root.
fn in_fresh_netns<F: FnOnce() + Send + 'static>(f: F) {
    if !nix::unistd::geteuid().is_root() {
        // Straight to stderr, past the test harness's capture, so that a
        // plain `cargo test` shows what it skipped.
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "skipped {}: it loads eBPF programs in a network namespace of its own and needs \
             root (`cargo xtask test` runs it)",
            std::thread::current().name().unwrap_or("a datapath test")
        );
        return;
    }
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare");
        f()
    })
    .join()
    .unwrap_or_else(|p| std::panic::resume_unwind(p));
}

struct Fixture {
    dp: Datapath,
    a: Endpoint,
    b: Endpoint,
    c: Endpoint,
}

/// Network 1 (172.17.0.0/16): A (the sender, on the test interface) and B.
/// Network 2 (10.9.0.0/24): C.
fn fixture(flags1: u32) -> Fixture {
    fixture_sized(flags1, m::CT_ENTRIES)
}

/// As [`fixture`], with a conntrack table of `ct_entries`.
fn fixture_sized(flags1: u32, ct_entries: u32) -> Fixture {
    let mut dp = Datapath::load_with(None, ct_entries).expect("load the datapath");
    let net = |subnet: &str, gw: &str, flags| Network {
        subnet_be: ipv4_be(subnet.parse::<Ipv4Network>().unwrap().network()),
        mask_be: ipv4_be(subnet.parse::<Ipv4Network>().unwrap().mask()),
        gateway_be: ipv4_be(ip(gw)),
        flags,
        gateway_mac: docker_mac(ip(gw)),
        active: 1,
        _pad: 0,
    };
    dp.set_network(
        1,
        "172.17.0.0/16".parse().unwrap(),
        &net("172.17.0.0/16", "172.17.0.1", flags1),
    )
    .unwrap();
    dp.set_network(
        2,
        "10.9.0.0/24".parse().unwrap(),
        &net("10.9.0.0/24", "10.9.0.1", 0),
    )
    .unwrap();
    let ep = |ifindex, addr: &str, net_id, slot| Endpoint {
        ifindex,
        addr_be: ipv4_be(ip(addr)),
        net_id,
        slot,
        mac: docker_mac(ip(addr)),
        _pad: [0; 2],
    };
    let a = ep(TEST_IFINDEX, "172.17.0.2", 1, 1);
    let b = ep(1000, "172.17.0.3", 1, 2);
    let c = ep(1001, "10.9.0.2", 2, 3);
    for e in [&a, &b, &c] {
        dp.set_endpoint(e).unwrap();
        dp.reset_stats(e.slot).unwrap();
    }
    dp.set_members(1, &[a.ifindex, b.ifindex]).unwrap();
    dp.set_members(2, &[c.ifindex]).unwrap();
    Fixture { dp, a, b, c }
}

/// Runs the from-container program on `frame`; returns the verdict and the
/// frame as the program left it.
fn run(dp: &Datapath, frame: &[u8]) -> (u32, Vec<u8>) {
    let prog = dp.program(PROG_FROM_CONTAINER).unwrap();
    let mut out = vec![0u8; frame.len() + 256];
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.data_out = Some(&mut out);
    let r = prog.test_run(opts).expect("BPF_PROG_TEST_RUN");
    out.truncate(r.data_size_out as usize);
    (r.return_value, out)
}

fn drops(dp: &Datapath, slot: u32, reason: DropReason) -> u64 {
    dp.stats(slot).unwrap().drops[reason as usize]
}

fn eth(dst: [u8; 6], src: [u8; 6], proto: u16) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&proto.to_be_bytes());
    f
}

fn arp(op: u16, sha: [u8; 6], spa: Ipv4Addr, tha: [u8; 6], tpa: Ipv4Addr) -> Vec<u8> {
    let dst = if op == 1 { [0xff; 6] } else { tha };
    let mut f = eth(dst, sha, 0x0806);
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&sha);
    f.extend_from_slice(&spa.octets());
    f.extend_from_slice(&tha);
    f.extend_from_slice(&tpa.octets());
    f.resize(60, 0); // Ethernet minimum, as a real sender pads it
    f
}

fn csum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32)
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4/UDP frame with `options` bytes of IP options (a multiple of 4).
fn udp(src_mac: [u8; 6], dst_mac: [u8; 6], s: Ipv4Addr, d: Ipv4Addr, options: usize) -> Vec<u8> {
    let payload = b"dnet";
    let ihl = 20 + options;
    let tot = ihl + 8 + payload.len();
    let mut iph = vec![0x40 | (ihl / 4) as u8, 0];
    iph.extend_from_slice(&(tot as u16).to_be_bytes());
    iph.extend_from_slice(&[0, 1, 0x40, 0, 64, 17, 0, 0]);
    iph.extend_from_slice(&s.octets());
    iph.extend_from_slice(&d.octets());
    iph.extend(std::iter::repeat_n(1u8, options)); // NOP options
    let c = csum(&iph);
    iph[10..12].copy_from_slice(&c.to_be_bytes());
    let mut f = eth(dst_mac, src_mac, 0x0800);
    f.extend_from_slice(&iph);
    f.extend_from_slice(&4000u16.to_be_bytes());
    f.extend_from_slice(&5000u16.to_be_bytes());
    f.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

const GW_MAC: [u8; 6] = [2, 0x42, 172, 17, 0, 1];

#[test]
fn arp_request_for_the_gateway_gets_a_reply_built_in_ebpf() {
    in_fresh_netns(|| {
        let fx = fixture(0);
        let a = fx.a.mac;
        let (v, out) = run(
            &fx.dp,
            &arp(1, a, ip("172.17.0.2"), [0; 6], ip("172.17.0.1")),
        );
        assert_eq!(v, REDIRECT, "the reply goes back out to the asker");
        let want = arp(2, GW_MAC, ip("172.17.0.1"), a, ip("172.17.0.2"));
        // Ethernet: to the asker, from the gateway MAC.
        assert_eq!(&out[0..6], &a);
        assert_eq!(&out[6..12], &GW_MAC);
        assert_eq!(&out[12..42], &want[12..42]);
    });
}

#[test]
fn arp_request_for_a_peer_is_answered_with_the_peers_mac() {
    in_fresh_netns(|| {
        let fx = fixture(0);
        let (v, out) = run(
            &fx.dp,
            &arp(1, fx.a.mac, ip("172.17.0.2"), [0; 6], ip("172.17.0.3")),
        );
        assert_eq!(v, REDIRECT);
        assert_eq!(&out[22..28], &fx.b.mac, "sender hardware address");
        assert_eq!(&out[28..32], &[172, 17, 0, 3], "sender protocol address");
        assert_eq!(&out[32..38], &fx.a.mac, "target hardware address");
    });
}

#[test]
fn arp_that_could_poison_a_cache_is_dropped_with_its_reason() {
    in_fresh_netns(|| {
        let fx = fixture(0);
        let a = fx.a.mac;
        let me = ip("172.17.0.2");
        // A reply, a gratuitous announcement, a request that lies about its
        // sender, a request for nobody, a request for another network.
        let cases = [
            (
                arp(2, a, me, fx.b.mac, ip("172.17.0.3")),
                DropReason::ArpReply,
            ),
            (arp(1, a, me, [0; 6], me), DropReason::ArpReply),
            (
                arp(1, a, ip("172.17.0.3"), [0; 6], ip("172.17.0.1")),
                DropReason::ArpSpoofed,
            ),
            (
                arp(1, a, me, [0; 6], ip("172.17.0.99")),
                DropReason::ArpUnknownTarget,
            ),
            (
                arp(1, a, me, [0; 6], ip("10.9.0.2")),
                DropReason::ArpUnknownTarget,
            ),
        ];
        for (frame, reason) in cases {
            let before = drops(&fx.dp, 1, reason);
            let (v, _) = run(&fx.dp, &frame);
            assert_eq!(v, SHOT, "{}", reason.name());
            assert_eq!(drops(&fx.dp, 1, reason), before + 1, "{}", reason.name());
        }
    });
}

#[test]
fn spoofed_sources_are_dropped_with_their_reason() {
    in_fresh_netns(|| {
        let fx = fixture(0);
        let other_mac = [2, 0x42, 1, 2, 3, 4];
        let (v, _) = run(
            &fx.dp,
            &udp(other_mac, fx.b.mac, ip("172.17.0.2"), ip("172.17.0.3"), 0),
        );
        assert_eq!(v, SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::SpoofedMac), 1);
        let (v, _) = run(
            &fx.dp,
            &udp(fx.a.mac, fx.b.mac, ip("172.17.0.7"), ip("172.17.0.3"), 0),
        );
        assert_eq!(v, SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::SpoofedIp), 1);
        assert_eq!(fx.dp.stats(2).unwrap().tx_packets, 0, "nothing reached B");
    });
}

#[test]
fn a_peer_gets_the_packet_through_redirect_peer_with_its_mac() {
    in_fresh_netns(|| {
        let fx = fixture(0);
        // Sent to the gateway's MAC (as a routed packet would be): the
        // destination MAC is rewritten to B's.
        let frame = udp(fx.a.mac, GW_MAC, ip("172.17.0.2"), ip("172.17.0.3"), 0);
        let (v, out) = run(&fx.dp, &frame);
        assert_eq!(v, REDIRECT);
        assert_eq!(&out[0..6], &fx.b.mac);
        assert_eq!(&out[6..12], &fx.a.mac);
        assert_eq!(&out[12..], &frame[12..], "nothing past the MACs changes");
        let (sa, sb) = (fx.dp.stats(1).unwrap(), fx.dp.stats(2).unwrap());
        assert_eq!((sa.rx_packets, sa.rx_bytes), (1, frame.len() as u64));
        assert_eq!((sb.tx_packets, sb.tx_bytes), (1, frame.len() as u64));
    });
}

#[test]
fn ip_options_are_carried() {
    in_fresh_netns(|| {
        let fx = fixture(0);
        let (v, _) = run(
            &fx.dp,
            &udp(fx.a.mac, fx.b.mac, ip("172.17.0.2"), ip("172.17.0.3"), 8),
        );
        assert_eq!(v, REDIRECT);
    });
}

#[test]
fn other_networks_and_unused_addresses_are_unreachable() {
    in_fresh_netns(|| {
        let fx = fixture(0);
        let send = |d: &str| run(&fx.dp, &udp(fx.a.mac, GW_MAC, ip("172.17.0.2"), ip(d), 0)).0;
        assert_eq!(send("10.9.0.2"), SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::CrossNetwork), 1);
        assert_eq!(
            send("10.9.0.77"),
            SHOT,
            "an unused address of another network"
        );
        assert_eq!(drops(&fx.dp, 1, DropReason::CrossNetwork), 2);
        assert_eq!(send("172.17.5.5"), SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::NoEndpoint), 1);
        assert_eq!(fx.dp.stats(fx.c.slot).unwrap().tx_packets, 0);
        // The gateway and another network's gateway (a host address) go
        // up the host stack; the outside, with no NAT address and no route
        // here, does not (the host would route it out untranslated).
        assert_eq!(send("172.17.0.1"), OK);
        assert_eq!(send("10.9.0.1"), OK);
        assert_eq!(send("198.18.0.1"), SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::NoRoute), 1);
    });
}

#[test]
fn icc_false_drops_peers_but_not_the_gateway() {
    in_fresh_netns(|| {
        let fx = fixture(NET_F_NO_ICC);
        let send = |d: &str| run(&fx.dp, &udp(fx.a.mac, GW_MAC, ip("172.17.0.2"), ip(d), 0)).0;
        assert_eq!(send("172.17.0.3"), SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::IccDisabled), 1);
        assert_eq!(send("172.17.0.1"), OK);
    });
}

#[test]
fn internal_networks_reach_nothing_outside() {
    in_fresh_netns(|| {
        let fx = fixture(NET_F_INTERNAL);
        let send = |d: &str| run(&fx.dp, &udp(fx.a.mac, GW_MAC, ip("172.17.0.2"), ip(d), 0)).0;
        assert_eq!(send("198.18.0.1"), SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::Internal), 1);
        assert_eq!(send("172.17.0.3"), REDIRECT);
        assert_eq!(send("172.17.0.1"), OK);
    });
}

/// Packets each of `devs` received, in the calling thread's namespace.
fn rx_packets_of(devs: &[String]) -> Vec<u64> {
    let o = std::process::Command::new("ip")
        .args(["-j", "-s", "link", "show"])
        .output()
        .expect("ip");
    assert!(o.status.success(), "ip -s link show: {o:?}");
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).expect("ip -j");
    let links = j.as_array().expect("links");
    devs.iter()
        .map(|d| {
            let l = links
                .iter()
                .find(|l| l["ifname"] == d.as_str())
                .unwrap_or_else(|| panic!("no link {d}"));
            l["stats64"]["rx"]["packets"].as_u64().expect("rx packets")
        })
        .collect()
}

#[test]
fn broadcast_reaches_every_member_however_many() {
    in_fresh_netns(|| {
        let mut fx = fixture(0);
        // 150 members that exist (more than the 64 copies older builds
        // made): a copy leaves through each and arrives at its peer; none
        // goes back to the sender (loopback here). IPv6 off, so that
        // nothing else crosses the pairs.
        let o = std::process::Command::new("sysctl")
            .args(["-qw", "net.ipv6.conf.default.disable_ipv6=1"])
            .output()
            .expect("sysctl");
        assert!(o.status.success(), "{o:?}");
        const N: usize = 150;
        let mut batch = String::new();
        for i in 0..N {
            batch += &format!("link add m{i} type veth peer name m{i}p\n");
            batch += &format!("link set m{i} up\nlink set m{i}p up\n");
        }
        let path = std::env::temp_dir().join(format!("dnet-bcast-{}", std::process::id()));
        std::fs::write(&path, batch).unwrap();
        let o = std::process::Command::new("ip")
            .arg("-batch")
            .arg(&path)
            .output()
            .expect("ip -batch");
        let _ = std::fs::remove_file(&path);
        assert!(o.status.success(), "ip -batch: {o:?}");
        let mut members = vec![fx.a.ifindex];
        members.extend((0..N).map(|i| ifindex(&format!("m{i}"))));
        fx.dp.set_members(1, &members).unwrap();
        assert_eq!(fx.dp.members(1).unwrap(), members);

        let mut peers: Vec<String> = (0..N).map(|i| format!("m{i}p")).collect();
        peers.push("lo".into());
        let frame = udp(
            fx.a.mac,
            [0xff; 6],
            ip("172.17.0.2"),
            ip("172.17.255.255"),
            0,
        );
        let before = rx_packets_of(&peers);
        assert_eq!(run(&fx.dp, &frame).0, OK);
        let after = rx_packets_of(&peers);
        let got: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
        let mut want = vec![1; N];
        want.push(0);
        assert_eq!(
            got, want,
            "one copy to each other member, none to the sender"
        );

        // A multicast to what is left after members go (from the middle,
        // the front and the end) and one comes back: each of those once,
        // nothing to those gone.
        let gone = [0usize, 7, 70, N - 1];
        let kept: Vec<u32> = members
            .iter()
            .copied()
            .filter(|i| !gone.iter().any(|g| ifindex(&format!("m{g}")) == *i))
            .collect();
        fx.dp.set_members(1, &kept).unwrap();
        let mut now = fx.dp.members(1).unwrap();
        assert_eq!(now.len(), kept.len());
        now.sort_unstable();
        let mut sorted = kept.clone();
        sorted.sort_unstable();
        assert_eq!(now, sorted, "dense, without the members that went");
        let mcast = udp(
            fx.a.mac,
            [1, 0, 0x5e, 0, 0, 0xfb],
            ip("172.17.0.2"),
            ip("224.0.0.251"),
            0,
        );
        let before = rx_packets_of(&peers);
        assert_eq!(run(&fx.dp, &mcast).0, OK);
        let after = rx_packets_of(&peers);
        let got: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
        let want: Vec<u64> = (0..=N)
            .map(|i| u64::from(i < N && !gone.contains(&i)))
            .collect();
        assert_eq!(got, want, "copies to the members left only");
        assert_eq!(drops(&fx.dp, 1, DropReason::FanoutLimit), 0);

        // The network's removal leaves no member behind.
        fx.dp.clear_network(1, None).unwrap();
        assert!(fx.dp.members(1).unwrap().is_empty());
        assert_eq!(fx.dp.members(2).unwrap(), vec![fx.c.ifindex]);
    });
}

#[test]
fn the_pin_of_a_retired_map_goes_at_load() {
    struct Pins(PathBuf);
    impl Drop for Pins {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
    // As in `programs_of_another_build_are_swapped_in_place`: the run's
    // leak check knows the folder by this process's id.
    if let Some(run) = std::env::var_os("DNET_TEST_RUN_DIR") {
        let pids = Path::new(&run).join("pids");
        fs::create_dir_all(&pids)
            .and_then(|()| fs::write(pids.join(std::process::id().to_string()), ""))
            .expect("record the pid in the run folder");
    }
    let pins = Pins(PathBuf::from(format!(
        "/sys/fs/bpf/dnet-test-{}-retired",
        std::process::id()
    )));
    let dir = pins.0.clone();
    in_fresh_netns(move || {
        drop(Datapath::load(Some(&dir)).unwrap());
        // What an older build left: a map pinned under the name of the
        // 64-member lists.
        let maps = dir.join("maps");
        fs::rename(maps.join(m::NET_FANOUT), maps.join(m::RETIRED[0])).unwrap();
        let mut dp = Datapath::load(Some(&dir)).unwrap();
        assert!(
            !maps.join(m::RETIRED[0]).exists(),
            "the retired pin is gone"
        );
        assert!(maps.join(m::NET_FANOUT).exists(), "a new member count map");
        dp.set_members(1, &[7, 8]).unwrap();
        assert_eq!(dp.members(1).unwrap(), vec![7, 8]);
    });
}

/// The in-memory copy of the endpoint maps (`mirror.rs`) answers as the
/// maps do: after writes and removals, and in a second load of the same
/// pins (a restarted daemon), which reads it from the maps; members are
/// written as differences against what the maps hold.
#[test]
fn the_endpoint_copy_follows_the_maps() {
    struct Pins(PathBuf);
    impl Drop for Pins {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
    if let Some(run) = std::env::var_os("DNET_TEST_RUN_DIR") {
        let pids = Path::new(&run).join("pids");
        fs::create_dir_all(&pids)
            .and_then(|()| fs::write(pids.join(std::process::id().to_string()), ""))
            .expect("record the pid in the run folder");
    }
    let pins = Pins(PathBuf::from(format!(
        "/sys/fs/bpf/dnet-test-{}-mirror",
        std::process::id()
    )));
    let dir = pins.0.clone();
    in_fresh_netns(move || {
        let ep = |ifindex, addr: &str, net_id| Endpoint {
            ifindex,
            addr_be: ipv4_be(ip(addr)),
            net_id,
            slot: ifindex,
            mac: docker_mac(ip(addr)),
            _pad: [0; 2],
        };
        let mut dp = Datapath::load(Some(&dir)).unwrap();
        for e in [
            ep(11, "10.1.0.2", 1),
            ep(12, "10.1.0.3", 1),
            ep(13, "10.2.0.2", 2),
            // A stale entry of the same address on another interface.
            ep(14, "10.1.0.3", 1),
        ] {
            dp.set_endpoint(&e).unwrap();
        }
        dp.set_endpoint6(12, "fd00::3".parse().unwrap(), &ep(12, "10.1.0.3", 1))
            .unwrap();
        assert_eq!(dp.network_ifindexes(1).unwrap(), vec![11, 12, 14]);
        let mut with = dp.ifindexes_with(ip("10.1.0.3")).unwrap();
        with.sort_unstable();
        assert_eq!(with, vec![12, 14]);
        dp.clear_endpoint(None, Some(14)).unwrap();
        assert_eq!(dp.ifindexes_with(ip("10.1.0.3")).unwrap(), vec![12]);
        let members = dp.network_ifindexes(1).unwrap();
        dp.set_members(1, &members).unwrap();
        drop(dp);

        let mut dp = Datapath::load(Some(&dir)).unwrap();
        assert_eq!(dp.network_ifindexes(1).unwrap(), vec![11, 12]);
        assert_eq!(dp.network_ifindexes(2).unwrap(), vec![13]);
        assert_eq!(
            dp.ifindexes_with6("fd00::3".parse().unwrap()).unwrap(),
            vec![12]
        );
        dp.clear_endpoint6(None, Some(12)).unwrap();
        assert!(
            dp.ifindexes_with6("fd00::3".parse().unwrap())
                .unwrap()
                .is_empty()
        );
        // Members: read from the maps once, then written as differences.
        dp.set_members(1, &[12, 15]).unwrap();
        assert_eq!(dp.members(1).unwrap(), vec![12, 15]);
        dp.set_members(1, &[12, 15, 16]).unwrap();
        assert_eq!(dp.members(1).unwrap(), vec![12, 15, 16]);
        dp.set_members(1, &[]).unwrap();
        assert!(dp.members(1).unwrap().is_empty());
    });
}

#[test]
fn malformed_frames_are_dropped_without_fault() {
    in_fresh_netns(|| {
        let fx = fixture(0);
        let good = udp(fx.a.mac, fx.b.mac, ip("172.17.0.2"), ip("172.17.0.3"), 0);
        let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
        // The kernel refuses shorter IPv4 frames before TC (and so does
        // BPF_PROG_TEST_RUN: 14 + 20 bytes at least); the shortest the
        // program can see is a bare header that claims a payload.
        cases.push(("IPv4 header without its payload", good[..34].to_vec()));
        let mut f = good.clone();
        f[14] = 0x44; // IHL 4
        cases.push(("IHL below 5", f));
        let mut f = good.clone();
        f[14] = 0x4f; // IHL 15: 60 bytes, beyond this packet
        cases.push(("IHL beyond the packet", f));
        let mut f = good.clone();
        f[16..18].copy_from_slice(&1500u16.to_be_bytes());
        cases.push(("total length beyond the packet", f));
        let mut f = good.clone();
        f[14] = 0x65;
        cases.push(("IP version 6 in an IPv4 frame", f));
        let mut f = arp(1, fx.a.mac, ip("172.17.0.2"), [0; 6], ip("172.17.0.1"));
        f[18] = 8; // hardware length 8
        cases.push(("ARP with odd lengths", f));
        cases.push((
            "ARP cut short",
            arp(1, fx.a.mac, ip("172.17.0.2"), [0; 6], ip("172.17.0.1"))[..30].to_vec(),
        ));
        for (i, (what, frame)) in cases.iter().enumerate() {
            let (v, _) = run(&fx.dp, frame);
            assert_eq!(v, SHOT, "{what}");
            assert_eq!(
                drops(&fx.dp, 1, DropReason::Malformed),
                i as u64 + 1,
                "{what}"
            );
        }
        // IPv6 and unknown EtherTypes have reasons of their own.
        let mut v6 = eth(GW_MAC, fx.a.mac, 0x86dd);
        v6.resize(80, 0);
        assert_eq!(run(&fx.dp, &v6).0, SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::Ipv6), 1);
        let mut other = eth(GW_MAC, fx.a.mac, 0x88cc);
        other.resize(60, 0);
        assert_eq!(run(&fx.dp, &other).0, SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::UnknownL3), 1);
    });
}

#[test]
fn a_packet_on_an_unknown_interface_is_dropped() {
    in_fresh_netns(|| {
        let mut fx = fixture(0);
        fx.dp.clear_endpoint(None, Some(TEST_IFINDEX)).unwrap();
        fx.dp.reset_stats(0).unwrap();
        let (v, _) = run(
            &fx.dp,
            &udp(fx.a.mac, fx.b.mac, ip("172.17.0.2"), ip("172.17.0.3"), 0),
        );
        assert_eq!(v, SHOT);
        assert_eq!(drops(&fx.dp, 0, DropReason::UnknownEndpoint), 1);
    });
}

// ---- NAT: the rewritten bytes and every checksum, both directions. ----

use dnet_common::{Config, Service, ServiceKey, csum};

const UPLINK: &str = "198.18.0.2";
const WORLD: &str = "198.18.0.1";
const WORLD_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
/// The uplink's IPv6 address (benchmarking range, RFC 5180); the world's
/// router beyond it is 2001:2::1 (MAC `WORLD_MAC`).
const UPLINK6: &str = "2001:2::2";

/// Runs a command in the calling thread's namespace (a forked child keeps
/// the namespace of the thread that forks it).
fn ip_cmd(args: &str) {
    let o = std::process::Command::new("ip")
        .args(args.split_whitespace())
        .output()
        .expect("ip");
    assert!(
        o.status.success(),
        "ip {args}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn ifindex(name: &str) -> u32 {
    nix::net::if_::if_nametoindex(name).expect("ifindex")
}

/// The fixture plus an uplink `up0` (198.18.0.2/24, default route via the
/// world at 198.18.0.1 whose MAC is known) and the NAT config.
fn nat_fixture(port_min: u16, port_max: u16) -> Fixture {
    nat_fixture_on(0, port_min, port_max)
}

/// As [`nat_fixture`], network 1 with `flags1`.
fn nat_fixture_on(flags1: u32, port_min: u16, port_max: u16) -> Fixture {
    nat_fixture_sized(flags1, port_min, port_max, m::CT_ENTRIES)
}

/// As [`nat_fixture_on`], with a conntrack table of `ct_entries`.
fn nat_fixture_sized(flags1: u32, port_min: u16, port_max: u16, ct_entries: u32) -> Fixture {
    let mut fx = fixture_sized(flags1, ct_entries);
    ip_cmd("link add up0 type veth peer name up1");
    ip_cmd("addr add 198.18.0.2/24 dev up0");
    ip_cmd("link set up0 up");
    ip_cmd("link set up1 up");
    ip_cmd("route add default via 198.18.0.1");
    ip_cmd("neigh replace 198.18.0.1 lladdr 02:00:00:00:00:01 dev up0 nud permanent");
    ip_cmd("-6 addr add 2001:2::2/64 dev up0 nodad");
    ip_cmd("-6 route add default via 2001:2::1 dev up0");
    ip_cmd("-6 neigh replace 2001:2::1 lladdr 02:00:00:00:00:01 dev up0 nud permanent");
    // As on a container's host-side veth: the route lookup wants forwarding
    // on the interface the packet arrived on (here loopback).
    std::fs::write("/proc/sys/net/ipv4/conf/lo/forwarding", "1").unwrap();
    std::fs::write("/proc/sys/net/ipv6/conf/lo/forwarding", "1").unwrap();
    fx.dp
        .set_config(&Config {
            uplink_ifindex: ifindex("up0"),
            uplink_addr_be: ipv4_be(ip(UPLINK)),
            nat_port_min: port_min,
            nat_port_max: port_max,
            _pad: 0,
            netns_cookie: 0,
            ep_flow_limit: 0,
            dest_port_limit: 0,
            nr_cpus: Datapath::quota_cpus(),
            _pad2: 0,
            uplink_addr6: ipv6::ip6(UPLINK6).octets(),
        })
        .unwrap();
    // As the daemon does without --publish-from: any source.
    fx.dp
        .set_publish_from(&["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()])
        .unwrap();
    fx
}

fn run_prog(dp: &Datapath, prog: &str, frame: &[u8]) -> (u32, Vec<u8>) {
    let prog = dp.program(prog).unwrap();
    let mut out = vec![0u8; frame.len() + 256];
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.data_out = Some(&mut out);
    let r = prog.test_run(opts).expect("BPF_PROG_TEST_RUN");
    out.truncate(r.data_size_out as usize);
    (r.return_value, out)
}

/// A TCP segment with the given flags, checksums right.
fn tcp(src_mac: [u8; 6], dst_mac: [u8; 6], s: (&str, u16), d: (&str, u16), flags: u8) -> Vec<u8> {
    let (s_ip, d_ip) = (ip(s.0), ip(d.0));
    let mut seg = Vec::new();
    seg.extend_from_slice(&s.1.to_be_bytes());
    seg.extend_from_slice(&d.1.to_be_bytes());
    seg.extend_from_slice(&1u32.to_be_bytes());
    seg.extend_from_slice(&0u32.to_be_bytes());
    seg.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    seg.extend_from_slice(b"ping");
    let c = l4_checksum(s_ip, d_ip, 6, &seg);
    seg[16..18].copy_from_slice(&c.to_be_bytes());
    ip_frame(src_mac, dst_mac, s_ip, d_ip, 6, &seg)
}

/// An IPv4/UDP frame; `zero_csum` leaves the UDP checksum out (0).
fn udp_to(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    s: (&str, u16),
    d: (&str, u16),
    zero_csum: bool,
) -> Vec<u8> {
    let (s_ip, d_ip) = (ip(s.0), ip(d.0));
    let mut seg = Vec::new();
    seg.extend_from_slice(&s.1.to_be_bytes());
    seg.extend_from_slice(&d.1.to_be_bytes());
    seg.extend_from_slice(&12u16.to_be_bytes());
    seg.extend_from_slice(&[0, 0]);
    seg.extend_from_slice(b"dnet");
    if !zero_csum {
        let c = l4_checksum(s_ip, d_ip, 17, &seg);
        seg[6..8].copy_from_slice(&c.to_be_bytes());
    }
    ip_frame(src_mac, dst_mac, s_ip, d_ip, 17, &seg)
}

fn icmp_echo(src_mac: [u8; 6], dst_mac: [u8; 6], s: &str, d: &str, typ: u8, id: u16) -> Vec<u8> {
    let mut m = vec![typ, 0, 0, 0];
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&7u16.to_be_bytes());
    m.extend_from_slice(b"abcdefgh");
    let c = csum::checksum(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    ip_frame(src_mac, dst_mac, ip(s), ip(d), 1, &m)
}

fn ip_frame(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    s: Ipv4Addr,
    d: Ipv4Addr,
    proto: u8,
    payload: &[u8],
) -> Vec<u8> {
    let tot = 20 + payload.len();
    let mut iph = vec![0x45, 0];
    iph.extend_from_slice(&(tot as u16).to_be_bytes());
    iph.extend_from_slice(&[0, 1, 0x40, 0, 64, proto, 0, 0]);
    iph.extend_from_slice(&s.octets());
    iph.extend_from_slice(&d.octets());
    let c = csum::checksum(&iph);
    iph[10..12].copy_from_slice(&c.to_be_bytes());
    let mut f = eth(dst_mac, src_mac, 0x0800);
    f.extend_from_slice(&iph);
    f.extend_from_slice(payload);
    f
}

fn l4_checksum(s: Ipv4Addr, d: Ipv4Addr, proto: u8, seg: &[u8]) -> u16 {
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&s.octets());
    pseudo.extend_from_slice(&d.octets());
    pseudo.extend_from_slice(&[0, proto]);
    pseudo.extend_from_slice(&(seg.len() as u16).to_be_bytes());
    csum::fold(csum::sum(seg, csum::sum(&pseudo, 0)))
}

/// A parsed view of an output frame, with every checksum verified.
#[derive(Debug)]
struct Pkt {
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    saddr: Ipv4Addr,
    daddr: Ipv4Addr,
    ttl: u8,
    /// Source and destination ports (ICMP echo: the identifier twice).
    sport: u16,
    dport: u16,
    l4: Vec<u8>,
}

fn parse_checked(f: &[u8]) -> Pkt {
    let iph = &f[14..34];
    assert_eq!(csum::checksum(iph), 0, "IPv4 header checksum");
    let saddr = Ipv4Addr::new(iph[12], iph[13], iph[14], iph[15]);
    let daddr = Ipv4Addr::new(iph[16], iph[17], iph[18], iph[19]);
    let tot = u16::from_be_bytes([iph[2], iph[3]]) as usize;
    let l4 = f[34..14 + tot].to_vec();
    let (sport, dport) = match iph[9] {
        6 => {
            assert_eq!(l4_checksum(saddr, daddr, 6, &l4), 0, "TCP checksum");
            (
                u16::from_be_bytes([l4[0], l4[1]]),
                u16::from_be_bytes([l4[2], l4[3]]),
            )
        }
        17 => {
            if l4[6..8] != [0, 0] {
                assert_eq!(l4_checksum(saddr, daddr, 17, &l4), 0, "UDP checksum");
            }
            (
                u16::from_be_bytes([l4[0], l4[1]]),
                u16::from_be_bytes([l4[2], l4[3]]),
            )
        }
        1 => {
            assert_eq!(csum::checksum(&l4), 0, "ICMP checksum");
            let id = u16::from_be_bytes([l4[4], l4[5]]);
            (id, id)
        }
        p => panic!("protocol {p}"),
    };
    Pkt {
        dst_mac: f[0..6].try_into().unwrap(),
        src_mac: f[6..12].try_into().unwrap(),
        saddr,
        daddr,
        ttl: iph[8],
        sport,
        dport,
        l4,
    }
}

/// up0's MAC (asked of `ip`: /sys shows the namespace that mounted it).
/// Publishes TCP port 8080, on every address, to A (172.17.0.2) port 80.
fn publish_8080_to_a(dp: &mut Datapath) {
    publish_8080_to(dp, "172.17.0.2");
}

/// Publishes TCP port 8080, on every address, to `backend` port 80.
fn publish_8080_to(dp: &mut Datapath, backend: &str) {
    let key = ServiceKey {
        addr_be: 0,
        port_be: 8080u16.to_be(),
        proto: 6,
        _pad: 0,
    };
    let svc = Service {
        backend_be: ipv4_be(ip(backend)),
        backend_port_be: 80u16.to_be(),
        _pad: 0,
    };
    dp.set_service(&key, &svc).unwrap();
}

/// Network `id` (of the fixture) made internal.
fn make_internal(dp: &mut Datapath, id: u32, subnet: &str) {
    let mut n = dp.network(id).unwrap();
    n.flags |= NET_F_INTERNAL;
    dp.set_network(id, subnet.parse().unwrap(), &n).unwrap();
}

fn up0_mac() -> [u8; 6] {
    let o = std::process::Command::new("ip")
        .args(["-j", "link", "show", "up0"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let m: crate::model::MacAddr = v[0]["address"].as_str().unwrap().parse().unwrap();
    m.0
}

#[test]
fn outbound_udp_is_translated_to_the_uplink_and_back() {
    in_fresh_netns(|| {
        let fx = nat_fixture(50000, 50009);
        let frame = udp_to(fx.a.mac, GW_MAC, ("172.17.0.2", 4000), (WORLD, 53), false);
        let (v, out) = run(&fx.dp, &frame);
        assert_eq!(v, REDIRECT, "out through the uplink");
        let p = parse_checked(&out);
        assert_eq!(p.saddr, ip(UPLINK));
        assert_eq!(p.daddr, ip(WORLD));
        assert!((50000..=50009).contains(&p.sport), "NAT port {}", p.sport);
        assert_eq!(p.dport, 53);
        assert_eq!(p.ttl, 63, "routed: TTL down by one");
        assert_eq!(p.dst_mac, WORLD_MAC);
        assert_eq!(p.src_mac, up0_mac());
        assert_eq!(
            fx.dp.conntrack().unwrap().len(),
            2,
            "one entry per direction"
        );
        assert_eq!(fx.dp.stats(1).unwrap().translated, 1);

        // The answer, on the uplink, back into the container.
        let reply = udp_to(WORLD_MAC, up0_mac(), (WORLD, 53), (UPLINK, p.sport), false);
        let (v, back) = run_prog(&fx.dp, PROG_FROM_UPLINK, &reply);
        assert_eq!(v, REDIRECT);
        let b = parse_checked(&back);
        assert_eq!((b.saddr, b.sport), (ip(WORLD), 53));
        assert_eq!((b.daddr, b.dport), (ip("172.17.0.2"), 4000));
        assert_eq!(b.dst_mac, fx.a.mac);
        assert_eq!(b.src_mac, GW_MAC);
        assert_eq!(b.ttl, 63);
        assert_eq!(fx.dp.stats(1).unwrap().translated, 2);
        // A second packet of the flow takes the same port.
        let (_, again) = run(&fx.dp, &frame);
        assert_eq!(parse_checked(&again).sport, p.sport);
    });
}

#[test]
fn a_zero_udp_checksum_stays_zero() {
    in_fresh_netns(|| {
        let fx = nat_fixture(50000, 50009);
        let frame = udp_to(fx.a.mac, GW_MAC, ("172.17.0.2", 4000), (WORLD, 53), true);
        let (v, out) = run(&fx.dp, &frame);
        assert_eq!(v, REDIRECT);
        let p = parse_checked(&out);
        assert_eq!(&p.l4[6..8], &[0, 0]);
        let reply = udp_to(WORLD_MAC, up0_mac(), (WORLD, 53), (UPLINK, p.sport), true);
        let (_, back) = run_prog(&fx.dp, PROG_FROM_UPLINK, &reply);
        assert_eq!(&parse_checked(&back).l4[6..8], &[0, 0]);
    });
}

#[test]
fn outbound_tcp_keeps_its_checksum_and_state() {
    in_fresh_netns(|| {
        let fx = nat_fixture(50000, 50009);
        let syn = tcp(fx.a.mac, GW_MAC, ("172.17.0.2", 40000), (WORLD, 80), 0x02);
        let (v, out) = run(&fx.dp, &syn);
        assert_eq!(v, REDIRECT);
        let p = parse_checked(&out);
        assert_eq!(p.saddr, ip(UPLINK));
        let synack = tcp(WORLD_MAC, up0_mac(), (WORLD, 80), (UPLINK, p.sport), 0x12);
        let (v, back) = run_prog(&fx.dp, PROG_FROM_UPLINK, &synack);
        assert_eq!(v, REDIRECT);
        let b = parse_checked(&back);
        assert_eq!((b.daddr, b.dport), (ip("172.17.0.2"), 40000));
        let ct = fx.dp.conntrack().unwrap();
        let fwd = ct
            .iter()
            .find(|(k, _)| k.saddr_be == ipv4_be(ip("172.17.0.2")))
            .unwrap();
        let rev = ct
            .iter()
            .find(|(k, _)| k.saddr_be == ipv4_be(ip(WORLD)))
            .unwrap();
        assert_eq!(fwd.1.tcp_seen, 0x02);
        assert_eq!(rev.1.tcp_seen, 0x12);
    });
}

#[test]
fn ping_is_translated_by_its_identifier() {
    in_fresh_netns(|| {
        let fx = nat_fixture(50000, 50009);
        let req = icmp_echo(fx.a.mac, GW_MAC, "172.17.0.2", WORLD, 8, 0x1234);
        let (v, out) = run(&fx.dp, &req);
        assert_eq!(v, REDIRECT);
        let p = parse_checked(&out);
        assert_eq!(p.saddr, ip(UPLINK));
        assert!((50000..=50009).contains(&p.sport), "identifier {}", p.sport);
        let rep = icmp_echo(WORLD_MAC, up0_mac(), WORLD, UPLINK, 0, p.sport);
        let (v, back) = run_prog(&fx.dp, PROG_FROM_UPLINK, &rep);
        assert_eq!(v, REDIRECT);
        let b = parse_checked(&back);
        assert_eq!(b.daddr, ip("172.17.0.2"));
        assert_eq!(b.dport, 0x1234);
    });
}

/// The host's own packet on the uplink's egress (no ingress interface).
fn host_out(dp: &Datapath, frame: &[u8]) -> (u32, Vec<u8>) {
    run_ctx(dp, PROG_TO_UPLINK, frame, &skb_ctx(0, 0))
}

/// An ICMP error of `typ`/`code` from `s` to `d` quoting `frame`'s IPv4
/// packet whole.
fn icmp_error_quoting(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    s: &str,
    d: &str,
    typ: u8,
    code: u8,
    frame: &[u8],
) -> Vec<u8> {
    let mut m = vec![typ, code, 0, 0, 0, 0, 0, 0];
    m.extend_from_slice(&frame[14..]);
    let c = csum::checksum(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    ip_frame(src_mac, dst_mac, ip(s), ip(d), 1, &m)
}

/// A container's ICMP errors must quote a packet that was sent to it (its
/// source the error's destination, its destination the container): one
/// about B's datagram to A reaches B, and the host's to A reaches the host;
/// errors about B's other flows, the host's flows with B, or a packet a
/// third sent to A told to B are dropped and counted, whatever the type.
#[test]
fn a_container_sends_icmp_errors_only_about_packets_it_was_sent() {
    in_fresh_netns(|| {
        let fx = fixture(0);
        let (a, b, gw, c) = ("172.17.0.2", "172.17.0.3", "172.17.0.1", "10.9.0.2");
        let about = |s: &str, d: &str| udp(fx.b.mac, fx.a.mac, ip(s), ip(d), 0);
        let forged_before = drops(&fx.dp, 1, DropReason::IcmpErrorForged);
        let mut sent = 0;
        for typ in [3u8, 11, 12] {
            let own = icmp_error_quoting(fx.a.mac, fx.b.mac, a, b, typ, 0, &about(b, a));
            assert_eq!(
                run(&fx.dp, &own).0,
                REDIRECT,
                "type {typ} about B's packet to A"
            );
            let host = icmp_error_quoting(fx.a.mac, GW_MAC, a, gw, typ, 0, &about(gw, a));
            assert_eq!(
                run(&fx.dp, &host).0,
                OK,
                "type {typ} about the host's packet to A"
            );
            for (to, quoted) in [
                (b, about(b, gw)),  // B's flow to the host
                (b, about(gw, b)),  // the host's flow to B
                (b, about(c, a)),   // a packet C sent to A, told to B
                (gw, about(b, gw)), // B's flow to the host, told to the host
            ] {
                let dst_mac = if to == gw { GW_MAC } else { fx.b.mac };
                let e = icmp_error_quoting(fx.a.mac, dst_mac, a, to, typ, 0, &quoted);
                assert_eq!(run(&fx.dp, &e).0, SHOT, "type {typ} to {to}");
                sent += 1;
            }
        }
        assert_eq!(
            drops(&fx.dp, 1, DropReason::IcmpErrorForged) - forged_before,
            sent
        );
        // Echo is no error: untouched by the check.
        let echo = icmp_echo(fx.a.mac, fx.b.mac, a, b, 8, 7);
        assert_eq!(run(&fx.dp, &echo).0, REDIRECT);
    });
}

/// Ping sockets pick identifiers without regard to the NAT range (issue 10
/// item 6): a host echo on a container's NAT identifier leaves on another,
/// and each answer reaches its own.
#[test]
fn the_hosts_own_echo_ids_never_meet_a_containers() {
    in_fresh_netns(|| {
        let fx = nat_fixture(50000, 50009);
        let req = icmp_echo(fx.a.mac, GW_MAC, "172.17.0.2", WORLD, 8, 0x1234);
        let (v, out) = run(&fx.dp, &req);
        assert_eq!(v, REDIRECT);
        let p = parse_checked(&out).sport;
        // What dnet forwards came in on an interface: untouched.
        let (v, same) = run_ctx(&fx.dp, PROG_TO_UPLINK, &out, &skb_ctx(TEST_IFINDEX, 0));
        assert_eq!((v, &same), (OK, &out));
        assert_eq!(fx.dp.conntrack().unwrap().len(), 2);
        // The host pings the same peer with identifier p.
        let host_req = icmp_echo(up0_mac(), WORLD_MAC, UPLINK, WORLD, 8, p);
        let (v, hout) = host_out(&fx.dp, &host_req);
        assert_eq!(v, OK);
        let h = parse_checked(&hout);
        assert_eq!(h.saddr, ip(UPLINK));
        assert_ne!(h.sport, p, "the container's identifier");
        assert!((50000..=50009).contains(&h.sport), "{}", h.sport);
        let (_, again) = host_out(&fx.dp, &host_req);
        assert_eq!(parse_checked(&again).sport, h.sport, "one flow");
        // The host's answer goes up its stack with its own identifier.
        let rep = icmp_echo(WORLD_MAC, up0_mac(), WORLD, UPLINK, 0, h.sport);
        let (v, back) = run_prog(&fx.dp, PROG_FROM_UPLINK, &rep);
        assert_eq!(v, OK);
        let b = parse_checked(&back);
        assert_eq!((b.daddr, b.dport), (ip(UPLINK), p));
        // The container's goes into A.
        let rep = icmp_echo(WORLD_MAC, up0_mac(), WORLD, UPLINK, 0, p);
        let (v, back) = run_prog(&fx.dp, PROG_FROM_UPLINK, &rep);
        assert_eq!(v, REDIRECT);
        let b = parse_checked(&back);
        assert_eq!((b.daddr, b.dport), (ip("172.17.0.2"), 0x1234));
        // An error about the host's echo is the host's, its quote undone.
        let e = icmp_error_quoting(WORLD_MAC, up0_mac(), WORLD, UPLINK, 3, 1, &hout);
        let (v, back) = run_prog(&fx.dp, PROG_FROM_UPLINK, &e);
        assert_eq!(v, OK);
        let inner = &parse_checked(&back).l4[8..];
        assert_eq!(u16::from_be_bytes([inner[24], inner[25]]), p);
        assert_eq!(csum::checksum(&inner[20..]), 0, "inner ICMP checksum");
        // Echo replies the host sends (to the world's pings) are not its
        // flows.
        let (v, _) = host_out(
            &fx.dp,
            &icmp_echo(up0_mac(), WORLD_MAC, UPLINK, WORLD, 0, 7),
        );
        assert_eq!(v, OK);
        assert_eq!(fx.dp.conntrack().unwrap().len(), 4);
    });
}

/// The other order: identifiers the host's echoes use are held (kept as
/// they are while free), so a container's echo never gets one.
#[test]
fn a_containers_echo_never_takes_an_identifier_the_host_uses() {
    in_fresh_netns(|| {
        let fx = nat_fixture(50000, 50001);
        for id in [50000, 50001] {
            let (v, out) = host_out(
                &fx.dp,
                &icmp_echo(up0_mac(), WORLD_MAC, UPLINK, WORLD, 8, id),
            );
            assert_eq!(v, OK);
            assert_eq!(parse_checked(&out).sport, id, "kept");
        }
        let req = icmp_echo(fx.a.mac, GW_MAC, "172.17.0.2", WORLD, 8, 0x1234);
        assert_eq!(run(&fx.dp, &req).0, SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::NatPortsExhausted), 1);
    });
}

/// A hairpin client's ICMP error about the server's answer reaches the
/// server, translated back as the server sent it (issue 10 item 14).
#[test]
fn an_icmp_error_from_a_hairpin_client_reaches_the_server() {
    in_fresh_netns(|| {
        let mut fx = nat_fixture(50000, 50009);
        // UDP 5353 of every address published to B (172.17.0.3) port 53.
        let key = ServiceKey {
            addr_be: 0,
            port_be: 5353u16.to_be(),
            proto: 17,
            _pad: 0,
        };
        let svc = Service {
            backend_be: ipv4_be(ip("172.17.0.3")),
            backend_port_be: 53u16.to_be(),
            _pad: 0,
        };
        fx.dp.set_service(&key, &svc).unwrap();
        let q = udp_to(
            fx.a.mac,
            GW_MAC,
            ("172.17.0.2", 40000),
            (UPLINK, 5353),
            false,
        );
        let (v, out) = run(&fx.dp, &q);
        assert_eq!(v, REDIRECT);
        let n = parse_checked(&out).sport;
        // B's answer as A got it (B's side runs on B's veth), and A's port
        // unreachable about it, to the published address.
        let answer = udp_to(
            GW_MAC,
            fx.a.mac,
            (UPLINK, 5353),
            ("172.17.0.2", 40000),
            false,
        );
        let e = icmp_error_quoting(fx.a.mac, GW_MAC, "172.17.0.2", UPLINK, 3, 3, &answer);
        let (v, back) = run(&fx.dp, &e);
        assert_eq!(v, REDIRECT, "into B");
        let b = parse_checked(&back);
        assert_eq!((b.saddr, b.daddr), (ip("172.17.0.1"), ip("172.17.0.3")));
        let inner = &b.l4[8..];
        assert_eq!(csum::checksum(&inner[..20]), 0, "inner IPv4 checksum");
        assert_eq!(&inner[12..16], &[172, 17, 0, 3], "inner source: B");
        assert_eq!(
            &inner[16..20],
            &[172, 17, 0, 1],
            "inner destination: B's gateway"
        );
        let ports = (
            u16::from_be_bytes([inner[20], inner[21]]),
            u16::from_be_bytes([inner[22], inner[23]]),
        );
        assert_eq!(ports, (53, n));
        assert_eq!(
            l4_checksum(ip("172.17.0.3"), ip("172.17.0.1"), 17, &inner[20..]),
            0,
            "inner UDP checksum"
        );
        assert_eq!(fx.dp.stats(fx.b.slot).unwrap().tx_packets, 2);
    });
}

#[test]
fn an_icmp_error_about_a_translated_flow_is_translated_back_inner_header_included() {
    in_fresh_netns(|| {
        let fx = nat_fixture(50000, 50009);
        let frame = udp_to(fx.a.mac, GW_MAC, ("172.17.0.2", 4000), (WORLD, 53), false);
        let (_, out) = run(&fx.dp, &frame);
        let p = parse_checked(&out);
        // Port unreachable, quoting the translated datagram (IP header and
        // the whole UDP message), from the world.
        let quoted = &out[14..];
        let mut m = vec![3, 3, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(quoted);
        let c = csum::checksum(&m);
        m[2..4].copy_from_slice(&c.to_be_bytes());
        let err = ip_frame(WORLD_MAC, up0_mac(), ip(WORLD), ip(UPLINK), 1, &m);
        let (v, back) = run_prog(&fx.dp, PROG_FROM_UPLINK, &err);
        assert_eq!(v, REDIRECT, "into the container");
        let b = parse_checked(&back); // outer IPv4 and ICMP checksums
        assert_eq!(b.daddr, ip("172.17.0.2"));
        let inner = &b.l4[8..];
        assert_eq!(csum::checksum(&inner[..20]), 0, "inner IPv4 checksum");
        assert_eq!(
            &inner[12..16],
            &[172, 17, 0, 2],
            "inner source is the container again"
        );
        assert_eq!(
            u16::from_be_bytes([inner[20], inner[21]]),
            4000,
            "inner source port"
        );
        let iudp = &inner[20..];
        assert_eq!(
            l4_checksum(ip("172.17.0.2"), ip(WORLD), 17, iudp),
            0,
            "inner UDP checksum"
        );
        assert_eq!(u16::from_be_bytes([inner[22], inner[23]]), 53);
        assert_ne!(p.sport, 4000, "the quoted port was the NAT port");
    });
}

#[test]
fn a_published_port_reaches_its_container_and_the_answer_leaves_as_the_port() {
    in_fresh_netns(|| {
        let mut fx = nat_fixture(50000, 50009);
        publish_8080_to_a(&mut fx.dp);
        let syn = tcp(WORLD_MAC, up0_mac(), (WORLD, 33333), (UPLINK, 8080), 0x02);
        let (v, inn) = run_prog(&fx.dp, PROG_FROM_UPLINK, &syn);
        assert_eq!(v, REDIRECT);
        let p = parse_checked(&inn);
        assert_eq!(
            (p.saddr, p.sport),
            (ip(WORLD), 33333),
            "the container sees the client"
        );
        assert_eq!((p.daddr, p.dport), (ip("172.17.0.2"), 80));
        assert_eq!(p.dst_mac, fx.a.mac);
        // The container answers; it leaves as the published port.
        let synack = tcp(fx.a.mac, GW_MAC, ("172.17.0.2", 80), (WORLD, 33333), 0x12);
        let (v, out) = run(&fx.dp, &synack);
        assert_eq!(v, REDIRECT);
        let o = parse_checked(&out);
        assert_eq!((o.saddr, o.sport), (ip(UPLINK), 8080));
        assert_eq!((o.daddr, o.dport), (ip(WORLD), 33333));
        // Another port is not published: the host's.
        let other = tcp(WORLD_MAC, up0_mac(), (WORLD, 33333), (UPLINK, 9090), 0x02);
        assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &other).0, OK);
    });
}

/// `dnet daemon --publish-from`: a new flow to a published port from a
/// source not listed is dropped (counted on the port's container) and
/// takes no entry; a listed one goes in; the flows of listed sources go on
/// when the list changes.
#[test]
fn only_listed_sources_reach_published_ports() {
    in_fresh_netns(|| {
        let mut fx = nat_fixture(50000, 50009);
        publish_8080_to_a(&mut fx.dp);
        fx.dp
            .set_publish_from(&["10.0.0.0/8".parse().unwrap()])
            .unwrap();
        let syn = tcp(WORLD_MAC, up0_mac(), (WORLD, 33333), (UPLINK, 8080), 0x02);
        assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &syn).0, SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::SourceNotAllowed), 1);
        assert!(fx.dp.conntrack().unwrap().is_empty());
        fx.dp
            .set_publish_from(&[
                "10.0.0.0/8".parse().unwrap(),
                "198.18.0.1/32".parse().unwrap(),
            ])
            .unwrap();
        assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &syn).0, REDIRECT);
        // Another source of the world is still refused.
        let other = tcp(
            WORLD_MAC,
            up0_mac(),
            ("198.18.0.9", 33333),
            (UPLINK, 8080),
            0x02,
        );
        assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &other).0, SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::SourceNotAllowed), 2);
        assert_eq!(fx.dp.conntrack().unwrap().len(), 2, "one flow");
    });
}

#[test]
fn hairpin_reaches_a_published_port_from_a_container() {
    in_fresh_netns(|| {
        let mut fx = nat_fixture(50000, 50009);
        publish_8080_to_a(&mut fx.dp);
        // A to its own published port.
        let syn = tcp(
            fx.a.mac,
            GW_MAC,
            ("172.17.0.2", 40000),
            (UPLINK, 8080),
            0x02,
        );
        let (v, out) = run(&fx.dp, &syn);
        assert_eq!(v, REDIRECT);
        let p = parse_checked(&out);
        assert_eq!(p.saddr, ip("172.17.0.1"), "from the backend's gateway");
        assert_eq!((p.daddr, p.dport), (ip("172.17.0.2"), 80));
        // The answer to the gateway goes back as the published port.
        let synack = tcp(
            fx.a.mac,
            GW_MAC,
            ("172.17.0.2", 80),
            ("172.17.0.1", p.sport),
            0x12,
        );
        let (v, back) = run(&fx.dp, &synack);
        assert_eq!(v, REDIRECT);
        let b = parse_checked(&back);
        assert_eq!((b.saddr, b.sport), (ip(UPLINK), 8080));
        assert_eq!((b.daddr, b.dport), (ip("172.17.0.2"), 40000));
    });
}

#[test]
fn when_nat_ports_run_out_a_new_flow_fails_and_old_ones_go_on() {
    in_fresh_netns(|| {
        let fx = nat_fixture(50000, 50001);
        let flow = |sport| udp_to(fx.a.mac, GW_MAC, ("172.17.0.2", sport), (WORLD, 53), false);
        assert_eq!(run(&fx.dp, &flow(1001)).0, REDIRECT);
        assert_eq!(run(&fx.dp, &flow(1002)).0, REDIRECT);
        assert_eq!(run(&fx.dp, &flow(1003)).0, SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::NatPortsExhausted), 1);
        assert_eq!(
            run(&fx.dp, &flow(1001)).0,
            REDIRECT,
            "established flows continue"
        );
        // Another destination reuses the ports (the reply tuple differs).
        let other = udp_to(fx.a.mac, GW_MAC, ("172.17.0.2", 1003), (WORLD, 54), false);
        assert_eq!(run(&fx.dp, &other).0, REDIRECT);
    });
}

#[test]
fn a_closed_tcp_flows_port_serves_the_next_flow_after_its_last_ack() {
    in_fresh_netns(|| {
        let fx = nat_fixture(50000, 50001);
        let syn = |sport| tcp(fx.a.mac, GW_MAC, ("172.17.0.2", sport), (WORLD, 80), 0x02);
        let (_, o1) = run(&fx.dp, &syn(1001));
        let p1 = parse_checked(&o1).sport;
        assert_eq!(run(&fx.dp, &syn(1002)).0, REDIRECT);
        assert_eq!(run(&fx.dp, &syn(1003)).0, SHOT, "both ports taken");
        // Flow 1001 closes: a FIN each way, then the last ACK.
        let fin_out = tcp(fx.a.mac, GW_MAC, ("172.17.0.2", 1001), (WORLD, 80), 0x11);
        assert_eq!(run(&fx.dp, &fin_out).0, REDIRECT);
        assert_eq!(
            run(&fx.dp, &syn(1003)).0,
            SHOT,
            "half closed: the port is still in use"
        );
        let fin_in = tcp(WORLD_MAC, up0_mac(), (WORLD, 80), (UPLINK, p1), 0x11);
        assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &fin_in).0, REDIRECT);
        assert_eq!(
            run(&fx.dp, &syn(1003)).0,
            SHOT,
            "a FIN each way, but the server waits for the last ACK on that tuple"
        );
        let last_ack = tcp(fx.a.mac, GW_MAC, ("172.17.0.2", 1001), (WORLD, 80), 0x10);
        let (v, o) = run(&fx.dp, &last_ack);
        assert_eq!(v, REDIRECT, "the last ACK still finds its flow");
        assert_eq!(parse_checked(&o).sport, p1);
        // The port waits REUSE_GRACE_NS (50 ms) after the last ACK, for
        // that ACK to reach the server before a new SYN does (no port is
        // free, so the probes that take a just-closed port come to it).
        std::thread::sleep(std::time::Duration::from_millis(60));
        let (v, o3) = run(&fx.dp, &syn(1003));
        assert_eq!(v, REDIRECT, "the closed flow's port is reused");
        assert_eq!(parse_checked(&o3).sport, p1);
        // The old flow's entries are gone, the new flow's in place.
        let ct = fx.dp.conntrack().unwrap();
        assert_eq!(ct.len(), 4);
        assert!(!ct.iter().any(|(k, _)| u16::from_be(k.sport_be) == 1001));
    });
}

#[test]
fn a_just_closed_flows_port_is_left_to_its_peer_while_another_is_free() {
    in_fresh_netns(|| {
        let fx = nat_fixture(50000, 50001);
        let a = "172.17.0.2";
        let syn = |sport| tcp(fx.a.mac, GW_MAC, (a, sport), (WORLD, 80), 0x02);
        let (_, o) = run(&fx.dp, &syn(1001));
        let p1 = parse_checked(&o).sport;
        // Flow 1001 closes whole (a FIN each way, the last ACK), and its
        // short grace goes by.
        let fin_out = tcp(fx.a.mac, GW_MAC, (a, 1001), (WORLD, 80), 0x11);
        let fin_in = tcp(WORLD_MAC, up0_mac(), (WORLD, 80), (UPLINK, p1), 0x11);
        let last_ack = tcp(fx.a.mac, GW_MAC, (a, 1001), (WORLD, 80), 0x10);
        assert_eq!(run(&fx.dp, &fin_out).0, REDIRECT);
        assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &fin_in).0, REDIRECT);
        assert_eq!(run(&fx.dp, &last_ack).0, REDIRECT);
        std::thread::sleep(std::time::Duration::from_millis(60));
        // A new flow whose first probe is that port takes the free one: the
        // server may not have the last ACK yet.
        let first_probe = |sport: u16| {
            let k = dnet_common::CtKey {
                saddr_be: ipv4_be(ip(a)),
                daddr_be: ipv4_be(ip(WORLD)),
                sport_be: sport.to_be(),
                dport_be: 80u16.to_be(),
                proto: 6,
                _pad: [0; 3],
            };
            dnet_common::nat::nat_port_candidate(dnet_common::nat::tuple_hash(&k), 0, 50000, 2)
        };
        let sport = (1002..2000).find(|s| first_probe(*s) == p1).unwrap();
        let (v, o) = run(&fx.dp, &syn(sport));
        assert_eq!(v, REDIRECT);
        let p2 = parse_checked(&o).sport;
        assert_ne!(
            p2, p1,
            "the port closed 60 ms ago was taken while {p2} was free"
        );
        // No port is free now: the next flow's later probe takes the
        // closed one after the short grace.
        let (v, o) = run(&fx.dp, &syn(sport + 1));
        assert_eq!(
            v, REDIRECT,
            "the closed flow's port serves when none is free"
        );
        assert_eq!(parse_checked(&o).sport, p1);
    });
}

#[test]
fn the_conntrack_table_is_read_whole_in_batches() {
    in_fresh_netns(|| {
        let mut dp = Datapath::load(None).unwrap();
        let n = 10_000u32;
        for i in 0..n {
            let k = dnet_common::CtKey {
                saddr_be: i,
                daddr_be: 7,
                sport_be: 1,
                dport_be: 2,
                proto: 6,
                _pad: [0; 3],
            };
            let e = dnet_common::CtEntry {
                endpoint_be: i,
                ..Default::default()
            };
            dp.ct_insert(&k, &e).unwrap();
        }
        let all = dp.conntrack().unwrap();
        assert_eq!(
            all.len(),
            n as usize,
            "more than one batch of 4,096, every entry once"
        );
        let mut seen: Vec<u32> = all
            .iter()
            .map(|(k, e)| {
                assert_eq!(k.saddr_be, e.endpoint_be);
                k.saddr_be
            })
            .collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), n as usize);
    });
}

#[test]
fn a_container_cannot_speak_into_another_containers_flow_with_an_icmp_error() {
    in_fresh_netns(|| {
        let mut fx = nat_fixture(50000, 50009);
        // B's outbound UDP flow 172.17.0.3:4000 -> world:53, as 198.18.0.2:50005.
        let rkey = dnet_common::CtKey {
            saddr_be: ipv4_be(ip(WORLD)),
            daddr_be: ipv4_be(ip(UPLINK)),
            sport_be: 53u16.to_be(),
            dport_be: 50005u16.to_be(),
            proto: 17,
            _pad: [0; 3],
        };
        let rev = dnet_common::CtEntry {
            new_daddr_be: ipv4_be(ip("172.17.0.3")),
            new_dport_be: 4000u16.to_be(),
            flags: dnet_common::nat::CT_F_DNAT
                | dnet_common::nat::CT_F_TO_ENDPOINT
                | dnet_common::nat::CT_F_REPLY,
            endpoint_be: ipv4_be(ip("172.17.0.3")),
            ..Default::default()
        };
        fx.dp.ct_insert(&rkey, &rev).unwrap();
        // A forges a port unreachable quoting B's translated datagram.
        let quoted = udp_to(WORLD_MAC, up0_mac(), (UPLINK, 50005), (WORLD, 53), false);
        let mut m = vec![3, 3, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&quoted[14..]);
        let c = csum::checksum(&m);
        m[2..4].copy_from_slice(&c.to_be_bytes());
        let forged = ip_frame(fx.a.mac, GW_MAC, ip("172.17.0.2"), ip(WORLD), 1, &m);
        assert_eq!(run(&fx.dp, &forged).0, SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::IcmpErrorForged), 1);
        assert_eq!(
            fx.dp.stats(fx.b.slot).unwrap().tx_packets,
            0,
            "nothing reached B"
        );
    });
}

#[test]
fn only_a_syn_opens_a_tcp_flow() {
    in_fresh_netns(|| {
        let mut fx = nat_fixture(50000, 50009);
        let ack = tcp(fx.a.mac, GW_MAC, ("172.17.0.2", 40000), (WORLD, 80), 0x10);
        assert_eq!(run(&fx.dp, &ack).0, SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::CtNoFlow), 1);
        assert!(fx.dp.conntrack().unwrap().is_empty(), "no port taken");
        // From the world, a stray ACK to a published port is the host's.
        publish_8080_to_a(&mut fx.dp);
        let stray = tcp(WORLD_MAC, up0_mac(), (WORLD, 33333), (UPLINK, 8080), 0x10);
        assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &stray).0, OK);
        assert!(fx.dp.conntrack().unwrap().is_empty());
        // A packet whose TTL runs out at dnet's hop takes no port (it is
        // answered with "time exceeded").
        let syn = with_ttl(
            tcp(fx.a.mac, GW_MAC, ("172.17.0.2", 40001), (WORLD, 80), 0x02),
            1,
        );
        assert_eq!(run(&fx.dp, &syn).0, REDIRECT);
        assert_eq!(drops(&fx.dp, 1, DropReason::TtlExceeded), 1);
        assert!(fx.dp.conntrack().unwrap().is_empty());
    });
}

#[test]
fn a_new_connection_on_a_reset_tuple_starts_both_directions_over() {
    in_fresh_netns(|| {
        let fx = nat_fixture(50000, 50009);
        let syn = tcp(fx.a.mac, GW_MAC, ("172.17.0.2", 40000), (WORLD, 80), 0x02);
        let (_, out) = run(&fx.dp, &syn);
        let p = parse_checked(&out).sport;
        let rst = tcp(WORLD_MAC, up0_mac(), (WORLD, 80), (UPLINK, p), 0x14);
        assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &rst).0, REDIRECT);
        // The container connects again from the same port.
        let (v, again) = run(&fx.dp, &syn);
        assert_eq!(v, REDIRECT);
        assert_eq!(parse_checked(&again).sport, p, "the same flow, reopened");
        let ct = fx.dp.conntrack().unwrap();
        let rev = ct
            .iter()
            .find(|(k, _)| k.saddr_be == ipv4_be(ip(WORLD)))
            .unwrap();
        assert_eq!(
            rev.1.tcp_seen, 0,
            "the old RST no longer marks the flow closed"
        );
        let fwd = ct
            .iter()
            .find(|(k, _)| k.saddr_be == ipv4_be(ip("172.17.0.2")))
            .unwrap();
        assert_eq!(fwd.1.tcp_seen, 0x02);
    });
}

/// `bpf(2)` with `attr`; what it returns, or a failed test.
///
/// # Safety
/// `attr` must be a `bpf_attr` prefix laid out as the kernel expects for
/// `cmd`, and every pointer in it must be valid for what `cmd` does with it
/// for the length of the call.
unsafe fn bpf_raw<T>(cmd: libc::c_long, attr: &mut T) -> i64 {
    // SAFETY: the caller's contract; `attr` lives across the call and its
    // size is the one passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T,
            size_of::<T>() as libc::c_uint,
        )
    };
    assert!(r >= 0, "bpf({cmd}): {}", std::io::Error::last_os_error());
    r
}

/// `bpf(2)` for a command that returns a new file descriptor.
///
/// # Safety
/// As [`bpf_raw`].
unsafe fn bpf_fd<T>(cmd: libc::c_long, attr: &mut T) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd as _;
    // SAFETY: the caller's contract.
    let fd = unsafe { bpf_raw(cmd, attr) };
    // SAFETY: the kernel just returned this descriptor to us alone.
    unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) }
}

/// A program of another build: the same name as this build's
/// `PROG_FROM_CONTAINER`, one that drops everything.
fn other_build_prog() -> std::os::fd::OwnedFd {
    #[repr(C)]
    struct ProgLoad {
        prog_type: u32,
        insn_cnt: u32,
        insns: u64,
        license: u64,
        log_level: u32,
        log_size: u32,
        log_buf: u64,
        kern_version: u32,
        prog_flags: u32,
        prog_name: [u8; 16],
    }
    // r0 = TC_ACT_SHOT; exit
    let insns: [u64; 2] = [0xb7 | (2u64 << 32), 0x95];
    let license = c"GPL";
    let mut name = [0u8; 16];
    name[..15].copy_from_slice(&PROG_FROM_CONTAINER.as_bytes()[..15]);
    // The attr is the kernel's layout for the command (x86_64 and arm64),
    // with every field set.
    // SAFETY: `insns` and `license` outlive the call.
    unsafe {
        bpf_fd(
            5, // BPF_PROG_LOAD
            &mut ProgLoad {
                prog_type: 3, // BPF_PROG_TYPE_SCHED_CLS
                insn_cnt: 2,
                insns: insns.as_ptr() as u64,
                license: license.as_ptr() as u64,
                log_level: 0,
                log_size: 0,
                log_buf: 0,
                kern_version: 0,
                prog_flags: 0,
                prog_name: name,
            },
        )
    }
}

/// What a daemon of an older build (one that attached with tcx) leaves on
/// a veth: another build's program attached with tcx at ingress and its
/// link pinned where that build pinned its own.
fn attach_other_build(ifname: &str, pin: &Path) {
    use std::os::fd::AsRawFd as _;
    #[repr(C)]
    struct LinkCreate {
        prog_fd: u32,
        target_ifindex: u32,
        attach_type: u32,
        flags: u32,
        relative_fd: u32,
        _pad: u32,
        expected_revision: u64,
    }
    #[repr(C)]
    struct ObjPin {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    let prog = other_build_prog();
    // Each attr below is the kernel's layout for its command (x86_64 and
    // arm64), with every field set.
    // SAFETY: no pointers; `prog` is a live program descriptor.
    let link = unsafe {
        bpf_fd(
            28, // BPF_LINK_CREATE
            &mut LinkCreate {
                prog_fd: prog.as_raw_fd() as u32,
                target_ifindex: nix::net::if_::if_nametoindex(ifname).unwrap(),
                attach_type: 46, // BPF_TCX_INGRESS
                flags: 0,
                relative_fd: 0,
                _pad: 0,
                expected_revision: 0,
            },
        )
    };
    let _ = fs::remove_file(pin);
    let path = std::ffi::CString::new(pin.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: `path` outlives the call; `link` is a live link descriptor.
    unsafe {
        bpf_raw(
            6, // BPF_OBJ_PIN
            &mut ObjPin {
                pathname: path.as_ptr() as u64,
                bpf_fd: link.as_raw_fd() as u32,
                file_flags: 0,
            },
        )
    };
}

/// What a daemon of another build leaves on a veth with filters: its
/// program at ingress under dnet's priority and handle (`tc filter
/// replace`), direct action, under this build's program name.
fn filter_other_build(ifname: &str) {
    use std::os::fd::AsRawFd as _;

    use netlink_packet_route::{
        RouteNetlinkMessage,
        tc::{TcAttribute, TcBpfFlags, TcFilterBpfOption, TcMessage, TcOption},
    };
    use rtnetlink::{
        packet_core::{
            NLM_F_ACK, NLM_F_CREATE, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
        },
        sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE},
    };
    let prog = other_build_prog();
    let mut m = TcMessage::with_index(nix::net::if_::if_nametoindex(ifname).unwrap() as i32);
    m.header.parent = crate::netlink::CLSACT_INGRESS.into();
    m.header.handle = u32::from(EP_FILTER_HANDLE).into();
    m.header.info =
        (u32::from(EP_FILTER_PRIORITY) << 16) | u32::from((libc::ETH_P_ALL as u16).to_be());
    m.attributes.push(TcAttribute::Kind("bpf".into()));
    m.attributes.push(TcAttribute::Options(vec![
        TcOption::Bpf(TcFilterBpfOption::ProgFd(prog.as_raw_fd() as u32)),
        TcOption::Bpf(TcFilterBpfOption::ProgName(PROG_FROM_CONTAINER.into())),
        TcOption::Bpf(TcFilterBpfOption::Flags(TcBpfFlags::DirectAction)),
    ]));
    let mut req = NetlinkMessage::new(
        NetlinkHeader::default(),
        NetlinkPayload::from(RouteNetlinkMessage::NewTrafficFilter(m)),
    );
    // CREATE without EXCL: replaces the filter there.
    req.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE;
    req.finalize();
    let mut buf = vec![0; req.buffer_len()];
    req.serialize(&mut buf);
    let mut sock = Socket::new(NETLINK_ROUTE).unwrap();
    sock.bind_auto().unwrap();
    sock.connect(&SocketAddr::new(0, 0)).unwrap();
    sock.send(&buf, 0).unwrap();
    let (data, _) = sock.recv_from_full().unwrap();
    let ack = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data).unwrap();
    match ack.payload {
        NetlinkPayload::Error(e) => assert!(e.code.is_none(), "tc filter replace: {e:?}"),
        p => panic!("tc filter replace answered {p:?}"),
    }
}

#[test]
fn programs_of_another_build_are_swapped_in_place() {
    struct Pins(PathBuf);
    impl Drop for Pins {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
    // The folder is named after this process; `cargo xtask test`'s leak
    // check blames what is left of it on this run once the pid is recorded
    // in its run folder (as `dnet_sandbox::leaks::record_pid` does).
    if let Some(run) = std::env::var_os("DNET_TEST_RUN_DIR") {
        let pids = Path::new(&run).join("pids");
        fs::create_dir_all(&pids)
            .and_then(|()| fs::write(pids.join(std::process::id().to_string()), ""))
            .expect("record the pid in the run folder");
    }
    let pins = Pins(PathBuf::from(format!(
        "/sys/fs/bpf/dnet-test-{}-swap",
        std::process::id()
    )));
    let dir = pins.0.clone();
    in_fresh_netns(move || {
        let ip = |args: &[&str]| {
            let o = std::process::Command::new("ip")
                .args(args)
                .output()
                .unwrap();
            assert!(o.status.success(), "ip {args:?}: {o:?}");
        };
        ip(&["link", "add", "v0", "type", "veth", "peer", "name", "v1"]);
        let mut dp = Datapath::load(Some(&dir)).unwrap();
        // As the bridge driver does: before the link is up.
        dp.attach_endpoint("v0").unwrap();
        assert!(dp.endpoint_attached("v0"));
        ip(&["link", "set", "v0", "up"]);
        ip(&["link", "set", "v1", "up"]);
        let ours = dp.tag(PROG_FROM_CONTAINER).unwrap();
        let index = nix::net::if_::if_nametoindex("v0").unwrap();
        // The tags of the filters at v0's ingress.
        let filters = || {
            crate::netlink::bpf_filters(index, crate::netlink::CLSACT_INGRESS)
                .unwrap()
                .iter()
                .map(|f| f.tag.map(u64::from_be_bytes))
                .collect::<Vec<_>>()
        };
        assert_eq!(filters(), [Some(ours)]);
        // No pin: the filters need none.
        assert!(!dir.join("links/v0-ingress").exists());

        // Another build's filter in place of ours.
        filter_other_build("v0");
        assert!(
            filters().len() == 1 && filters()[0] != Some(ours),
            "{:?}",
            filters()
        );
        assert!(
            !dp.endpoint_attached("v0"),
            "a program of the same name from another build is not ours"
        );
        dp.attach_endpoint("v0").unwrap();
        assert!(dp.endpoint_attached("v0"));
        assert_eq!(filters(), [Some(ours)], "replaced in place, not added");

        // An older build's tcx link: it runs before any filter, so it goes
        // (its pin removed) once ours are in.
        let tcx = || {
            SchedClassifier::query_tcx("v0", TcAttachType::Ingress)
                .unwrap()
                .1
                .len()
        };
        attach_other_build("v0", &dir.join("links/v0-ingress"));
        assert_eq!(tcx(), 1);
        assert!(
            !dp.endpoint_attached("v0"),
            "an older build's tcx program runs first"
        );
        dp.attach_endpoint("v0").unwrap();
        assert!(dp.endpoint_attached("v0"));
        assert!(!dir.join("links/v0-ingress").exists());
        // A link whose pin goes is released from a kernel work queue.
        let settles = || {
            (0..500).any(|_| {
                std::thread::sleep(std::time::Duration::from_millis(10));
                tcx() == 0
            })
        };
        assert!(settles(), "the tcx link goes");
        assert_eq!(filters(), [Some(ours)]);

        // An older build's swap cut short between its new pin and its
        // rename: the new pin is cleared when the daemon loads again, its
        // program detached.
        attach_other_build("v0", &dir.join("links/v0-ingress-new"));
        assert_eq!(tcx(), 1);
        let again = Datapath::load(Some(&dir)).unwrap();
        assert!(!dir.join("links/v0-ingress-new").exists());
        assert!(settles(), "the cut-short swap's program goes");
        assert!(again.endpoint_attached("v0"));
    });
}

// ---- Isolation, and dnet as the router at its own hop (issue #10). ----

/// The frame with its TTL set to `ttl`, the IPv4 checksum kept right.
fn with_ttl(mut f: Vec<u8>, ttl: u8) -> Vec<u8> {
    let old = u16::from_be_bytes([f[22], f[23]]);
    f[22] = ttl;
    let c = csum::replace2(
        u16::from_be_bytes([f[24], f[25]]),
        old,
        u16::from_be_bytes([f[22], f[23]]),
    );
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f
}

/// The frame with an 802.1Q/802.1ad tag (`tpid`, VLAN 100) after the MACs.
fn tagged(f: &[u8], tpid: u16) -> Vec<u8> {
    let mut t = f[..12].to_vec();
    t.extend_from_slice(&tpid.to_be_bytes());
    t.extend_from_slice(&100u16.to_be_bytes());
    t.extend_from_slice(&f[12..]);
    t
}

/// A UDP datagram with `payload` bytes (DF set, checksums right).
fn udp_sized(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    s: (&str, u16),
    d: (&str, u16),
    payload: usize,
) -> Vec<u8> {
    let (s_ip, d_ip) = (ip(s.0), ip(d.0));
    let mut seg = Vec::new();
    seg.extend_from_slice(&s.1.to_be_bytes());
    seg.extend_from_slice(&d.1.to_be_bytes());
    seg.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
    seg.extend_from_slice(&[0, 0]);
    seg.extend((0..payload).map(|i| i as u8));
    let c = l4_checksum(s_ip, d_ip, 17, &seg);
    seg[6..8].copy_from_slice(&c.to_be_bytes());
    ip_frame(src_mac, dst_mac, s_ip, d_ip, 17, &seg)
}

/// A TCP segment (ACK) with `payload` bytes.
fn tcp_sized(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    s: (&str, u16),
    d: (&str, u16),
    payload: usize,
) -> Vec<u8> {
    let (s_ip, d_ip) = (ip(s.0), ip(d.0));
    let mut seg = Vec::new();
    seg.extend_from_slice(&s.1.to_be_bytes());
    seg.extend_from_slice(&d.1.to_be_bytes());
    seg.extend_from_slice(&2u32.to_be_bytes());
    seg.extend_from_slice(&1u32.to_be_bytes());
    seg.extend_from_slice(&[0x50, 0x10, 0xff, 0xff, 0, 0, 0, 0]);
    seg.extend((0..payload).map(|i| i as u8));
    let c = l4_checksum(s_ip, d_ip, 6, &seg);
    seg[16..18].copy_from_slice(&c.to_be_bytes());
    ip_frame(src_mac, dst_mac, s_ip, d_ip, 6, &seg)
}

/// `struct __sk_buff` as `BPF_PROG_TEST_RUN` takes it for a test's packet
/// (include/uapi/linux/bpf.h, 192 bytes; the kernel refuses any field but
/// a few, which must otherwise be zero): the interface the packet came in
/// on, and a GSO segment size. The packet is on loopback (ifindex 0).
fn skb_ctx(ingress_ifindex: u32, gso_size: u32) -> [u8; 192] {
    const INGRESS_IFINDEX: usize = 36;
    const GSO_SEGS: usize = 164;
    const GSO_SIZE: usize = 176;
    let mut c = [0u8; 192];
    c[INGRESS_IFINDEX..INGRESS_IFINDEX + 4].copy_from_slice(&ingress_ifindex.to_ne_bytes());
    if gso_size > 0 {
        c[GSO_SEGS..GSO_SEGS + 4].copy_from_slice(&2u32.to_ne_bytes());
        c[GSO_SIZE..GSO_SIZE + 4].copy_from_slice(&gso_size.to_ne_bytes());
    }
    c
}

fn run_ctx(dp: &Datapath, prog: &str, frame: &[u8], ctx: &[u8]) -> (u32, Vec<u8>) {
    let prog = dp.program(prog).unwrap();
    let mut out = vec![0u8; frame.len() + 256];
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.data_out = Some(&mut out);
    opts.ctx_in = Some(ctx);
    let r = prog.test_run(opts).expect("BPF_PROG_TEST_RUN");
    out.truncate(r.data_size_out as usize);
    (r.return_value, out)
}

/// Sets when the next ICMP error of `slot` is due, on every CPU.
fn set_icmp_due(dp: &mut Datapath, slot: u32, due_ns: u64) {
    let cpus = nr_cpus().unwrap();
    let mut a: aya::maps::PerCpuArray<&mut MapData, u64> =
        aya::maps::PerCpuArray::try_from(dp.ebpf.map_mut("DNET_ICMP_RATE").unwrap()).unwrap();
    a.set(slot, PerCpuValues::try_from(vec![due_ns; cpus]).unwrap(), 0)
        .unwrap();
}

#[test]
fn tagged_frames_from_a_container_are_dropped_with_their_reason() {
    in_fresh_netns(|| {
        let mut fx = nat_fixture(50000, 50009);
        // The container's own MAC and address, UDP to the world, with a tag
        // still in the frame: an inner one, whose outer tag the kernel moved
        // into the packet's metadata (which a test run cannot set; the
        // scenario in tests/tests/isolation.rs sends a real one).
        let plain = udp_to(fx.a.mac, GW_MAC, ("172.17.0.2", 4000), (WORLD, 53), false);
        for tpid in [0x8100, 0x88a8] {
            assert_eq!(run(&fx.dp, &tagged(&plain, tpid)).0, SHOT, "{tpid:#x}");
        }
        assert_eq!(drops(&fx.dp, 1, DropReason::VlanTagged), 2);
        assert!(fx.dp.conntrack().unwrap().is_empty(), "nothing translated");
        // From the world, a tagged frame belongs to the VLAN's network on
        // the uplink's link: the host's, even to a published port.
        publish_8080_to_a(&mut fx.dp);
        let syn = tcp(WORLD_MAC, up0_mac(), (WORLD, 33333), (UPLINK, 8080), 0x02);
        assert_eq!(
            run_prog(&fx.dp, PROG_FROM_UPLINK, &tagged(&syn, 0x8100)).0,
            OK
        );
        assert!(fx.dp.conntrack().unwrap().is_empty());
    });
}

#[test]
fn only_what_dnet_delivers_or_the_host_sends_goes_into_a_container() {
    in_fresh_netns(|| {
        let fx = fixture(0);
        let frame = udp(GW_MAC, fx.a.mac, ip("172.17.0.1"), ip("172.17.0.2"), 0);
        let into = |iif: u32| run_ctx(&fx.dp, PROG_TO_CONTAINER, &frame, &skb_ctx(iif, 0)).0;
        assert_eq!(into(0), OK, "sent by the host itself");
        assert_eq!(
            into(TEST_IFINDEX),
            OK,
            "dnet's own answers, back through A's veth"
        );
        assert_eq!(
            into(fx.b.ifindex),
            OK,
            "a broadcast copy from B, of A's network"
        );
        assert_eq!(fx.dp.stats(1).unwrap().tx_packets, 3);
        assert_eq!(
            into(fx.c.ifindex),
            SHOT,
            "from C's veth, of another network"
        );
        assert_eq!(
            into(77),
            SHOT,
            "forwarded by the host from another interface (the uplink)"
        );
        assert_eq!(drops(&fx.dp, 1, DropReason::HostForwarded), 2);
        assert_eq!(
            fx.dp.stats(1).unwrap().tx_packets,
            3,
            "not counted as delivered"
        );
    });
}

#[test]
fn nothing_translated_enters_or_leaves_an_internal_network() {
    in_fresh_netns(|| {
        let mut fx = nat_fixture(50000, 50009);
        publish_8080_to_a(&mut fx.dp);
        let syn = tcp(WORLD_MAC, up0_mac(), (WORLD, 33333), (UPLINK, 8080), 0x02);
        assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &syn).0, REDIRECT);
        assert_eq!(fx.dp.stats(1).unwrap().tx_packets, 1);
        // A's network becomes internal with the flow in the table (the
        // control plane never makes one so; the datapath refuses it all
        // the same): neither the world's next segment nor A's answer
        // passes.
        make_internal(&mut fx.dp, 1, "172.17.0.0/16");
        assert_eq!(fx.dp.conntrack().unwrap().len(), 2);
        let ack = tcp(WORLD_MAC, up0_mac(), (WORLD, 33333), (UPLINK, 8080), 0x10);
        assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &ack).0, SHOT);
        assert_eq!(drops(&fx.dp, 0, DropReason::Internal), 1);
        assert_eq!(
            fx.dp.stats(1).unwrap().tx_packets,
            1,
            "nothing more reached A"
        );
        let synack = tcp(fx.a.mac, GW_MAC, ("172.17.0.2", 80), (WORLD, 33333), 0x12);
        assert_eq!(run(&fx.dp, &synack).0, SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::Internal), 1);
    });
}

#[test]
fn dnat_into_an_internal_network_takes_no_entry() {
    in_fresh_netns(|| {
        let mut fx = nat_fixture_on(NET_F_INTERNAL, 50000, 50009);
        // A port published to A, on an internal network (the control plane
        // never makes one; the datapath refuses it all the same).
        publish_8080_to_a(&mut fx.dp);
        for port in [33333, 33334] {
            let syn = tcp(WORLD_MAC, up0_mac(), (WORLD, port), (UPLINK, 8080), 0x02);
            assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &syn).0, SHOT);
        }
        assert_eq!(drops(&fx.dp, 0, DropReason::Internal), 2);
        assert_eq!(fx.dp.stats(1).unwrap().tx_packets, 0, "nothing reached A");
        assert!(
            fx.dp.conntrack().unwrap().is_empty(),
            "no entry for a flow whose packet was dropped"
        );
    });
}

#[test]
fn hairpin_into_an_internal_network_takes_no_entry() {
    in_fresh_netns(|| {
        let mut fx = nat_fixture(50000, 50009);
        // A port that leads into an internal network (the daemon never
        // publishes one there; the datapath refuses it all the same).
        publish_8080_to(&mut fx.dp, "10.9.0.2");
        make_internal(&mut fx.dp, 2, "10.9.0.0/24");
        for sport in [40000, 40001] {
            let syn = tcp(
                fx.a.mac,
                GW_MAC,
                ("172.17.0.2", sport),
                (UPLINK, 8080),
                0x02,
            );
            assert_eq!(run(&fx.dp, &syn).0, SHOT);
        }
        assert_eq!(drops(&fx.dp, fx.a.slot, DropReason::Internal), 2);
        assert_eq!(
            fx.dp.stats(fx.c.slot).unwrap().tx_packets,
            0,
            "nothing reached C"
        );
        assert!(
            fx.dp.conntrack().unwrap().is_empty(),
            "no entry, port or charge for a flow whose packet was dropped"
        );
    });
}

#[test]
fn a_ttl_that_runs_out_at_dnets_hop_is_answered_with_time_exceeded() {
    in_fresh_netns(|| {
        let mut fx = nat_fixture(50000, 50009);
        // UDP, as traceroute probes.
        let probe = with_ttl(
            udp_to(
                fx.a.mac,
                GW_MAC,
                ("172.17.0.2", 4000),
                (WORLD, 33434),
                false,
            ),
            1,
        );
        let (v, out) = run(&fx.dp, &probe);
        assert_eq!(v, REDIRECT, "back to the container");
        let p = parse_checked(&out);
        assert_eq!((p.dst_mac, p.src_mac), (fx.a.mac, GW_MAC));
        assert_eq!(
            (p.saddr, p.daddr),
            (ip("172.17.0.1"), ip("172.17.0.2")),
            "from the gateway"
        );
        assert_eq!(p.ttl, 64);
        assert_eq!(&p.l4[..2], &[11, 0], "time exceeded in transit");
        assert_eq!(&p.l4[4..8], &[0; 4]);
        assert_eq!(
            &p.l4[8..],
            &probe[14..14 + 28],
            "the probe's IPv4 header and 8 bytes, as sent"
        );
        assert_eq!(out.len(), 14 + 20 + 8 + 28);
        assert_eq!(drops(&fx.dp, 1, DropReason::TtlExceeded), 1);
        assert!(fx.dp.conntrack().unwrap().is_empty(), "no port taken");
        // TCP: the whole TCP header is quoted.
        let syn = with_ttl(
            tcp(fx.a.mac, GW_MAC, ("172.17.0.2", 40000), (WORLD, 80), 0x02),
            1,
        );
        let (v, out) = run(&fx.dp, &syn);
        assert_eq!(v, REDIRECT);
        assert_eq!(&parse_checked(&out).l4[8..], &syn[14..14 + 40]);
        // A flow under way: quoted as the container sent it, not as the
        // NAT would have rewritten it.
        let first = udp_to(fx.a.mac, GW_MAC, ("172.17.0.2", 4001), (WORLD, 53), false);
        assert_eq!(run(&fx.dp, &first).0, REDIRECT);
        let again = with_ttl(first, 1);
        let (v, out) = run(&fx.dp, &again);
        assert_eq!(v, REDIRECT);
        assert_eq!(&parse_checked(&out).l4[8..], &again[14..14 + 28]);
        assert_eq!(drops(&fx.dp, 1, DropReason::TtlExceeded), 3);
        // From the world to a published port: answered from the uplink's
        // address, back where the packet came from; no flow is made.
        publish_8080_to_a(&mut fx.dp);
        let ct_before = fx.dp.conntrack().unwrap().len();
        let syn = with_ttl(
            tcp(WORLD_MAC, up0_mac(), (WORLD, 33333), (UPLINK, 8080), 0x02),
            1,
        );
        let (v, out) = run_prog(&fx.dp, PROG_FROM_UPLINK, &syn);
        assert_eq!(v, REDIRECT);
        let p = parse_checked(&out);
        assert_eq!((p.dst_mac, p.src_mac), (WORLD_MAC, up0_mac()));
        assert_eq!((p.saddr, p.daddr), (ip(UPLINK), ip(WORLD)));
        assert_eq!(&p.l4[..2], &[11, 0]);
        assert_eq!(&p.l4[8..], &syn[14..14 + 40]);
        assert_eq!(drops(&fx.dp, 0, DropReason::TtlExceeded), 1);
        assert_eq!(fx.dp.conntrack().unwrap().len(), ct_before);
        // An ICMP error is never answered with one.
        let mut m = vec![3, 3, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&probe[14..14 + 28]);
        let c = csum::checksum(&m);
        m[2..4].copy_from_slice(&c.to_be_bytes());
        let err = with_ttl(
            ip_frame(WORLD_MAC, up0_mac(), ip(WORLD), ip(UPLINK), 1, &m),
            1,
        );
        assert_ne!(run_prog(&fx.dp, PROG_FROM_UPLINK, &err).0, REDIRECT);
    });
}

#[test]
fn icmp_errors_are_rate_limited_and_counted() {
    in_fresh_netns(|| {
        let mut fx = nat_fixture(50000, 50009);
        let probe = with_ttl(
            udp_to(
                fx.a.mac,
                GW_MAC,
                ("172.17.0.2", 4000),
                (WORLD, 33434),
                false,
            ),
            1,
        );
        // A's bucket spent, on every CPU (as after a burst).
        set_icmp_due(&mut fx.dp, fx.a.slot, u64::MAX / 2);
        assert_eq!(run(&fx.dp, &probe).0, SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::TtlExceeded), 1);
        assert_eq!(drops(&fx.dp, 1, DropReason::IcmpRateLimited), 1);
        // Refilled: answered again.
        set_icmp_due(&mut fx.dp, fx.a.slot, 0);
        assert_eq!(run(&fx.dp, &probe).0, REDIRECT);
        assert_eq!(drops(&fx.dp, 1, DropReason::TtlExceeded), 2);
        assert_eq!(drops(&fx.dp, 1, DropReason::IcmpRateLimited), 1);
    });
}

/// Checks `out` is "fragmentation needed" with `mtu`, from the gateway to
/// A, quoting `sent`'s IPv4 header and `quoted` bytes after it.
fn assert_frag_needed(fx: &Fixture, out: &[u8], sent: &[u8], mtu: u16, quoted: usize) {
    let p = parse_checked(out);
    assert_eq!((p.dst_mac, p.src_mac), (fx.a.mac, GW_MAC));
    assert_eq!((p.saddr, p.daddr), (ip("172.17.0.1"), ip("172.17.0.2")));
    assert_eq!(&p.l4[..2], &[3, 4], "fragmentation needed");
    assert_eq!(&p.l4[4..6], &[0, 0]);
    assert_eq!(u16::from_be_bytes([p.l4[6], p.l4[7]]), mtu, "next-hop MTU");
    assert_eq!(&p.l4[8..], &sent[14..14 + 20 + quoted], "quoted as sent");
}

#[test]
fn a_packet_too_big_for_the_next_link_is_answered_with_its_mtu() {
    in_fresh_netns(|| {
        let fx = nat_fixture(50000, 50009);
        ip_cmd("link set up0 mtu 1400");
        let a = ("172.17.0.2", 4000);
        // 1,500 bytes, DF: does not fit; no port is taken.
        let big = udp_sized(fx.a.mac, GW_MAC, a, (WORLD, 53), 1472);
        let (v, out) = run(&fx.dp, &big);
        assert_eq!(v, REDIRECT, "answered");
        assert_frag_needed(&fx, &out, &big, 1400, 8);
        assert_eq!(drops(&fx.dp, 1, DropReason::FragNeeded), 1);
        assert!(fx.dp.conntrack().unwrap().is_empty());
        // 1,400 fits and goes out, translated.
        let (v, out) = run(&fx.dp, &udp_sized(fx.a.mac, GW_MAC, a, (WORLD, 53), 1372));
        assert_eq!(v, REDIRECT);
        assert_eq!(parse_checked(&out).saddr, ip(UPLINK));
        // The flow under way: the same answer, quoted as sent.
        let (v, out) = run(&fx.dp, &big);
        assert_eq!(v, REDIRECT);
        assert_frag_needed(&fx, &out, &big, 1400, 8);
        // A GSO packet is judged by its segments, which the kernel cuts
        // after the datapath: 1,400-byte segments pass, 1,428-byte ones
        // do not.
        let gso = udp_sized(fx.a.mac, GW_MAC, a, (WORLD, 53), 2600);
        let (v, out) = run_ctx(&fx.dp, PROG_FROM_CONTAINER, &gso, &skb_ctx(0, 1372));
        assert_eq!(v, REDIRECT);
        assert_eq!(parse_checked(&out).saddr, ip(UPLINK), "out, translated");
        let (v, out) = run_ctx(&fx.dp, PROG_FROM_CONTAINER, &gso, &skb_ctx(0, 1400));
        assert_eq!(v, REDIRECT);
        assert_frag_needed(&fx, &out, &gso, 1400, 8);
        // TCP segments: IPv4 and TCP header and the segment size.
        let syn = tcp(fx.a.mac, GW_MAC, ("172.17.0.2", 40000), (WORLD, 80), 0x02);
        assert_eq!(run(&fx.dp, &syn).0, REDIRECT);
        let data = tcp_sized(fx.a.mac, GW_MAC, ("172.17.0.2", 40000), (WORLD, 80), 2720);
        let (v, out) = run_ctx(&fx.dp, PROG_FROM_CONTAINER, &data, &skb_ctx(0, 1360));
        assert_eq!(v, REDIRECT);
        assert_eq!(parse_checked(&out).saddr, ip(UPLINK));
        let (v, out) = run_ctx(&fx.dp, PROG_FROM_CONTAINER, &data, &skb_ctx(0, 1448));
        assert_eq!(v, REDIRECT);
        assert_frag_needed(&fx, &out, &data, 1400, 20);
        assert_eq!(drops(&fx.dp, 1, DropReason::FragNeeded), 4);
    });
}

#[test]
fn without_a_nat_address_nothing_leaves_for_the_world() {
    in_fresh_netns(|| {
        let mut fx = nat_fixture(50000, 50009);
        // The uplink lost its address: the daemon cleared the NAT config.
        let cfg = Config {
            uplink_ifindex: 0,
            uplink_addr_be: 0,
            ..fx.dp.config().unwrap()
        };
        fx.dp.set_config(&cfg).unwrap();
        let out = udp_to(fx.a.mac, GW_MAC, ("172.17.0.2", 4000), (WORLD, 53), false);
        assert_eq!(
            run(&fx.dp, &out).0,
            SHOT,
            "never up the host stack, which would route it out untranslated"
        );
        assert_eq!(drops(&fx.dp, 1, DropReason::NoNatAddress), 1);
        assert!(fx.dp.conntrack().unwrap().is_empty());
        // The host's own addresses stay the host's.
        let local = udp_to(fx.a.mac, GW_MAC, ("172.17.0.2", 4000), (UPLINK, 53), false);
        assert_eq!(run(&fx.dp, &local).0, OK);
    });
}

/// Conntrack under pressure: flows, their identity, and clashes (issue 10).
mod ct;

/// Random and mutated frames through every program (a property test).
mod fuzz;

/// Frames the property test found the datapath wrong on.
mod found;

/// IPv4 fragments of translated datagrams.
mod frag;
/// IPv6 fragments of NAT66 datagrams (issue 13).
mod frag6;

mod dnat6;
/// Hairpin over IPv6 (issue 13).
mod hairpin6;
/// ICMPv6 errors across NAT66, and the ones dnet sends (issue 13).
mod icmp6;
/// IPv6: the map API and the container-side path (issue 13).
mod ipv6;
mod nat6;
/// Routed IPv6 networks: to and from the world untranslated (issue 13).
mod routed6;

#[test]
fn filters_reading_maps_made_anew_are_replaced_at_the_next_load() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    in_fresh_netns(move || {
        // A bpffs of the test's own, in a mount namespace of this thread's
        // own: the pins go with the namespace, also when the test fails.
        use nix::mount::{MsFlags, mount};
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).expect("unshare mounts");
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .expect("make mounts private");
        mount(
            Some("bpf"),
            &dir,
            Some("bpf"),
            MsFlags::empty(),
            None::<&str>,
        )
        .expect("a bpffs");
        let o = std::process::Command::new("ip")
            .args(["link", "add", "v0", "type", "veth", "peer", "name", "v1"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{o:?}");
        let index = nix::net::if_::if_nametoindex("v0").unwrap();
        // The programs of the filters at v0's ingress.
        let filters = || {
            crate::netlink::bpf_filters(index, crate::netlink::CLSACT_INGRESS)
                .unwrap()
                .iter()
                .map(|f| f.id)
                .collect::<Vec<_>>()
        };
        let id = |dp: &Datapath| {
            dp.ebpf
                .program(PROG_FROM_CONTAINER)
                .unwrap()
                .info()
                .unwrap()
                .id()
        };
        let first = {
            let mut dp = Datapath::load(Some(&dir)).unwrap();
            dp.attach_endpoint("v0").unwrap();
            assert_eq!(filters(), [Some(id(&dp))]);
            id(&dp)
        };
        // A restart on the same maps keeps the filter: same code, same maps.
        {
            let mut dp = Datapath::load(Some(&dir)).unwrap();
            assert_ne!(id(&dp), first);
            assert!(dp.endpoint_attached("v0"));
            dp.attach_endpoint("v0").unwrap();
            assert_eq!(filters(), [Some(first)], "left as it was");
        }
        // The endpoint map is made anew (its pin gone, as when the bpffs is
        // wiped or a map is retired): the old filter reads the orphan.
        fs::remove_file(dir.join("maps").join(m::ENDPOINTS_BY_IF)).unwrap();
        let mut dp = Datapath::load(Some(&dir)).unwrap();
        assert!(
            !dp.endpoint_attached("v0"),
            "a filter on the orphaned map is not current"
        );
        dp.attach_endpoint("v0").unwrap();
        assert!(dp.endpoint_attached("v0"));
        assert_eq!(filters(), [Some(id(&dp))], "replaced in place");
        let new_map = aya::maps::MapInfo::from_pin(dir.join("maps").join(m::ENDPOINTS_BY_IF))
            .unwrap()
            .id();
        assert!(
            super::progs::map_ids(id(&dp)).unwrap().contains(&new_map),
            "the veth's program reads the new map"
        );
    });
    drop(tmp);
}
