//! Reading the datapath's conntrack map: pairing the two entries of a flow,
//! the TCP state, when a flow expires, and the view `dnet conntrack ls`
//! shows. Pure logic over the entries, so it is unit-tested without a
//! kernel.

use std::{
    any::Any,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use crate::api::{FlowState, FlowView, Tuple};
use dnet_common::{
    CtAddr, CtEntryOf, CtKeyOf,
    addr::ipv4_from_be,
    nat::{
        CT_F_ASSURED, CT_F_COUNTED, CT_F_DNAT, CT_F_HOST, CT_F_PUBLISHED, CT_F_REPLY,
        CT_F_REPLY_TO_ENDPOINT, CT_F_SNAT, CT_SEEN, TCP_ACK, TCP_SYN, tcp_closed,
    },
};

/// How long an idle flow lives, by protocol and state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// A half-open TCP flow: SYN sent, or SYN-ACK seen but not the
    /// opener's ACK (Linux: 120 s SYN_SENT, 60 s SYN_RECV).
    pub tcp_syn: Duration,
    pub tcp_established: Duration,
    pub tcp_closing: Duration,
    /// A closed TCP flow that has given its charge back (its first entry
    /// has no `CT_F_COUNTED`): short, as such a flow counts against no
    /// limit, and the datapath no longer times it on its segments. Its port
    /// is reused long before (`ct::reclaim`, 50 ms); this only keeps a late
    /// segment translated for a moment. Never longer than `tcp_closing`.
    pub tcp_closed_uncharged: Duration,
    /// A UDP flow answered at least once.
    pub udp: Duration,
    /// A UDP flow seen one way only (Linux: 30 s).
    pub udp_unreplied: Duration,
    pub icmp: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_syn: Duration::from_secs(60),
            tcp_established: Duration::from_secs(6 * 3600),
            tcp_closing: Duration::from_secs(30),
            tcp_closed_uncharged: Duration::from_secs(5),
            udp: Duration::from_secs(60),
            udp_unreplied: Duration::from_secs(30),
            icmp: Duration::from_secs(30),
        }
    }
}

/// A flow: its first entry (the direction that opened it) and, when
/// present, its reply entry. Of either table: `A` is `u32` for IPv4,
/// `[u8; 16]` for IPv6 (NAT66).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow<A = u32> {
    pub key: CtKeyOf<A>,
    pub entry: CtEntryOf<A>,
    pub reply: Option<(CtKeyOf<A>, CtEntryOf<A>)>,
}

/// An address of either table, as users read it.
fn addr<A: CtAddr + 'static>(a: &A) -> IpAddr {
    let a: &dyn Any = a;
    match (a.downcast_ref::<u32>(), a.downcast_ref::<[u8; 16]>()) {
        (Some(v4), _) => IpAddr::V4(ipv4_from_be(*v4)),
        (_, Some(v6)) => IpAddr::V6(Ipv6Addr::from(*v6)),
        _ => unreachable!("conntrack addresses are u32 or [u8; 16]"),
    }
}

/// ICMP or ICMPv6 (echo, tracked by its identifier).
fn is_icmp(proto: u8) -> bool {
    proto == 1 || proto == 58
}

pub use dnet_common::nat::{partner, translated};

/// Groups entries into flows. Two entries pair when each is the other's
/// partner and they carry the same flow identity; an entry whose partner
/// is missing, or whose partner's key another flow holds now, becomes a
/// flow of its own (and expires by itself, taking nothing of the other).
pub fn flows<A: CtAddr>(entries: &[(CtKeyOf<A>, CtEntryOf<A>)]) -> Vec<Flow<A>> {
    let by_key: std::collections::HashMap<CtKeyOf<A>, CtEntryOf<A>> =
        entries.iter().copied().collect();
    let mut out = Vec::new();
    for (k, e) in entries {
        let p = partner(k, e);
        let partner = by_key
            .get(&p)
            .filter(|pe| pe.flow_id == e.flow_id && partner(&p, pe) == *k)
            .map(|pe| (p, *pe));
        if e.flags & CT_F_REPLY != 0 {
            // Listed with its opening entry, unless that is gone.
            if partner.is_none() {
                out.push(Flow {
                    key: *k,
                    entry: *e,
                    reply: None,
                });
            }
            continue;
        }
        out.push(Flow {
            key: *k,
            entry: *e,
            reply: partner,
        });
    }
    out.sort_by_key(|f| f.entry.created_ns);
    out
}

