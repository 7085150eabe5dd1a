//! Conntrack under pressure (issue 10, items 1, 2 and 5): when a flow is
//! established, a full table, a flow that lost its reply entry, and two
//! published ports that lead to one backend port.

use dnet_common::{
    CtEntry,
    nat::{CT_F_ASSURED, CT_F_COUNTED, CT_F_DNAT, CT_F_REPLY, CT_F_TO_ENDPOINT},
};

use super::*;
use crate::{
    api::FlowState,
    engine::conntrack::{self, Timeouts},
};

const A: &str = "172.17.0.2";

/// The one flow in the table, and its state.
fn only_flow(dp: &Datapath) -> (conntrack::Flow, FlowState) {
    let es = dp.conntrack().unwrap();
    let fs = conntrack::flows(&es);
    assert_eq!(fs.len(), 1, "{fs:?}");
    (fs[0], conntrack::state(&fs[0]))
}

#[test]
fn ct_a_tcp_flow_is_established_only_by_the_openers_ack() {
    in_fresh_netns(|| {
        let mut fx = nat_fixture(50000, 50009);
        publish_8080_to_a(&mut fx.dp);
        let t = Timeouts::default();
        // From the world to a published port.
        let from_client = |flags| tcp(WORLD_MAC, up0_mac(), (WORLD, 33333), (UPLINK, 8080), flags);
        assert_eq!(
            run_prog(&fx.dp, PROG_FROM_UPLINK, &from_client(0x02)).0,
            REDIRECT
        );
        assert_eq!(only_flow(&fx.dp).1, FlowState::SynSent);
        // A blind ACK before any answer completes nothing.
        assert_eq!(
            run_prog(&fx.dp, PROG_FROM_UPLINK, &from_client(0x10)).0,
            REDIRECT
        );
        assert_eq!(only_flow(&fx.dp).1, FlowState::SynSent);
        let synack = tcp(fx.a.mac, GW_MAC, (A, 80), (WORLD, 33333), 0x12);
        assert_eq!(run(&fx.dp, &synack).0, REDIRECT);
        let (f, s) = only_flow(&fx.dp);
        assert_eq!(s, FlowState::SynRecv, "answered is not established");
        assert_eq!(f.entry.flags & CT_F_ASSURED, 0);
        assert_eq!(conntrack::timeout(&f, &t), t.tcp_syn, "half-open");
        // The client's ACK completes the handshake.
        assert_eq!(
            run_prog(&fx.dp, PROG_FROM_UPLINK, &from_client(0x10)).0,
            REDIRECT
        );
        let (f, s) = only_flow(&fx.dp);
        assert_eq!(s, FlowState::Established);
        assert_eq!(conntrack::timeout(&f, &t), t.tcp_established);

        // The same from a container to the world.
        fx.dp.ct_remove(&[f.key, f.reply.unwrap().0]).unwrap();
        let out = |flags| tcp(fx.a.mac, GW_MAC, (A, 40000), (WORLD, 80), flags);
        let (v, o) = run(&fx.dp, &out(0x02));
        assert_eq!(v, REDIRECT);
        let port = parse_checked(&o).sport;
        let synack = tcp(WORLD_MAC, up0_mac(), (WORLD, 80), (UPLINK, port), 0x12);
        assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &synack).0, REDIRECT);
        assert_eq!(only_flow(&fx.dp).1, FlowState::SynRecv);
        assert_eq!(run(&fx.dp, &out(0x10)).0, REDIRECT);
        assert_eq!(only_flow(&fx.dp).1, FlowState::Established);
    });
}

#[test]
fn ct_a_full_table_refuses_new_flows_and_keeps_the_old_ones() {
    in_fresh_netns(|| {
        // Room for four flows.
        let mut fx = nat_fixture_sized(0, 50000, 50009, 8);
        publish_8080_to_a(&mut fx.dp);
        // Three answered flows of A: six entries.
        let flow = |sport| udp_to(fx.a.mac, GW_MAC, (A, sport), (WORLD, 53), false);
        let mut ports = Vec::new();
        for sport in [4001, 4002, 4003] {
            let (v, o) = run(&fx.dp, &flow(sport));
            assert_eq!(v, REDIRECT);
            let port = parse_checked(&o).sport;
            let reply = udp_to(WORLD_MAC, up0_mac(), (WORLD, 53), (UPLINK, port), false);
            assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &reply).0, REDIRECT);
            ports.push((sport, port));
        }
        let mut before = fx.dp.conntrack().unwrap();
        before.sort_by_key(|(k, _)| (k.saddr_be, k.sport_be, k.dport_be));
        // A SYN flood at the published port: the first fills the table,
        // the others are refused and counted, and push nothing out.
        let mut refused = 0;
        for client_port in 20000..20040 {
            let syn = tcp(
                WORLD_MAC,
                up0_mac(),
                (WORLD, client_port),
                (UPLINK, 8080),
                0x02,
            );
            match run_prog(&fx.dp, PROG_FROM_UPLINK, &syn).0 {
                SHOT => refused += 1,
                v => assert_eq!(v, REDIRECT),
            }
        }
        assert_eq!(refused, 39);
        assert_eq!(drops(&fx.dp, 0, DropReason::CtFull), 39);
        // A's flows are whole and go on both ways.
        let after = fx.dp.conntrack().unwrap();
        assert_eq!(after.len(), 8);
        for (k, _) in &before {
            assert!(after.iter().any(|(a, _)| a == k), "{k:?} was evicted");
        }
        for (sport, port) in ports {
            let (v, o) = run(&fx.dp, &flow(sport));
            assert_eq!(v, REDIRECT);
            assert_eq!(parse_checked(&o).sport, port);
            let reply = udp_to(WORLD_MAC, up0_mac(), (WORLD, 53), (UPLINK, port), false);
            assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &reply).0, REDIRECT);
        }
        // A new flow of A is refused too; its port probes take nothing.
        assert_eq!(run(&fx.dp, &flow(4004)).0, SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::CtFull), 1);
        assert_eq!(fx.dp.conntrack().unwrap().len(), 8);
    });
}

