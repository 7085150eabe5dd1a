//! Hairpin over IPv6 (issue 13): a container reaching a port published
//! over IPv6 at `[uplink6]:H`, its own or another network's container's,
//! on hand-made frames.

use std::net::Ipv6Addr;

use dnet_common::{Service6, ServiceKey6, network::NET_F_INTERNAL};

use super::{
    ipv6::{A6, C6, GW6, dual_stack, frame6, ip6, sum6},
    nat6::{ICMPV6, Pkt6, TCP, UDP, nat6_fixture, parse6_checked, tcp6, udp6_to},
    *,
};

/// C's IPv6 gateway (network 2).
const GW6_2: &str = "fd00:2::1";

/// `-p 8080:80` (TCP and UDP) of the container at `backend`, on every
/// host address.
fn publish6_8080_to(dp: &mut Datapath, backend: &str) {
    for proto in [TCP, UDP] {
        dp.set_service6(
            &ServiceKey6 {
                addr: [0; 16],
                port_be: 8080u16.to_be(),
                proto,
                _pad: 0,
            },
            &Service6 {
                backend: ip6(backend).octets(),
                backend_port_be: 80u16.to_be(),
                _pad: 0,
            },
        )
        .unwrap();
    }
}

#[test]
fn hairpin6_tcp_reaches_the_containers_own_published_port_and_back() {
    in_fresh_netns(|| {
        let mut fx = nat6_fixture();
        publish6_8080_to(&mut fx.dp, A6);
        let syn = tcp6(fx.a.mac, GW_MAC, (A6, 40000), (UPLINK6, 8080), 0x02);
        let (v, into) = run(&fx.dp, &syn);
        assert_eq!(v, REDIRECT, "into the backend");
        let p = parse6_checked(&into);
        assert_eq!(p.saddr, ip6(GW6), "from the backend's gateway");
        let nat_port = p.port(0);
        assert!((50000..=50009).contains(&nat_port), "NAT port {nat_port}");
        assert_eq!((p.daddr, p.port(2)), (ip6(A6), 80), "to [A6]:80");
        assert_eq!((p.dst_mac, p.src_mac), (fx.a.mac, GW_MAC));
        assert_eq!(p.hop, 63, "routed: hop limit down by one");
        let ct = fx.dp.conntrack6().unwrap();
        assert_eq!(ct.len(), 2, "one entry per direction");
        assert!(fx.dp.conntrack().unwrap().is_empty(), "IPv4's untouched");

        // The answer to the gateway goes back as the published port.
        let synack = tcp6(fx.a.mac, GW_MAC, (A6, 80), (GW6, nat_port), 0x12);
        let (v, back) = run(&fx.dp, &synack);
        assert_eq!(v, REDIRECT);
        let b = parse6_checked(&back);
        assert_eq!((b.saddr, b.port(0)), (ip6(UPLINK6), 8080));
        assert_eq!((b.daddr, b.port(2)), (ip6(A6), 40000));
        assert_eq!((b.dst_mac, b.src_mac), (fx.a.mac, GW_MAC));

        // The opener's next segment takes the same flow.
        let ack = tcp6(fx.a.mac, GW_MAC, (A6, 40000), (UPLINK6, 8080), 0x10);
        let (v, again) = run(&fx.dp, &ack);
        assert_eq!(v, REDIRECT);
        let a = parse6_checked(&again);
        assert_eq!((a.saddr, a.port(0)), (ip6(GW6), nat_port));
        assert_eq!(fx.dp.conntrack6().unwrap().len(), 2, "still one flow");
    });
}

