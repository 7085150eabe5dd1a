//! Published ports from the world over IPv6 (issue 13): a new flow to
//! `[uplink6]:H` is DNATed to the dual-stack container's `[IPv6]:C`, on
//! hand-made frames.

use dnet_common::{Service6, ServiceKey6};

use super::{
    icmp6::assert_time_exceeded_from_uplink,
    ipv6::{A6, ip6},
    nat6::{SERVER6, TCP, UDP, nat6_fixture, parse6_checked, tcp6, udp6_to},
    *,
};

/// The service key of host port 8080 on `addr` (all zeros: every host
/// address).
fn key8080(addr: [u8; 16], proto: u8) -> ServiceKey6 {
    ServiceKey6 {
        addr,
        port_be: 8080u16.to_be(),
        proto,
        _pad: 0,
    }
}

/// Container A's port 80.
fn to_a80() -> Service6 {
    Service6 {
        backend: ip6(A6).octets(),
        backend_port_be: 80u16.to_be(),
        _pad: 0,
    }
}

/// `-p 8080:80` (TCP and UDP) of container A, on every host address.
pub(super) fn publish6_8080_to_a(dp: &mut Datapath) {
    for proto in [TCP, UDP] {
        dp.set_service6(&key8080([0; 16], proto), &to_a80())
            .unwrap();
    }
}

/// A TCP segment (`flags`) from the world's `[SERVER6]:33333` to the
/// uplink's `[UPLINK6]:port`.
fn from_world6(port: u16, flags: u8) -> Vec<u8> {
    tcp6(
        WORLD_MAC,
        up0_mac(),
        (SERVER6, 33333),
        (UPLINK6, port),
        flags,
    )
}

#[test]
fn dnat6_tcp_reaches_the_container_and_its_reply_leaves_as_the_uplink() {
    in_fresh_netns(|| {
        let mut fx = nat6_fixture();
        publish6_8080_to_a(&mut fx.dp);
        let syn = from_world6(8080, 0x02);
        let (v, into) = run_prog(&fx.dp, PROG_FROM_UPLINK, &syn);
        assert_eq!(v, REDIRECT, "into the container");
        let p = parse6_checked(&into);
        assert_eq!((p.daddr, p.port(2)), (ip6(A6), 80), "DNAT to [A6]:80");
        assert_eq!(
            (p.saddr, p.port(0)),
            (ip6(SERVER6), 33333),
            "the container sees the world's address"
        );
        assert_eq!((p.dst_mac, p.src_mac), (fx.a.mac, GW_MAC));
        assert_eq!(p.hop, 63, "routed: hop limit down by one");
        let ct = fx.dp.conntrack6().unwrap();
        assert_eq!(ct.len(), 2, "one entry per direction");
        assert!(ct.iter().all(|(_, e)| e.endpoint_be == fx.a.addr_be));
        assert!(fx.dp.conntrack().unwrap().is_empty(), "IPv4's untouched");

        // The container's answer leaves as [uplink6]:8080.
        let synack = tcp6(fx.a.mac, GW_MAC, (A6, 80), (SERVER6, 33333), 0x12);
        let (v, out) = run(&fx.dp, &synack);
        assert_eq!(v, REDIRECT, "out through the uplink");
        let o = parse6_checked(&out);
        assert_eq!((o.saddr, o.port(0)), (ip6(UPLINK6), 8080));
        assert_eq!((o.daddr, o.port(2)), (ip6(SERVER6), 33333));
        assert_eq!((o.dst_mac, o.src_mac), (WORLD_MAC, up0_mac()));

        // The flow's next packet from the world goes in the same way.
        let ack = from_world6(8080, 0x10);
        let (v, again) = run_prog(&fx.dp, PROG_FROM_UPLINK, &ack);
        assert_eq!(v, REDIRECT);
        assert_eq!(parse6_checked(&again).daddr, ip6(A6));
        assert_eq!(fx.dp.conntrack6().unwrap().len(), 2, "still one flow");
    });
}