#[test]
fn ct_a_flow_that_lost_its_reply_entry_gets_it_back_or_ends() {
    in_fresh_netns(|| {
        let mut fx = nat_fixture(50000, 50009);
        let f = udp_to(fx.a.mac, GW_MAC, (A, 4000), (WORLD, 53), false);
        let (_, o) = run(&fx.dp, &f);
        let port = parse_checked(&o).sport;
        let ct = fx.dp.conntrack().unwrap();
        let (rk, re) = *ct.iter().find(|(_, e)| e.flags & CT_F_REPLY != 0).unwrap();
        let (fk, fe) = *ct.iter().find(|(_, e)| e.flags & CT_F_REPLY == 0).unwrap();
        assert_eq!(re.flow_id, fe.flow_id, "one identity for both entries");
        // The reply entry lost: the flow's next packet makes it again.
        fx.dp.ct_remove(&[rk]).unwrap();
        let (v, o) = run(&fx.dp, &f);
        assert_eq!(v, REDIRECT);
        assert_eq!(parse_checked(&o).sport, port);
        let ct = fx.dp.conntrack().unwrap();
        let (_, back) = *ct.iter().find(|(k, _)| *k == rk).expect("made again");
        assert_eq!(
            (
                back.flags,
                back.flow_id,
                back.new_daddr_be,
                back.new_dport_be
            ),
            (re.flags, re.flow_id, re.new_daddr_be, re.new_dport_be)
        );
        let reply = udp_to(WORLD_MAC, up0_mac(), (WORLD, 53), (UPLINK, port), false);
        let (v, b) = run_prog(&fx.dp, PROG_FROM_UPLINK, &reply);
        assert_eq!(v, REDIRECT);
        assert_eq!(parse_checked(&b).daddr, ip(A));
        // Lost again, and its tuple (the NAT port to that peer) is another
        // flow's now (B's): A's flow ends rather than send on that tuple.
        fx.dp.ct_remove(&[rk]).unwrap();
        let bs = CtEntry {
            new_daddr_be: fx.b.addr_be,
            new_dport_be: 4000u16.to_be(),
            flags: CT_F_DNAT | CT_F_TO_ENDPOINT | CT_F_REPLY,
            endpoint_be: fx.b.addr_be,
            flow_id: re.flow_id.wrapping_add(1),
            ..Default::default()
        };
        fx.dp.ct_insert(&rk, &bs).unwrap();
        assert_eq!(run(&fx.dp, &f).0, SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::CtHalfFlow), 1);
        let ct = fx.dp.conntrack().unwrap();
        assert!(!ct.iter().any(|(k, _)| *k == fk), "A's first entry is gone");
        assert_eq!(
            ct.iter().find(|(k, _)| *k == rk).map(|(_, e)| *e),
            Some(bs),
            "B's entry is untouched"
        );
        // A's next datagram is a new flow, on another port.
        let (v, o) = run(&fx.dp, &f);
        assert_eq!(v, REDIRECT);
        assert_ne!(parse_checked(&o).sport, port);
    });
}

#[test]
fn ct_two_published_ports_to_one_backend_port_keep_their_flows_apart() {
    in_fresh_netns(|| {
        let mut fx = nat_fixture(50000, 50009);
        publish_8080_to_a(&mut fx.dp);
        let key = ServiceKey {
            addr_be: 0,
            port_be: 8081u16.to_be(),
            proto: 6,
            _pad: 0,
        };
        let svc = Service {
            backend_be: fx.a.addr_be,
            backend_port_be: 80u16.to_be(),
            _pad: 0,
        };
        fx.dp.set_service(&key, &svc).unwrap();
        // One client address and port, to both published ports.
        let syn = |port| tcp(WORLD_MAC, up0_mac(), (WORLD, 33333), (UPLINK, port), 0x02);
        let (v, i1) = run_prog(&fx.dp, PROG_FROM_UPLINK, &syn(8080));
        assert_eq!(v, REDIRECT);
        let p1 = parse_checked(&i1);
        assert_eq!((p1.saddr, p1.sport), (ip(WORLD), 33333));
        let (v, i2) = run_prog(&fx.dp, PROG_FROM_UPLINK, &syn(8081));
        assert_eq!(v, REDIRECT);
        let p2 = parse_checked(&i2);
        assert_eq!((p2.daddr, p2.dport), (ip(A), 80));
        assert_eq!(p2.saddr, ip(WORLD));
        assert!(
            (50000..=50009).contains(&p2.sport),
            "the clash is solved by translating the client's port: {}",
            p2.sport
        );
        assert_eq!(fx.dp.conntrack().unwrap().len(), 4, "two flows, whole");
        // Each answer leaves as its own published port, to the client's port.
        let answer = |to| tcp(fx.a.mac, GW_MAC, (A, 80), (WORLD, to), 0x12);
        let (v, o1) = run(&fx.dp, &answer(33333));
        assert_eq!(v, REDIRECT);
        let o1 = parse_checked(&o1);
        assert_eq!((o1.saddr, o1.sport, o1.dport), (ip(UPLINK), 8080, 33333));
        let (v, o2) = run(&fx.dp, &answer(p2.sport));
        assert_eq!(v, REDIRECT);
        let o2 = parse_checked(&o2);
        assert_eq!((o2.saddr, o2.sport, o2.dport), (ip(UPLINK), 8081, 33333));
        // The client's next segment on the second port keeps its tuple.
        let ack = tcp(WORLD_MAC, up0_mac(), (WORLD, 33333), (UPLINK, 8081), 0x10);
        let (v, i3) = run_prog(&fx.dp, PROG_FROM_UPLINK, &ack);
        assert_eq!(v, REDIRECT);
        assert_eq!(parse_checked(&i3).sport, p2.sport);
        let views: Vec<_> = conntrack::flows(&fx.dp.conntrack().unwrap())
            .iter()
            .map(|f| conntrack::view(f, 0, &Timeouts::default()).kind)
            .collect();
        assert_eq!(views, ["dnat", "dnat"]);
    });
}