#[test]
fn hairpin6_udp_reaches_a_container_of_another_network_and_back() {
    in_fresh_netns(|| {
        let mut fx = nat6_fixture();
        publish6_8080_to(&mut fx.dp, C6);
        let q = udp6_to(fx.a.mac, GW_MAC, (A6, 5353), (UPLINK6, 8080));
        let (v, into) = run(&fx.dp, &q);
        assert_eq!(v, REDIRECT, "into C, on network 2");
        let p = parse6_checked(&into);
        assert_eq!(p.saddr, ip6(GW6_2), "from C's own gateway");
        let nat_port = p.port(0);
        assert_eq!((p.daddr, p.port(2)), (ip6(C6), 80));
        assert_eq!(
            (p.dst_mac, p.src_mac),
            (fx.c.mac, docker_mac(ip("10.9.0.1")))
        );
        assert_eq!(fx.dp.stats(fx.c.slot).unwrap().translated, 1);

        // C answers from the test interface.
        let c = Endpoint {
            ifindex: TEST_IFINDEX,
            ..fx.c
        };
        fx.dp.set_endpoint(&c).unwrap();
        fx.dp.set_endpoint6(TEST_IFINDEX, ip6(C6), &c).unwrap();
        let a = udp6_to(c.mac, GW_MAC, (C6, 80), (GW6_2, nat_port));
        let (v, back) = run(&fx.dp, &a);
        assert_eq!(v, REDIRECT, "into A");
        let b = parse6_checked(&back);
        assert_eq!((b.saddr, b.port(0)), (ip6(UPLINK6), 8080));
        assert_eq!((b.daddr, b.port(2)), (ip6(A6), 5353));
        assert_eq!(b.dst_mac, fx.a.mac);
    });
}

#[test]
fn hairpin6_leaves_what_is_not_published_to_the_host() {
    in_fresh_netns(|| {
        let mut fx = nat6_fixture();
        publish6_8080_to(&mut fx.dp, A6);
        // Another port of the uplink, a segment that opens no flow, and the
        // gateway's own services: up the host stack, untouched, no entry.
        for f in [
            tcp6(fx.a.mac, GW_MAC, (A6, 40000), (UPLINK6, 8081), 0x02),
            tcp6(fx.a.mac, GW_MAC, (A6, 40000), (UPLINK6, 8080), 0x10),
            udp6_to(fx.a.mac, GW_MAC, (A6, 5353), (GW6, 53)),
            tcp6(fx.a.mac, GW_MAC, (A6, 40000), (GW6, 50000), 0x12),
        ] {
            assert_eq!(run(&fx.dp, &f), (OK, f.clone()));
        }
        assert!(fx.dp.conntrack6().unwrap().is_empty());
        // A hop limit that runs out here takes no port.
        let mut syn = tcp6(fx.a.mac, GW_MAC, (A6, 40000), (UPLINK6, 8080), 0x02);
        syn[21] = 1;
        assert_eq!(run(&fx.dp, &syn).0, SHOT);
        assert_eq!(drops(&fx.dp, fx.a.slot, DropReason::TtlExceeded), 1);
        assert!(fx.dp.conntrack6().unwrap().is_empty());
    });
}

#[test]
fn hairpin6_is_refused_from_an_internal_network() {
    in_fresh_netns(|| {
        let mut fx = nat_fixture_on(NET_F_INTERNAL, 50000, 50009);
        dual_stack(&mut fx, 0);
        publish6_8080_to(&mut fx.dp, C6);
        let syn = tcp6(fx.a.mac, GW_MAC, (A6, 40000), (UPLINK6, 8080), 0x02);
        assert_eq!(run(&fx.dp, &syn).0, SHOT);
        assert_eq!(drops(&fx.dp, fx.a.slot, DropReason::Internal), 1);
        assert!(fx.dp.conntrack6().unwrap().is_empty());
    });
}

