//! IPv6 (issue 13): the control plane's map API, and the container-side
//! path on hand-made frames.

use std::net::Ipv6Addr;

use dnet_common::{Network6, ipv6::NET6_F_NAT};

use super::*;

pub(super) fn ip6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

pub(super) fn net6(subnet: &str, gw: &str, flags: u32) -> (Ipv6Network, Network6) {
    let n: Ipv6Network = subnet.parse().unwrap();
    let v = Network6 {
        subnet: n.network().octets(),
        gateway: ip6(gw).octets(),
        flags,
        prefix_len: n.prefix(),
        active: 1,
        _pad: [0; 2],
    };
    (n, v)
}

#[test]
fn the_ipv6_map_api_writes_reads_and_clears_every_entry() {
    in_fresh_netns(|| {
        let mut fx = fixture(0);
        let dp = &mut fx.dp;
        let (s1, n1) = net6("fd00:1::/64", "fd00:1::1", NET6_F_NAT);
        let (s2, n2) = net6("fd00:2::/64", "fd00:2::1", 0);
        dp.set_network6(1, s1, &n1).unwrap();
        dp.set_network6(2, s2, &n2).unwrap();
        assert_eq!(dp.network6(1).unwrap(), n1);
        assert_eq!(dp.network6(2).unwrap(), n2);
        assert_eq!(dp.network6(3).unwrap(), Network6::default(), "IPv4 only");
        let mut subnets = dp.subnets6().unwrap();
        subnets.sort();
        assert_eq!(subnets, vec![(s1, 1), (s2, 2)]);

        let (a, b) = (fx.a, fx.b);
        dp.set_endpoint6(a.ifindex, ip6("fd00:1::2"), &a).unwrap();
        dp.set_endpoint6(b.ifindex, ip6("fd00:1::3"), &b).unwrap();
        let mut eps = dp.endpoints6().unwrap();
        eps.sort_by_key(|(addr, _)| *addr);
        assert_eq!(eps, vec![(ip6("fd00:1::2"), a), (ip6("fd00:1::3"), b)]);
        let mut addrs = dp.endpoint6_addrs().unwrap();
        addrs.sort();
        assert_eq!(
            addrs,
            vec![(a.ifindex, ip6("fd00:1::2")), (b.ifindex, ip6("fd00:1::3"))]
        );
        // The IPv4 entries are the IPv4 API's: untouched.
        assert_eq!(dp.endpoints(m::ENDPOINTS_BY_IF).unwrap().len(), 3);

        // By interface only, then by address only; missing entries are fine.
        dp.clear_endpoint6(None, Some(a.ifindex)).unwrap();
        assert_eq!(
            dp.endpoint6_addrs().unwrap(),
            vec![(b.ifindex, ip6("fd00:1::3"))]
        );
        assert_eq!(dp.endpoints6().unwrap().len(), 2);
        dp.clear_endpoint6(Some(ip6("fd00:1::2")), None).unwrap();
        dp.clear_endpoint6(Some(ip6("fd00:1::2")), Some(a.ifindex))
            .unwrap();
        dp.clear_endpoint6(Some(ip6("fd00:1::3")), Some(b.ifindex))
            .unwrap();
        assert!(dp.endpoints6().unwrap().is_empty());
        assert!(dp.endpoint6_addrs().unwrap().is_empty());

        dp.clear_network6(1, Some(s1)).unwrap();
        dp.clear_network6(1, Some(s1)).unwrap();
        assert_eq!(dp.network6(1).unwrap(), Network6::default());
        assert_eq!(dp.subnets6().unwrap(), vec![(s2, 2)]);
        // Without the subnet: the entry goes, the trie keeps it (its id may
        // be another network's now); clear_subnet6 takes it.
        dp.clear_network6(2, None).unwrap();
        assert_eq!(dp.network6(2).unwrap(), Network6::default());
        assert_eq!(dp.subnets6().unwrap(), vec![(s2, 2)]);
        dp.clear_subnet6(s2).unwrap();
        assert!(dp.subnets6().unwrap().is_empty());
        // The IPv4 side never moved.
        assert_eq!(dp.network(1).unwrap().active, 1);
        assert_eq!(dp.subnets().unwrap().len(), 2);
    });
}