/// A TCP segment with its sequence numbers, window and options (whole
/// 4-byte words), checksums right.
#[allow(clippy::too_many_arguments)]
fn tcp_seg(
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    s: (&str, u16),
    d: (&str, u16),
    flags: u8,
    seq: u32,
    ack: u32,
    win: u16,
    opts: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let (s_ip, d_ip) = (ip(s.0), ip(d.0));
    let mut seg = Vec::new();
    seg.extend_from_slice(&s.1.to_be_bytes());
    seg.extend_from_slice(&d.1.to_be_bytes());
    seg.extend_from_slice(&seq.to_be_bytes());
    seg.extend_from_slice(&ack.to_be_bytes());
    let doff = (20 + opts.len()) / 4;
    seg.extend_from_slice(&[(doff as u8) << 4, flags]);
    seg.extend_from_slice(&win.to_be_bytes());
    seg.extend_from_slice(&[0, 0, 0, 0]);
    seg.extend_from_slice(opts);
    seg.extend_from_slice(payload);
    let c = l4_checksum(s_ip, d_ip, 6, &seg);
    seg[16..18].copy_from_slice(&c.to_be_bytes());
    ip_frame(src_mac, dst_mac, s_ip, d_ip, 6, &seg)
}

/// MSS 1460, NOP, window scale 7 (as Linux sends them, less SACK and
/// timestamps).
const SYN_OPTS: [u8; 8] = [2, 4, 0x05, 0xb4, 1, 3, 3, 7];

/// A's connection to the world's port 80, through the handshake and a
/// little data each way: client ISN 1000, server ISN 5000, both scaling
/// windows by 7. Returns its NAT port. The only flow in the table.
fn an_established_connection(fx: &Fixture) -> u16 {
    let port = establish(fx, 40000);
    assert_eq!(only_flow(&fx.dp).1, FlowState::Established);
    port
}

/// A's segment from `sport` to the world's port 80.
#[allow(clippy::too_many_arguments)]
fn from_a(
    fx: &Fixture,
    sport: u16,
    flags: u8,
    seq: u32,
    ack: u32,
    win: u16,
    opts: &[u8],
    data: &[u8],
) -> Vec<u8> {
    tcp_seg(
        fx.a.mac,
        GW_MAC,
        (A, sport),
        (WORLD, 80),
        flags,
        seq,
        ack,
        win,
        opts,
        data,
    )
}

/// The world's segment from port 80 to the uplink's `port`.
fn to_port(port: u16, flags: u8, seq: u32, ack: u32, win: u16, opts: &[u8]) -> Vec<u8> {
    tcp_seg(
        WORLD_MAC,
        up0_mac(),
        (WORLD, 80),
        (UPLINK, port),
        flags,
        seq,
        ack,
        win,
        opts,
        b"",
    )
}

/// A's SYN from `sport` to the world's port 80 (ISN 1000, scaling by 7),
/// forwarded; returns the flow's NAT port.
fn syn_from_a(fx: &Fixture, sport: u16) -> u16 {
    let (v, o) = run(
        &fx.dp,
        &from_a(fx, sport, 0x02, 1000, 0, 64240, &SYN_OPTS, b""),
    );
    assert_eq!(v, REDIRECT);
    parse_checked(&o).sport
}

