//! ICMPv6 errors across NAT66 (issue 13), on hand-made frames: the
//! world's errors about a container's NAT66 flow translated into it, a
//! container's errors about a flow to its published port translated out,
//! and "packet too big" / "time exceeded" dnet sends at its own hop.

use std::net::Ipv6Addr;

use super::{
    dnat6::publish6_8080_to_a,
    ipv6::{A6, GW6, frame6, ip6, sum6},
    nat6::{Pkt6, SERVER6, UDP, nat6_fixture, parse6_checked, tcp6, udp6_to},
    *,
};

const ICMPV6: u8 = 58;
/// A router of the world, between the uplink and the server.
const ROUTER6: &str = "2001:2:1::1";

/// The ICMPv6 error `ty`/`code` with the 4-byte `word` (MTU, pointer),
/// quoting `quote` (an IPv6 packet, from its header), from `s` to `d`.
#[allow(clippy::too_many_arguments)]
fn error6(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    s: &str,
    d: &str,
    ty: u8,
    code: u8,
    word: u32,
    quote: &[u8],
) -> Vec<u8> {
    let mut l4 = vec![ty, code, 0, 0];
    l4.extend_from_slice(&word.to_be_bytes());
    l4.extend_from_slice(quote);
    frame6(src_mac, dst_mac, ip6(s), ip6(d), 64, 0, ICMPV6, l4, Some(2))
}

/// The quoted packet of ICMPv6 error `p`: addresses, ports (or the echo
/// identifier at 4), and whether its transport checksum verifies (over the
/// whole quoted segment, which the tests quote whole).
struct Quote {
    saddr: Ipv6Addr,
    daddr: Ipv6Addr,
    l4: Vec<u8>,
    csum_ok: bool,
}

fn quote_of(p: &Pkt6) -> Quote {
    let q = &p.l4[8..];
    assert_eq!(q[0] >> 4, 6, "a quoted IPv6 header");
    let len = u16::from_be_bytes([q[4], q[5]]) as usize;
    let saddr = Ipv6Addr::from(<[u8; 16]>::try_from(&q[8..24]).unwrap());
    let daddr = Ipv6Addr::from(<[u8; 16]>::try_from(&q[24..40]).unwrap());
    let l4 = q[40..].to_vec();
    let csum_ok = l4.len() == len && sum6(saddr, daddr, q[6], &l4) == 0;
    Quote {
        saddr,
        daddr,
        l4,
        csum_ok,
    }
}

fn port(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// A UDP datagram of `payload` bytes from A to the server.
pub(super) fn udp6_sized(fx: &Fixture, sport: u16, payload: usize) -> Vec<u8> {
    let mut l4 = Vec::new();
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&53u16.to_be_bytes());
    l4.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
    l4.extend_from_slice(&[0, 0]);
    l4.extend(std::iter::repeat_n(0x5a, payload));
    frame6(
        fx.a.mac,
        GW_MAC,
        ip6(A6),
        ip6(SERVER6),
        64,
        0,
        UDP,
        l4,
        Some(6),
    )
}

/// "Packet too big, MTU 1280" from a router of the world to the uplink's
/// address, quoting `frame` (an Ethernet frame) whole.
fn too_big_from_the_world(frame: &[u8]) -> Vec<u8> {
    error6(
        WORLD_MAC,
        up0_mac(),
        ROUTER6,
        UPLINK6,
        2,
        0,
        1280,
        &frame[14..],
    )
}

/// A router of the world answers `out` (a frame NAT66 sent on to the
/// uplink) with "packet too big, MTU 1280", quoting it whole: the answer
/// reaches A, from the router, with its type and MTU kept and its ICMPv6
/// checksum verified over the new pseudo-header. Gives the frame A gets.
fn too_big_from_the_world_to_a(fx: &Fixture, out: &[u8]) -> Pkt6 {
    let (v, back) = run_prog(&fx.dp, PROG_FROM_UPLINK, &too_big_from_the_world(out));
    assert_eq!(v, REDIRECT, "into the container");
    let p = parse6_checked(&back);
    assert_eq!((p.saddr, p.daddr), (ip6(ROUTER6), ip6(A6)));
    assert_eq!(&p.l4[..2], &[2, 0], "packet too big");
    assert_eq!(&p.l4[4..8], &1280u32.to_be_bytes(), "the MTU kept");
    p
}

