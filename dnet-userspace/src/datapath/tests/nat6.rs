//! NAT66 (issue 13): a dual-stack container's IPv6 to the world through
//! the uplink's IPv6 address, and the answers back, on hand-made frames.

use std::net::Ipv6Addr;

use dnet_common::ipv6::NET6_F_NAT;

use super::{
    ipv6::{A6, GW6, dual_stack, frame6, ip6, sum6},
    *,
};

/// A server in the world, beyond the uplink's default route.
pub(super) const SERVER6: &str = "2001:2:1::5";
pub(super) const TCP: u8 = 6;
pub(super) const UDP: u8 = 17;
pub(super) const ICMPV6: u8 = 58;

/// The NAT fixture, dual-stack with NAT66 on network 1.
pub(super) fn nat6_fixture() -> Fixture {
    let mut fx = nat_fixture(50000, 50009);
    dual_stack(&mut fx, NET6_F_NAT);
    fx
}

/// What the tests read of an IPv6 frame without extension headers.
pub(super) struct Pkt6 {
    pub(super) dst_mac: [u8; 6],
    pub(super) src_mac: [u8; 6],
    pub(super) hop: u8,
    pub(super) proto: u8,
    pub(super) saddr: Ipv6Addr,
    pub(super) daddr: Ipv6Addr,
    pub(super) l4: Vec<u8>,
}

impl Pkt6 {
    pub(super) fn port(&self, at: usize) -> u16 {
        u16::from_be_bytes([self.l4[at], self.l4[at + 1]])
    }
}

/// Parses `f` and checks its L4 checksum over the IPv6 pseudo-header.
pub(super) fn parse6_checked(f: &[u8]) -> Pkt6 {
    assert_eq!(u16::from_be_bytes([f[12], f[13]]), 0x86dd, "IPv6");
    let len = u16::from_be_bytes([f[18], f[19]]) as usize;
    let p = Pkt6 {
        dst_mac: f[0..6].try_into().unwrap(),
        src_mac: f[6..12].try_into().unwrap(),
        proto: f[20],
        hop: f[21],
        saddr: Ipv6Addr::from(<[u8; 16]>::try_from(&f[22..38]).unwrap()),
        daddr: Ipv6Addr::from(<[u8; 16]>::try_from(&f[38..54]).unwrap()),
        l4: f[54..54 + len].to_vec(),
    };
    assert_eq!(
        sum6(p.saddr, p.daddr, p.proto, &p.l4),
        0,
        "the L4 checksum verifies"
    );
    p
}

pub(super) fn udp6_to(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    s: (&str, u16),
    d: (&str, u16),
) -> Vec<u8> {
    let mut l4 = Vec::new();
    l4.extend_from_slice(&s.1.to_be_bytes());
    l4.extend_from_slice(&d.1.to_be_bytes());
    l4.extend_from_slice(&12u16.to_be_bytes());
    l4.extend_from_slice(&[0, 0]);
    l4.extend_from_slice(b"dnet");
    frame6(
        src_mac,
        dst_mac,
        ip6(s.0),
        ip6(d.0),
        64,
        0,
        UDP,
        l4,
        Some(6),
    )
}

pub(super) fn tcp6(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    s: (&str, u16),
    d: (&str, u16),
    flags: u8,
) -> Vec<u8> {
    let mut l4 = Vec::new();
    l4.extend_from_slice(&s.1.to_be_bytes());
    l4.extend_from_slice(&d.1.to_be_bytes());
    l4.extend_from_slice(&1u32.to_be_bytes());
    l4.extend_from_slice(&0u32.to_be_bytes());
    l4.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    l4.extend_from_slice(b"ping");
    frame6(
        src_mac,
        dst_mac,
        ip6(s.0),
        ip6(d.0),
        64,
        0,
        TCP,
        l4,
        Some(16),
    )
}

pub(super) fn echo6(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    s: &str,
    d: &str,
    ty: u8,
    id: u16,
) -> Vec<u8> {
    let mut l4 = vec![ty, 0, 0, 0];
    l4.extend_from_slice(&id.to_be_bytes());
    l4.extend_from_slice(&7u16.to_be_bytes());
    l4.extend_from_slice(b"dnet");
    frame6(src_mac, dst_mac, ip6(s), ip6(d), 64, 0, ICMPV6, l4, Some(2))
}