/// A's connection from `sport` to the world's port 80, as
/// [`an_established_connection`] makes it (the server has sent up to
/// 5007, the client up to 1006); returns its NAT port.
fn establish(fx: &Fixture, sport: u16) -> u16 {
    let a = |flags, seq, ack, win, opts: &[u8], data: &[u8]| {
        from_a(fx, sport, flags, seq, ack, win, opts, data)
    };
    let port = syn_from_a(fx, sport);
    let w = |flags, seq, ack, win, opts: &[u8], data: &[u8]| {
        tcp_seg(
            WORLD_MAC,
            up0_mac(),
            (WORLD, 80),
            (UPLINK, port),
            flags,
            seq,
            ack,
            win,
            opts,
            data,
        )
    };
    let synack = w(0x12, 5000, 1001, 65160, &SYN_OPTS, b"");
    assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &synack).0, REDIRECT);
    assert_eq!(run(&fx.dp, &a(0x10, 1001, 5001, 502, &[], b"")).0, REDIRECT);
    assert_eq!(
        run(&fx.dp, &a(0x18, 1001, 5001, 502, &[], b"GET /")).0,
        REDIRECT
    );
    let data = w(0x18, 5001, 1006, 509, &[], b"200 OK");
    assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &data).0, REDIRECT);
    port
}

#[test]
fn ct_a_reset_outside_the_window_or_inexact_leaves_the_flow_and_the_exact_one_ends_it() {
    in_fresh_netns(|| {
        let fx = nat_fixture(50000, 50009);
        let port = an_established_connection(&fx);
        let rst = |seq: u32| {
            tcp_seg(
                WORLD_MAC,
                up0_mac(),
                (WORLD, 80),
                (UPLINK, port),
                0x04,
                seq,
                0,
                0,
                &[],
                b"",
            )
        };
        // The server has sent up to 5007; A allows it 509 << 7 bytes more.
        // Blind resets: far ahead, behind, half the sequence space away.
        for seq in [
            5007 + (509 << 7) + 1,
            5007u32.wrapping_sub(1 << 20),
            5007 + (1 << 31),
        ] {
            assert_eq!(
                run_prog(&fx.dp, PROG_FROM_UPLINK, &rst(seq)).0,
                SHOT,
                "{seq}"
            );
        }
        assert_eq!(drops(&fx.dp, 0, DropReason::CtRstOutOfWindow), 3);
        let (f, s) = only_flow(&fx.dp);
        assert_eq!(s, FlowState::Established, "the flow goes on");
        assert_eq!(f.reply.unwrap().1.tcp_seen & dnet_common::nat::TCP_RST, 0);
        // A's next segment still leaves on its port.
        let more = tcp_seg(
            fx.a.mac,
            GW_MAC,
            (A, 40000),
            (WORLD, 80),
            0x10,
            1006,
            5007,
            502,
            &[],
            b"",
        );
        let (v, o) = run(&fx.dp, &more);
        assert_eq!(v, REDIRECT);
        assert_eq!(parse_checked(&o).sport, port);
        // A reset in the window but not at the server's next sequence
        // number (here a little ahead): A gets it (and answers with a
        // challenge ACK), the established flow goes on, as with Linux.
        let (v, o) = run_prog(&fx.dp, PROG_FROM_UPLINK, &rst(5007 + 1000));
        assert_eq!(v, REDIRECT);
        assert_eq!(parse_checked(&o).daddr, ip(A));
        let (f, s) = only_flow(&fx.dp);
        assert_eq!(s, FlowState::Established, "an inexact RST ends nothing");
        assert_eq!(f.reply.unwrap().1.tcp_seen & dnet_common::nat::TCP_RST, 0);
        // The exact one ends it.
        let (v, o) = run_prog(&fx.dp, PROG_FROM_UPLINK, &rst(5007));
        assert_eq!(v, REDIRECT);
        assert_eq!(parse_checked(&o).daddr, ip(A));
        assert_eq!(only_flow(&fx.dp).1, FlowState::Closing);
        assert_eq!(drops(&fx.dp, 0, DropReason::CtRstOutOfWindow), 3);
    });
}

#[test]
fn ct_the_openers_reset_to_an_older_connections_ack_reaches_the_peer_and_ends_nothing() {
    in_fresh_netns(|| {
        let fx = nat_fixture(50000, 50009);
        // A opens a connection on a tuple whose server still holds an older
        // one (in LAST_ACK: its last ACK was lost): the server answers the
        // SYN with that connection's ACK, and A with a RST at its ACK
        // number, far from A's own sequence space.
        let port = syn_from_a(&fx, 40000);
        let old_ack = 1000u32.wrapping_add(1 << 31);
        let challenge = to_port(port, 0x10, 777_000, old_ack, 509, &[]);
        let (v, o) = run_prog(&fx.dp, PROG_FROM_UPLINK, &challenge);
        assert_eq!(v, REDIRECT, "A gets the ACK, and answers it");
        assert_eq!(parse_checked(&o).daddr, ip(A));
        let rst = from_a(&fx, 40000, 0x04, old_ack, 0, 0, &[], b"");
        let (v, o) = run(&fx.dp, &rst);
        assert_eq!(v, REDIRECT, "the RST reaches the server, which it frees");
        assert_eq!(parse_checked(&o).sport, port);
        assert_eq!(drops(&fx.dp, 1, DropReason::CtRstOutOfWindow), 0);
        assert_eq!(only_flow(&fx.dp).1, FlowState::SynSent, "it ends nothing");
        // A's SYN again, then the server's answer: the handshake goes on.
        assert_eq!(syn_from_a(&fx, 40000), port, "on the same port");
        let synack = to_port(port, 0x12, 5000, 1001, 65160, &SYN_OPTS);
        assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &synack).0, REDIRECT);
        // Once the server has answered, A's RST outside the window is
        // dropped, as the world's is.
        let (v, _) = run(&fx.dp, &from_a(&fx, 40000, 0x04, old_ack, 0, 0, &[], b""));
        assert_eq!(v, SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::CtRstOutOfWindow), 1);
        assert_eq!(only_flow(&fx.dp).1, FlowState::SynRecv);
    });
}