pub fn state<A: CtAddr>(f: &Flow<A>) -> FlowState {
    let fwd = f.entry.tcp_seen;
    let rev = f.reply.map(|(_, e)| e.tcp_seen).unwrap_or(0);
    if f.key.proto == 6 {
        if tcp_closed(fwd, rev) {
            FlowState::Closing
        } else if f.entry.flags & CT_F_ASSURED != 0 {
            FlowState::Established
        } else if rev & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK {
            FlowState::SynRecv
        } else {
            FlowState::SynSent
        }
    } else if rev & CT_SEEN != 0 {
        FlowState::Replied
    } else {
        FlowState::Unreplied
    }
}

pub fn timeout<A: CtAddr>(f: &Flow<A>, t: &Timeouts) -> Duration {
    match (f.key.proto, state(f)) {
        (6, FlowState::SynSent | FlowState::SynRecv) => t.tcp_syn,
        (6, FlowState::Closing) if f.entry.flags & CT_F_COUNTED == 0 => {
            t.tcp_closing.min(t.tcp_closed_uncharged)
        }
        (6, FlowState::Closing) => t.tcp_closing,
        (6, _) => t.tcp_established,
        (p, _) if is_icmp(p) => t.icmp,
        (_, FlowState::Unreplied) => t.udp_unreplied,
        _ => t.udp,
    }
}

/// When the flow was last used (either way), in `bpf_ktime_get_ns` time.
pub fn last_seen<A: CtAddr>(f: &Flow<A>) -> u64 {
    f.entry
        .last_seen_ns
        .max(f.reply.map(|(_, e)| e.last_seen_ns).unwrap_or(0))
}

/// Keys of the flows idle beyond their timeout at `now_ns` (both entries,
/// the first one first: while it is there, its reply tuple is held).
pub fn expired<A: CtAddr>(
    entries: &[(CtKeyOf<A>, CtEntryOf<A>)],
    now_ns: u64,
    t: &Timeouts,
) -> Vec<CtKeyOf<A>> {
    let mut keys = Vec::new();
    for f in flows(entries) {
        let idle = now_ns.saturating_sub(last_seen(&f));
        if idle > timeout(&f, t).as_nanos() as u64 {
            keys.push(f.key);
            if let Some((k, _)) = f.reply {
                keys.push(k);
            }
        }
    }
    keys
}

/// Keys of the entries that involve any of `addrs` (a container's IPv4
/// addresses; an IPv6 flow names its container by them too, in
/// `endpoint_be`).
pub fn keys_of<A: CtAddr + 'static>(
    entries: &[(CtKeyOf<A>, CtEntryOf<A>)],
    addrs: &[Ipv4Addr],
) -> Vec<CtKeyOf<A>> {
    let be: Vec<u32> = addrs
        .iter()
        .map(|a| dnet_common::addr::ipv4_be(*a))
        .collect();
    let v4 = |a: &A| (a as &dyn Any).downcast_ref::<u32>().copied();
    entries
        .iter()
        .filter(|(k, e)| {
            be.contains(&e.endpoint_be)
                || [k.saddr_be, k.daddr_be, e.new_saddr_be, e.new_daddr_be]
                    .iter()
                    .filter_map(v4)
                    .any(|a| be.contains(&a))
        })
        .map(|(k, _)| *k)
        .collect()
}

/// The entries whose tuple or translation holds `addr` (an address the
/// uplink no longer has: both entries of every flow translated to it).
pub fn keys_with<A: CtAddr + PartialEq>(
    entries: &[(CtKeyOf<A>, CtEntryOf<A>)],
    addr: A,
) -> Vec<CtKeyOf<A>> {
    entries
        .iter()
        .filter(|(k, e)| [k.saddr_be, k.daddr_be, e.new_saddr_be, e.new_daddr_be].contains(&addr))
        .map(|(k, _)| *k)
        .collect()
}

fn endpoint<A: CtAddr + 'static>(a: &A, port_be: u16, proto: u8) -> String {
    let a = addr(a);
    if is_icmp(proto) {
        // ICMP: the identifier.
        if port_be == 0 {
            a.to_string()
        } else {
            format!("{a} id {}", u16::from_be(port_be))
        }
    } else {
        match a {
            IpAddr::V4(a) => format!("{a}:{}", u16::from_be(port_be)),
            IpAddr::V6(a) => format!("[{a}]:{}", u16::from_be(port_be)),
        }
    }
}

fn tuple<A: CtAddr + 'static>(k: &CtKeyOf<A>) -> Tuple {
    Tuple {
        src: endpoint(&k.saddr_be, k.sport_be, k.proto),
        dst: endpoint(&k.daddr_be, k.dport_be, k.proto),
    }
}

