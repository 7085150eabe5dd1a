//! Connection tracking and NAT: the tuples the datapath keys flows by, what
//! it rewrites them to, published ports, and its configuration.
//!
//! A flow has two entries, one per direction, each keyed by the tuple as it
//! arrives at the program that looks it up, and each saying what to rewrite
//! and where to deliver:
//!
//! | flow | entry keyed by | rewrite | deliver |
//! |---|---|---|---|
//! | container C to the world R (SNAT to uplink U, port n) | C:c → R:r | source U:n | out the uplink |
//! | | R:r → U:n | destination C:c | into C |
//! | world X to a published port U:h of C:c (DNAT) | X:x → U:h | destination C:c | into C |
//! | | C:c → X:x | source U:h | out the uplink |
//! | hairpin: container A to U:h of B:b (gateway G of B, port n) | A:a → U:h | source G:n, destination B:b | into B |
//! | | B:b → G:n | source U:h, destination A:a | into A |
//! | the host's echo request, id i, to R (id n: i itself when free) | U:i → R | source U:n | out the uplink |
//! | | R → U:n | destination U:i | up the host's stack |
//!
//! ICMP echo uses its identifier as a port: the source port of requests and
//! the destination port of replies, so that a reply's key is its request's
//! key reversed.

use crate::tcp::TcpWindow;

/// An address conntrack keys flows by, as the packet holds it: IPv4 (`u32`,
/// network order) or IPv6 (`[u8; 16]`). The conntrack code is written once,
/// generic over it; each family has its own table (`DNET_CT`, `DNET_CT6`).
pub trait CtAddr: Copy + PartialEq + Eq + core::hash::Hash + Default + core::fmt::Debug {
    /// The unspecified address.
    const ZERO: Self;
    /// [`QuotaKey::family`] of this family's limit counters.
    const FAMILY: u8;
    /// The address as 32 bits: itself for IPv4, a mixing hash of its four
    /// words for IPv6 (a destination's limit key, the NAT port probe
    /// start).
    fn fold(&self) -> u32;
    /// Who opened a flow from `saddr` whose entry names the endpoint
    /// `endpoint_be`, as its limit counters key it ([`QuotaKey`]):
    /// exactly, never a hash two containers could share. IPv4: the
    /// address itself (a hairpin flow's entry names its backend, not its
    /// opener). IPv6: the endpoint's record key (its IPv4 address, one
    /// per container), which every IPv6 flow a container opens carries
    /// (only those are charged).
    fn opener_id(saddr: &Self, endpoint_be: u32) -> u32;
}

impl CtAddr for u32 {
    const ZERO: u32 = 0;
    const FAMILY: u8 = 0;
    #[inline(always)]
    fn fold(&self) -> u32 {
        *self
    }
    #[inline(always)]
    fn opener_id(saddr: &u32, _endpoint_be: u32) -> u32 {
        *saddr
    }
}

impl CtAddr for [u8; 16] {
    const ZERO: [u8; 16] = [0; 16];
    const FAMILY: u8 = 6;
    #[inline(always)]
    fn fold(&self) -> u32 {
        let w = |i: usize| u32::from_ne_bytes([self[i], self[i + 1], self[i + 2], self[i + 3]]);
        let mut h = w(0);
        h = fmix(h ^ w(4).rotate_left(11));
        h = fmix(h ^ w(8).rotate_left(19));
        fmix(h ^ w(12))
    }
    #[inline(always)]
    fn opener_id(_saddr: &[u8; 16], endpoint_be: u32) -> u32 {
        endpoint_be
    }
}