#[test]
fn ct_the_reuse_grace_counts_from_the_flows_last_packet() {
    in_fresh_netns(|| {
        let fx = nat_fixture(50000, 50009);
        let port = an_established_connection(&fx);
        let rst = tcp_seg(
            WORLD_MAC,
            up0_mac(),
            (WORLD, 80),
            (UPLINK, port),
            0x04,
            5007,
            0,
            0,
            &[],
            b"",
        );
        assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &rst).0, REDIRECT);
        // Another step of the closed flow (A's own RST), within the second
        // that the open flow's refresh waits: the grace counts from it.
        let since = conntrack::now_ns();
        let a_rst = from_a(&fx, 40000, 0x04, 1006, 0, 0, &[], b"");
        assert_eq!(run(&fx.dp, &a_rst).0, REDIRECT);
        let (f, s) = only_flow(&fx.dp);
        assert_eq!(s, FlowState::Closing);
        assert!(
            conntrack::last_seen(&f) >= since,
            "last packet at {}, sent after {since}",
            conntrack::last_seen(&f)
        );
    });
}

#[test]
fn ct_a_containers_limits_refuse_its_next_flow_and_spare_others() {
    in_fresh_netns(|| {
        let mut fx = nat_fixture(50000, 50009);
        let cfg = Config {
            ep_flow_limit: 3,
            dest_port_limit: 2,
            ..fx.dp.config().unwrap()
        };
        fx.dp.set_config(&cfg).unwrap();
        let from =
            |mac, src: &str, sport, dport| udp_to(mac, GW_MAC, (src, sport), (WORLD, dport), false);
        let a = |sport, dport| from(fx.a.mac, A, sport, dport);
        // Two ports towards WORLD:53, the third refused with its reason.
        assert_eq!(run(&fx.dp, &a(4001, 53)).0, REDIRECT);
        assert_eq!(run(&fx.dp, &a(4002, 53)).0, REDIRECT);
        assert_eq!(run(&fx.dp, &a(4003, 53)).0, SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::NatDestinationLimit), 1);
        // Another destination: A's third flow, then its total is reached.
        assert_eq!(run(&fx.dp, &a(4004, 54)).0, REDIRECT);
        assert_eq!(run(&fx.dp, &a(4005, 55)).0, SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::CtEndpointLimit), 1);
        // A's flows go on, and so do flows the world opens to A's
        // published port (they count for no container).
        assert_eq!(run(&fx.dp, &a(4001, 53)).0, REDIRECT);
        publish_8080_to_a(&mut fx.dp);
        let syn = tcp(WORLD_MAC, up0_mac(), (WORLD, 33333), (UPLINK, 8080), 0x02);
        assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &syn).0, REDIRECT);
        assert_eq!(
            fx.dp.conntrack().unwrap().len(),
            2 * 4,
            "nothing refused left an entry"
        );
        let mut q = fx.dp.quota().unwrap();
        q.sort_by_key(|(k, _)| (k.endpoint_be, k.daddr_be, k.dport_be));
        let a_total = dnet_common::QuotaKey::endpoint(fx.a.addr_be);
        assert!(q.contains(&(a_total, 3)), "{q:?}");
        // The daemon removes one of A's flows (as its collector does): the
        // charge comes back, and A opens one more.
        let gone = conntrack::flows(&fx.dp.conntrack().unwrap())
            .into_iter()
            .find(|f| f.key.saddr_be == fx.a.addr_be && u16::from_be(f.key.sport_be) == 4001)
            .unwrap();
        fx.dp.ct_remove(&[gone.key, gone.reply.unwrap().0]).unwrap();
        assert_eq!(run(&fx.dp, &a(4003, 53)).0, REDIRECT);
        assert_eq!(run(&fx.dp, &a(4006, 56)).0, SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::CtEndpointLimit), 2);
        // Counters with no flow left are forgotten.
        fx.dp
            .ct_remove(
                &fx.dp
                    .conntrack()
                    .unwrap()
                    .iter()
                    .map(|(k, _)| *k)
                    .collect::<Vec<_>>(),
            )
            .unwrap();
        assert!(fx.dp.quota().unwrap().is_empty());
        assert_eq!(fx.dp.quota_sweep().unwrap(), 3, "A, A to :53, A to :54");
        assert_eq!(fx.dp.quota_sweep().unwrap(), 0);
    });
}