#[test]
fn the_ipv6_maps_are_pinned_and_adopted_by_a_restarted_datapath() {
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
        .expect("mount a bpffs");
        let (s1, n1) = net6("fd00:1::/64", "fd00:1::1", 0);
        let ep = Endpoint {
            ifindex: 7,
            addr_be: ipv4_be(ip("172.17.0.2")),
            net_id: 1,
            slot: 1,
            mac: docker_mac(ip("172.17.0.2")),
            _pad: [0; 2],
        };
        {
            let mut dp = Datapath::load(Some(&dir)).unwrap();
            dp.set_network6(1, s1, &n1).unwrap();
            dp.set_endpoint6(7, ip6("fd00:1::2"), &ep).unwrap();
        }
        for name in [
            m::ENDPOINTS6_BY_IP,
            m::ENDPOINT6_BY_IF,
            m::NETWORKS6,
            m::SUBNETS6,
        ] {
            assert!(dir.join("maps").join(name).exists(), "{name}");
        }
        let dp = Datapath::load(Some(&dir)).unwrap();
        assert_eq!(dp.network6(1).unwrap(), n1);
        assert_eq!(dp.subnets6().unwrap(), vec![(s1, 1)]);
        assert_eq!(dp.endpoints6().unwrap(), vec![(ip6("fd00:1::2"), ep)]);
        assert_eq!(dp.endpoint6_addrs().unwrap(), vec![(7, ip6("fd00:1::2"))]);
    });
    drop(tmp);
}

// ---- The container-side path on hand-made frames. ----

pub(super) const ICMPV6: u8 = 58;
pub(super) const UDP: u8 = 17;
const HOP: u8 = 0;
const DEST: u8 = 60;
pub(super) const NS: u8 = 135;
pub(super) const NA: u8 = 136;

pub(super) const GW6: &str = "fd00:1::1";
pub(super) const A6: &str = "fd00:1::2";
pub(super) const B6: &str = "fd00:1::3";
pub(super) const C6: &str = "fd00:2::2";
pub(super) const A_LL: &str = "fe80::42:acff:fe11:2";

/// The IPv4 fixture, dual-stack: network 1 is also fd00:1::/64 (gateway
/// fd00:1::1, flags `flags6`), network 2 fd00:2::/64; A is fd00:1::2, B
/// fd00:1::3, C fd00:2::2.
pub(super) fn fixture6(flags1: u32, flags6: u32) -> Fixture {
    let mut fx = fixture(flags1);
    dual_stack(&mut fx, flags6);
    fx
}

/// Makes the fixture's networks and endpoints dual-stack, as
/// [`fixture6`] describes.
pub(super) fn dual_stack(fx: &mut Fixture, flags6: u32) {
    let (s1, n1) = net6("fd00:1::/64", GW6, flags6);
    let (s2, n2) = net6("fd00:2::/64", "fd00:2::1", NET6_F_NAT);
    fx.dp.set_network6(1, s1, &n1).unwrap();
    fx.dp.set_network6(2, s2, &n2).unwrap();
    for (e, a) in [(fx.a, A6), (fx.b, B6), (fx.c, C6)] {
        fx.dp.set_endpoint6(e.ifindex, ip6(a), &e).unwrap();
    }
}

/// The ICMPv6/UDP checksum of `l4` (its checksum field zero or not) over
/// the pseudo-header: the sum a receiver checks.
pub(super) fn sum6(s: Ipv6Addr, d: Ipv6Addr, proto: u8, l4: &[u8]) -> u16 {
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&s.octets());
    pseudo.extend_from_slice(&d.octets());
    pseudo.extend_from_slice(&(l4.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, proto]);
    csum::fold(csum::sum(l4, csum::sum(&pseudo, 0)))
}

/// An IPv6 frame: `exts` extension headers (hop-by-hop first, then
/// destination options, 8 bytes each, padding only) before `l4` of
/// protocol `proto`, whose checksum (at `check_at`, if any) is filled in.
#[allow(clippy::too_many_arguments)]
pub(super) fn frame6(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    s: Ipv6Addr,
    d: Ipv6Addr,
    hop: u8,
    exts: usize,
    proto: u8,
    mut l4: Vec<u8>,
    check_at: Option<usize>,
) -> Vec<u8> {
    if let Some(at) = check_at {
        l4[at..at + 2].copy_from_slice(&[0, 0]);
        let c = sum6(s, d, proto, &l4);
        l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
    }
    let mut payload = Vec::new();
    for i in 0..exts {
        let next = if i + 1 == exts { proto } else { DEST };
        // Next header, length 0 (8 bytes), a PadN option of 4 bytes.
        payload.extend_from_slice(&[next, 0, 1, 4, 0, 0, 0, 0]);
    }
    payload.extend_from_slice(&l4);
    let mut f = eth(dst_mac, src_mac, 0x86dd);
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    f.push(if exts > 0 { HOP } else { proto });
    f.push(hop);
    f.extend_from_slice(&s.octets());
    f.extend_from_slice(&d.octets());
    f.extend_from_slice(&payload);
    f
}

