//! Frames the property test (`fuzz`) found the datapath wrong on, each made
//! by hand.

use dnet_common::nat::{TCP_FIN, TCP_RST, TCP_SYN};

use super::*;

const A: &str = "172.17.0.2";

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