#[test]
fn ct_only_the_openers_plain_syn_starts_a_closed_flow_over() {
    in_fresh_netns(|| {
        let fx = nat_fixture(50000, 50009);
        let port = an_established_connection(&fx);
        let w = |flags, seq| {
            tcp_seg(
                WORLD_MAC,
                up0_mac(),
                (WORLD, 80),
                (UPLINK, port),
                flags,
                seq,
                0,
                0,
                &[],
                b"",
            )
        };
        let a = |flags, seq| {
            tcp_seg(
                fx.a.mac,
                GW_MAC,
                (A, 40000),
                (WORLD, 80),
                flags,
                seq,
                0,
                64240,
                &SYN_OPTS,
                b"",
            )
        };
        // The server resets the connection (in its window): closed.
        assert_eq!(
            run_prog(&fx.dp, PROG_FROM_UPLINK, &w(0x04, 5007)).0,
            REDIRECT
        );
        assert_eq!(only_flow(&fx.dp).1, FlowState::Closing);
        // SYN+RST and SYN+FIN from the opener, and a SYN from the world
        // side: none may start the closed flow over.
        run(&fx.dp, &a(0x06, 9000));
        assert_eq!(only_flow(&fx.dp).1, FlowState::Closing, "SYN+RST");
        run(&fx.dp, &a(0x03, 9000));
        assert_eq!(only_flow(&fx.dp).1, FlowState::Closing, "SYN+FIN");
        run_prog(&fx.dp, PROG_FROM_UPLINK, &w(0x02, 7000));
        assert_eq!(only_flow(&fx.dp).1, FlowState::Closing, "the world's SYN");
        // The opener's own SYN does.
        assert_eq!(run(&fx.dp, &a(0x02, 9000)).0, REDIRECT);
        assert_eq!(only_flow(&fx.dp).1, FlowState::SynSent);
    });
}

#[test]
fn ct_a_segment_with_none_of_syn_ack_and_rst_is_dropped_as_invalid() {
    in_fresh_netns(|| {
        let fx = nat_fixture(50000, 50009);
        let port = an_established_connection(&fx);
        let before = fx.dp.conntrack().unwrap();
        // In the window, from the world: a null segment, PSH alone, a FIN
        // without ACK.
        for flags in [0x00, 0x08, 0x01] {
            let seg = to_port(port, flags, 5007, 0, 509, &[]);
            assert_eq!(
                run_prog(&fx.dp, PROG_FROM_UPLINK, &seg).0,
                SHOT,
                "{flags:#x}"
            );
        }
        assert_eq!(drops(&fx.dp, 0, DropReason::CtTcpInvalid), 3);
        // From A too.
        let psh = from_a(&fx, 40000, 0x08, 1006, 0, 502, &[], b"x");
        assert_eq!(run(&fx.dp, &psh).0, SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::CtTcpInvalid), 1);
        assert_eq!(fx.dp.conntrack().unwrap(), before, "nothing noted");
    });
}

#[test]
fn ct_a_forged_fin_before_the_syn_ack_does_not_spoil_the_handshake() {
    in_fresh_netns(|| {
        let fx = nat_fixture(50000, 50009);
        let port = syn_from_a(&fx, 40000);
        // The world's FIN (no ACK) on the flow's tuple, before the server
        // answered: it would set where the server's side is.
        let fin = to_port(port, 0x01, 9_000_000, 0, 512, &[]);
        assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &fin).0, SHOT);
        let synack = to_port(port, 0x12, 5000, 1001, 65160, &SYN_OPTS);
        assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &synack).0, REDIRECT);
        assert_eq!(only_flow(&fx.dp).1, FlowState::SynRecv);
        let ack = from_a(&fx, 40000, 0x10, 1001, 5001, 502, &[], b"");
        assert_eq!(run(&fx.dp, &ack).0, REDIRECT);
        assert_eq!(only_flow(&fx.dp).1, FlowState::Established);
    });
}

#[test]
fn ct_a_forged_syn_ack_starts_nothing_and_the_real_one_completes_the_handshake() {
    in_fresh_netns(|| {
        let fx = nat_fixture(50000, 50009);
        let port = syn_from_a(&fx, 40000);
        let before = fx.dp.conntrack().unwrap();
        // A SYN-ACK that acknowledges nothing A sent, at another sequence.
        let forged = to_port(port, 0x12, 5000 + 1_000_000, 777_777, 65160, &SYN_OPTS);
        run_prog(&fx.dp, PROG_FROM_UPLINK, &forged);
        assert_eq!(fx.dp.conntrack().unwrap(), before, "nothing noted");
        let synack = to_port(port, 0x12, 5000, 1001, 65160, &SYN_OPTS);
        assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &synack).0, REDIRECT);
        let ack = from_a(&fx, 40000, 0x10, 1001, 5001, 502, &[], b"");
        assert_eq!(run(&fx.dp, &ack).0, REDIRECT);
        assert_eq!(only_flow(&fx.dp).1, FlowState::Established);
    });
}