pub fn view<A: CtAddr + 'static>(f: &Flow<A>, now_ns: u64, t: &Timeouts) -> FlowView {
    let e = &f.entry;
    let kind = match (
        e.flags & CT_F_SNAT != 0,
        e.flags & CT_F_DNAT != 0,
        e.flags & CT_F_PUBLISHED != 0,
    ) {
        _ if e.flags & CT_F_HOST != 0 => "host",
        // A routed IPv6 network's flow (`routed6`): tracked with an
        // identity translation, nothing rewritten.
        (true, _, _) | (_, true, _) if translated(&f.key, e) == f.key => "routed",
        (true, true, _) if e.flags & CT_F_REPLY_TO_ENDPOINT != 0 => "hairpin",
        // A published port whose client port was translated too (a clash).
        (_, true, true) => "dnat",
        (true, true, _) => "hairpin",
        (true, false, _) => "snat",
        _ if e.flags & CT_F_REPLY != 0 => "reply",
        _ => "other",
    };
    let idle = now_ns.saturating_sub(last_seen(f));
    let ttl = (timeout(f, t).as_nanos() as u64).saturating_sub(idle);
    FlowView {
        proto: match f.key.proto {
            6 => "tcp".into(),
            17 => "udp".into(),
            1 => "icmp".into(),
            58 => "icmpv6".into(),
            p => p.to_string(),
        },
        kind: kind.into(),
        original: tuple(&f.key),
        translated: tuple(&translated(&f.key, e)),
        state: state(f),
        age_secs: now_ns.saturating_sub(e.created_ns) / 1_000_000_000,
        expires_in_secs: ttl / 1_000_000_000,
    }
}

