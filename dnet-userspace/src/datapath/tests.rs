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

/// Runs `f` on a new thread in a new, empty network namespace.
fn in_fresh_netns<F: FnOnce() + Send + 'static>(f: F) {
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare (root?)");
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
    let mut dp = Datapath::load(None).expect("load the datapath");
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
        // The gateway, another network's gateway (a host address) and the
        // outside go up the host stack.
        assert_eq!(send("172.17.0.1"), OK);
        assert_eq!(send("10.9.0.1"), OK);
        assert_eq!(send("198.18.0.1"), OK);
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
        assert_eq!(send("198.18.0.1"), OK);
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

#[test]
fn broadcast_fans_out_and_counts_what_exceeds_the_bound() {
    in_fresh_netns(|| {
        let mut fx = fixture(0);
        let frame = udp(
            fx.a.mac,
            [0xff; 6],
            ip("172.17.0.2"),
            ip("172.17.255.255"),
            0,
        );
        assert_eq!(run(&fx.dp, &frame).0, OK);
        assert_eq!(drops(&fx.dp, 1, DropReason::FanoutLimit), 0);
        let many: Vec<u32> = (0..70).map(|i| 2000 + i).collect();
        fx.dp.set_members(1, &many).unwrap();
        let mcast = udp(
            fx.a.mac,
            [1, 0, 0x5e, 0, 0, 0xfb],
            ip("172.17.0.2"),
            ip("224.0.0.251"),
            0,
        );
        assert_eq!(run(&fx.dp, &mcast).0, OK);
        assert_eq!(drops(&fx.dp, 1, DropReason::FanoutLimit), 70 - 64);
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