#[test]
fn ct_an_icmp_error_writes_nothing_on_the_flow_it_is_about() {
    in_fresh_netns(|| {
        let mut fx = nat_fixture(50000, 50009);
        // An answered UDP flow, both entries last used ten seconds ago.
        let out = udp_to(fx.a.mac, GW_MAC, (A, 4000), (WORLD, 53), false);
        let (_, o) = run(&fx.dp, &out);
        let port = parse_checked(&o).sport;
        let reply = udp_to(WORLD_MAC, up0_mac(), (WORLD, 53), (UPLINK, port), false);
        assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &reply).0, REDIRECT);
        for (k, mut e) in fx.dp.conntrack().unwrap() {
            e.last_seen_ns = e.last_seen_ns.saturating_sub(10_000_000_000);
            fx.dp.ct_insert(&k, &e).unwrap();
        }
        let before = fx.dp.conntrack().unwrap();
        // "Port unreachable" from the world about it (forged or not): it
        // reaches A, and the flow's idle time goes on.
        let err = icmp_error_quoting(WORLD_MAC, up0_mac(), WORLD, UPLINK, 3, 3, &o);
        let (v, b) = run_prog(&fx.dp, PROG_FROM_UPLINK, &err);
        assert_eq!(v, REDIRECT);
        assert_eq!(parse_checked(&b).daddr, ip(A));
        assert_eq!(fx.dp.conntrack().unwrap(), before, "nothing written");
        // An unanswered flow of A that lost its reply entry: A's own error
        // about a datagram of that flow does not make the entry again.
        let out = udp_to(fx.a.mac, GW_MAC, (A, 4001), (WORLD, 53), false);
        assert_eq!(run(&fx.dp, &out).0, REDIRECT);
        let ct = fx.dp.conntrack().unwrap();
        let (rk, _) = *ct
            .iter()
            .find(|(k, e)| {
                e.flags & CT_F_REPLY != 0 && e.new_dport_be == 4001u16.to_be() && k.proto == 17
            })
            .unwrap();
        fx.dp.ct_remove(&[rk]).unwrap();
        let before = fx.dp.conntrack().unwrap();
        let got = udp_to(GW_MAC, fx.a.mac, (WORLD, 53), (A, 4001), false);
        let err = icmp_error_quoting(fx.a.mac, GW_MAC, A, WORLD, 3, 3, &got);
        run(&fx.dp, &err);
        assert_eq!(fx.dp.conntrack().unwrap(), before, "no repair");
    });
}

#[test]
fn ct_a_closed_tcp_flow_gives_its_charge_back_at_once_and_a_restart_is_charged() {
    in_fresh_netns(|| {
        let mut fx = nat_fixture(50000, 50009);
        let cfg = Config {
            ep_flow_limit: 1,
            dest_port_limit: 1,
            ..fx.dp.config().unwrap()
        };
        fx.dp.set_config(&cfg).unwrap();
        let a_total = dnet_common::QuotaKey::endpoint(fx.a.addr_be);
        let charged = |dp: &Datapath| {
            dp.quota()
                .unwrap()
                .iter()
                .find(|(k, _)| *k == a_total)
                .map_or(0, |(_, n)| *n)
        };
        let syn = |fx: &Fixture, sport| from_a(fx, sport, 0x02, 1000, 0, 64240, &SYN_OPTS, b"");
        let port = an_established_connection(&fx);
        assert_eq!(charged(&fx.dp), 1);
        assert_eq!(run(&fx.dp, &syn(&fx, 40001)).0, SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::CtEndpointLimit), 1);
        // The server resets it (the answers' direction): the charge comes
        // back at once, not when the collector runs.
        let rst = to_port(port, 0x04, 5007, 0, 0, &[]);
        assert_eq!(run_prog(&fx.dp, PROG_FROM_UPLINK, &rst).0, REDIRECT);
        assert_eq!(only_flow(&fx.dp).1, FlowState::Closing);
        assert_eq!(charged(&fx.dp), 0);
        // A starts the closed tuple over: a new flow, charged.
        assert_eq!(run(&fx.dp, &syn(&fx, 40000)).0, REDIRECT);
        assert_eq!(charged(&fx.dp), 1);
        assert_eq!(run(&fx.dp, &syn(&fx, 40001)).0, SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::CtEndpointLimit), 2);
        // A resets it (the first direction): given back again.
        let rst = from_a(&fx, 40000, 0x04, 1001, 0, 0, &[], b"");
        assert_eq!(run(&fx.dp, &rst).0, REDIRECT);
        assert_eq!(charged(&fx.dp), 0);
        assert_eq!(run(&fx.dp, &syn(&fx, 40001)).0, REDIRECT);
        assert_eq!(charged(&fx.dp), 1);
        // The collector removes the closed flow later: nothing is given
        // back twice.
        let closed = conntrack::flows(&fx.dp.conntrack().unwrap())
            .into_iter()
            .find(|f| u16::from_be(f.key.sport_be) == 40000)
            .unwrap();
        fx.dp
            .ct_remove(&[closed.key, closed.reply.unwrap().0])
            .unwrap();
        assert_eq!(charged(&fx.dp), 1);
        assert_eq!(run(&fx.dp, &syn(&fx, 40002)).0, SHOT);
    });
}

