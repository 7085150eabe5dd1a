//! IPv6 fragments of NAT66 datagrams: the first is translated as a whole
//! datagram would be and records its ports; each later one finds its
//! flow through that record and has its addresses translated; a later
//! fragment with no first, and TCP's, are dropped (`fragment`) from a
//! container and left to the host from the world.

use std::net::Ipv6Addr;

use super::{
    dnat6::publish6_8080_to_a,
    ipv6::{A6, frame6, ip6, sum6},
    nat6::{ICMPV6, SERVER6, TCP, UDP, nat6_fixture, tcp6},
    routed6::{publish_at_a, routed6_fixture},
    *,
};

/// The fragment header's protocol number.
const FRAGMENT: u8 = 44;
/// How many bytes of the UDP datagram (header included) the first
/// fragment carries: a multiple of 8, as fragment offsets count.
const FIRST: usize = 48;
/// Where a fragment's data starts: Ethernet, the fixed header and the
/// fragment header.
const DATA_AT: usize = 14 + 40 + 8;

/// A UDP datagram of `payload` bytes from `s` to `d`, its checksum right,
/// in two IPv6 fragments of identification `id` ([`fragments6`]).
fn udp6_fragments(
    macs: ([u8; 6], [u8; 6]),
    s: (&str, u16),
    d: (&str, u16),
    id: u32,
    payload: usize,
) -> (Vec<u8>, Vec<u8>) {
    let mut l4 = Vec::new();
    l4.extend_from_slice(&s.1.to_be_bytes());
    l4.extend_from_slice(&d.1.to_be_bytes());
    l4.extend_from_slice(&((8 + payload) as u16).to_be_bytes());
    l4.extend_from_slice(&[0, 0]);
    l4.extend((0..payload).map(|i| i as u8));
    fragments6(macs, (s.0, d.0), UDP, l4, 6, id)
}

/// An ICMPv6 echo (`ty`: request or reply) of identifier `echo_id` with
/// `payload` bytes, in two IPv6 fragments of identification `id`.
fn echo6_fragments(
    macs: ([u8; 6], [u8; 6]),
    s: &str,
    d: &str,
    ty: u8,
    echo_id: u16,
    id: u32,
    payload: usize,
) -> (Vec<u8>, Vec<u8>) {
    let mut l4 = vec![ty, 0, 0, 0];
    l4.extend_from_slice(&echo_id.to_be_bytes());
    l4.extend_from_slice(&1u16.to_be_bytes());
    l4.extend((0..payload).map(|i| i as u8));
    fragments6(macs, (s, d), ICMPV6, l4, 2, id)
}

/// The datagram `l4` of `proto` from `addrs.0` to `addrs.1`, its checksum
/// (at `check_at`) filled in, in two IPv6 fragments of identification `id`:
/// the first with `FIRST` bytes of it (more to come), the rest after it.
fn fragments6(
    macs: ([u8; 6], [u8; 6]),
    addrs: (&str, &str),
    proto: u8,
    mut l4: Vec<u8>,
    check_at: usize,
    id: u32,
) -> (Vec<u8>, Vec<u8>) {
    let (s, d) = (ip6(addrs.0), ip6(addrs.1));
    let c = sum6(s, d, proto, &l4);
    l4[check_at..check_at + 2].copy_from_slice(&c.to_be_bytes());
    let part = |bytes: &[u8], off_more: u16| {
        let mut p = vec![proto, 0];
        p.extend_from_slice(&off_more.to_be_bytes());
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(bytes);
        frame6(macs.0, macs.1, s, d, 64, 0, FRAGMENT, p, None)
    };
    (
        part(&l4[..FIRST], 1),
        part(&l4[FIRST..], (FIRST as u16 / 8) << 3),
    )
}

/// Both fragments of a datagram through `prog`, each redirected (into a
/// container or out of the uplink): what came out.
fn through(dp: &Datapath, prog: &str, (first, later): (&[u8], &[u8])) -> (Vec<u8>, Vec<u8>) {
    let (v, out1) = run_prog(dp, prog, first);
    assert_eq!(v, REDIRECT, "the first fragment");
    let (v, out2) = run_prog(dp, prog, later);
    assert_eq!(v, REDIRECT, "the later fragment follows its first");
    (out1, out2)
}

/// The addresses and fragment identification of an output fragment.
fn header6(f: &[u8]) -> (Ipv6Addr, Ipv6Addr, u32) {
    assert_eq!(
        f[20], FRAGMENT,
        "a fragment header right after the fixed one"
    );
    (
        Ipv6Addr::from(<[u8; 16]>::try_from(&f[22..38]).unwrap()),
        Ipv6Addr::from(<[u8; 16]>::try_from(&f[38..54]).unwrap()),
        u32::from_be_bytes(f[58..62].try_into().unwrap()),
    )
}

