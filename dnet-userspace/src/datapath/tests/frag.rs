//! IPv4 fragments of translated datagrams: the first is translated as a
//! whole datagram would be and records its ports; each later one finds its
//! flow through that record and has its addresses translated; a later
//! fragment with no first, and TCP fragments, are dropped (`fragment`).

use super::*;

const A: &str = "172.17.0.2";
/// How many bytes of the UDP datagram (header included) the first
/// fragment carries: a multiple of 8, as fragment offsets count.
const FIRST: usize = 32;

/// A UDP datagram of `payload` bytes from `s` to `d`, checksum right,
/// in two IPv4 fragments of identification `id` (the first with the UDP
/// header and `FIRST - 8` bytes of payload, MF set; the rest after it).
fn udp_fragments(
    macs: ([u8; 6], [u8; 6]),
    s: (&str, u16),
    d: (&str, u16),
    id: u16,
    payload: usize,
) -> (Vec<u8>, Vec<u8>) {
    let whole = udp_sized(macs.0, macs.1, s, d, payload);
    let l4 = &whole[34..];
    let part = |bytes: &[u8], frag: u16| {
        let mut f = ip_frame(macs.0, macs.1, ip(s.0), ip(d.0), 17, bytes);
        f[18..20].copy_from_slice(&id.to_be_bytes());
        f[20..22].copy_from_slice(&frag.to_be_bytes());
        f[24..26].copy_from_slice(&[0, 0]);
        let c = csum::checksum(&f[14..34]);
        f[24..26].copy_from_slice(&c.to_be_bytes());
        f
    };
    (
        part(&l4[..FIRST], 0x2000),
        part(&l4[FIRST..], (FIRST / 8) as u16),
    )
}

/// The IPv4 header of an output frame, its checksum checked: source,
/// destination, identification and fragment field.
fn header_checked(f: &[u8]) -> (Ipv4Addr, Ipv4Addr, u16, u16) {
    let h = &f[14..34];
    assert_eq!(csum::checksum(h), 0, "IPv4 header checksum");
    (
        Ipv4Addr::new(h[12], h[13], h[14], h[15]),
        Ipv4Addr::new(h[16], h[17], h[18], h[19]),
        u16::from_be_bytes([h[4], h[5]]),
        u16::from_be_bytes([h[6], h[7]]),
    )
}

/// The datagram the two translated fragments make again, its UDP checksum
/// checked against their addresses: its source and destination ports.
fn reassembled(first: &[u8], later: &[u8]) -> (u16, u16) {
    let (s, d, id, frag) = header_checked(first);
    let (s2, d2, id2, frag2) = header_checked(later);
    assert_eq!((s, d, id), (s2, d2, id2), "one datagram");
    assert_eq!((frag, frag2), (0x2000, (FIRST / 8) as u16));
    let mut l4 = first[34..].to_vec();
    l4.extend_from_slice(&later[34..]);
    assert_eq!(
        u16::from_be_bytes([l4[4], l4[5]]) as usize,
        l4.len(),
        "UDP length"
    );
    assert_eq!(l4_checksum(s, d, 17, &l4), 0, "UDP checksum");
    (
        u16::from_be_bytes([l4[0], l4[1]]),
        u16::from_be_bytes([l4[2], l4[3]]),
    )
}

#[test]
fn a_fragmented_datagram_is_translated_both_ways_fragment_by_fragment() {
    in_fresh_netns(|| {
        let fx = nat_fixture(50000, 50009);
        let (first, later) =
            udp_fragments((fx.a.mac, GW_MAC), (A, 4000), (WORLD, 53), 0x1234, 1000);
        let (v, out1) = run(&fx.dp, &first);
        assert_eq!(v, REDIRECT, "the first fragment opens the flow");
        let (v, out2) = run(&fx.dp, &later);
        assert_eq!(v, REDIRECT, "the later one follows it");
        assert_eq!(&out2[34..], &later[34..], "its payload untouched");
        let (sport, dport) = reassembled(&out1, &out2);
        assert!((50000..=50009).contains(&sport), "NAT port {sport}");
        assert_eq!(dport, 53);
        assert_eq!(header_checked(&out1).0, ip(UPLINK));
        assert_eq!(fx.dp.conntrack().unwrap().len(), 2, "one flow");
        assert_eq!(fx.dp.stats(1).unwrap().translated, 2);

        // The answer, fragmented too, back into the container.
        let (first, later) = udp_fragments(
            (WORLD_MAC, up0_mac()),
            (WORLD, 53),
            (UPLINK, sport),
            0x4321,
            3000,
        );
        let (v, in1) = run_prog(&fx.dp, PROG_FROM_UPLINK, &first);
        assert_eq!(v, REDIRECT);
        let (v, in2) = run_prog(&fx.dp, PROG_FROM_UPLINK, &later);
        assert_eq!(v, REDIRECT);
        assert_eq!(header_checked(&in2).1, ip(A));
        assert_eq!(&in2[..6], &fx.a.mac, "into A");
        assert_eq!(reassembled(&in1, &in2), (53, 4000));
        assert_eq!(fx.dp.conntrack().unwrap().len(), 2, "still one flow");
    });
}