pub(super) fn udp6(src_mac: [u8; 6], dst_mac: [u8; 6], s: &str, d: &str, exts: usize) -> Vec<u8> {
    let mut l4 = Vec::new();
    l4.extend_from_slice(&4000u16.to_be_bytes());
    l4.extend_from_slice(&5000u16.to_be_bytes());
    l4.extend_from_slice(&12u16.to_be_bytes());
    l4.extend_from_slice(&[0, 0]);
    l4.extend_from_slice(b"dnet");
    frame6(src_mac, dst_mac, ip6(s), ip6(d), 64, exts, UDP, l4, Some(6))
}

/// An ICMPv6 message of `ty` with `body` after the 4-byte header.
pub(super) fn icmp6(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    s: &str,
    d: &str,
    hop: u8,
    ty: u8,
    body: &[u8],
) -> Vec<u8> {
    let mut l4 = vec![ty, 0, 0, 0];
    l4.extend_from_slice(body);
    frame6(
        src_mac,
        dst_mac,
        ip6(s),
        ip6(d),
        hop,
        0,
        ICMPV6,
        l4,
        Some(2),
    )
}

/// The solicited-node multicast address of `target` and its MAC.
pub(super) fn solicited_node(target: Ipv6Addr) -> (Ipv6Addr, [u8; 6]) {
    let t = target.octets();
    let a = Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | t[13] as u16,
        u16::from_be_bytes([t[14], t[15]]),
    );
    (a, [0x33, 0x33, 0xff, t[13], t[14], t[15]])
}

/// A Neighbor Solicitation from `from` (A's MAC) for `target`, to its
/// solicited-node address, with A's link-layer address option when `slla`.
pub(super) fn ns(mac: [u8; 6], from: &str, target: &str, slla: bool) -> Vec<u8> {
    let t = ip6(target);
    let (dst, dst_mac) = solicited_node(t);
    let mut body = vec![0; 4];
    body.extend_from_slice(&t.octets());
    if slla {
        body.extend_from_slice(&[1, 1]);
        body.extend_from_slice(&mac);
    }
    let mut l4 = vec![NS, 0, 0, 0];
    l4.extend_from_slice(&body);
    frame6(mac, dst_mac, ip6(from), dst, 255, 0, ICMPV6, l4, Some(2))
}

/// The advertisement dnet must answer with, byte for byte: from `target`
/// (MAC `mac`) to the asker, flags `flags`, one target link-layer option.
pub(super) fn na(
    asker_mac: [u8; 6],
    asker: &str,
    target: &str,
    mac: [u8; 6],
    flags: u8,
) -> Vec<u8> {
    let mut body = vec![flags, 0, 0, 0];
    body.extend_from_slice(&ip6(target).octets());
    body.extend_from_slice(&[2, 1]);
    body.extend_from_slice(&mac);
    let mut l4 = vec![NA, 0, 0, 0];
    l4.extend_from_slice(&body);
    frame6(
        mac,
        asker_mac,
        ip6(target),
        ip6(asker),
        255,
        0,
        ICMPV6,
        l4,
        Some(2),
    )
}

/// The checksum of the ICMPv6 message in `frame` (no extension headers)
/// verifies.
pub(super) fn icmp6_checksum_ok(frame: &[u8]) -> bool {
    let s = Ipv6Addr::from(<[u8; 16]>::try_from(&frame[22..38]).unwrap());
    let d = Ipv6Addr::from(<[u8; 16]>::try_from(&frame[38..54]).unwrap());
    let len = u16::from_be_bytes([frame[18], frame[19]]) as usize;
    sum6(s, d, ICMPV6, &frame[54..54 + len]) == 0
}

#[test]
fn a_neighbor_solicitation_for_the_gateway_gets_an_advertisement_built_in_ebpf() {
    in_fresh_netns(|| {
        let fx = fixture6(0, NET6_F_NAT);
        let a = fx.a.mac;
        // From the address and from the link-local one; with the asker's
        // link-layer option (the frame keeps its length) and without (a
        // unicast probe: it grows by the answer's option).
        for (from, slla) in [(A6, true), (A6, false), (A_LL, true), (A_LL, false)] {
            let (v, out) = run(&fx.dp, &ns(a, from, GW6, slla));
            assert_eq!(v, REDIRECT, "from {from}: back out to the asker");
            let want = na(a, from, GW6, GW_MAC, 0xe0);
            assert_eq!(
                out, want,
                "from {from}, option {slla}: R|S|O, the gateway's MAC"
            );
            assert!(icmp6_checksum_ok(&out), "from {from}");
        }
        assert_eq!(fx.dp.stats(1).unwrap().drops.iter().sum::<u64>(), 0);
    });
}