#[test]
fn nat66_udp_leaves_as_the_uplinks_ipv6_and_its_answer_comes_back() {
    in_fresh_netns(|| {
        let fx = nat6_fixture();
        let frame = udp6_to(fx.a.mac, GW_MAC, (A6, 4000), (SERVER6, 53));
        let (v, out) = run(&fx.dp, &frame);
        assert_eq!(v, REDIRECT, "out through the uplink");
        let p = parse6_checked(&out);
        assert_eq!(p.saddr, ip6(UPLINK6), "translated to the uplink's IPv6");
        assert_eq!(p.daddr, ip6(SERVER6));
        let port = p.port(0);
        assert!((50000..=50009).contains(&port), "NAT port {port}");
        assert_eq!(p.port(2), 53);
        assert_eq!(p.hop, 63, "routed: hop limit down by one");
        assert_eq!((p.dst_mac, p.src_mac), (WORLD_MAC, up0_mac()));
        assert_eq!(
            fx.dp.conntrack6().unwrap().len(),
            2,
            "one entry per direction"
        );
        assert!(
            fx.dp.conntrack().unwrap().is_empty(),
            "IPv4's table untouched"
        );
        assert_eq!(fx.dp.stats(1).unwrap().translated, 1);

        let reply = udp6_to(WORLD_MAC, up0_mac(), (SERVER6, 53), (UPLINK6, port));
        let (v, back) = run_prog(&fx.dp, PROG_FROM_UPLINK, &reply);
        assert_eq!(v, REDIRECT, "into the container");
        let b = parse6_checked(&back);
        assert_eq!((b.saddr, b.port(0)), (ip6(SERVER6), 53));
        assert_eq!((b.daddr, b.port(2)), (ip6(A6), 4000));
        assert_eq!((b.dst_mac, b.src_mac), (fx.a.mac, GW_MAC));
        assert_eq!(b.hop, 63);

        // The flow's next packet takes the same port; an answer to a port
        // no flow holds is the host's.
        let (_, again) = run(&fx.dp, &frame);
        assert_eq!(parse6_checked(&again).port(0), port);
        let stray = udp6_to(WORLD_MAC, up0_mac(), (SERVER6, 53), (UPLINK6, 40000));
        assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &stray).0, OK);
    });
}

#[test]
fn nat66_tcp_keeps_its_checksum_and_state() {
    in_fresh_netns(|| {
        let fx = nat6_fixture();
        // Only a SYN opens a flow.
        let ack = tcp6(fx.a.mac, GW_MAC, (A6, 40000), (SERVER6, 80), 0x10);
        assert_eq!(run(&fx.dp, &ack).0, SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::CtNoFlow), 1);
        let syn = tcp6(fx.a.mac, GW_MAC, (A6, 40000), (SERVER6, 80), 0x02);
        let (v, out) = run(&fx.dp, &syn);
        assert_eq!(v, REDIRECT);
        let p = parse6_checked(&out);
        assert_eq!(p.saddr, ip6(UPLINK6));
        let synack = tcp6(
            WORLD_MAC,
            up0_mac(),
            (SERVER6, 80),
            (UPLINK6, p.port(0)),
            0x12,
        );
        let (v, back) = run_prog(&fx.dp, PROG_FROM_UPLINK, &synack);
        assert_eq!(v, REDIRECT);
        let b = parse6_checked(&back);
        assert_eq!((b.daddr, b.port(2)), (ip6(A6), 40000));
        let ct = fx.dp.conntrack6().unwrap();
        let fwd = ct
            .iter()
            .find(|(k, _)| k.saddr_be == ip6(A6).octets())
            .unwrap();
        let rev = ct
            .iter()
            .find(|(k, _)| k.saddr_be == ip6(SERVER6).octets())
            .unwrap();
        assert_eq!(fwd.1.tcp_seen, 0x02);
        assert_eq!(rev.1.tcp_seen, 0x12);
        assert_eq!(
            fwd.1.endpoint_be, fx.a.addr_be,
            "the container, by its record"
        );
    });
}

#[test]
fn nat66_ping_is_translated_by_its_identifier() {
    in_fresh_netns(|| {
        let fx = nat6_fixture();
        let req = echo6(fx.a.mac, GW_MAC, A6, SERVER6, 128, 0x1234);
        let (v, out) = run(&fx.dp, &req);
        assert_eq!(v, REDIRECT);
        let p = parse6_checked(&out);
        assert_eq!(p.saddr, ip6(UPLINK6));
        let id = p.port(4);
        assert!((50000..=50009).contains(&id), "identifier {id}");
        let rep = echo6(WORLD_MAC, up0_mac(), SERVER6, UPLINK6, 129, id);
        let (v, back) = run_prog(&fx.dp, PROG_FROM_UPLINK, &rep);
        assert_eq!(v, REDIRECT);
        let b = parse6_checked(&back);
        assert_eq!(b.daddr, ip6(A6));
        assert_eq!(b.port(4), 0x1234);
        // An echo reply from the container opens nothing.
        let stray = echo6(fx.a.mac, GW_MAC, A6, SERVER6, 129, 0x4321);
        assert_eq!(run(&fx.dp, &stray).0, SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::CtNoFlow), 1);
    });
}