/// The datagram of `proto` the two fragments make again, its checksum
/// checked against their addresses: its addresses and its first four
/// bytes as two (ports, or an echo's type and code, and checksum).
fn reassembled_as(proto: u8, first: &[u8], later: &[u8]) -> (Ipv6Addr, Ipv6Addr, u16, u16) {
    let (s, d, id) = header6(first);
    assert_eq!(header6(later), (s, d, id), "one datagram");
    assert_eq!(first[54], proto, "the fragment header's next header");
    let mut l4 = first[DATA_AT..].to_vec();
    l4.extend_from_slice(&later[DATA_AT..]);
    assert_eq!(sum6(s, d, proto, &l4), 0, "the L4 checksum");
    (
        s,
        d,
        u16::from_be_bytes([l4[0], l4[1]]),
        u16::from_be_bytes([l4[2], l4[3]]),
    )
}

/// [`reassembled_as`] for UDP, its length checked too.
fn reassembled(first: &[u8], later: &[u8]) -> (Ipv6Addr, Ipv6Addr, u16, u16) {
    let l4_len = first.len() + later.len() - 2 * DATA_AT;
    assert_eq!(
        u16::from_be_bytes([first[DATA_AT + 4], first[DATA_AT + 5]]) as usize,
        l4_len,
        "UDP length"
    );
    reassembled_as(UDP, first, later)
}

#[test]
fn a_fragmented_nat66_datagram_is_translated_both_ways_fragment_by_fragment() {
    in_fresh_netns(|| {
        let fx = nat6_fixture();
        let (first, later) = udp6_fragments(
            (fx.a.mac, GW_MAC),
            (A6, 4000),
            (SERVER6, 53),
            0x1234_5678,
            1000,
        );
        let (out1, out2) = through(&fx.dp, PROG_FROM_CONTAINER, (&first, &later));
        assert_eq!(&out2[DATA_AT..], &later[DATA_AT..], "its data untouched");
        assert_eq!(out2[21], 63, "routed: hop limit down by one");
        let (s, d, sport, dport) = reassembled(&out1, &out2);
        assert_eq!((s, d), (ip6(UPLINK6), ip6(SERVER6)));
        assert!((50000..=50009).contains(&sport), "NAT port {sport}");
        assert_eq!(dport, 53);
        assert_eq!(fx.dp.conntrack6().unwrap().len(), 2, "one flow");
        assert_eq!(fx.dp.stats(1).unwrap().translated, 2);

        // The answer, fragmented too, back into the container.
        let (first, later) = udp6_fragments(
            (WORLD_MAC, up0_mac()),
            (SERVER6, 53),
            (UPLINK6, sport),
            0x8765_4321,
            3000,
        );
        let (in1, in2) = through(&fx.dp, PROG_FROM_UPLINK, (&first, &later));
        assert_eq!(&in2[..6], &fx.a.mac, "into A");
        assert_eq!(reassembled(&in1, &in2), (ip6(SERVER6), ip6(A6), 53, 4000));
        assert_eq!(fx.dp.conntrack6().unwrap().len(), 2, "still one flow");
    });
}

#[test]
fn a_nat66_later_fragment_without_its_first_and_tcp_fragments_are_dropped() {
    in_fresh_netns(|| {
        let fx = nat6_fixture();
        // The later fragment of a datagram whose first never came.
        let (_, later) = udp6_fragments((fx.a.mac, GW_MAC), (A6, 4000), (SERVER6, 53), 7, 1000);
        assert_eq!(run(&fx.dp, &later).0, SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::Fragment), 1);
        // Nor does its flow open one for it: a datagram of another
        // identification has no record.
        let (first, _) = udp6_fragments((fx.a.mac, GW_MAC), (A6, 4000), (SERVER6, 53), 8, 1000);
        assert_eq!(run(&fx.dp, &first).0, REDIRECT);
        assert_eq!(run(&fx.dp, &later).0, SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::Fragment), 2);
        // From the world: left to the host, which owns what dnet does not
        // translate.
        let (_, later) = udp6_fragments(
            (WORLD_MAC, up0_mac()),
            (SERVER6, 53),
            (UPLINK6, 50000),
            9,
            1000,
        );
        assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &later).0, OK);
        // A TCP first fragment: a SYN behind a fragment header.
        let syn = tcp6(fx.a.mac, GW_MAC, (A6, 4000), (SERVER6, 80), 0x02);
        let mut p = vec![TCP, 0, 0, 1, 0, 0, 0, 10];
        p.extend_from_slice(&syn[54..]);
        let frame = frame6(
            fx.a.mac,
            GW_MAC,
            ip6(A6),
            ip6(SERVER6),
            64,
            0,
            FRAGMENT,
            p,
            None,
        );
        assert_eq!(run(&fx.dp, &frame).0, SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::Fragment), 3);
        assert_eq!(fx.dp.conntrack6().unwrap().len(), 2, "only the UDP flow");
    });
}