#[test]
fn a_neighbor_solicitation_for_a_peer_is_answered_with_the_peers_mac() {
    in_fresh_netns(|| {
        let fx = fixture6(0, NET6_F_NAT);
        let (v, out) = run(&fx.dp, &ns(fx.a.mac, A6, B6, true));
        assert_eq!(v, REDIRECT);
        assert_eq!(out, na(fx.a.mac, A6, B6, fx.b.mac, 0x60), "S|O, B's MAC");
        assert!(icmp6_checksum_ok(&out));
        // The checksum moves with what it covers: a one-bit change of the
        // answer breaks it.
        let mut bad = out.clone();
        bad[85] ^= 1;
        assert!(!icmp6_checksum_ok(&bad));
    });
}

#[test]
fn solicitations_dnet_must_not_answer_are_dropped_with_their_reason() {
    in_fresh_netns(|| {
        let fx = fixture6(0, NET6_F_NAT);
        let a = fx.a.mac;
        let mut hop64 = ns(a, A6, GW6, true);
        hop64[21] = 64;
        let mut code1 = ns(a, A6, GW6, true);
        code1[55] = 1;
        let cases = [
            (
                "its own address",
                ns(a, A6, A6, true),
                DropReason::NdpAdvertisement,
            ),
            ("DAD", ns(a, "::", A6, false), DropReason::NdpAdvertisement),
            (
                "DAD for the gateway",
                ns(a, "::", GW6, false),
                DropReason::NdpAdvertisement,
            ),
            (
                "another network's endpoint",
                ns(a, A6, C6, true),
                DropReason::NdpUnknownTarget,
            ),
            (
                "another network's gateway",
                ns(a, A6, "fd00:2::1", true),
                DropReason::NdpUnknownTarget,
            ),
            (
                "an unused address",
                ns(a, A6, "fd00:1::99", true),
                DropReason::NdpUnknownTarget,
            ),
            (
                "a peer's source",
                ns(a, B6, GW6, true),
                DropReason::SpoofedIp,
            ),
            ("a routed hop limit", hop64, DropReason::Malformed),
            ("a nonzero code", code1, DropReason::Malformed),
        ];
        for (what, frame, reason) in cases {
            let before = drops(&fx.dp, 1, reason);
            let (v, out) = run(&fx.dp, &frame);
            assert_eq!(v, SHOT, "{what}");
            assert_eq!(out, frame, "{what}: nothing rewritten");
            assert_eq!(
                drops(&fx.dp, 1, reason),
                before + 1,
                "{what}: {}",
                reason.name()
            );
        }
    });
}

#[test]
fn router_discovery_redirects_mld_and_advertisements_from_a_container_are_dropped() {
    in_fresh_netns(|| {
        let fx = fixture6(0, NET6_F_NAT);
        let a = fx.a.mac;
        let all_routers = ([0x33, 0x33, 0, 0, 0, 2], "ff02::2");
        let all_nodes = ([0x33, 0x33, 0, 0, 0, 1], "ff02::1");
        // An MLDv2 report as the kernel sends it: behind a hop-by-hop
        // header (router alert), from the link-local address.
        let mut mld = vec![143, 0, 0, 0, 0, 0, 0, 1, 4, 0, 0, 0];
        mld.extend_from_slice(&ip6("ff02::fb").octets());
        let mld2 = frame6(
            a,
            [0x33, 0x33, 0, 0, 0, 0x16],
            ip6(A_LL),
            ip6("ff02::16"),
            1,
            1,
            ICMPV6,
            mld,
            Some(2),
        );
        let mut redirect_body = vec![0; 4];
        redirect_body.extend_from_slice(&ip6(GW6).octets());
        redirect_body.extend_from_slice(&ip6(B6).octets());
        let cases = [
            (
                "RS",
                icmp6(a, all_routers.0, A_LL, all_routers.1, 255, 133, &[0; 4]),
                DropReason::NdpRouterSolicitation,
            ),
            (
                "RS from its address",
                icmp6(a, all_routers.0, A6, all_routers.1, 255, 133, &[0; 4]),
                DropReason::NdpRouterSolicitation,
            ),
            (
                "RA",
                icmp6(
                    a,
                    all_nodes.0,
                    A_LL,
                    all_nodes.1,
                    255,
                    134,
                    &[64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0],
                ),
                DropReason::NdpRouterAdvertisement,
            ),
            (
                "RA from its address",
                icmp6(
                    a,
                    all_nodes.0,
                    A6,
                    all_nodes.1,
                    255,
                    134,
                    &[64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0],
                ),
                DropReason::NdpRouterAdvertisement,
            ),
            (
                "redirect",
                icmp6(a, fx.b.mac, A_LL, B6, 255, 137, &redirect_body),
                DropReason::NdpRedirect,
            ),
            ("MLDv2 report", mld2, DropReason::Mld),
            (
                "MLDv1 report from ::",
                icmp6(
                    a,
                    [0x33, 0x33, 0, 0, 0, 0xfb],
                    "::",
                    "ff02::fb",
                    1,
                    131,
                    &[0; 20],
                ),
                DropReason::Mld,
            ),
            (
                "NA",
                icmp6(
                    a,
                    all_nodes.0,
                    A6,
                    all_nodes.1,
                    255,
                    NA,
                    &[
                        0x20, 0, 0, 0, 0xfd, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
                    ],
                ),
                DropReason::NdpAdvertisement,
            ),
        ];
        for (what, frame, reason) in cases {
            let before = drops(&fx.dp, 1, reason);
            assert_eq!(run(&fx.dp, &frame).0, SHOT, "{what}");
            assert_eq!(
                drops(&fx.dp, 1, reason),
                before + 1,
                "{what}: {}",
                reason.name()
            );
        }
        assert_eq!(fx.dp.stats(2).unwrap().tx_packets, 0, "nothing reached B");
    });
}