#[test]
fn dnat6_udp_reaches_the_container_and_its_reply_leaves_as_the_uplink() {
    in_fresh_netns(|| {
        let mut fx = nat6_fixture();
        publish6_8080_to_a(&mut fx.dp);
        let q = udp6_to(WORLD_MAC, up0_mac(), (SERVER6, 5353), (UPLINK6, 8080));
        let (v, into) = run_prog(&fx.dp, PROG_FROM_UPLINK, &q);
        assert_eq!(v, REDIRECT);
        let p = parse6_checked(&into);
        assert_eq!((p.saddr, p.port(0)), (ip6(SERVER6), 5353));
        assert_eq!((p.daddr, p.port(2)), (ip6(A6), 80));
        let a = udp6_to(fx.a.mac, GW_MAC, (A6, 80), (SERVER6, 5353));
        let (v, out) = run(&fx.dp, &a);
        assert_eq!(v, REDIRECT);
        let o = parse6_checked(&out);
        assert_eq!((o.saddr, o.port(0)), (ip6(UPLINK6), 8080));
        assert_eq!((o.daddr, o.port(2)), (ip6(SERVER6), 5353));
        assert_eq!(fx.dp.stats(1).unwrap().translated, 2);
    });
}

#[test]
fn dnat6_a_port_nobody_published_is_the_hosts() {
    in_fresh_netns(|| {
        let mut fx = nat6_fixture();
        publish6_8080_to_a(&mut fx.dp);
        // Another port, and a segment that opens no flow to the published
        // one: the host stack's, untouched, no entry.
        let other = from_world6(8081, 0x02);
        let (v, out) = run_prog(&fx.dp, PROG_FROM_UPLINK, &other);
        assert_eq!((v, out), (OK, other));
        let ack = from_world6(8080, 0x10);
        assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &ack).0, OK);
        // Published on another host address only: not on the uplink's.
        fx.dp.clear_service6(&key8080([0; 16], TCP)).unwrap();
        let elsewhere = key8080(ip6("2001:2::9").octets(), TCP);
        fx.dp.set_service6(&elsewhere, &to_a80()).unwrap();
        let syn = from_world6(8080, 0x02);
        assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &syn).0, OK);
        assert!(fx.dp.conntrack6().unwrap().is_empty());
    });
}

/// `--publish-from` holds for IPv6 sources: with IPv4 prefixes only, the
/// world's IPv6 is refused; an IPv6 prefix lets its sources in.
#[test]
fn dnat6_only_listed_sources_reach_published_ports() {
    in_fresh_netns(|| {
        let mut fx = nat6_fixture();
        publish6_8080_to_a(&mut fx.dp);
        fx.dp
            .set_publish_from(&["0.0.0.0/0".parse().unwrap()])
            .unwrap();
        let syn = from_world6(8080, 0x02);
        assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &syn).0, SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::SourceNotAllowed), 1);
        assert!(fx.dp.conntrack6().unwrap().is_empty());
        fx.dp
            .set_publish_from(&["2001:2:1::/48".parse().unwrap()])
            .unwrap();
        assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &syn).0, REDIRECT);
        let other = tcp6(
            WORLD_MAC,
            up0_mac(),
            ("2001:3::1", 33333),
            (UPLINK6, 8080),
            0x02,
        );
        assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &other).0, SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::SourceNotAllowed), 2);
        assert_eq!(fx.dp.conntrack6().unwrap().len(), 2, "one flow");
    });
}

/// A hop limit that runs out at dnet's hop takes no entry, and is
/// answered "time exceeded" from the uplink's address.
#[test]
fn dnat6_a_hop_limit_of_one_opens_nothing() {
    in_fresh_netns(|| {
        let mut fx = nat6_fixture();
        publish6_8080_to_a(&mut fx.dp);
        let mut syn = from_world6(8080, 0x02);
        syn[21] = 1;
        let (v, out) = run_prog(&fx.dp, PROG_FROM_UPLINK, &syn);
        assert_eq!(v, REDIRECT, "answered");
        assert_time_exceeded_from_uplink(&out, &syn, syn.len() - 14);
        assert_eq!(drops(&fx.dp, 0, DropReason::TtlExceeded), 1);
        assert!(fx.dp.conntrack6().unwrap().is_empty());
    });
}

#[test]
fn dnat6_into_an_internal_network_takes_no_entry() {
    in_fresh_netns(|| {
        let mut fx = nat6_fixture();
        publish6_8080_to_a(&mut fx.dp);
        make_internal(&mut fx.dp, 1, "172.17.0.0/16");
        for port in [33333, 33334] {
            let syn = tcp6(WORLD_MAC, up0_mac(), (SERVER6, port), (UPLINK6, 8080), 0x02);
            assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &syn).0, SHOT);
        }
        assert_eq!(drops(&fx.dp, 0, DropReason::Internal), 2);
        assert!(
            fx.dp.conntrack6().unwrap().is_empty(),
            "no entry for a flow whose packet was dropped"
        );
    });
}