#[test]
fn a_packet_too_big_from_the_world_reaches_the_nat66_container_translated() {
    in_fresh_netns(|| {
        let fx = nat6_fixture();
        let syn = tcp6(fx.a.mac, GW_MAC, (A6, 40000), (SERVER6, 80), 0x02);
        let (v, out) = run(&fx.dp, &syn);
        assert_eq!(v, REDIRECT);
        let nat_port = parse6_checked(&out).port(0);
        let ct_before = fx.dp.conntrack6().unwrap();
        // A router of the world says the translated segment is too big,
        // quoting it whole as it left.
        let p = too_big_from_the_world_to_a(&fx, &out);
        assert_eq!((p.dst_mac, p.src_mac), (fx.a.mac, GW_MAC));
        assert_eq!(p.hop, 63, "routed: hop limit down by one");
        let q = quote_of(&p);
        assert_eq!((q.saddr, port(&q.l4, 0)), (ip6(A6), 40000), "as A sent it");
        assert_eq!((q.daddr, port(&q.l4, 2)), (ip6(SERVER6), 80));
        assert!(q.csum_ok, "the quoted TCP checksum verifies");
        assert_eq!(
            &q.l4[4..],
            &syn[54 + 4..],
            "the rest of the quote untouched"
        );
        assert_ne!(nat_port, 40000, "translated, then translated back");
        assert_eq!(
            fx.dp.conntrack6().unwrap(),
            ct_before,
            "an error changes no flow"
        );

        // Port unreachable about a UDP flow, and "time exceeded" about an
        // echo request, the same way.
        let (_, u) = run(
            &fx.dp,
            &udp6_to(fx.a.mac, GW_MAC, (A6, 4000), (SERVER6, 53)),
        );
        let unreach = error6(WORLD_MAC, up0_mac(), SERVER6, UPLINK6, 1, 4, 0, &u[14..]);
        let (v, back) = run_prog(&fx.dp, PROG_FROM_UPLINK, &unreach);
        assert_eq!(v, REDIRECT);
        let p = parse6_checked(&back);
        assert_eq!(p.daddr, ip6(A6));
        let q = quote_of(&p);
        assert_eq!((q.saddr, port(&q.l4, 0)), (ip6(A6), 4000));
        assert!(q.csum_ok, "the quoted UDP checksum verifies");

        let mut l4 = vec![128, 0, 0, 0];
        l4.extend_from_slice(&0x1234u16.to_be_bytes());
        l4.extend_from_slice(&[0, 1]);
        let echo = frame6(
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
        let (_, e) = run(&fx.dp, &echo);
        let te = error6(WORLD_MAC, up0_mac(), ROUTER6, UPLINK6, 3, 0, 0, &e[14..]);
        let (v, back) = run_prog(&fx.dp, PROG_FROM_UPLINK, &te);
        assert_eq!(v, REDIRECT);
        let q = quote_of(&parse6_checked(&back));
        assert_eq!(
            (q.saddr, port(&q.l4, 4)),
            (ip6(A6), 0x1234),
            "its identifier"
        );
        assert!(q.csum_ok, "the quoted ICMPv6 checksum verifies");
    });
}

/// `f` (an IPv6 frame without extension headers) with a destination-
/// options header (a PadN option) before its transport header: the
/// transport checksum, over the addresses and the transport segment only,
/// still verifies.
fn with_dest_opts(f: &[u8]) -> Vec<u8> {
    const DEST: u8 = 60;
    let mut g = f[..54].to_vec();
    g.extend_from_slice(&[f[20], 0, 1, 4, 0, 0, 0, 0]);
    g.extend_from_slice(&f[54..]);
    g[20] = DEST;
    let len = u16::from_be_bytes([f[18], f[19]]) + 8;
    g[18..20].copy_from_slice(&len.to_be_bytes());
    g
}

#[test]
fn a_packet_too_big_quoting_extension_headers_reaches_the_nat66_container_translated() {
    in_fresh_netns(|| {
        let fx = nat6_fixture();
        // A's SYN carries destination options; NAT66 translates it behind
        // them.
        let syn = with_dest_opts(&tcp6(fx.a.mac, GW_MAC, (A6, 40000), (SERVER6, 80), 0x02));
        let (v, out) = run(&fx.dp, &syn);
        assert_eq!(v, REDIRECT);
        assert_eq!(out[20], 60, "the options kept");
        let nat_port = u16::from_be_bytes([out[62], out[63]]);
        assert_ne!(nat_port, 40000);
        // A router of the world quotes it whole as it left.
        let p = too_big_from_the_world_to_a(&fx, &out);
        // The quote: as A sent it, options and all (its hop limit aside:
        // it left a hop further on).
        let q = &p.l4[8..];
        assert_eq!(q.len(), syn.len() - 14);
        assert_eq!(&q[..7], &syn[14..21], "the quoted header's first bytes");
        assert_eq!(q[7], 63);
        assert_eq!(
            Ipv6Addr::from(<[u8; 16]>::try_from(&q[8..24]).unwrap()),
            ip6(A6)
        );
        assert_eq!(
            Ipv6Addr::from(<[u8; 16]>::try_from(&q[24..40]).unwrap()),
            ip6(SERVER6)
        );
        assert_eq!(&q[40..48], &syn[54..62], "the options untouched");
        let tcp = &q[48..];
        assert_eq!((port(tcp, 0), port(tcp, 2)), (40000, 80));
        assert_eq!(tcp, &syn[62..], "the segment as A sent it");
        assert_eq!(
            sum6(ip6(A6), ip6(SERVER6), 6, tcp),
            0,
            "the quoted TCP checksum verifies"
        );
    });
}

#[test]
fn an_icmpv6_error_about_no_nat66_flow_is_not_translated() {
    in_fresh_netns(|| {
        let fx = nat6_fixture();
        // From the world: about a packet no flow sent (the host's own, say):
        // the host's, untouched.
        let host = udp6_to(up0_mac(), WORLD_MAC, (UPLINK6, 40001), (SERVER6, 53));
        let ptb = too_big_from_the_world(&host);
        let (v, back) = run_prog(&fx.dp, PROG_FROM_UPLINK, &ptb);
        assert_eq!(v, OK, "the host's");
        assert_eq!(back, ptb, "untouched");
        // Quoting a packet another address sent: not the uplink's to hear.
        let other = udp6_to(up0_mac(), WORLD_MAC, ("2001:2::9", 4000), (SERVER6, 53));
        let e = error6(
            WORLD_MAC,
            up0_mac(),
            ROUTER6,
            UPLINK6,
            1,
            0,
            0,
            &other[14..],
        );
        assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &e).0, OK);
        // From a dnet subnet on the uplink: spoofed.
        let spoofed = error6(
            WORLD_MAC,
            up0_mac(),
            "fd00:1::9",
            UPLINK6,
            2,
            0,
            1280,
            &host[14..],
        );
        assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &spoofed).0, SHOT);
        assert_eq!(drops(&fx.dp, 0, DropReason::SpoofedIp), 1);

        // From a container: about a packet it was sent, but of no flow
        // through NAT66: dropped, nothing leaves untranslated.
        let sent = udp6_to(WORLD_MAC, up0_mac(), (SERVER6, 53), (A6, 4000));
        let e = error6(fx.a.mac, GW_MAC, A6, SERVER6, 1, 4, 0, &sent[14..]);
        assert_eq!(run(&fx.dp, &e).0, SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::NatUnsupported), 1);
        assert!(fx.dp.conntrack6().unwrap().is_empty(), "no flow made");
    });
}