#[test]
fn an_ipv6_source_other_than_the_endpoints_own_is_dropped() {
    in_fresh_netns(|| {
        let fx = fixture6(0, NET6_F_NAT);
        for src in ["fd00:1::7", B6, A_LL, "::", "2001:db8::2"] {
            let before = drops(&fx.dp, 1, DropReason::SpoofedIp);
            let (v, _) = run(&fx.dp, &udp6(fx.a.mac, GW_MAC, src, B6, 0));
            assert_eq!(v, SHOT, "{src}");
            assert_eq!(drops(&fx.dp, 1, DropReason::SpoofedIp), before + 1, "{src}");
        }
        // A foreign MAC is still the first check.
        let (v, _) = run(&fx.dp, &udp6([2, 0x42, 1, 2, 3, 4], GW_MAC, A6, B6, 0));
        assert_eq!(v, SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::SpoofedMac), 1);
        assert_eq!(fx.dp.stats(2).unwrap().tx_packets, 0, "nothing reached B");
    });
}

#[test]
fn a_peer_gets_ipv6_through_redirect_peer_with_its_mac() {
    in_fresh_netns(|| {
        let fx = fixture6(0, NET6_F_NAT);
        let frame = udp6(fx.a.mac, GW_MAC, A6, B6, 0);
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
fn extension_headers_are_walked_to_a_bound() {
    in_fresh_netns(|| {
        let fx = fixture6(0, NET6_F_NAT);
        let (a, b) = (fx.a.mac, fx.b.mac);
        for n in 1..=4 {
            assert_eq!(
                run(&fx.dp, &udp6(a, b, A6, B6, n)).0,
                REDIRECT,
                "{n} headers"
            );
        }
        // Five: past the bound, whatever follows.
        assert_eq!(run(&fx.dp, &udp6(a, b, A6, B6, 5)).0, SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::Ipv6ExtHeaders), 1);
        // An RA behind two headers is still an RA.
        let mut ra = vec![134, 0, 0, 0];
        ra.extend_from_slice(&[64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0]);
        let ra = frame6(
            a,
            [0x33, 0x33, 0, 0, 0, 1],
            ip6(A_LL),
            ip6("ff02::1"),
            255,
            2,
            ICMPV6,
            ra,
            Some(2),
        );
        assert_eq!(run(&fx.dp, &ra).0, SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::NdpRouterAdvertisement), 1);
        // A header whose length runs past the payload.
        let mut long = udp6(a, b, A6, B6, 1);
        long[55] = 200; // 1608 bytes
        assert_eq!(run(&fx.dp, &long).0, SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::Ipv6ExtHeaders), 2);
        // A later fragment (no L4 header) goes on; so does a first one.
        for (offset, what) in [(0x0001u16, "first"), (0x0011, "later")] {
            let mut l4 = vec![UDP, 0];
            l4.extend_from_slice(&offset.to_be_bytes());
            l4.extend_from_slice(&[0, 0, 0, 7]);
            l4.extend_from_slice(&[0x0f, 0xa0, 0x13, 0x88, 0, 12, 0, 0, b'd', b'n', b'e', b't']);
            let f = frame6(a, b, ip6(A6), ip6(B6), 64, 0, 44, l4, None);
            assert_eq!(run(&fx.dp, &f).0, REDIRECT, "{what} fragment");
        }
    });
}

