//! Routed IPv6 (`-o gateway_mode_ipv6=routed`): a container's own address
//! to and from the world, forwarded by the datapath (not the host's
//! forwarding), the world let in on published ports only, as Docker's
//! routed mode.

use dnet_common::{Service6, ServiceKey6, network::NET_F_INTERNAL};

use super::{
    icmp6::{
        assert_answer, assert_time_exceeded_from_uplink, too_big_and_expiring_are_answered,
        udp6_sized,
    },
    ipv6::{A6, B6, dual_stack, frame6, ip6},
    nat6::{ICMPV6, SERVER6, TCP, UDP, echo6, parse6_checked, tcp6, udp6_to},
    *,
};

/// The NAT fixture (an uplink, a world beyond it), network 1 dual-stack
/// and routed, with `flags1` on network 1.
pub(super) fn routed6_fixture(flags1: u32) -> Fixture {
    let mut fx = nat_fixture_on(flags1, 50000, 50009);
    dual_stack(&mut fx, 0);
    fx
}

/// Container A's port `port` published, as the daemon does on a routed
/// network: at the container's own address and port.
pub(super) fn publish_at_a(dp: &mut Datapath, port: u16, proto: u8) {
    dp.set_service6(
        &ServiceKey6 {
            addr: ip6(A6).octets(),
            port_be: port.to_be(),
            proto,
            _pad: 0,
        },
        &Service6 {
            backend: ip6(A6).octets(),
            backend_port_be: port.to_be(),
            _pad: 0,
        },
    )
    .unwrap();
}

/// The kinds `dnet conntrack ls` shows for the IPv6 table's flows.
fn kinds(dp: &Datapath) -> Vec<String> {
    let es = dp.conntrack6().unwrap();
    crate::engine::conntrack::flows(&es)
        .iter()
        .map(|f| crate::engine::conntrack::view(f, 0, &Default::default()).kind)
        .collect()
}

#[test]
fn routed6_leaves_with_the_containers_own_address_and_its_answer_comes_back() {
    in_fresh_netns(|| {
        let fx = routed6_fixture(0);
        // The host's forwarding is off (a fresh namespace's): dnet forwards.
        assert_eq!(
            std::fs::read_to_string("/proc/sys/net/ipv6/conf/all/forwarding").unwrap(),
            "0\n"
        );
        let frame = udp6_to(fx.a.mac, GW_MAC, (A6, 4000), (SERVER6, 53));
        let (v, out) = run(&fx.dp, &frame);
        assert_eq!(v, REDIRECT, "out through the uplink");
        let p = parse6_checked(&out);
        assert_eq!((p.saddr, p.port(0)), (ip6(A6), 4000), "untranslated");
        assert_eq!((p.daddr, p.port(2)), (ip6(SERVER6), 53));
        assert_eq!(p.hop, 63, "routed: hop limit down by one");
        assert_eq!((p.dst_mac, p.src_mac), (WORLD_MAC, up0_mac()));
        assert_eq!(fx.dp.conntrack6().unwrap().len(), 2, "a tracked flow");
        assert_eq!(kinds(&fx.dp), ["routed"], "not snat: nothing translated");
        assert_eq!(fx.dp.stats(1).unwrap().translated, 0);

        let reply = udp6_to(WORLD_MAC, up0_mac(), (SERVER6, 53), (A6, 4000));
        let (v, back) = run_prog(&fx.dp, PROG_FROM_UPLINK, &reply);
        assert_eq!(v, REDIRECT, "into the container");
        let b = parse6_checked(&back);
        assert_eq!((b.saddr, b.port(0)), (ip6(SERVER6), 53));
        assert_eq!((b.daddr, b.port(2)), (ip6(A6), 4000));
        assert_eq!((b.dst_mac, b.src_mac), (fx.a.mac, GW_MAC));
        assert_eq!(b.hop, 63);

        // Echo, both ways.
        let req = echo6(fx.a.mac, GW_MAC, A6, SERVER6, 128, 0x1234);
        let (v, out) = run(&fx.dp, &req);
        assert_eq!(v, REDIRECT);
        let p = parse6_checked(&out);
        assert_eq!((p.saddr, p.port(4)), (ip6(A6), 0x1234));
        let rep = echo6(WORLD_MAC, up0_mac(), SERVER6, A6, 129, 0x1234);
        assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &rep).0, REDIRECT);
    });
}