/// murmur3's final avalanche.
#[inline(always)]
const fn fmix(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

/// Key of a conntrack table: a packet's tuple. Ports in network order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct CtKeyOf<A> {
    pub saddr_be: A,
    pub daddr_be: A,
    pub sport_be: u16,
    pub dport_be: u16,
    /// IP protocol number (ICMPv6 is 58).
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// Key of [`crate::maps::CT`] (IPv4).
pub type CtKey = CtKeyOf<u32>;
/// Key of [`crate::maps::CT6`] (IPv6).
pub type CtKey6 = CtKeyOf<[u8; 16]>;

impl<A: CtAddr> CtKeyOf<A> {
    /// The key of the packets that answer this one.
    #[inline(always)]
    pub const fn reversed(&self) -> CtKeyOf<A> {
        CtKeyOf {
            saddr_be: self.daddr_be,
            daddr_be: self.saddr_be,
            sport_be: self.dport_be,
            dport_be: self.sport_be,
            proto: self.proto,
            _pad: [0; 3],
        }
    }
}

/// Rewrite the source address and port.
pub const CT_F_SNAT: u16 = 1 << 0;
/// Rewrite the destination address and port.
pub const CT_F_DNAT: u16 = 1 << 1;
/// Deliver into the endpoint that owns the new destination; otherwise out
/// the uplink.
pub const CT_F_TO_ENDPOINT: u16 = 1 << 2;
/// This entry is the reply direction of its flow.
pub const CT_F_REPLY: u16 = 1 << 3;
/// The flow was opened towards a published port (DNAT or hairpin).
pub const CT_F_PUBLISHED: u16 = 1 << 4;
/// On a TCP flow's first entry: the handshake completed (the opener's ACK
/// after the other side's SYN-ACK). Only then is the flow established;
/// before, it is half-open and has the short SYN timeout.
pub const CT_F_ASSURED: u16 = 1 << 5;
/// On a flow's first entry: its answers are delivered into an endpoint
/// (the reply entry has [`CT_F_TO_ENDPOINT`]), so that the reply entry can
/// be made again from the first one alone ([`reply_into`]).
pub const CT_F_REPLY_TO_ENDPOINT: u16 = 1 << 6;

/// On both entries of a flow of the host itself: an ICMP echo request the
/// host sent out of the uplink, whose identifier is held in the table (and
/// translated when a container's flow has it) so that a container's echo
/// never takes it, and whose answers go up the host's stack. Ping sockets
/// pick identifiers without regard to `ip_local_reserved_ports`, raw ones
/// as they like: only the table keeps the two apart.
pub const CT_F_HOST: u16 = 1 << 7;
/// On a flow's first entry: the flow is charged to the limits of the
/// container that opened it (`key.saddr_be`, see [`QuotaKey`]); whoever
/// removes the entry gives the charge back.
pub const CT_F_COUNTED: u16 = 1 << 8;

/// TCP flags as they sit in the header's 14th byte.
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;
/// The TCP flags conntrack keeps; the others (PSH, URG, ECE, CWR) are
/// cleared when the header is read, so their bits are free for ours.
pub const TCP_TRACKED: u8 = TCP_FIN | TCP_SYN | TCP_RST | TCP_ACK;
/// In [`CtEntry::tcp_seen`]: the other direction's FIN went by (set by
/// that FIN on this direction's entry).
pub const CT_PEER_FIN: u8 = 0x20;
/// In [`CtEntry::tcp_seen`]: this direction sent an ACK after the other
/// direction's FIN went by, its last word on a closing connection.
pub const CT_FIN_ACKED: u8 = 0x40;
/// For protocols other than TCP, the bit of [`CtEntry::tcp_seen`] that says
/// a packet went this way.
pub const CT_SEEN: u8 = 0x80;

/// Value of a conntrack table.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct CtEntryOf<A> {
    pub new_saddr_be: A,
    pub new_daddr_be: A,
    pub new_sport_be: u16,
    pub new_dport_be: u16,
    /// `CT_F_*`.
    pub flags: u16,
    /// TCP flags seen in this direction, OR-ed together; for UDP and ICMP,
    /// [`CT_SEEN`] once a packet went this way.
    pub tcp_seen: u8,
    pub _pad: u8,
    /// The container of the flow (whose counters count it, and whose
    /// removal removes it): its IPv4 address, in both tables (a dual-stack
    /// endpoint's record is keyed by it).
    pub endpoint_be: u32,
    /// The flow's identity, the same in both of its entries: an entry pairs
    /// only with a partner of the same id, so a reply tuple taken over by
    /// another flow is never mistaken for this flow's.
    pub flow_id: u32,
    /// `bpf_ktime_get_ns()` when the flow was made.
    pub created_ns: u64,
    /// `bpf_ktime_get_ns()` of the last packet, to the second: the datapath
    /// writes it only when a second has passed, to spare the map (and on
    /// every packet of a closed TCP flow, whose port waits a short grace
    /// after its last packet).
    pub last_seen_ns: u64,
    /// TCP: this direction's window ([`crate::tcp`]); zero otherwise.
    pub win: TcpWindow,
}