#[test]
fn a_containers_icmpv6_error_about_a_published_flow_leaves_as_the_uplink() {
    in_fresh_netns(|| {
        let mut fx = nat6_fixture();
        publish6_8080_to_a(&mut fx.dp);
        // A client of the world opens a UDP flow to [uplink6]:8080.
        let req = udp6_to(WORLD_MAC, up0_mac(), (SERVER6, 33333), (UPLINK6, 8080));
        let (v, into) = run_prog(&fx.dp, PROG_FROM_UPLINK, &req);
        assert_eq!(v, REDIRECT);
        assert_eq!(parse6_checked(&into).daddr, ip6(A6));
        // A answers "port unreachable", quoting what it was given.
        let e = error6(fx.a.mac, GW_MAC, A6, SERVER6, 1, 4, 0, &into[14..]);
        let (v, out) = run(&fx.dp, &e);
        assert_eq!(v, REDIRECT, "out through the uplink");
        let p = parse6_checked(&out);
        assert_eq!((p.saddr, p.daddr), (ip6(UPLINK6), ip6(SERVER6)));
        assert_eq!((p.dst_mac, p.src_mac), (WORLD_MAC, up0_mac()));
        assert_eq!(p.hop, 63);
        assert_eq!(&p.l4[..2], &[1, 4]);
        let q = quote_of(&p);
        assert_eq!(
            (q.saddr, port(&q.l4, 0)),
            (ip6(SERVER6), 33333),
            "the client's"
        );
        assert_eq!(
            (q.daddr, port(&q.l4, 2)),
            (ip6(UPLINK6), 8080),
            "what the client sent to"
        );
        assert!(q.csum_ok, "the quoted UDP checksum verifies");
        assert_eq!(q.l4, req[54..], "the quote is the client's packet");
    });
}