/// `bpf_ktime_get_ns()` as userspace reads it.
pub fn now_ns() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use dnet_common::{
        CtEntry, CtKey,
        addr::ipv4_be,
        nat::{CT_F_TO_ENDPOINT, TCP_FIN},
    };

    use super::*;

    fn ip(s: &str) -> u32 {
        ipv4_be(s.parse().unwrap())
    }

    const S: u64 = 1_000_000_000;

    /// An outbound UDP flow 172.17.0.2:4000 -> 198.18.0.1:53 translated to
    /// 198.18.0.2:50000, as the datapath makes it.
    fn snat_pair(created: u64, reply_seen: Option<u64>) -> Vec<(CtKey, CtEntry)> {
        let fk = CtKey {
            saddr_be: ip("172.17.0.2"),
            daddr_be: ip("198.18.0.1"),
            sport_be: 4000u16.to_be(),
            dport_be: 53u16.to_be(),
            proto: 17,
            _pad: [0; 3],
        };
        let fe = CtEntry {
            new_saddr_be: ip("198.18.0.2"),
            new_sport_be: 50000u16.to_be(),
            flags: CT_F_SNAT | CT_F_REPLY_TO_ENDPOINT,
            endpoint_be: ip("172.17.0.2"),
            flow_id: 7,
            created_ns: created,
            last_seen_ns: created,
            ..Default::default()
        };
        let rk = partner(&fk, &fe);
        let re = CtEntry {
            new_daddr_be: ip("172.17.0.2"),
            new_dport_be: 4000u16.to_be(),
            flags: CT_F_DNAT | CT_F_TO_ENDPOINT | CT_F_REPLY,
            endpoint_be: ip("172.17.0.2"),
            created_ns: created,
            last_seen_ns: reply_seen.unwrap_or(created),
            tcp_seen: if reply_seen.is_some() { CT_SEEN } else { 0 },
            flow_id: 7,
            ..Default::default()
        };
        vec![(fk, fe), (rk, re)]
    }

    #[test]
    fn the_two_directions_pair_up() {
        let es = snat_pair(10 * S, None);
        let (rk, _) = es[1];
        assert_eq!(rk.saddr_be, ip("198.18.0.1"));
        assert_eq!(rk.daddr_be, ip("198.18.0.2"));
        assert_eq!(u16::from_be(rk.dport_be), 50000);
        let fs = flows(&es);
        assert_eq!(fs.len(), 1);
        assert_eq!(fs[0].reply.map(|r| r.0), Some(rk));
        let v = view(&fs[0], 12 * S, &Timeouts::default());
        assert_eq!(v.kind, "snat");
        assert_eq!(v.original.src, "172.17.0.2:4000");
        assert_eq!(v.translated.src, "198.18.0.2:50000");
        assert_eq!(v.translated.dst, "198.18.0.1:53");
        assert_eq!(v.age_secs, 2);
        assert_eq!(v.state, FlowState::Unreplied);
        assert_eq!(v.expires_in_secs, 28, "unanswered: 30 s");
        let answered = snat_pair(10 * S, Some(10 * S));
        let v = view(&flows(&answered)[0], 12 * S, &Timeouts::default());
        assert_eq!(v.state, FlowState::Replied);
        assert_eq!(v.expires_in_secs, 58);
    }

    #[test]
    fn entries_pair_only_with_a_partner_of_the_same_flow() {
        let mut es = snat_pair(0, None);
        // The reply tuple now belongs to another flow (another identity):
        // the first entry stands alone, and so does the other flow's.
        es[1].1.flow_id = 8;
        let fs = flows(&es);
        assert_eq!(fs.len(), 2, "{fs:?}");
        assert!(fs.iter().all(|f| f.reply.is_none()));
        // Expiring the orphaned first entry takes only its own key.
        es[1].1.last_seen_ns = 3600 * S;
        let gone = expired(&es, 3600 * S, &Timeouts::default());
        assert_eq!(gone, vec![es[0].0]);
    }

    #[test]
    fn unanswered_udp_expires_sooner_than_answered() {
        let t = Timeouts::default();
        let unreplied = snat_pair(0, None);
        assert_eq!(expired(&unreplied, 31 * S, &t).len(), 2);
        let replied = snat_pair(0, Some(0));
        assert!(expired(&replied, 31 * S, &t).is_empty());
        assert_eq!(expired(&replied, 61 * S, &t).len(), 2);
    }

    #[test]
    fn idle_flows_expire_by_the_later_direction() {
        let t = Timeouts {
            udp: Duration::from_secs(5),
            ..Default::default()
        };
        let es = snat_pair(10 * S, Some(14 * S));
        assert!(
            expired(&es, 18 * S, &t).is_empty(),
            "the reply kept it alive"
        );
        assert_eq!(expired(&es, 20 * S, &t).len(), 2, "both entries go");
    }

    #[test]
    fn tcp_states_follow_the_flags() {
        let mut es = snat_pair(0, None);
        for e in &mut es {
            e.0.proto = 6;
        }
        // Pairing uses the key after the change.
        let rk = partner(&es[0].0, &es[0].1);
        es[1].0 = rk;
        es[0].1.tcp_seen = TCP_SYN;
        assert_eq!(state(&flows(&es)[0]), FlowState::SynSent);
        es[1].1.tcp_seen = TCP_SYN | TCP_ACK;
        let t = Timeouts::default();
        assert_eq!(
            state(&flows(&es)[0]),
            FlowState::SynRecv,
            "answered, not established"
        );
        assert_eq!(timeout(&flows(&es)[0], &t), t.tcp_syn, "half-open");
        // The opener's ACK completes the handshake: the datapath marks it.
        es[0].1.tcp_seen |= TCP_ACK;
        es[0].1.flags |= CT_F_ASSURED;
        assert_eq!(state(&flows(&es)[0]), FlowState::Established);
        assert_eq!(timeout(&flows(&es)[0], &t), t.tcp_established);
        es[0].1.tcp_seen |= TCP_FIN;
        assert_eq!(state(&flows(&es)[0]), FlowState::Established, "half closed");
        es[1].1.tcp_seen |= TCP_FIN;
        assert_eq!(state(&flows(&es)[0]), FlowState::Closing);
        assert_eq!(timeout(&flows(&es)[0], &t), t.tcp_closed_uncharged);
        es[0].1.flags |= CT_F_COUNTED;
        assert_eq!(timeout(&flows(&es)[0], &t), t.tcp_closing, "still charged");
    }

    #[test]
    fn a_closed_flow_that_gave_its_charge_back_goes_by_the_short_timeout() {
        let t = Timeouts::default();
        let mut es = snat_pair(0, None);
        for e in &mut es {
            e.0.proto = 6;
        }
        es[1].0 = partner(&es[0].0, &es[0].1);
        // Established, then reset by the server at 100 s; the datapath
        // stops timing it there (later segments move nothing).
        es[0].1.tcp_seen = TCP_SYN | TCP_ACK;
        es[0].1.flags |= CT_F_ASSURED | CT_F_COUNTED;
        es[1].1.tcp_seen = TCP_SYN | TCP_ACK | dnet_common::nat::TCP_RST;
        es[1].1.last_seen_ns = 100 * S;
        assert_eq!(state(&flows(&es)[0]), FlowState::Closing);
        // Still charged (a closing packet raced the collector): the
        // closing timeout, and the collector gives the charge back.
        assert!(
            expired(
                &es,
                100 * S + t.tcp_closed_uncharged.as_nanos() as u64 + 1,
                &t
            )
            .is_empty()
        );
        // Charge given back by the datapath: gone after the short timeout,
        // both entries, the first one first.
        es[0].1.flags &= !CT_F_COUNTED;
        let short = t.tcp_closed_uncharged.as_nanos() as u64;
        assert!(short < t.tcp_closing.as_nanos() as u64);
        assert!(expired(&es, 100 * S + short, &t).is_empty());
        assert_eq!(
            expired(&es, 100 * S + short + 1, &t),
            vec![es[0].0, es[1].0]
        );
        // Never longer than the closing timeout when that is set shorter.
        let t2 = Timeouts {
            tcp_closing: Duration::from_secs(1),
            ..t
        };
        assert_eq!(expired(&es, 100 * S + S + 1, &t2).len(), 2);
    }

    #[test]
    fn an_orphaned_reply_entry_still_expires() {
        let es = snat_pair(0, None);
        let only_reply = vec![es[1]];
        assert_eq!(flows(&only_reply).len(), 1);
        assert_eq!(
            expired(&only_reply, 3600 * S, &Timeouts::default()).len(),
            1
        );
    }

    #[test]
    fn a_containers_entries_are_found_by_any_of_its_addresses() {
        let es = snat_pair(0, None);
        assert_eq!(keys_of(&es, &["172.17.0.2".parse().unwrap()]).len(), 2);
        assert!(keys_of(&es, &["172.17.0.3".parse().unwrap()]).is_empty());
    }

    #[test]
    fn a_routed_flow_is_neither_snat_nor_dnat() {
        use dnet_common::{CtEntry6, CtKey6};
        let a6: [u8; 16] = "fd00:1::2".parse::<Ipv6Addr>().unwrap().octets();
        let w6: [u8; 16] = "2001:2:1::5".parse::<Ipv6Addr>().unwrap().octets();
        let t = Timeouts::default();
        // Opened by the container, as `routed6::new_outbound` makes it.
        let out = CtKey6 {
            saddr_be: a6,
            daddr_be: w6,
            sport_be: 4000u16.to_be(),
            dport_be: 53u16.to_be(),
            proto: 17,
            _pad: [0; 3],
        };
        let e = CtEntry6 {
            new_saddr_be: a6,
            new_sport_be: 4000u16.to_be(),
            flags: CT_F_SNAT | CT_F_REPLY_TO_ENDPOINT,
            flow_id: 1,
            ..Default::default()
        };
        let f = Flow {
            key: out,
            entry: e,
            reply: None,
        };
        let v = view(&f, 0, &t);
        assert_eq!(v.kind, "routed");
        assert_eq!(v.translated, v.original, "nothing rewritten");
        // Opened by the world to a published port (`routed6::new_inbound`).
        let inb = CtKey6 {
            saddr_be: w6,
            daddr_be: a6,
            sport_be: 41000u16.to_be(),
            dport_be: 80u16.to_be(),
            proto: 6,
            _pad: [0; 3],
        };
        let e = CtEntry6 {
            new_daddr_be: a6,
            new_dport_be: 80u16.to_be(),
            flags: CT_F_DNAT | CT_F_TO_ENDPOINT | CT_F_PUBLISHED,
            flow_id: 2,
            ..Default::default()
        };
        let f = Flow {
            key: inb,
            entry: e,
            reply: None,
        };
        assert_eq!(view(&f, 0, &t).kind, "routed");
        // NAT66 stays what it is.
        let mut e = CtEntry6 {
            new_saddr_be: "2001:2::2".parse::<Ipv6Addr>().unwrap().octets(),
            new_sport_be: 50000u16.to_be(),
            flags: CT_F_SNAT | CT_F_REPLY_TO_ENDPOINT,
            ..Default::default()
        };
        let f = Flow {
            key: out,
            entry: e,
            reply: None,
        };
        assert_eq!(view(&f, 0, &t).kind, "snat");
        e.flags = CT_F_DNAT | CT_F_TO_ENDPOINT | CT_F_PUBLISHED;
        e.new_daddr_be = a6;
        let f = Flow {
            key: CtKey6 {
                daddr_be: e.new_saddr_be,
                ..inb
            },
            entry: e,
            reply: None,
        };
        assert_eq!(view(&f, 0, &t).kind, "dnat");
    }

    #[test]
    fn the_flows_of_an_old_uplink_address_are_found_by_it() {
        let es = snat_pair(0, None);
        let uplink = es[0].1.new_saddr_be;
        assert_eq!(keys_with(&es, uplink).len(), 2, "both entries");
        assert!(keys_with(&es, uplink ^ 1).is_empty());
    }
}