#[test]
fn a_dnet_ipv6_source_on_the_uplink_is_spoofed() {
    in_fresh_netns(|| {
        let mut fx = nat6_fixture();
        // Open a flow, then answer it "from" a container's subnet.
        let (_, out) = run(
            &fx.dp,
            &udp6_to(fx.a.mac, GW_MAC, (A6, 4000), (SERVER6, 53)),
        );
        let port = parse6_checked(&out).port(0);
        let spoofed = udp6_to(WORLD_MAC, up0_mac(), ("fd00:1::3", 53), (UPLINK6, port));
        assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &spoofed).0, SHOT);
        assert_eq!(drops(&fx.dp, 0, DropReason::SpoofedIp), 1);
        // IPv6 for another address than the uplink's is the host's.
        let other = udp6_to(WORLD_MAC, up0_mac(), (SERVER6, 53), ("2001:2::9", port));
        assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &other).0, OK);
        // A container's address to its network's gateway (where the
        // resolver listens) is spoofed too, and so it stays when the
        // uplink has no global IPv6 address.
        let to_gw = udp6_to(WORLD_MAC, up0_mac(), (A6, 5353), (GW6, 53));
        assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &to_gw).0, SHOT);
        assert_eq!(drops(&fx.dp, 0, DropReason::SpoofedIp), 2);
        let mut cfg = fx.dp.config().unwrap();
        cfg.uplink_addr6 = [0; 16];
        fx.dp.set_config(&cfg).unwrap();
        assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &to_gw).0, SHOT);
        assert_eq!(drops(&fx.dp, 0, DropReason::SpoofedIp), 3);
        let world = udp6_to(WORLD_MAC, up0_mac(), (SERVER6, 5353), (GW6, 53));
        assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &world).0, OK);
    });
}

#[test]
fn without_an_ipv6_uplink_address_nothing_leaves_untranslated() {
    in_fresh_netns(|| {
        let mut fx = nat6_fixture();
        let mut cfg = fx.dp.config().unwrap();
        cfg.uplink_addr6 = [0; 16];
        fx.dp.set_config(&cfg).unwrap();
        let frame = udp6_to(fx.a.mac, GW_MAC, (A6, 4000), (SERVER6, 53));
        assert_eq!(run(&fx.dp, &frame).0, SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::NoNatAddress), 1);
        assert!(fx.dp.conntrack6().unwrap().is_empty());
    });
}

#[test]
fn a_nat66_flow_that_cannot_leave_takes_no_entry() {
    in_fresh_netns(|| {
        let fx = nat6_fixture();
        // Unreachable, and a route over another interface than the uplink.
        ip_cmd("-6 route add unreachable 2001:db8:dead::/48");
        ip_cmd("link add other0 type veth peer name other1");
        ip_cmd("link set other0 up");
        ip_cmd("-6 route add 2001:db8:beef::/48 dev other0");
        for d in ["2001:db8:dead::1", "2001:db8:beef::1"] {
            let frame = udp6_to(fx.a.mac, GW_MAC, (A6, 4000), (d, 53));
            assert_eq!(run(&fx.dp, &frame).0, SHOT, "{d}");
        }
        assert_eq!(drops(&fx.dp, 1, DropReason::NoRoute), 2);
        assert!(
            fx.dp.conntrack6().unwrap().is_empty(),
            "no conntrack entry, hence no NAT port nor charge"
        );
    });
}

#[test]
fn nat66_a_routing_header_with_segments_left_is_dropped() {
    in_fresh_netns(|| {
        let fx = nat6_fixture();
        // A routing header (type 4, one segment left, one address) before
        // UDP: its final destination is not the header's.
        let rh = |left: u8| {
            let mut l4 = vec![UDP, 2, 4, left, 0, 0, 0, 0];
            l4.extend_from_slice(&ip6("2001:2:9::9").octets());
            l4.extend_from_slice(&4000u16.to_be_bytes());
            l4.extend_from_slice(&53u16.to_be_bytes());
            l4.extend_from_slice(&[0, 12, 0, 0]);
            l4.extend_from_slice(b"dnet");
            frame6(fx.a.mac, GW_MAC, ip6(A6), ip6(SERVER6), 64, 0, 43, l4, None)
        };
        assert_eq!(run(&fx.dp, &rh(1)).0, SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::Ipv6ExtHeaders), 1);
        assert!(fx.dp.conntrack6().unwrap().is_empty());
        // With no segment left it is an ordinary extension header.
        let (v, _) = run(&fx.dp, &rh(0));
        assert_ne!(
            drops(&fx.dp, 1, DropReason::Ipv6ExtHeaders),
            2,
            "verdict {v}: not dropped for its routing header"
        );
    });
}