/// Checks `out` is ICMPv6 `ty` with `word`, from the gateway to A,
/// quoting the first `quoted` bytes of `sent` from its IPv6 header.
pub(super) fn assert_answer(
    fx: &Fixture,
    out: &[u8],
    ty: u8,
    word: u32,
    sent: &[u8],
    quoted: usize,
) {
    let p = parse6_checked(out);
    assert_eq!((p.dst_mac, p.src_mac), (fx.a.mac, GW_MAC));
    assert_eq!((p.saddr, p.daddr), (ip6(GW6), ip6(A6)));
    assert_eq!(p.proto, ICMPV6);
    assert_eq!(&p.l4[..2], &[ty, 0]);
    assert_eq!(&p.l4[4..8], &word.to_be_bytes());
    assert_eq!(&p.l4[8..], &sent[14..14 + quoted], "quoted as sent");
}

#[test]
fn a_nat66_packet_too_big_for_the_uplink_is_answered_with_its_mtu() {
    in_fresh_netns(|| {
        let fx = nat6_fixture();
        too_big_and_expiring_are_answered(&fx, ip6(UPLINK6));
        // A GSO packet is judged by its segments: 1,400-byte ones pass,
        // 1,428-byte ones do not.
        let gso = udp6_sized(&fx, 4000, 2600);
        let (v, out) = run_ctx(&fx.dp, PROG_FROM_CONTAINER, &gso, &skb_ctx(0, 1352));
        assert_eq!(v, REDIRECT);
        assert_eq!(parse6_checked(&out).saddr, ip6(UPLINK6), "out, translated");
        let (v, out) = run_ctx(&fx.dp, PROG_FROM_CONTAINER, &gso, &skb_ctx(0, 1380));
        assert_eq!(v, REDIRECT);
        assert_answer(&fx, &out, 2, 1400, &gso, 48);
        assert_eq!(drops(&fx.dp, 1, DropReason::FragNeeded), 3);

        // A TCP segment is quoted with its whole header.
        let syn = tcp6(fx.a.mac, GW_MAC, (A6, 40000), (SERVER6, 80), 0x02);
        assert_eq!(run(&fx.dp, &syn).0, REDIRECT);
        let mut data = tcp6(fx.a.mac, GW_MAC, (A6, 40000), (SERVER6, 80), 0x10);
        let grow = 1400;
        data.extend(std::iter::repeat_n(0u8, grow));
        let len = u16::from_be_bytes([data[18], data[19]]) + grow as u16;
        data[18..20].copy_from_slice(&len.to_be_bytes());
        let (v, out) = run(&fx.dp, &data);
        assert_eq!(v, REDIRECT);
        assert_answer(&fx, &out, 2, 1400, &data, 60);
    });
}

/// Shared by NAT66 and routed IPv6 (the uplink's MTU set to 1400 here): a
/// container's 1,448-byte packet is answered "packet too big" with the
/// route's MTU from its gateway, quoted as sent, and takes no flow; 1,400
/// bytes leave from `out_src`; on the flow under way, the same answer; a
/// hop limit that runs out here gets "time exceeded" and no flow.
pub(super) fn too_big_and_expiring_are_answered(fx: &Fixture, out_src: Ipv6Addr) {
    ip_cmd("link set up0 mtu 1400");
    let big = udp6_sized(fx, 4000, 1400);
    let (v, out) = run(&fx.dp, &big);
    assert_eq!(v, REDIRECT, "answered");
    assert_answer(fx, &out, 2, 1400, &big, 48);
    assert_eq!(drops(&fx.dp, 1, DropReason::FragNeeded), 1);
    assert!(fx.dp.conntrack6().unwrap().is_empty());
    let (v, out) = run(&fx.dp, &udp6_sized(fx, 4000, 1352));
    assert_eq!(v, REDIRECT);
    assert_eq!(parse6_checked(&out).saddr, out_src);
    let (v, out) = run(&fx.dp, &big);
    assert_eq!(v, REDIRECT);
    assert_answer(fx, &out, 2, 1400, &big, 48);
    assert_eq!(drops(&fx.dp, 1, DropReason::FragNeeded), 2);
    let mut last = udp6_to(fx.a.mac, GW_MAC, (A6, 4001), (SERVER6, 53));
    last[21] = 1;
    let (v, out) = run(&fx.dp, &last);
    assert_eq!(v, REDIRECT);
    assert_answer(fx, &out, 3, 0, &last, 48);
    assert_eq!(drops(&fx.dp, 1, DropReason::TtlExceeded), 1);
    assert!(
        !fx.dp
            .conntrack6()
            .unwrap()
            .iter()
            .any(|(k, _)| k.sport_be == 4001u16.to_be()),
        "no flow for the expired packet"
    );
}