#[test]
fn hairpin6_flows_go_with_the_uplinks_old_ipv6_address() {
    in_fresh_netns(|| {
        let mut fx = nat6_fixture();
        publish6_8080_to(&mut fx.dp, C6);
        let syn = tcp6(fx.a.mac, GW_MAC, (A6, 40000), (UPLINK6, 8080), 0x02);
        assert_eq!(run(&fx.dp, &syn).0, REDIRECT, "a hairpin flow into C");
        let before = fx.dp.conntrack6().unwrap();
        assert_eq!(before.len(), 2);
        // The uplink's IPv6 address changes (2001:2::2 to 2001:2::3), and
        // the engine forgets what names the old one
        // (`Engine::set_uplink`: `keys_with` the old address).
        ip_cmd("-6 addr del 2001:2::2/64 dev up0");
        ip_cmd("-6 addr add 2001:2::3/64 dev up0 nodad");
        let mut cfg = fx.dp.config().unwrap();
        let old = cfg.uplink_addr6;
        cfg.uplink_addr6 = ip6("2001:2::3").octets();
        fx.dp.set_config(&cfg).unwrap();
        let keys = crate::engine::conntrack::keys_with(&before, old);
        // Both entries of the hairpin flow: it was opened to the old
        // address (its first entry's key) and answers from it (its reply
        // entry's translation).
        assert_eq!(keys.len(), 2, "the hairpin flow's two entries");
        fx.dp.ct_remove(&keys).unwrap();
        assert!(fx.dp.conntrack6().unwrap().is_empty());
        // Kept, the flow would have met A's next segment to the old
        // address on its way out (no longer the uplink's, it goes to
        // NAT66): translated to C and sent out of the uplink. Gone, the
        // segment opens nothing.
        let ack = tcp6(fx.a.mac, GW_MAC, (A6, 40000), (UPLINK6, 8080), 0x10);
        assert_eq!(run(&fx.dp, &ack).0, SHOT);
        assert_eq!(drops(&fx.dp, fx.a.slot, DropReason::CtNoFlow), 1);
        // The port is reached at the new address.
        let syn = tcp6(fx.a.mac, GW_MAC, (A6, 40001), ("2001:2::3", 8080), 0x02);
        let (v, into) = run(&fx.dp, &syn);
        assert_eq!(v, REDIRECT);
        let p = parse6_checked(&into);
        assert_eq!((p.saddr, p.daddr), (ip6(GW6_2), ip6(C6)));
    });
}

#[test]
fn hairpin6_into_an_internal_network_takes_no_entry() {
    in_fresh_netns(|| {
        let mut fx = nat6_fixture();
        // A port that leads into an internal network (the daemon never
        // publishes one there; the datapath refuses it all the same).
        publish6_8080_to(&mut fx.dp, C6);
        make_internal(&mut fx.dp, 2, "10.9.0.0/24");
        for sport in [40000, 40001] {
            let syn = tcp6(fx.a.mac, GW_MAC, (A6, sport), (UPLINK6, 8080), 0x02);
            assert_eq!(run(&fx.dp, &syn).0, SHOT);
        }
        assert_eq!(drops(&fx.dp, fx.a.slot, DropReason::Internal), 2);
        assert!(
            fx.dp.conntrack6().unwrap().is_empty(),
            "no entry, port or charge for a flow whose packet was dropped"
        );
    });
}

/// The ICMPv6 error `ty`/`code` from `s` to `d` (a container's, to the
/// gateway's MAC), quoting `quote` (an IPv6 packet, from its header).
fn error6(mac: [u8; 6], s: &str, d: &str, ty: u8, code: u8, quote: &[u8]) -> Vec<u8> {
    let mut l4 = vec![ty, code, 0, 0, 0, 0, 0, 0];
    l4.extend_from_slice(quote);
    frame6(mac, GW_MAC, ip6(s), ip6(d), 64, 0, ICMPV6, l4, Some(2))
}