/// The host's own ping6 through the uplink (issue 13, review N3): a host
/// echo on a container's NAT identifier leaves on another, and each
/// answer reaches its own, as for IPv4.
#[test]
fn nat66_the_hosts_own_echo_ids_never_meet_a_containers() {
    in_fresh_netns(|| {
        let fx = nat6_fixture();
        let req = echo6(fx.a.mac, GW_MAC, A6, SERVER6, 128, 0x1234);
        let (v, out) = run(&fx.dp, &req);
        assert_eq!(v, REDIRECT);
        let p = parse6_checked(&out).port(4);
        // What dnet forwards came in on an interface: untouched.
        let (v, same) = run_ctx(&fx.dp, PROG_TO_UPLINK, &out, &skb_ctx(TEST_IFINDEX, 0));
        assert_eq!((v, &same), (OK, &out));
        assert_eq!(fx.dp.conntrack6().unwrap().len(), 2);
        // The host pings the same server with identifier p.
        let host_req = echo6(up0_mac(), WORLD_MAC, UPLINK6, SERVER6, 128, p);
        let (v, hout) = host_out(&fx.dp, &host_req);
        assert_eq!(v, OK);
        let h = parse6_checked(&hout);
        assert_eq!((h.saddr, h.daddr), (ip6(UPLINK6), ip6(SERVER6)));
        let hid = h.port(4);
        assert_ne!(hid, p, "the container's identifier");
        assert!((50000..=50009).contains(&hid), "{hid}");
        assert_eq!(h.hop, 64, "the host's packet, not routed");
        let (_, again) = host_out(&fx.dp, &host_req);
        assert_eq!(parse6_checked(&again).port(4), hid, "one flow");
        // The host's answer goes up its stack with its own identifier.
        let rep = echo6(WORLD_MAC, up0_mac(), SERVER6, UPLINK6, 129, hid);
        let (v, back) = run_prog(&fx.dp, PROG_FROM_UPLINK, &rep);
        assert_eq!(v, OK, "the host's, not a container's");
        let b = parse6_checked(&back);
        assert_eq!((b.daddr, b.port(4), b.hop), (ip6(UPLINK6), p, 64));
        // The container's goes into A.
        let rep = echo6(WORLD_MAC, up0_mac(), SERVER6, UPLINK6, 129, p);
        let (v, back) = run_prog(&fx.dp, PROG_FROM_UPLINK, &rep);
        assert_eq!(v, REDIRECT);
        let b = parse6_checked(&back);
        assert_eq!((b.daddr, b.port(4)), (ip6(A6), 0x1234));
        // Echo replies the host sends (to the world's pings), and its pings
        // from another address, are not its flows.
        for f in [
            echo6(up0_mac(), WORLD_MAC, UPLINK6, SERVER6, 129, 7),
            echo6(up0_mac(), WORLD_MAC, "2001:2::9", SERVER6, 128, 7),
        ] {
            assert_eq!(host_out(&fx.dp, &f), (OK, f.clone()));
        }
        assert_eq!(fx.dp.conntrack6().unwrap().len(), 4);
        assert!(
            fx.dp.conntrack().unwrap().is_empty(),
            "IPv4's table untouched"
        );
    });
}

/// The other order (N3): identifiers the host's ping6 uses are held (kept
/// as they are while free), so a container's echo never gets one, and the
/// host's answers never go into a container.
#[test]
fn nat66_a_containers_echo_never_takes_an_identifier_the_host_uses() {
    in_fresh_netns(|| {
        let mut fx = nat_fixture(50000, 50001);
        dual_stack(&mut fx, NET6_F_NAT);
        for id in [50000, 50001] {
            let (v, out) = host_out(
                &fx.dp,
                &echo6(up0_mac(), WORLD_MAC, UPLINK6, SERVER6, 128, id),
            );
            assert_eq!(v, OK);
            assert_eq!(parse6_checked(&out).port(4), id, "kept");
        }
        let req = echo6(fx.a.mac, GW_MAC, A6, SERVER6, 128, 0x1234);
        assert_eq!(run(&fx.dp, &req).0, SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::NatPortsExhausted), 1);
        let rep = echo6(WORLD_MAC, up0_mac(), SERVER6, UPLINK6, 129, 50000);
        assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &rep), (OK, rep.clone()));
    });
}