#[test]
fn malformed_ipv6_is_dropped() {
    in_fresh_netns(|| {
        let fx = fixture6(0, NET6_F_NAT);
        let good = udp6(fx.a.mac, fx.b.mac, A6, B6, 0);
        let mut long_payload = good.clone();
        long_payload[19] += 1; // one byte more than the packet holds
        let mut v4 = good.clone();
        v4[14] = 0x40;
        let cases = [
            // (BPF_PROG_TEST_RUN refuses a frame cut inside the fixed
            // header itself: the shortest ones a program can meet.)
            (
                "no room for the ICMPv6 header",
                frame6(
                    fx.a.mac,
                    GW_MAC,
                    ip6(A6),
                    ip6(GW6),
                    255,
                    0,
                    ICMPV6,
                    vec![],
                    None,
                ),
            ),
            ("payload length beyond the packet", long_payload),
            ("an ICMPv6 type in the padding only", {
                let mut f = frame6(
                    fx.a.mac,
                    GW_MAC,
                    ip6(A6),
                    ip6(GW6),
                    255,
                    0,
                    ICMPV6,
                    vec![],
                    None,
                );
                f.extend_from_slice(&[128, 0, 0, 0]);
                f
            }),
            ("version 4", v4),
            (
                "an NS cut short",
                ns(fx.a.mac, A6, GW6, false)[..14 + 40 + 20].to_vec(),
            ),
        ];
        for (i, (what, frame)) in cases.iter().enumerate() {
            let (v, _) = run(&fx.dp, frame);
            assert_eq!(v, SHOT, "{what}");
            assert_eq!(
                drops(&fx.dp, 1, DropReason::Malformed),
                i as u64 + 1,
                "{what}"
            );
        }
        // Trailing bytes beyond the payload (Ethernet padding) are fine.
        let mut padded = good.clone();
        padded.extend_from_slice(&[0; 6]);
        assert_eq!(run(&fx.dp, &padded).0, REDIRECT);
    });
}

#[test]
fn ipv6_keeps_networks_apart_and_honours_icc_and_internal() {
    in_fresh_netns(|| {
        let fx = fixture6(0, NET6_F_NAT);
        let send = |dp: &Datapath, d: &str| run(dp, &udp6(fx.a.mac, GW_MAC, A6, d, 0)).0;
        assert_eq!(send(&fx.dp, C6), SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::CrossNetwork), 1);
        assert_eq!(
            send(&fx.dp, "fd00:2::77"),
            SHOT,
            "an unused address of another network"
        );
        assert_eq!(drops(&fx.dp, 1, DropReason::CrossNetwork), 2);
        assert_eq!(send(&fx.dp, "fd00:1::99"), SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::NoEndpoint), 1);
        assert_eq!(fx.dp.stats(fx.c.slot).unwrap().tx_packets, 0);
        // The gateway and another network's gateway go up the host stack.
        assert_eq!(send(&fx.dp, GW6), OK);
        assert_eq!(send(&fx.dp, "fd00:2::1"), OK);
        // The world, on a NAT66 network, is not reached untranslated: with
        // no uplink address to translate to (none here), nothing leaves.
        assert_eq!(send(&fx.dp, "2001:db8::1"), SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::NoNatAddress), 1);
        // Link-local destinations lead nowhere through dnet.
        assert_eq!(send(&fx.dp, "fe80::1"), SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::NoRoute), 1);
        // Multicast fans out and goes up, as IPv4's does.
        assert_eq!(
            run(
                &fx.dp,
                &udp6(fx.a.mac, [0x33, 0x33, 0, 0, 0, 0xfb], A6, "ff02::fb", 0)
            )
            .0,
            OK
        );

        // A routed network's world traffic is forwarded by dnet through
        // the uplink (`routed6`): without one, it goes nowhere.
        let fx = fixture6(0, 0);
        assert_eq!(send(&fx.dp, "2001:db8::1"), SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::NoRoute), 1);

        let fx = fixture6(NET_F_NO_ICC, NET6_F_NAT);
        assert_eq!(send(&fx.dp, B6), SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::IccDisabled), 1);
        assert_eq!(send(&fx.dp, GW6), OK, "the gateway stays reachable");

        let fx = fixture6(NET_F_INTERNAL, 0);
        assert_eq!(send(&fx.dp, B6), REDIRECT, "its own subnet is reachable");
        assert_eq!(send(&fx.dp, GW6), OK);
        assert_eq!(send(&fx.dp, "fd00:2::1"), SHOT, "another gateway is beyond");
        assert_eq!(send(&fx.dp, "2001:db8::1"), SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::Internal), 2);
    });
}