/// Checks `out` is "time exceeded" (code 0) from the uplink's IPv6
/// address back to the sender of `sent` (a frame from the world), out of
/// the uplink to the MAC it came from, quoting its first `quoted` bytes
/// (from its IPv6 header) as they came.
pub(super) fn assert_time_exceeded_from_uplink(out: &[u8], sent: &[u8], quoted: usize) {
    // Checks the ICMPv6 checksum over the pseudo-header and whole message.
    let p = parse6_checked(out);
    assert_eq!((p.dst_mac, p.src_mac), (WORLD_MAC, up0_mac()));
    assert_eq!(p.saddr, ip6(UPLINK6), "from the uplink's address");
    assert_eq!(&p.daddr.octets()[..], &sent[22..38], "to the sender");
    assert_eq!((p.proto, p.hop), (ICMPV6, 64));
    assert_eq!(&p.l4[..8], &[3, 0, p.l4[2], p.l4[3], 0, 0, 0, 0]);
    assert_eq!(p.l4.len(), 8 + quoted);
    assert_eq!(&p.l4[8..], &sent[14..14 + quoted], "quoted as it came");
    assert_eq!(out.len(), 14 + 40 + 8 + quoted, "nothing beyond");
}

#[test]
fn the_worlds_packet_dying_at_dnets_hop_is_answered_time_exceeded() {
    in_fresh_netns(|| {
        let mut fx = nat6_fixture();
        publish6_8080_to_a(&mut fx.dp);
        // A flow under way, to the published port.
        let req = udp6_to(WORLD_MAC, up0_mac(), (SERVER6, 33333), (UPLINK6, 8080));
        assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &req).0, REDIRECT);
        let flows = fx.dp.conntrack6().unwrap();
        // Its next datagram arrives with a hop limit of 1, and is too long
        // to quote whole: the first 1,232 bytes are, the answer 1,280 long.
        let mut l4 = Vec::new();
        l4.extend_from_slice(&33333u16.to_be_bytes());
        l4.extend_from_slice(&8080u16.to_be_bytes());
        l4.extend_from_slice(&1408u16.to_be_bytes());
        l4.extend_from_slice(&[0, 0]);
        l4.extend((0..1400).map(|i| i as u8));
        let big = frame6(
            WORLD_MAC,
            up0_mac(),
            ip6(SERVER6),
            ip6(UPLINK6),
            1,
            0,
            UDP,
            l4,
            Some(6),
        );
        let (v, out) = run_prog(&fx.dp, PROG_FROM_UPLINK, &big);
        assert_eq!(v, REDIRECT, "answered, out of the uplink");
        assert_time_exceeded_from_uplink(&out, &big, 1232);
        assert_eq!(u16::from_be_bytes([out[18], out[19]]), 1240);
        assert_eq!(drops(&fx.dp, 0, DropReason::TtlExceeded), 1);
        assert_eq!(fx.dp.conntrack6().unwrap(), flows, "the flow untouched");
        assert_eq!(fx.dp.stats(1).unwrap().translated, 1, "nothing went in");
        // A short one is quoted whole.
        let mut short = req.clone();
        short[21] = 1;
        let (v, out) = run_prog(&fx.dp, PROG_FROM_UPLINK, &short);
        assert_eq!(v, REDIRECT);
        assert_time_exceeded_from_uplink(&out, &short, short.len() - 14);
        assert_eq!(drops(&fx.dp, 0, DropReason::TtlExceeded), 2);
    });
}