/// A second address of `a`'s /64 that IPv6's address fold
/// (`CtAddr::fold`, murmur3's mixing, rebuilt here step by step) maps to
/// the same 32 bits.
fn folding_like(a: Ipv6Addr) -> Ipv6Addr {
    fn fmix(mut h: u32) -> u32 {
        h ^= h >> 16;
        h = h.wrapping_mul(0x85eb_ca6b);
        h ^= h >> 13;
        h = h.wrapping_mul(0xc2b2_ae35);
        h ^ (h >> 16)
    }
    let o = a.octets();
    let w = |i: usize| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
    let prefix = fmix(w(0) ^ w(4).rotate_left(11));
    let w8 = w(8) ^ 0x5a5a_0001;
    let w12 = w(12) ^ fmix(prefix ^ w(8).rotate_left(19)) ^ fmix(prefix ^ w8.rotate_left(19));
    let mut b = o;
    b[8..12].copy_from_slice(&w8.to_ne_bytes());
    b[12..16].copy_from_slice(&w12.to_ne_bytes());
    Ipv6Addr::from(b)
}

/// Review N5: NAT66's limits were keyed by the container's IPv6 address
/// folded to 32 bits, so two containers whose addresses fold alike shared
/// one counter (and one could spend the other's flows). They are keyed by
/// the endpoint's record now: each container has its own.
#[test]
fn nat66_limits_are_per_container_even_for_addresses_that_fold_alike() {
    use dnet_common::{CtAddr as _, QuotaKey};
    in_fresh_netns(|| {
        let mut fx = nat6_fixture();
        let cfg = Config {
            ep_flow_limit: 1,
            ..fx.dp.config().unwrap()
        };
        fx.dp.set_config(&cfg).unwrap();
        let b6 = folding_like(ip6(A6));
        assert_ne!(b6, ip6(A6));
        assert_eq!(b6.octets().fold(), ip6(A6).octets().fold(), "alike");
        let b6 = b6.to_string();
        // Frames reach the program from A's veth only (the test's
        // interface): B is put behind it, with the address that folds as
        // A's, after A's first flow.
        let from = |mac, src: &str, sport| udp6_to(mac, GW_MAC, (src, sport), (SERVER6, 53));
        assert_eq!(run(&fx.dp, &from(fx.a.mac, A6, 4000)).0, REDIRECT);
        let b = Endpoint {
            ifindex: fx.a.ifindex,
            ..fx.b
        };
        fx.dp.set_endpoint(&b).unwrap();
        fx.dp.set_endpoint6(b.ifindex, ip6(&b6), &b).unwrap();
        assert_eq!(
            run(&fx.dp, &from(b.mac, &b6, 4000)).0,
            REDIRECT,
            "B's first flow: its own limit, not A's"
        );
        assert_eq!(run(&fx.dp, &from(b.mac, &b6, 4001)).0, SHOT);
        assert_eq!(drops(&fx.dp, b.slot, DropReason::CtEndpointLimit), 1);
        // A back behind its veth: its limit is reached by its own flow.
        fx.dp.set_endpoint(&fx.a).unwrap();
        fx.dp.set_endpoint6(fx.a.ifindex, ip6(A6), &fx.a).unwrap();
        assert_eq!(run(&fx.dp, &from(fx.a.mac, A6, 4001)).0, SHOT);
        assert_eq!(drops(&fx.dp, fx.a.slot, DropReason::CtEndpointLimit), 1);
        let quota = |dp: &Datapath| {
            let mut q = dp.quota().unwrap();
            q.sort_by_key(|(k, _)| (k.endpoint_be, k.daddr_be, k.dport_be, k.family));
            q
        };
        let q = quota(&fx.dp);
        for ep in [fx.a.addr_be, fx.b.addr_be] {
            let total = QuotaKey {
                family: 6,
                ..QuotaKey::endpoint(ep)
            };
            assert!(q.contains(&(total, 1)), "{q:?}");
        }
        // The daemon's sweep counts them the same way: nothing drifts.
        assert_eq!(fx.dp.quota_sweep().unwrap(), 0);
        assert_eq!(quota(&fx.dp), q);
    });
}