#[test]
fn routed6_lets_the_world_in_on_published_ports_only() {
    in_fresh_netns(|| {
        let mut fx = routed6_fixture(0);
        publish_at_a(&mut fx.dp, 80, TCP);
        // A port published on every host address (the uplink's) is the
        // host's, not the container's own port 8080.
        fx.dp
            .set_service6(
                &ServiceKey6 {
                    addr: [0; 16],
                    port_be: 8080u16.to_be(),
                    proto: TCP,
                    _pad: 0,
                },
                &Service6 {
                    backend: ip6(A6).octets(),
                    backend_port_be: 8080u16.to_be(),
                    _pad: 0,
                },
            )
            .unwrap();
        let client = (SERVER6, 41000);
        let syn = tcp6(WORLD_MAC, up0_mac(), client, (A6, 80), 0x02);
        let (v, back) = run_prog(&fx.dp, PROG_FROM_UPLINK, &syn);
        assert_eq!(v, REDIRECT, "a published port");
        let b = parse6_checked(&back);
        assert_eq!(
            (b.saddr, b.port(0)),
            (ip6(SERVER6), 41000),
            "the client's own"
        );
        assert_eq!((b.daddr, b.port(2)), (ip6(A6), 80));
        assert_eq!((b.dst_mac, b.hop), (fx.a.mac, 63));
        // The container's answer leaves as it is.
        let synack = tcp6(fx.a.mac, GW_MAC, (A6, 80), client, 0x12);
        let (v, out) = run(&fx.dp, &synack);
        assert_eq!(v, REDIRECT);
        let p = parse6_checked(&out);
        assert_eq!((p.saddr, p.port(0)), (ip6(A6), 80));
        assert_eq!((p.daddr, p.port(2)), (ip6(SERVER6), 41000));
        assert_eq!(kinds(&fx.dp), ["routed"], "not dnat: nothing translated");

        // Not published: refused, counted on the container.
        for f in [
            tcp6(WORLD_MAC, up0_mac(), client, (A6, 81), 0x02),
            tcp6(WORLD_MAC, up0_mac(), client, (A6, 8080), 0x02),
            udp6_to(WORLD_MAC, up0_mac(), client, (A6, 80)),
        ] {
            assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &f).0, SHOT);
        }
        assert_eq!(drops(&fx.dp, 1, DropReason::NotPublished), 3);
        // A stray segment opens nothing.
        let ack = tcp6(WORLD_MAC, up0_mac(), (SERVER6, 41001), (A6, 80), 0x10);
        assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &ack).0, SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::CtNoFlow), 1);
        // ICMPv6 echo is let in (as Docker's routed mode), and answered,
        // both untracked: the world could fill the table with pings.
        let flows = fx.dp.conntrack6().unwrap();
        let req = echo6(WORLD_MAC, up0_mac(), SERVER6, A6, 128, 0x77);
        let (v, back) = run_prog(&fx.dp, PROG_FROM_UPLINK, &req);
        assert_eq!(v, REDIRECT);
        let b = parse6_checked(&back);
        assert_eq!((b.saddr, b.daddr, b.hop), (ip6(SERVER6), ip6(A6), 63));
        assert_eq!((b.dst_mac, b.src_mac), (fx.a.mac, GW_MAC));
        assert_eq!(fx.dp.conntrack6().unwrap(), flows, "no entry for a ping");
        let rep = echo6(fx.a.mac, GW_MAC, A6, SERVER6, 129, 0x77);
        let (v, out) = run(&fx.dp, &rep);
        assert_eq!(v, REDIRECT, "the reply leaves without a flow");
        let o = parse6_checked(&out);
        assert_eq!((o.saddr, o.daddr, o.hop), (ip6(A6), ip6(SERVER6), 63));
        assert_eq!((o.dst_mac, o.src_mac), (WORLD_MAC, up0_mac()));
        assert_eq!(o.l4[0], 129);
        assert_eq!(fx.dp.conntrack6().unwrap(), flows);
        // An echo reply from the world that no ping of the container asked
        // for is not let in.
        let stray = echo6(WORLD_MAC, up0_mac(), SERVER6, A6, 129, 0x78);
        assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &stray).0, SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::CtNoFlow), 2);
        // A packet too big (ICMPv6 errors are let in): delivered.
        let mut ptb = vec![2, 0, 0, 0, 0, 0, 5, 0];
        ptb.extend_from_slice(&out[14..14 + 48]);
        let ptb = frame6(
            WORLD_MAC,
            up0_mac(),
            ip6("2001:2::1"),
            ip6(A6),
            64,
            0,
            ICMPV6,
            ptb,
            Some(2),
        );
        assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &ptb).0, REDIRECT);
        // A hop limit that runs out here.
        let mut l4 = vec![0u8; 20];
        l4[0..2].copy_from_slice(&41002u16.to_be_bytes());
        l4[2..4].copy_from_slice(&80u16.to_be_bytes());
        l4[12] = 0x50;
        l4[13] = 0x02;
        let dying = frame6(
            WORLD_MAC,
            up0_mac(),
            ip6(SERVER6),
            ip6(A6),
            1,
            0,
            TCP,
            l4,
            Some(16),
        );
        let (v, out) = run_prog(&fx.dp, PROG_FROM_UPLINK, &dying);
        assert_eq!(v, REDIRECT, "answered from the uplink's address");
        assert_time_exceeded_from_uplink(&out, &dying, dying.len() - 14);
        assert_eq!(drops(&fx.dp, 1, DropReason::TtlExceeded), 1);
        // So is the next packet of a flow under way, and an echo request;
        // an ICMPv6 error is dropped, never answered with one.
        let mut late = tcp6(WORLD_MAC, up0_mac(), client, (A6, 80), 0x10);
        late[21] = 1;
        let (v, out) = run_prog(&fx.dp, PROG_FROM_UPLINK, &late);
        assert_eq!(v, REDIRECT);
        assert_time_exceeded_from_uplink(&out, &late, late.len() - 14);
        let mut ping = echo6(WORLD_MAC, up0_mac(), SERVER6, A6, 128, 0x79);
        ping[21] = 1;
        let (v, out) = run_prog(&fx.dp, PROG_FROM_UPLINK, &ping);
        assert_eq!(v, REDIRECT);
        assert_time_exceeded_from_uplink(&out, &ping, ping.len() - 14);
        let mut dying_ptb = ptb.clone();
        dying_ptb[21] = 1;
        assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &dying_ptb).0, SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::TtlExceeded), 4);
        // Without a global IPv6 address on the uplink to answer from: dropped
        // unanswered (not left to the host).
        let mut cfg = fx.dp.config().unwrap();
        cfg.uplink_addr6 = [0; 16];
        fx.dp.set_config(&cfg).unwrap();
        assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &late).0, SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::TtlExceeded), 5);
        cfg.uplink_addr6 = ip6(UPLINK6).octets();
        fx.dp.set_config(&cfg).unwrap();
        // Another endpoint's unpublished port, and an unused address of
        // the subnet (the host's: it does not forward).
        let syn_b = tcp6(WORLD_MAC, up0_mac(), client, (B6, 80), 0x02);
        assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &syn_b).0, SHOT);
        let unused = tcp6(WORLD_MAC, up0_mac(), client, ("fd00:1::99", 80), 0x02);
        assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &unused).0, OK);
    });
}