#[test]
fn a_later_fragment_without_its_first_and_tcp_fragments_are_dropped() {
    in_fresh_netns(|| {
        let fx = nat_fixture(50000, 50009);
        // The later fragment of a datagram whose first never came.
        let (_, later) = udp_fragments((fx.a.mac, GW_MAC), (A, 4000), (WORLD, 53), 7, 1000);
        assert_eq!(run(&fx.dp, &later).0, SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::Fragment), 1);
        // Nor does its flow open one for it: a datagram of another
        // identification has no record.
        let (first, _) = udp_fragments((fx.a.mac, GW_MAC), (A, 4000), (WORLD, 53), 8, 1000);
        assert_eq!(run(&fx.dp, &first).0, REDIRECT);
        assert_eq!(run(&fx.dp, &later).0, SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::Fragment), 2);
        // From the world: left to the host, which owns what dnet does not
        // translate.
        let (_, later) = udp_fragments(
            (WORLD_MAC, up0_mac()),
            (WORLD, 53),
            (UPLINK, 50000),
            9,
            1000,
        );
        assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &later).0, OK);
        // A TCP fragment, even a first one.
        let mut syn = tcp(fx.a.mac, GW_MAC, (A, 4000), (WORLD, 80), 0x02);
        syn[20] = 0x20; // MF
        syn[24..26].copy_from_slice(&[0, 0]);
        let c = csum::checksum(&syn[14..34]);
        syn[24..26].copy_from_slice(&c.to_be_bytes());
        assert_eq!(run(&fx.dp, &syn).0, SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::Fragment), 3);
        assert_eq!(fx.dp.conntrack().unwrap().len(), 2, "only the UDP flow");
    });
}

#[test]
fn a_fragmented_datagram_to_a_published_port_crosses_hairpin_and_back() {
    in_fresh_netns(|| {
        let mut fx = nat_fixture(50000, 50009);
        // UDP 8080 on every address to A's port 80.
        let key = ServiceKey {
            addr_be: 0,
            port_be: 8080u16.to_be(),
            proto: 17,
            _pad: 0,
        };
        let svc = Service {
            backend_be: ipv4_be(ip(A)),
            backend_port_be: 80u16.to_be(),
            _pad: 0,
        };
        fx.dp.set_service(&key, &svc).unwrap();
        // A to its own published port, in two fragments.
        let (first, later) =
            udp_fragments((fx.a.mac, GW_MAC), (A, 4000), (UPLINK, 8080), 0x99, 1000);
        let (v, out1) = run(&fx.dp, &first);
        assert_eq!(v, REDIRECT, "the first fragment opens the hairpin flow");
        let (v, out2) = run(&fx.dp, &later);
        assert_eq!(v, REDIRECT, "the later one follows it");
        let gw = "172.17.0.1";
        assert_eq!(header_checked(&out2).1, ip(A), "into A");
        let (sport, dport) = reassembled(&out1, &out2);
        assert_eq!(dport, 80, "DNAT to A's port 80");
        assert_eq!(header_checked(&out1).0, ip(gw), "from the gateway");
        // A's fragmented answer to the gateway goes back as the published
        // port.
        let (first, later) = udp_fragments((fx.a.mac, GW_MAC), (A, 80), (gw, sport), 0x9a, 1000);
        let (v, back1) = run(&fx.dp, &first);
        assert_eq!(v, REDIRECT);
        let (v, back2) = run(&fx.dp, &later);
        assert_eq!(v, REDIRECT);
        assert_eq!(reassembled(&back1, &back2), (8080, 4000));
        assert_eq!(header_checked(&back2).0, ip(UPLINK));
        assert_eq!(drops(&fx.dp, 1, DropReason::Fragment), 0);
    });
}
