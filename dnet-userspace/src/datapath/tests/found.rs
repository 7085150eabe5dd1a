//! Frames the property test (`fuzz`) found the datapath wrong on, each made
//! by hand.

use dnet_common::nat::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};

use super::*;

const A: &str = "172.17.0.2";

/// `f` with its IPv4 header checksum made right again.
fn fix_ip_csum(mut f: Vec<u8>) -> Vec<u8> {
    let hlen = (f[14] & 0x0f) as usize * 4;
    f[24..26].copy_from_slice(&[0, 0]);
    let c = csum::checksum(&f[14..14 + hlen]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f
}

#[test]
fn found_a_syn_with_fin_or_rst_opens_no_flow() {
    in_fresh_netns(|| {
        let mut fx = nat_fixture(50000, 50009);
        publish_8080_to_a(&mut fx.dp);
        for (i, flags) in [TCP_SYN | TCP_FIN, TCP_SYN | TCP_RST]
            .into_iter()
            .enumerate()
        {
            let out = tcp(fx.a.mac, GW_MAC, (A, 40000), (WORLD, 80), flags);
            assert_eq!(run(&fx.dp, &out).0, SHOT, "{flags:#x}");
            assert_eq!(drops(&fx.dp, 1, DropReason::CtNoFlow), i as u64 + 1);
            // From the world, to a published port: the host's.
            let syn = tcp(WORLD_MAC, up0_mac(), (WORLD, 33333), (UPLINK, 8080), flags);
            assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &syn).0, OK, "{flags:#x}");
            // Hairpin.
            let hp = tcp(fx.a.mac, GW_MAC, (A, 40001), (UPLINK, 8080), flags);
            assert_eq!(run(&fx.dp, &hp).0, OK, "{flags:#x}: the host's");
            assert!(fx.dp.conntrack().unwrap().is_empty(), "{flags:#x}");
        }
        // A plain SYN still opens one.
        let syn = tcp(fx.a.mac, GW_MAC, (A, 40000), (WORLD, 80), TCP_SYN);
        assert_eq!(run(&fx.dp, &syn).0, REDIRECT);
        assert_eq!(fx.dp.conntrack().unwrap().len(), 2);
    });
}

#[test]
fn found_a_transport_header_that_lies_about_lengths_opens_no_flow() {
    in_fresh_netns(|| {
        let mut fx = nat_fixture(50000, 50009);
        publish_8080_to_a(&mut fx.dp);
        // A SYN in the Ethernet padding of a 60-byte frame whose IPv4 total
        // length (20) holds no TCP header: the receiver trims it away.
        let syn = tcp(fx.a.mac, GW_MAC, (A, 40000), (WORLD, 80), TCP_SYN);
        let mut padded = syn[..54].to_vec();
        padded[16..18].copy_from_slice(&20u16.to_be_bytes());
        padded.resize(60, 0);
        let padded = fix_ip_csum(padded);
        // A UDP length beyond the datagram, and one below its header.
        let dgram = udp_to(fx.a.mac, GW_MAC, (A, 4000), (WORLD, 53), false);
        let mut long = dgram.clone();
        long[38..40].copy_from_slice(&40u16.to_be_bytes());
        let mut short = dgram.clone();
        short[38..40].copy_from_slice(&4u16.to_be_bytes());
        // A TCP data offset below 5 words, and one beyond the segment.
        let mut low = syn.clone();
        low[46] = 0x40;
        let mut high = syn.clone();
        high[46] = 0xf0;
        for (what, f) in [
            ("SYN in the padding", &padded),
            ("UDP length 40 in 12 bytes", &long),
            ("UDP length 4", &short),
            ("TCP data offset 4", &low),
            ("TCP data offset 15 in 24 bytes", &high),
        ] {
            let before = drops(&fx.dp, 1, DropReason::Malformed);
            assert_eq!(run(&fx.dp, f).0, SHOT, "{what}");
            assert_eq!(
                drops(&fx.dp, 1, DropReason::Malformed),
                before + 1,
                "{what}"
            );
            assert!(fx.dp.conntrack().unwrap().is_empty(), "{what}");
        }
        // From the world, to a published port: left to the host.
        let syn = tcp(
            WORLD_MAC,
            up0_mac(),
            (WORLD, 33333),
            (UPLINK, 8080),
            TCP_SYN,
        );
        let mut padded = syn[..54].to_vec();
        padded[16..18].copy_from_slice(&20u16.to_be_bytes());
        padded.resize(60, 0);
        let padded = fix_ip_csum(padded);
        assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &padded).0, OK);
        assert!(fx.dp.conntrack().unwrap().is_empty());
        // Honest padding after a whole datagram is fine.
        let mut fine = dgram.clone();
        fine.resize(80, 0);
        assert_eq!(run(&fx.dp, &fine).0, REDIRECT);
    });
}

#[test]
fn found_nothing_is_translated_to_0_0_0_0_8() {
    in_fresh_netns(|| {
        let fx = nat_fixture(50000, 50009);
        for d in ["0.0.0.0", "0.1.2.3"] {
            let f = udp_to(fx.a.mac, GW_MAC, (A, 4000), (d, 53), false);
            assert_eq!(run(&fx.dp, &f).0, SHOT, "{d}");
        }
        assert_eq!(drops(&fx.dp, 1, DropReason::NoRoute), 2);
        assert!(fx.dp.conntrack().unwrap().is_empty());
    });
}