/// Value of [`crate::maps::CT`] (IPv4).
pub type CtEntry = CtEntryOf<u32>;
/// Value of [`crate::maps::CT6`] (IPv6).
pub type CtEntry6 = CtEntryOf<[u8; 16]>;

/// The tuple a packet keyed `k` has after `e` rewrote it.
#[inline(always)]
pub const fn translated<A: CtAddr>(k: &CtKeyOf<A>, e: &CtEntryOf<A>) -> CtKeyOf<A> {
    let mut t = *k;
    if e.flags & CT_F_SNAT != 0 {
        t.saddr_be = e.new_saddr_be;
        t.sport_be = e.new_sport_be;
    }
    if e.flags & CT_F_DNAT != 0 {
        t.daddr_be = e.new_daddr_be;
        t.dport_be = e.new_dport_be;
    }
    t
}

/// The key of the other direction of the flow `k` belongs to.
#[inline(always)]
pub const fn partner<A: CtAddr>(k: &CtKeyOf<A>, e: &CtEntryOf<A>) -> CtKeyOf<A> {
    translated(k, e).reversed()
}

/// The reply entry of the flow whose first entry is `e`, keyed `k`, and
/// its key `rk`: keyed by the answers' tuple, it undoes the translation (a
/// source NAT becomes a destination NAT and the other way round), with the
/// flow's identity, its endpoint and its times. No TCP flags seen yet.
/// Written in place (the datapath builds it in a scratch map, off its small
/// stack); every field is written.
#[inline(always)]
pub const fn reply_into<A: CtAddr>(
    k: &CtKeyOf<A>,
    e: &CtEntryOf<A>,
    rk: &mut CtKeyOf<A>,
    r: &mut CtEntryOf<A>,
) {
    // The answers' tuple: the first direction's, translated, reversed.
    let snat = e.flags & CT_F_SNAT != 0;
    let dnat = e.flags & CT_F_DNAT != 0;
    rk.saddr_be = if dnat { e.new_daddr_be } else { k.daddr_be };
    rk.sport_be = if dnat { e.new_dport_be } else { k.dport_be };
    rk.daddr_be = if snat { e.new_saddr_be } else { k.saddr_be };
    rk.dport_be = if snat { e.new_sport_be } else { k.sport_be };
    rk.proto = k.proto;
    rk._pad = [0; 3];
    let mut flags = CT_F_REPLY | (e.flags & (CT_F_PUBLISHED | CT_F_HOST));
    if dnat {
        flags |= CT_F_SNAT;
    }
    if snat {
        flags |= CT_F_DNAT;
    }
    if e.flags & CT_F_REPLY_TO_ENDPOINT != 0 {
        flags |= CT_F_TO_ENDPOINT;
    }
    r.new_saddr_be = if dnat { k.daddr_be } else { A::ZERO };
    r.new_sport_be = if dnat { k.dport_be } else { 0 };
    r.new_daddr_be = if snat { k.saddr_be } else { A::ZERO };
    r.new_dport_be = if snat { k.sport_be } else { 0 };
    r.flags = flags;
    r.tcp_seen = 0;
    r._pad = 0;
    r.endpoint_be = e.endpoint_be;
    r.flow_id = e.flow_id;
    r.created_ns = e.created_ns;
    r.last_seen_ns = e.last_seen_ns;
    // Nothing known of the answers' direction yet.
    r.win = TcpWindow {
        end: 0,
        maxend: 0,
        maxwin: 0,
        scale: 0,
        flags: 0,
        _pad: 0,
    };
}