#[test]
fn ipv6_of_an_ipv4_only_network_or_endpoint_is_dropped_as_before() {
    in_fresh_netns(|| {
        // No IPv6 anywhere: the fixture of the IPv4 tests.
        let fx = fixture(0);
        let frames = |a: [u8; 6]| [udp6(a, GW_MAC, A6, B6, 0), ns(a, A6, GW6, true)];
        for f in frames(fx.a.mac) {
            assert_eq!(run(&fx.dp, &f).0, SHOT);
        }
        assert_eq!(drops(&fx.dp, 1, DropReason::Ipv6), 2);
        // A dual-stack network, A without an IPv6 address.
        let mut fx = fixture6(0, NET6_F_NAT);
        fx.dp
            .clear_endpoint6(Some(ip6(A6)), Some(fx.a.ifindex))
            .unwrap();
        for f in frames(fx.a.mac) {
            assert_eq!(run(&fx.dp, &f).0, SHOT);
        }
        assert_eq!(drops(&fx.dp, 1, DropReason::Ipv6), 2);
        // A's network made IPv4-only again.
        let mut fx = fixture6(0, NET6_F_NAT);
        fx.dp
            .clear_network6(1, Some("fd00:1::/64".parse().unwrap()))
            .unwrap();
        for f in frames(fx.a.mac) {
            assert_eq!(run(&fx.dp, &f).0, SHOT);
        }
        assert_eq!(drops(&fx.dp, 1, DropReason::Ipv6), 2);
        assert_eq!(fx.dp.stats(2).unwrap().tx_packets, 0);
    });
}