#[test]
fn a_fragmented_datagram_to_a_port_published_over_ipv6_reaches_the_container_and_back() {
    in_fresh_netns(|| {
        let mut fx = nat6_fixture();
        publish6_8080_to_a(&mut fx.dp);
        let (first, later) = udp6_fragments(
            (WORLD_MAC, up0_mac()),
            (SERVER6, 5353),
            (UPLINK6, 8080),
            0xabcd,
            2000,
        );
        // The later fragment first: no record yet, the host's.
        assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &later).0, OK);
        assert!(fx.dp.conntrack6().unwrap().is_empty(), "no flow from it");
        let (in1, in2) = through(&fx.dp, PROG_FROM_UPLINK, (&first, &later));
        assert_eq!(
            reassembled(&in1, &in2),
            (ip6(SERVER6), ip6(A6), 5353, 80),
            "DNAT to [A6]:80, the world's address seen"
        );
        assert_eq!(fx.dp.conntrack6().unwrap().len(), 2, "one flow");

        // The container's fragmented answer leaves as [uplink6]:8080.
        let (first, later) =
            udp6_fragments((fx.a.mac, GW_MAC), (A6, 80), (SERVER6, 5353), 0x42, 1200);
        let (out1, out2) = through(&fx.dp, PROG_FROM_CONTAINER, (&first, &later));
        assert_eq!(
            reassembled(&out1, &out2),
            (ip6(UPLINK6), ip6(SERVER6), 8080, 5353)
        );
    });
}

#[test]
fn a_routed_networks_fragmented_datagrams_go_out_and_in_untranslated() {
    in_fresh_netns(|| {
        let fx = routed6_fixture(0);
        let (first, later) =
            udp6_fragments((fx.a.mac, GW_MAC), (A6, 4000), (SERVER6, 53), 0x77, 1000);
        let (out1, out2) = through(&fx.dp, PROG_FROM_CONTAINER, (&first, &later));
        assert_eq!(
            reassembled(&out1, &out2),
            (ip6(A6), ip6(SERVER6), 4000, 53),
            "untranslated"
        );
        assert_eq!(out2[21], 63, "routed: hop limit down by one");
        // The world's fragmented answer comes in by the flow.
        let (first, later) = udp6_fragments(
            (WORLD_MAC, up0_mac()),
            (SERVER6, 53),
            (A6, 4000),
            0x88,
            2000,
        );
        let (in1, in2) = through(&fx.dp, PROG_FROM_UPLINK, (&first, &later));
        assert_eq!(&in2[..6], &fx.a.mac, "into A");
        assert_eq!(reassembled(&in1, &in2), (ip6(SERVER6), ip6(A6), 53, 4000));
        assert_eq!(fx.dp.conntrack6().unwrap().len(), 2, "one flow");
        assert_eq!(drops(&fx.dp, 1, DropReason::Fragment), 0);
    });
}

#[test]
fn a_routed_container_answers_a_fragmented_ping_with_a_fragmented_reply() {
    in_fresh_netns(|| {
        let fx = routed6_fixture(0);
        // The world's echo request goes in untracked, its later fragment
        // by its first's record.
        let (first, later) =
            echo6_fragments((WORLD_MAC, up0_mac()), SERVER6, A6, 128, 9, 0x1, 1000);
        let (in1, in2) = through(&fx.dp, PROG_FROM_UPLINK, (&first, &later));
        assert_eq!(reassembled_as(ICMPV6, &in1, &in2).1, ip6(A6));
        // The container's reply goes out the same way.
        let (first, later) = echo6_fragments((fx.a.mac, GW_MAC), A6, SERVER6, 129, 9, 0x2, 1000);
        let (out1, out2) = through(&fx.dp, PROG_FROM_CONTAINER, (&first, &later));
        assert_eq!(reassembled_as(ICMPV6, &out1, &out2).0, ip6(A6));
        assert!(fx.dp.conntrack6().unwrap().is_empty(), "echo is untracked");
    });
}

#[test]
fn the_world_gets_no_fragment_into_a_routed_container_but_of_what_it_lets_in() {
    in_fresh_netns(|| {
        let mut fx = routed6_fixture(0);
        // A later fragment with no first: dropped, counted on A.
        let (first, later) =
            udp6_fragments((WORLD_MAC, up0_mac()), (SERVER6, 5353), (A6, 80), 0x3, 1000);
        assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &later).0, SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::Fragment), 1);
        // A first fragment to a port nobody published is refused, and
        // its later fragment with it.
        assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &first).0, SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::NotPublished), 1);
        assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &later).0, SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::Fragment), 2);
        // Published, the same datagram goes in whole.
        publish_at_a(&mut fx.dp, 80, UDP);
        let (first, later) =
            udp6_fragments((WORLD_MAC, up0_mac()), (SERVER6, 5353), (A6, 80), 0x4, 1000);
        let (in1, in2) = through(&fx.dp, PROG_FROM_UPLINK, (&first, &later));
        assert_eq!(reassembled(&in1, &in2), (ip6(SERVER6), ip6(A6), 5353, 80));
        // A container's later fragment of no datagram it sent: dropped.
        let (_, later) = udp6_fragments((fx.a.mac, GW_MAC), (A6, 4000), (SERVER6, 53), 0x5, 1000);
        assert_eq!(run(&fx.dp, &later).0, SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::Fragment), 3);
    });
}