#[test]
fn found_the_world_cannot_speak_into_a_hairpin_flow() {
    in_fresh_netns(|| {
        let mut fx = nat_fixture(50000, 50009);
        publish_8080_to_a(&mut fx.dp);
        // A to its own published port: A:41000 -> uplink:8080, seen by A as
        // gateway:n -> A:80.
        let syn = tcp(fx.a.mac, GW_MAC, (A, 41000), (UPLINK, 8080), TCP_SYN);
        let (v, o) = run(&fx.dp, &syn);
        assert_eq!(v, REDIRECT);
        let n = parse_checked(&o).sport;
        let ct = fx.dp.conntrack().unwrap();
        let tx = fx.dp.stats(1).unwrap().tx_packets;
        // The world, with A's address as its source, on the flow's tuple.
        let spoofed = tcp(WORLD_MAC, up0_mac(), (A, 41000), (UPLINK, 8080), TCP_ACK);
        assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &spoofed).0, SHOT);
        assert_eq!(drops(&fx.dp, 0, DropReason::SpoofedIp), 1);
        let rst = tcp(WORLD_MAC, up0_mac(), (A, 41000), (UPLINK, 8080), TCP_RST);
        assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &rst).0, SHOT);
        // ICMP errors from the world quoting the flow's packets as A saw
        // them (each way): they never left through the uplink.
        let error_quoting = |quoted: &[u8]| {
            let mut m = vec![3, 3, 0, 0, 0, 0, 0, 0];
            m.extend_from_slice(&quoted[14..]);
            let c = csum::checksum(&m);
            m[2..4].copy_from_slice(&c.to_be_bytes());
            ip_frame(WORLD_MAC, up0_mac(), ip(WORLD), ip(UPLINK), 1, &m)
        };
        let to_a = tcp(
            GW_MAC,
            fx.a.mac,
            (UPLINK, 8080),
            (A, 41000),
            TCP_SYN | TCP_ACK,
        );
        let from_gw = tcp(GW_MAC, fx.a.mac, ("172.17.0.1", n), (A, 80), TCP_SYN);
        for q in [&to_a, &from_gw] {
            assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &error_quoting(q)).0, OK);
        }
        assert_eq!(fx.dp.stats(1).unwrap().tx_packets, tx, "nothing reached A");
        assert_eq!(fx.dp.conntrack().unwrap(), ct, "the flow is as it was");
    });
}

#[test]
fn found_a_container_cannot_reflect_an_icmp_error_about_its_own_packet() {
    in_fresh_netns(|| {
        let fx = nat_fixture(50000, 50009);
        let out = udp_to(fx.a.mac, GW_MAC, (A, 4000), (WORLD, 53), false);
        let (v, o) = run(&fx.dp, &out);
        assert_eq!(v, REDIRECT);
        // An error "from" A to the uplink's address, quoting the datagram
        // A sent, as translated: A never received it.
        let mut m = vec![3, 3, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&o[14..]);
        let c = csum::checksum(&m);
        m[2..4].copy_from_slice(&c.to_be_bytes());
        let err = ip_frame(fx.a.mac, GW_MAC, ip(A), ip(UPLINK), 1, &m);
        assert_eq!(run(&fx.dp, &err).0, SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::IcmpErrorForged), 1);
    });
}

#[test]
fn found_an_icmp_error_keeps_its_checksum_when_padding_follows_its_quote() {
    in_fresh_netns(|| {
        let mut fx = nat_fixture(50000, 50009);
        publish_8080_to_a(&mut fx.dp);
        let syn = tcp(
            WORLD_MAC,
            up0_mac(),
            (WORLD, 33333),
            (UPLINK, 8080),
            TCP_SYN,
        );
        let (v, inn) = run_prog(&fx.dp, PROG_FROM_UPLINK, &syn);
        assert_eq!(v, REDIRECT);
        // A's port unreachable about that SYN, quoting its IPv4 header and
        // 8 bytes (the ports and the sequence number), then padding that
        // looks like the rest of a TCP header.
        let mut m = vec![3, 3, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&inn[14..14 + 28]);
        let c = csum::checksum(&m);
        m[2..4].copy_from_slice(&c.to_be_bytes());
        let mut err = ip_frame(fx.a.mac, GW_MAC, ip(A), ip(WORLD), 1, &m);
        err.extend_from_slice(&[0x55; 14]);
        let (v, out) = run(&fx.dp, &err);
        assert_eq!(v, REDIRECT);
        let p = parse_checked(&out); // the ICMP checksum, over the message
        assert_eq!(p.saddr, ip(UPLINK));
        assert_eq!(&out[out.len() - 14..], &[0x55; 14], "the padding untouched");
        // With less than the ports quoted, it is not translated.
        let mut m = vec![3, 3, 0, 0, 0, 0, 0, 0];
        m.extend_from_slice(&inn[14..14 + 22]);
        let c = csum::checksum(&m);
        m[2..4].copy_from_slice(&c.to_be_bytes());
        let mut err = ip_frame(fx.a.mac, GW_MAC, ip(A), ip(WORLD), 1, &m);
        err.extend_from_slice(&[0x55; 14]);
        assert_ne!(run(&fx.dp, &err).0, REDIRECT);
    });
}

#[test]
fn found_a_dnet_source_on_the_uplink_is_spoofed_whatever_its_destination() {
    in_fresh_netns(|| {
        let fx = nat_fixture(50000, 50009);
        // A's address, from the world, to its network's gateway (where the
        // resolver listens): dropped, not taken up as A.
        let spoofed = udp_to(WORLD_MAC, up0_mac(), (A, 5353), ("172.17.0.1", 53), false);
        assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &spoofed).0, SHOT);
        assert_eq!(drops(&fx.dp, 0, DropReason::SpoofedIp), 1);
        // The world's own address to the same gateway is the host's.
        let world = udp_to(
            WORLD_MAC,
            up0_mac(),
            (WORLD, 5353),
            ("172.17.0.1", 53),
            false,
        );
        assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &world).0, OK);
    });
}