/// The quoted packet of the ICMPv6 error `p`: its addresses, its ports,
/// its transport segment (whose checksum must verify).
fn quote6(p: &Pkt6) -> (Ipv6Addr, u16, Ipv6Addr, u16, Vec<u8>) {
    let q = &p.l4[8..];
    let s = Ipv6Addr::from(<[u8; 16]>::try_from(&q[8..24]).unwrap());
    let d = Ipv6Addr::from(<[u8; 16]>::try_from(&q[24..40]).unwrap());
    let l4 = q[40..].to_vec();
    assert_eq!(sum6(s, d, q[6], &l4), 0, "the quoted checksum verifies");
    let port = |at: usize| u16::from_be_bytes([l4[at], l4[at + 1]]);
    (s, port(0), d, port(2), l4)
}

#[test]
fn hairpin6_icmpv6_errors_are_translated_both_ways() {
    in_fresh_netns(|| {
        let mut fx = nat6_fixture();
        publish6_8080_to(&mut fx.dp, A6);
        // A, as the client, to its own published port.
        let q = udp6_to(fx.a.mac, GW_MAC, (A6, 5353), (UPLINK6, 8080));
        let (v, into) = run(&fx.dp, &q);
        assert_eq!(v, REDIRECT);
        let nat_port = parse6_checked(&into).port(0);
        let ct_before = fx.dp.conntrack6().unwrap();

        // A, as the backend, says port unreachable about what it was sent
        // (from the gateway): the client hears it from [uplink6], about
        // what it sent.
        let e = error6(fx.a.mac, A6, GW6, 1, 4, &into[14..]);
        let (v, back) = run(&fx.dp, &e);
        assert_eq!(v, REDIRECT, "into the client");
        let p = parse6_checked(&back);
        assert_eq!((p.saddr, p.daddr), (ip6(UPLINK6), ip6(A6)));
        assert_eq!((p.dst_mac, p.src_mac), (fx.a.mac, GW_MAC));
        assert_eq!(&p.l4[..2], &[1, 4]);
        let (s, sp, d, dp, l4) = quote6(&p);
        assert_eq!((s, sp, d, dp), (ip6(A6), 5353, ip6(UPLINK6), 8080));
        assert_eq!(l4, q[54..], "the quote is what the client sent");
        assert_eq!(
            fx.dp.conntrack6().unwrap(),
            ct_before,
            "an error changes no flow"
        );

        // The backend's answer reaches the client from [uplink6]:8080; the
        // client says port unreachable about it: the backend hears it from
        // its gateway, about what it sent.
        let a = udp6_to(fx.a.mac, GW_MAC, (A6, 80), (GW6, nat_port));
        let (v, answer) = run(&fx.dp, &a);
        assert_eq!(v, REDIRECT);
        let ct_before = fx.dp.conntrack6().unwrap();
        let e = error6(fx.a.mac, A6, UPLINK6, 1, 4, &answer[14..]);
        let (v, back) = run(&fx.dp, &e);
        assert_eq!(v, REDIRECT, "into the backend");
        let p = parse6_checked(&back);
        assert_eq!((p.saddr, p.daddr), (ip6(GW6), ip6(A6)));
        let (s, sp, d, dp, l4) = quote6(&p);
        assert_eq!((s, sp, d, dp), (ip6(A6), 80, ip6(GW6), nat_port));
        assert_eq!(l4, a[54..], "the quote is what the backend sent");
        assert_eq!(
            fx.dp.conntrack6().unwrap(),
            ct_before,
            "an error changes no flow"
        );

        // An error to the gateway or the uplink's address about no hairpin
        // flow is the host's, untouched.
        let stray = udp6_to(GW_MAC, fx.a.mac, (GW6, 4000), (A6, 99));
        let e = error6(fx.a.mac, A6, GW6, 1, 4, &stray[14..]);
        assert_eq!(run(&fx.dp, &e), (OK, e.clone()));
        let stray = udp6_to(GW_MAC, fx.a.mac, (UPLINK6, 4000), (A6, 99));
        let e = error6(fx.a.mac, A6, UPLINK6, 1, 4, &stray[14..]);
        assert_eq!(run(&fx.dp, &e), (OK, e.clone()));
    });
}