/// Finding 1 of the 10:58 review: a container could keep a closed,
/// uncharged flow's entries alive (and fill the table for everyone) by
/// resetting it itself and then sending one segment in the window now and
/// then. After the closing RST the flow's segments still go through, but
/// move its time no more, and the collector takes it by the short closed
/// timeout from the RST on.
#[test]
fn ct_a_closed_flows_later_segments_do_not_keep_it_alive() {
    in_fresh_netns(|| {
        let mut fx = nat_fixture(50000, 50009);
        let cfg = Config {
            ep_flow_limit: 4,
            ..fx.dp.config().unwrap()
        };
        fx.dp.set_config(&cfg).unwrap();
        let port = an_established_connection(&fx);
        assert_eq!(only_flow(&fx.dp).0.entry.flags & CT_F_COUNTED, CT_F_COUNTED);
        // A resets its own connection at its exact sequence number.
        let a_rst = from_a(&fx, 40000, 0x04, 1006, 0, 0, &[], b"");
        assert_eq!(run(&fx.dp, &a_rst).0, REDIRECT);
        let (closed, s) = only_flow(&fx.dp);
        assert_eq!(s, FlowState::Closing);
        assert_eq!(closed.entry.flags & CT_F_COUNTED, 0, "charge given back");
        // Segments in the window afterwards, both ways, and the same RST
        // again: forwarded, but the flow's time stays at the RST.
        let later = [
            (true, from_a(&fx, 40000, 0x10, 1006, 5007, 502, &[], b"")),
            (true, from_a(&fx, 40000, 0x18, 1006, 5007, 502, &[], b"x")),
            (true, a_rst.clone()),
            (false, to_port(port, 0x10, 5007, 1006, 509, &[])),
        ];
        for (from_a_side, f) in &later {
            let v = if *from_a_side {
                run(&fx.dp, f).0
            } else {
                run_prog(&fx.dp, PROG_FROM_UPLINK, f).0
            };
            assert_eq!(v, REDIRECT);
        }
        let (f, s) = only_flow(&fx.dp);
        assert_eq!(s, FlowState::Closing);
        assert_eq!(f.entry.last_seen_ns, closed.entry.last_seen_ns);
        assert_eq!(
            f.reply.unwrap().1.last_seen_ns,
            closed.reply.unwrap().1.last_seen_ns
        );
        // The collector's decision on these very entries, its clock set
        // from the RST on: kept up to the short timeout, gone after it.
        let t = Timeouts::default();
        let es = fx.dp.conntrack().unwrap();
        let end = conntrack::last_seen(&f) + t.tcp_closed_uncharged.as_nanos() as u64;
        assert!(conntrack::expired(&es, end, &t).is_empty());
        let gone = conntrack::expired(&es, end + 1, &t);
        assert_eq!(gone, vec![f.key, f.reply.unwrap().0]);
        fx.dp.ct_remove(&gone).unwrap();
        assert!(fx.dp.conntrack().unwrap().is_empty());
        assert!(
            fx.dp.quota().unwrap().is_empty(),
            "nothing given back twice"
        );
    });
}

/// The daemon's limit counter of `k` set to `n`, as drift leaves it.
fn set_closed(dp: &mut Datapath, k: &dnet_common::QuotaKey, n: i64) {
    dp.maps.ct_closed.insert(k, n, 0).unwrap();
}

/// Finding 5 of the 10:58 review: the limit counters drift (a charge given
/// back twice, charges on CPUs the limits do not sum), in either direction,
/// which turned a limit off or tighter. The sweep recounts the charged
/// flows in the table and sets the counters to that.
#[test]
fn ct_the_quota_sweep_puts_drifted_counters_right() {
    in_fresh_netns(|| {
        let mut fx = nat_fixture(50000, 50009);
        let cfg = Config {
            ep_flow_limit: 3,
            ..fx.dp.config().unwrap()
        };
        fx.dp.set_config(&cfg).unwrap();
        let a = |sport, dport| udp_to(fx.a.mac, GW_MAC, (A, sport), (WORLD, dport), false);
        assert_eq!(run(&fx.dp, &a(4001, 53)).0, REDIRECT);
        assert_eq!(run(&fx.dp, &a(4002, 54)).0, REDIRECT);
        let a_total = dnet_common::QuotaKey::endpoint(fx.a.addr_be);
        let count = |dp: &Datapath| {
            dp.quota()
                .unwrap()
                .iter()
                .find(|(k, _)| *k == a_total)
                .map_or(0, |(_, n)| *n)
        };
        assert_eq!(count(&fx.dp), 2);
        // Two charges given back too many: A's limit no longer holds.
        set_closed(&mut fx.dp, &a_total, 2);
        assert_eq!(count(&fx.dp), 0);
        assert_eq!(run(&fx.dp, &a(4003, 55)).0, REDIRECT);
        assert_eq!(run(&fx.dp, &a(4004, 56)).0, REDIRECT, "over the limit");
        // The sweep counts A's four flows, and the limit holds again.
        assert_eq!(fx.dp.quota_sweep().unwrap(), 0);
        assert_eq!(count(&fx.dp), 4);
        assert_eq!(run(&fx.dp, &a(4005, 57)).0, SHOT);
        assert_eq!(drops(&fx.dp, 1, DropReason::CtEndpointLimit), 1);
        // Drift the other way (too many counted), and a counter of a
        // container with no flow at all: put right, and forgotten.
        set_closed(&mut fx.dp, &a_total, -10);
        let b_total = dnet_common::QuotaKey::endpoint(dnet_common::addr::ipv4_be(
            "172.17.0.9".parse().unwrap(),
        ));
        set_closed(&mut fx.dp, &b_total, -1);
        assert_eq!(count(&fx.dp), 4 + 10);
        assert_eq!(fx.dp.quota_sweep().unwrap(), 1, "B's counter");
        assert_eq!(count(&fx.dp), 4);
        let mut q = fx.dp.quota().unwrap();
        q.sort_by_key(|(k, _)| (k.endpoint_be, k.daddr_be, k.dport_be));
        assert_eq!(q.len(), 1 + 4, "A, and A to each of 53..=56: {q:?}");
        assert!(
            q.iter()
                .all(|(k, n)| *n == if *k == a_total { 4 } else { 1 })
        );
        // Nothing drifted: the sweep changes nothing.
        assert_eq!(fx.dp.quota_sweep().unwrap(), 0);
        assert_eq!(fx.dp.quota().unwrap().len(), 5);
    });
}