#[test]
fn routed6_internal_and_nat66_networks_are_not_reached_from_the_world() {
    in_fresh_netns(|| {
        let mut fx = routed6_fixture(NET_F_INTERNAL);
        publish_at_a(&mut fx.dp, 80, TCP);
        let syn = tcp6(WORLD_MAC, up0_mac(), (SERVER6, 41000), (A6, 80), 0x02);
        assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &syn).0, SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::Internal), 1);
        // Nor does an internal network's container reach the world.
        let out = udp6_to(fx.a.mac, GW_MAC, (A6, 4000), (SERVER6, 53));
        assert_eq!(run(&fx.dp, &out).0, SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::Internal), 2);
        // C is on network 2, NAT66: its own address is the host's matter.
        let to_c = udp6_to(WORLD_MAC, up0_mac(), (SERVER6, 53), ("fd00:2::2", 53));
        assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &to_c).0, OK);
        assert!(fx.dp.conntrack6().unwrap().is_empty());
    });
}

#[test]
fn a_routed_packet_too_big_for_the_uplink_is_answered_with_its_mtu() {
    in_fresh_netns(|| {
        let fx = routed6_fixture(0);
        // Out as it is: the container's own address.
        too_big_and_expiring_are_answered(&fx, ip6(A6));
        // An ICMPv6 error too big (about a datagram from the server) is
        // dropped, never answered with one.
        let mut udp = vec![0u8; 1408];
        udp[..2].copy_from_slice(&53u16.to_be_bytes());
        udp[2..4].copy_from_slice(&4000u16.to_be_bytes());
        udp[4..6].copy_from_slice(&1408u16.to_be_bytes());
        let quote = frame6(
            WORLD_MAC,
            up0_mac(),
            ip6(SERVER6),
            ip6(A6),
            64,
            0,
            UDP,
            udp,
            Some(6),
        );
        let mut l4 = vec![1u8, 4, 0, 0, 0, 0, 0, 0];
        l4.extend_from_slice(&quote[14..14 + 1400]);
        let err = frame6(
            fx.a.mac,
            GW_MAC,
            ip6(A6),
            ip6(SERVER6),
            64,
            0,
            ICMPV6,
            l4,
            Some(2),
        );
        assert_eq!(run(&fx.dp, &err).0, SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::FragNeeded), 3);
    });
}