/// A TCP flow is over when either side reset it or both sent their FIN
/// (flags as [`CtEntry::tcp_seen`] holds them, one per direction).
#[inline(always)]
pub const fn tcp_closed(a: u8, b: u8) -> bool {
    (a | b) & TCP_RST != 0 || (a & TCP_FIN != 0 && b & TCP_FIN != 0)
}

/// A TCP flow whose tuple, NAT port included, may serve a new connection:
/// reset, or closed with a FIN each way and each FIN acknowledged. Until the
/// last ACK has gone by, the peer that sent the second FIN still holds the
/// tuple (LAST_ACK) and would answer a new SYN on it with a challenge ACK.
#[inline(always)]
pub const fn tcp_reusable(a: u8, b: u8) -> bool {
    const DONE: u8 = TCP_FIN | CT_FIN_ACKED;
    (a | b) & TCP_RST != 0 || (a & DONE == DONE && b & DONE == DONE)
}

/// Key of [`crate::maps::SERVICES`]: a published port.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct ServiceKey {
    /// The host address it is published on; 0 for every address.
    pub addr_be: u32,
    pub port_be: u16,
    pub proto: u8,
    pub _pad: u8,
}

/// Value of [`crate::maps::SERVICES`]: where a published port leads.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Service {
    pub backend_be: u32,
    pub backend_port_be: u16,
    pub _pad: u16,
}

/// Value of [`crate::maps::CONFIG`] (one entry, index 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Config {
    /// The uplink's ifindex; 0 when there is none (no NAT).
    pub uplink_ifindex: u32,
    /// The address flows are translated to.
    pub uplink_addr_be: u32,
    /// NAT source ports, host order, inclusive.
    pub nat_port_min: u16,
    pub nat_port_max: u16,
    pub _pad: u32,
    /// `SO_NETNS_COOKIE` of the daemon's namespace: the socket hooks act
    /// there only.
    pub netns_cookie: u64,
    /// Most live flows a container may have opened
    /// (`--ct-flows-per-endpoint`); 0: no limit.
    pub ep_flow_limit: u32,
    /// Most NAT ports (flows) a container may hold towards one destination
    /// address, port and protocol (`--nat-ports-per-destination`); 0: no
    /// limit.
    pub dest_port_limit: u32,
    /// Possible CPUs, whose per-CPU limit counters are summed (at most
    /// `maps::MAX_CPUS`).
    pub nr_cpus: u32,
    pub _pad2: u32,
    /// The uplink's global IPv6 address NAT66 translates to; all zero when
    /// it has none (no NAT66: such flows are dropped, `no-nat-address`).
    pub uplink_addr6: [u8; 16],
}

/// Key of the limit counters (`DNET_CT_OPENED`, `DNET_CT_CLOSED`): a
/// container's flows, all of them ([`QuotaKey::endpoint`]) or those towards
/// one destination ([`QuotaKey::destination`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct QuotaKey {
    /// The container that opened the flows.
    pub endpoint_be: u32,
    /// The destination; all zero for the container's total.
    pub daddr_be: u32,
    pub dport_be: u16,
    pub proto: u8,
    /// 0: the counters of IPv4 flows; 6: of IPv6 flows, whose container
    /// is its record key ([`CtAddr::opener_id`]) and whose destination
    /// address is folded to 32 bits ([`CtAddr::fold`]: two destinations
    /// may share one container's counter, never two containers one). A
    /// dual-stack container's limits hold for each family on its own.
    pub family: u8,
}

impl QuotaKey {
    /// Every flow the container at `addr_be` opened.
    pub const fn endpoint(addr_be: u32) -> QuotaKey {
        QuotaKey {
            endpoint_be: addr_be,
            daddr_be: 0,
            dport_be: 0,
            proto: 0,
            family: 0,
        }
    }