/// Runs a command in the calling thread's namespace; its stdout.
fn cmd_out(prog: &str, args: &str) -> String {
    let o = std::process::Command::new(prog)
        .args(args.split_whitespace())
        .output()
        .unwrap_or_else(|e| panic!("{prog}: {e}"));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn a_real_kernel_takes_the_advertisements_dnet_builds() {
    in_fresh_netns(|| {
        // A veth pair: h0, the host side with the programs, and c0, whose
        // kernel plays the container (same namespace: the gateway and the
        // peer are not addresses of it). The container's address keeps its
        // prefix route, so it solicits the peer as well as the gateway.
        let mut fx = fixture6(0, NET6_F_NAT);
        ip_cmd("link add h0 type veth peer name c0");
        let a_mac = "02:42:ac:11:00:02";
        ip_cmd(&format!("link set c0 address {a_mac}"));
        ip_cmd("link set h0 address 02:42:ac:11:00:01");
        ip_cmd("link set h0 up");
        ip_cmd("link set c0 up");
        ip_cmd(&format!("-6 addr add {A6}/64 dev c0 nodad"));
        let a = Endpoint {
            ifindex: ifindex("h0"),
            ..fx.a
        };
        fx.dp.set_endpoint(&a).unwrap();
        fx.dp.set_endpoint6(a.ifindex, ip6(A6), &a).unwrap();
        fx.dp.attach_endpoint("h0").unwrap();

        // Each echo request makes c0 solicit the address; the echo itself
        // goes nowhere (to the host stack, or to a peer that is not there).
        for target in [GW6, B6] {
            let _ = cmd_out("ping", &format!("-6 -c 1 -W 1 -I c0 {target}"));
        }
        let neigh = cmd_out("ip", "-6 neigh show dev c0");
        assert!(
            neigh.contains(&format!("{GW6} lladdr 02:42:ac:11:00:01 router")),
            "the gateway resolved to its MAC, as a router: {neigh}"
        );
        let b_mac =
            fx.b.mac
                .iter()
                .map(|x| format!("{x:02x}"))
                .collect::<Vec<_>>()
                .join(":");
        assert!(
            neigh.contains(&format!("{B6} lladdr {b_mac}")),
            "the peer resolved to its MAC: {neigh}"
        );
        let s = fx.dp.stats(a.slot).unwrap();
        assert_eq!(s.drops[DropReason::Malformed as usize], 0);
        assert_eq!(s.drops[DropReason::NdpUnknownTarget as usize], 0);
    });
}

/// An ICMPv6 error body: the 4 bytes after the header (unused, MTU or
/// pointer) and the quoted packet, an IPv6 header from `qs` to `qd` and 8
/// bytes of UDP.
fn quote6(qs: &str, qd: &str) -> Vec<u8> {
    let mut b = vec![0, 0, 0x05, 0x00];
    b.extend_from_slice(&[0x60, 0, 0, 0, 0, 12, UDP, 64]);
    b.extend_from_slice(&ip6(qs).octets());
    b.extend_from_slice(&ip6(qd).octets());
    b.extend_from_slice(&[0x13, 0x88, 0x0f, 0xa0, 0, 12, 0, 0]);
    b
}

#[test]
fn a_container_sends_icmpv6_errors_only_about_packets_it_was_sent() {
    in_fresh_netns(|| {
        let fx = fixture6(0, 0);
        let (a, b) = (fx.a.mac, fx.b.mac);
        // Destination unreachable, packet too big, time exceeded, parameter
        // problem, each about a packet B sent to A: delivered to B.
        for ty in 1..=4u8 {
            let f = icmp6(a, b, A6, B6, 64, ty, &quote6(B6, A6));
            assert_eq!(run(&fx.dp, &f).0, REDIRECT, "type {ty}");
        }
        let forged = [
            // B's flow to the gateway (the host), told to B.
            ("a peer's flow to the host", B6, quote6(B6, GW6)),
            // B's flow to C, told to B.
            ("a peer's flow to another", B6, quote6(B6, C6)),
            // About a packet to A, but told to someone other than its sender.
            (
                "told to another than the sender",
                B6,
                quote6("fd00:1::7", A6),
            ),
            // To the host about the host's flow to B.
            ("the host's flow to a peer", GW6, quote6(GW6, B6)),
            // No room for the quoted IPv6 header.
            ("a quote cut short", B6, quote6(B6, A6)[..4 + 39].to_vec()),
        ];
        for (i, (what, to, body)) in forged.iter().enumerate() {
            for ty in 1..=4u8 {
                let f = icmp6(a, b, A6, to, 64, ty, body);
                assert_eq!(run(&fx.dp, &f).0, SHOT, "{what}, type {ty}");
            }
            assert_eq!(
                drops(&fx.dp, 1, DropReason::IcmpErrorForged),
                (i as u64 + 1) * 4,
                "{what}"
            );
        }
        assert_eq!(
            fx.dp.stats(2).unwrap().tx_packets,
            4,
            "only the own errors reached B"
        );
        // Informational messages are not errors: an echo request goes on.
        let echo = icmp6(a, b, A6, B6, 64, 128, &[0, 1, 0, 1]);
        assert_eq!(run(&fx.dp, &echo).0, REDIRECT);
    });
}

#[test]
fn an_l4_header_the_payload_does_not_hold_is_malformed() {
    in_fresh_netns(|| {
        let fx = fixture6(0, NET6_F_NAT);
        let (a, b) = (fx.a.mac, fx.b.mac);
        let tcp = |len: usize| {
            let mut l4 = vec![0; len];
            l4[..4].copy_from_slice(&[0x0f, 0xa0, 0x13, 0x88]);
            if len >= 20 {
                l4[12] = 0x50;
                l4[13] = 0x02; // SYN
            }
            frame6(a, b, ip6(A6), ip6(B6), 64, 0, 6, l4, None)
        };
        // Whole headers go on: UDP's 8 bytes, TCP's 20.
        let mut udp8 = udp6(a, b, A6, B6, 0);
        udp8.truncate(14 + 40 + 8);
        udp8[18..20].copy_from_slice(&8u16.to_be_bytes());
        assert_eq!(run(&fx.dp, &udp8).0, REDIRECT, "an 8-byte UDP header");
        assert_eq!(run(&fx.dp, &tcp(20)).0, REDIRECT, "a 20-byte TCP header");

        // The payload length says 4 bytes of UDP, the rest is padding.
        let mut udp4 = udp6(a, b, A6, B6, 0);
        udp4[18..20].copy_from_slice(&4u16.to_be_bytes());
        // An echo request whose last 4 header bytes lie beyond the payload.
        let mut echo4 = icmp6(a, b, A6, B6, 64, 128, &[0, 1, 0, 1]);
        echo4[18..20].copy_from_slice(&4u16.to_be_bytes());
        // A first fragment holding only 4 bytes of its ICMPv6 header (the
        // rest in the next fragment, RFC 7112's case), behind one
        // extension header.
        let mut frag = vec![ICMPV6, 0, 0, 1, 0, 0, 0, 7];
        frag.extend_from_slice(&[128, 0, 0, 0]);
        let frag = frame6(a, b, ip6(A6), ip6(B6), 64, 1, 44, frag, None);
        let cases = [
            ("4 bytes of UDP", udp4),
            ("12 bytes of TCP", tcp(12)),
            ("4 bytes of an ICMPv6 header", echo4),
            ("a first fragment cutting the ICMPv6 header", frag),
        ];
        for (i, (what, f)) in cases.iter().enumerate() {
            assert_eq!(run(&fx.dp, f).0, SHOT, "{what}");
            assert_eq!(
                drops(&fx.dp, 1, DropReason::Malformed),
                i as u64 + 1,
                "{what}"
            );
        }
        assert_eq!(
            fx.dp.stats(2).unwrap().tx_packets,
            2,
            "only whole headers reached B"
        );
    });
}