/// A route whose next hop is not resolved yet (no neighbour entry): a
/// packet too big for the uplink is answered "packet too big" all the same
/// (the kernel's lookup checks the MTU without a neighbour only when told
/// the packet's length), and takes no flow; one that fits goes out, the
/// kernel resolving the next hop.
#[test]
fn a_routed_packet_too_big_for_an_unresolved_next_hop_is_answered_with_its_mtu() {
    in_fresh_netns(|| {
        let fx = routed6_fixture(0);
        ip_cmd("link set up0 mtu 1400");
        ip_cmd("-6 route replace default via 2001:2::99 dev up0");
        let big = udp6_sized(&fx, 4000, 1400);
        let (v, out) = run(&fx.dp, &big);
        assert_eq!(v, REDIRECT, "answered");
        assert_answer(&fx, &out, 2, 1400, &big, 48);
        assert_eq!(drops(&fx.dp, 1, DropReason::FragNeeded), 1);
        assert!(fx.dp.conntrack6().unwrap().is_empty());
        let (v, out) = run(&fx.dp, &udp6_sized(&fx, 4000, 1352));
        assert_eq!(v, REDIRECT);
        assert_eq!(parse6_checked(&out).saddr, ip6(A6), "out as it is");
        assert_eq!(fx.dp.conntrack6().unwrap().len(), 2, "one flow");
    });
}

/// A TCP SYN from `s` to `d` behind `exts` extension headers (hop-by-hop
/// first: see `frame6`).
fn tcp6_syn_behind(src_mac: [u8; 6], s: (&str, u16), d: (&str, u16), exts: usize) -> Vec<u8> {
    let mut l4 = Vec::new();
    l4.extend_from_slice(&s.1.to_be_bytes());
    l4.extend_from_slice(&d.1.to_be_bytes());
    l4.extend_from_slice(&1u32.to_be_bytes());
    l4.extend_from_slice(&0u32.to_be_bytes());
    l4.extend_from_slice(&[0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    frame6(
        src_mac,
        GW_MAC,
        ip6(s.0),
        ip6(d.0),
        64,
        exts,
        TCP,
        l4,
        Some(16),
    )
}

#[test]
fn routed6_routes_by_the_protocol_past_the_extension_headers() {
    in_fresh_netns(|| {
        let fx = routed6_fixture(0);
        // Policy routing by protocol: TCP to the world by a table of its
        // own, nothing else (the main table's default is unreachable).
        ip_cmd("-6 route del default");
        ip_cmd("-6 route add unreachable default");
        ip_cmd("-6 route add default via 2001:2::1 dev up0 table 100");
        ip_cmd("-6 rule add ipproto tcp table 100");
        let udp = udp6_to(fx.a.mac, GW_MAC, (A6, 4000), (SERVER6, 53));
        assert_eq!(run(&fx.dp, &udp).0, SHOT, "no route for UDP");
        assert_eq!(drops(&fx.dp, 1, DropReason::NoRoute), 1);
        // A SYN behind a hop-by-hop header (and a destination options
        // one) is TCP's: routed by TCP's rule, tracked as TCP.
        for exts in [0, 1, 2] {
            let sport = 41000 + exts as u16;
            let syn = tcp6_syn_behind(fx.a.mac, (A6, sport), (SERVER6, 80), exts);
            let (v, out) = run(&fx.dp, &syn);
            assert_eq!(v, REDIRECT, "{exts} extension headers: out by TCP's route");
            assert_eq!((&out[0..6], &out[6..12]), (&WORLD_MAC[..], &up0_mac()[..]));
            assert!(
                fx.dp
                    .conntrack6()
                    .unwrap()
                    .iter()
                    .any(|(k, _)| k.proto == TCP && k.sport_be == sport.to_be()),
                "{exts} extension headers: a TCP flow"
            );
        }
        assert_eq!(drops(&fx.dp, 1, DropReason::NoRoute), 1);
    });
}