    /// Every flow of its family the container that opened the flow keyed
    /// `k` (its entry naming the endpoint `endpoint_be`) opened.
    #[inline(always)]
    pub fn opener<A: CtAddr>(k: &CtKeyOf<A>, endpoint_be: u32) -> QuotaKey {
        QuotaKey {
            endpoint_be: A::opener_id(&k.saddr_be, endpoint_be),
            daddr_be: 0,
            dport_be: 0,
            proto: 0,
            family: A::FAMILY,
        }
    }

    /// The flows of the container that opened the flow keyed `k` (as in
    /// [`QuotaKey::opener`]) towards `k`'s destination: each holds a NAT
    /// port of that destination.
    #[inline(always)]
    pub fn destination<A: CtAddr>(k: &CtKeyOf<A>, endpoint_be: u32) -> QuotaKey {
        QuotaKey {
            endpoint_be: A::opener_id(&k.saddr_be, endpoint_be),
            daddr_be: k.daddr_be.fold(),
            dport_be: k.dport_be,
            proto: k.proto,
            family: A::FAMILY,
        }
    }
}

/// How many candidate ports a new flow tries before giving up.
pub const NAT_PORT_PROBES: u32 = 32;

/// Key of [`crate::maps::SOCK_REVNAT`]: a host socket that was pointed at a
/// published port's backend, and that backend.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct SockRevKey {
    pub cookie: u64,
    pub backend_be: u32,
    pub backend_port_be: u16,
    pub _pad: u16,
}

/// Value of [`crate::maps::SOCK_REVNAT`]: the address the socket asked for.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SockRev {
    pub addr_be: u32,
    pub port_be: u16,
    pub _pad: u16,
}

/// Strides of the port probe sequences: primes above 65,536, so that each
/// is coprime with any range size and a sequence visits every port of the
/// range before it repeats one.
const PROBE_STRIDES: [u32; 8] = [
    65_537, 65_539, 65_543, 65_551, 65_557, 65_563, 65_579, 65_581,
];

/// The NAT port the `n`-th probe of a flow whose tuple hashes to `hash`
/// tries, in a range of `size` ports starting at `min`: double hashing, a
/// start and a stride both taken from the hash. Flows whose sequences meet
/// at one port go on to different ones, so taken ports do not gather into
/// runs that every later flow has to walk (as with a stride of one). Pure
/// so that both sides (and a unit test) agree.
#[inline(always)]
pub const fn nat_port_candidate(hash: u32, n: u32, min: u16, size: u32) -> u16 {
    if size == 0 {
        return min;
    }
    let stride = PROBE_STRIDES[(hash >> 29) as usize] % size;
    let off = ((hash % size) as u64 + n as u64 * stride as u64) % size as u64;
    (min as u32 + off as u32) as u16
}

