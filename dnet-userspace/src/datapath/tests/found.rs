//! Frames the property test (`fuzz`) found the datapath wrong on, each made
//! by hand.

use dnet_common::nat::{TCP_FIN, TCP_RST, TCP_SYN};

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