/// A cheap mixing hash of a tuple (the start of its port probe sequence).
#[inline(always)]
pub fn tuple_hash<A: CtAddr>(k: &CtKeyOf<A>) -> u32 {
    let mut h = k.saddr_be.fold() ^ k.daddr_be.fold().rotate_left(7);
    h ^= ((k.sport_be as u32) << 16 | k.dport_be as u32).rotate_left(13);
    h ^= k.proto as u32;
    fmix(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_flow_is_reusable_only_once_the_last_ack_went_by() {
        let (a, b) = (TCP_SYN | TCP_ACK, TCP_SYN | TCP_ACK);
        assert!(!tcp_closed(a, b) && !tcp_reusable(a, b));
        // A FIN each way: closing, but the second FIN is not acknowledged.
        let (a, b) = (
            a | TCP_FIN | CT_PEER_FIN,
            b | TCP_FIN | CT_PEER_FIN | CT_FIN_ACKED,
        );
        assert!(tcp_closed(a, b));
        assert!(!tcp_reusable(a, b), "the peer is still in LAST_ACK");
        assert!(tcp_reusable(a | CT_FIN_ACKED, b));
        // An acknowledgement without a FIN of its own is not the end.
        assert!(!tcp_reusable(TCP_ACK | CT_FIN_ACKED, b));
        // A reset ends it at once, from either side.
        assert!(tcp_reusable(TCP_SYN | TCP_RST, TCP_SYN | TCP_ACK));
        assert!(tcp_reusable(TCP_SYN, TCP_RST));
        // Our bits are outside the flags conntrack keeps.
        assert_eq!(TCP_TRACKED & (CT_PEER_FIN | CT_FIN_ACKED | CT_SEEN), 0);
    }

    #[test]
    fn a_flows_entries_name_each_other() {
        let fk = CtKey {
            saddr_be: 1,
            daddr_be: 2,
            sport_be: 3,
            dport_be: 4,
            proto: 6,
            _pad: [0; 3],
        };
        let fe = CtEntry {
            new_saddr_be: 9,
            new_sport_be: 8,
            flags: CT_F_SNAT,
            ..Default::default()
        };
        let rk = partner(&fk, &fe);
        assert_eq!(
            (rk.saddr_be, rk.daddr_be, rk.sport_be, rk.dport_be),
            (2, 9, 4, 8)
        );
        let re = CtEntry {
            new_daddr_be: 1,
            new_dport_be: 3,
            flags: CT_F_DNAT | CT_F_REPLY,
            ..Default::default()
        };
        assert_eq!(partner(&rk, &re), fk);
        assert!(tcp_closed(TCP_RST, 0));
        assert!(!tcp_closed(TCP_FIN, TCP_ACK));
        assert!(tcp_closed(TCP_FIN | TCP_ACK, TCP_FIN));
    }

    #[test]
    fn a_reply_entry_is_made_from_the_first_alone() {
        let k = CtKey {
            saddr_be: 1,
            daddr_be: 2,
            sport_be: 3,
            dport_be: 4,
            proto: 17,
            _pad: [0; 3],
        };
        // Source NAT: answers go into the endpoint, to its own tuple.
        let snat = CtEntry {
            new_saddr_be: 9,
            new_sport_be: 8,
            flags: CT_F_SNAT | CT_F_REPLY_TO_ENDPOINT,
            endpoint_be: 1,
            flow_id: 77,
            ..Default::default()
        };
        let (mut rk, mut re) = (CtKey::default(), CtEntry::default());
        reply_into(&k, &snat, &mut rk, &mut re);
        assert_eq!(rk, partner(&k, &snat));
        assert_eq!(re.flags, CT_F_DNAT | CT_F_TO_ENDPOINT | CT_F_REPLY);
        assert_eq!((re.new_daddr_be, re.new_dport_be), (1, 3));
        assert_eq!((re.flow_id, re.endpoint_be), (77, 1));
        assert_eq!(partner(&rk, &re), k, "the two name each other");
        // Destination NAT with the source port translated too (a clash):
        // answers leave as the published port, to the client's own port.
        let dnat = CtEntry {
            new_saddr_be: 1,
            new_sport_be: 50000,
            new_daddr_be: 5,
            new_dport_be: 80,
            flags: CT_F_SNAT | CT_F_DNAT | CT_F_TO_ENDPOINT | CT_F_PUBLISHED,
            ..Default::default()
        };
        // Every field is written, whatever was there.
        let (mut rk, mut re) = (
            CtKey {
                _pad: [9; 3],
                ..Default::default()
            },
            CtEntry {
                tcp_seen: 0xff,
                _pad: 7,
                ..re
            },
        );
        reply_into(&k, &dnat, &mut rk, &mut re);
        assert_eq!((rk._pad, re.tcp_seen, re._pad), ([0; 3], 0, 0));
        assert_eq!(
            (rk.saddr_be, rk.sport_be, rk.daddr_be, rk.dport_be),
            (5, 80, 1, 50000)
        );
        assert_eq!(
            re.flags,
            CT_F_SNAT | CT_F_DNAT | CT_F_REPLY | CT_F_PUBLISHED,
            "out, not into an endpoint"
        );
        assert_eq!((re.new_saddr_be, re.new_sport_be), (2, 4));
        assert_eq!((re.new_daddr_be, re.new_dport_be), (1, 3));
        assert_eq!(partner(&rk, &re), k);
    }

    #[test]
    fn reversed_twice_is_the_key() {
        let k = CtKey {
            saddr_be: 1,
            daddr_be: 2,
            sport_be: 3,
            dport_be: 4,
            proto: 6,
            _pad: [0; 3],
        };
        assert_eq!(k.reversed().reversed(), k);
        assert_eq!(k.reversed().saddr_be, 2);
        assert_eq!(k.reversed().sport_be, 4);
    }

    #[test]
    fn probes_stay_in_range_and_cover_small_ranges() {
        let (min, size) = (50000u16, 10u32);
        let mut seen = [false; 10];
        for n in 0..size {
            let p = nat_port_candidate(0xdead_beef, n, min, size);
            assert!((min..min + size as u16).contains(&p));
            seen[(p - min) as usize] = true;
        }
        assert!(
            seen.iter().all(|s| *s),
            "every port of a small range is tried"
        );
        for h in [0, 1, u32::MAX, 12345] {
            let p = nat_port_candidate(h, 31, 1024, 64512);
            assert!(p >= 1024);
        }
    }

    #[test]
    fn each_half_of_the_probes_covers_a_range_of_up_to_half_of_them() {
        // The NAT port choice leaves just-closed ports alone in the first
        // half and takes them in the second: both must see every port of a
        // small range.
        let half = NAT_PORT_PROBES / 2;
        for size in 1..=half {
            for h in [0, 7, 0xdead_beef, u32::MAX] {
                for probes in [0..half, half..NAT_PORT_PROBES] {
                    let mut seen: Vec<u16> = probes
                        .map(|n| nat_port_candidate(h, n, 1000, size))
                        .collect();
                    seen.sort_unstable();
                    seen.dedup();
                    assert_eq!(seen.len(), size as usize, "size {size}, hash {h:#x}");
                }
            }
        }
    }

    #[test]
    fn probe_sequences_do_not_gather_into_runs() {
        // Half of a 1,000-port range taken in one block, as a stride of one
        // leaves it: flows whose start falls in the block must not walk it.
        let (min, size) = (40000u16, 1000u32);
        let taken = |p: u16| p < min + 500;
        let mut probes = 0;
        for i in 0..1000u16 {
            let k = CtKey {
                saddr_be: 0x0200_11ac,
                daddr_be: 0x0100_12c6,
                sport_be: (30000 + i).to_be(),
                dport_be: 53u16.to_be(),
                proto: 17,
                _pad: [0; 3],
            };
            let h = tuple_hash(&k);
            let n = (0..NAT_PORT_PROBES)
                .find(|n| !taken(nat_port_candidate(h, *n, min, size)))
                .expect("a free port within the probes");
            probes += n + 1;
        }
        assert!(probes < 2 * 1000 + 200, "{probes} probes for 1,000 flows");
        // Two flows whose sequences meet go on to different ports.
        let (a, b) = (0x1234_5678, 0x2000_0209);
        let meet = nat_port_candidate(a, 1, min, size);
        assert_eq!(nat_port_candidate(b, 0, min, size), meet);
        assert_ne!(
            nat_port_candidate(a, 2, min, size),
            nat_port_candidate(b, 1, min, size)
        );
    }

    #[test]
    fn the_hash_spreads_neighbouring_tuples() {
        let base = CtKey {
            saddr_be: u32::from_ne_bytes([172, 17, 0, 2]),
            daddr_be: u32::from_ne_bytes([198, 18, 0, 1]),
            sport_be: 40000u16.to_be(),
            dport_be: 80u16.to_be(),
            proto: 6,
            _pad: [0; 3],
        };
        let mut starts = std::collections::BTreeSet::new();
        for i in 0..100u16 {
            let k = CtKey {
                sport_be: (40000 + i).to_be(),
                ..base
            };
            starts.insert(nat_port_candidate(tuple_hash(&k), 0, 40000, 20000));
        }
        assert!(starts.len() > 90, "only {} distinct starts", starts.len());
    }
}
