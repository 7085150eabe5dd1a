//! A property test: random and mutated frames through every TC program
//! (`BPF_PROG_TEST_RUN`), in sequences of one to three, against a table
//! that holds flows of every kind (outbound UDP, TCP and ping of A, a
//! published port of A, a hairpin flow, an outbound flow of B).
//!
//! Frames are built from parts that matter to the datapath (addresses,
//! ports, TCP flags, TTL, IP options, fragments, ICMP errors quoting a
//! crafted or a known flow's header, ARP, IPv6 (NDP, MLD, extension
//! headers, UDP), 802.1Q/802.1ad tags) and
//! then lie about their lengths, lose their tail, gain padding or have
//! bytes flipped. After each frame:
//! - the program returned a TC verdict, and a drop has a counted reason;
//! - what goes on to the host stack (`TC_ACT_OK`) is the frame as it came;
//! - from a container, nothing but a frame with the endpoint's own source
//!   MAC and IPv4 (or ARP sender, or IPv6 and no NDP or MLD message) is
//!   forwarded, redirected or passed on; a Neighbor Solicitation is
//!   answered only for the gateway or B, with right MACs and checksum,
//!   and what leaves carries the endpoint's, the gateway's or the uplink's
//!   source (out of the uplink: the uplink's only);
//! - from the uplink, only IPv4 to the uplink's address is dnet's;
//! - into a container, only what the host sent, dnet delivered or a member
//!   of its network copied;
//! - a rewritten frame's IPv4, L4 and ICMP checksums (and those of a quoted
//!   header) are right if they were right as it came, and wrong if they
//!   were wrong (NAT never launders a corrupt packet); an ICMP error dnet
//!   builds has right checksums;
//! - no conntrack entry goes away, and new ones are one flow (two entries)
//!   of a frame that may open one: a whole, unfragmented TCP SYN (no ACK,
//!   RST or FIN), UDP datagram or ping, of the sending endpoint, with a
//!   TTL to spare, beyond the networks (or to a published port).
//!
//! The case count is bounded ([`CASES`], `DNET_PROPTEST_CASES`); the seed
//! is random unless `DNET_PROPTEST_SEED` gives it, and a failure prints it
//! with the smallest failing sequence and every frame in hex.

use std::net::{Ipv4Addr, Ipv6Addr};

use proptest::{
    prelude::*,
    test_runner::{Config as PtConfig, RngAlgorithm, TestCaseError, TestRng, TestRunner},
};

use dnet_common::nat::{
    CT_F_REPLY, CT_F_REPLY_TO_ENDPOINT, CT_F_SNAT, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, reply_into,
    translated,
};

use super::*;

/// Sequences per run: a few seconds as root.
const CASES: u32 = 1500;

const A: &str = "172.17.0.2";
const B: &str = "172.17.0.3";
const OTHER_WORLD: &str = "198.18.0.77";
/// A published UDP port (to A's port 53), beside TCP 8080.
const UDP_PUBLISHED: u16 = 5353;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Prog {
    FromContainer,
    FromUplink,
    /// Into A, as if it came in on this interface.
    ToContainer(u32),
    /// The host's own packets out of the uplink.
    ToUplink,
}

/// An IPv4 packet, as parts.
#[derive(Clone, Debug)]
struct V4 {
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    saddr: Ipv4Addr,
    daddr: Ipv4Addr,
    ttl: u8,
    /// Option bytes, padded with zeros to a multiple of 4 (at most 40).
    options: Vec<u8>,
    /// Flags and fragment offset (0x4000: DF, 0x2000: MF).
    frag: u16,
    /// A total length other than the true one.
    tot_len_lie: Option<u16>,
    bad_ip_csum: bool,
    l4: L4Spec,
}

#[derive(Clone, Debug)]
enum L4Spec {
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
        /// Data offset in words (5: no options).
        doff: u8,
        payload: Vec<u8>,
        bad_csum: bool,
    },
    Udp {
        sport: u16,
        dport: u16,
        len_lie: Option<u16>,
        zero_csum: bool,
        payload: Vec<u8>,
        bad_csum: bool,
    },
    Icmp {
        typ: u8,
        code: u8,
        id: u16,
        payload: Vec<u8>,
        bad_csum: bool,
    },
    /// An ICMP error quoting `inner`'s first `quote` bytes (all if None).
    IcmpError {
        typ: u8,
        code: u8,
        inner: Box<V4>,
        quote: Option<usize>,
        bad_csum: bool,
    },
    Raw {
        proto: u8,
        bytes: Vec<u8>,
    },
}

/// An IPv6 packet, as parts (issue 13).
#[derive(Clone, Debug)]
struct V6 {
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    saddr: Ipv6Addr,
    daddr: Ipv6Addr,
    hop: u8,
    /// Extension headers before the L4 header (padding options only).
    exts: usize,
    l4: L6,
    /// A payload length other than the true one.
    plen_lie: Option<u16>,
}

#[derive(Clone, Debug)]
enum L6 {
    /// A Neighbor Solicitation, with the sender's link-layer option or not.
    Ns {
        target: Ipv6Addr,
        slla: bool,
        code: u8,
    },
    /// Any ICMPv6 message (NDP, MLD, echo, ...).
    Icmp {
        typ: u8,
        body: Vec<u8>,
    },
    Udp {
        payload: Vec<u8>,
    },
}

#[derive(Clone, Debug)]
enum Frame {
    V4(V4),
    V6(V6),
    Arp {
        op: u16,
        src_mac: [u8; 6],
        sha: [u8; 6],
        spa: Ipv4Addr,
        tpa: Ipv4Addr,
        hlen: u8,
    },
    /// Any other EtherType (IPv6 among them), with a body.
    Other {
        ethertype: u16,
        src_mac: [u8; 6],
        body: Vec<u8>,
    },
}

/// A frame as it reaches the program.
#[derive(Clone, Debug)]
struct Wire {
    frame: Frame,
    /// A tag (TPID, TCI) after the MACs.
    tag: Option<(u16, u16)>,
    /// Cut to this fraction (per 256) of its length.
    cut: Option<u8>,
    /// Bytes appended (Ethernet padding, or more).
    pad: Vec<u8>,
    /// (position per 65536 of the length, XOR mask)
    flips: Vec<(u16, u8)>,
}

#[derive(Clone, Debug)]
struct Step {
    prog: Prog,
    wire: Wire,
}

// ---- Building frames ----

fn v4_bytes(p: &V4) -> Vec<u8> {
    let mut opts = p.options.clone();
    opts.truncate(40);
    while !opts.len().is_multiple_of(4) {
        opts.push(0);
    }
    let ihl = 20 + opts.len();
    let l4 = l4_bytes(&p.l4, p.saddr, p.daddr);
    let tot = p.tot_len_lie.unwrap_or((ihl + l4.len()) as u16);
    let proto = match &p.l4 {
        L4Spec::Tcp { .. } => 6,
        L4Spec::Udp { .. } => 17,
        L4Spec::Icmp { .. } | L4Spec::IcmpError { .. } => 1,
        L4Spec::Raw { proto, .. } => *proto,
    };
    let mut h = vec![0x40 | (ihl / 4) as u8, 0];
    h.extend_from_slice(&tot.to_be_bytes());
    h.extend_from_slice(&[0x12, 0x34]);
    h.extend_from_slice(&p.frag.to_be_bytes());
    h.extend_from_slice(&[p.ttl, proto, 0, 0]);
    h.extend_from_slice(&p.saddr.octets());
    h.extend_from_slice(&p.daddr.octets());
    h.extend_from_slice(&opts);
    let mut c = csum::checksum(&h);
    if p.bad_ip_csum {
        c ^= 0x0101;
    }
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(&l4);
    h
}

fn l4_bytes(l4: &L4Spec, s: Ipv4Addr, d: Ipv4Addr) -> Vec<u8> {
    match l4 {
        L4Spec::Tcp {
            sport,
            dport,
            flags,
            doff,
            payload,
            bad_csum,
        } => {
            let mut seg = Vec::new();
            seg.extend_from_slice(&sport.to_be_bytes());
            seg.extend_from_slice(&dport.to_be_bytes());
            seg.extend_from_slice(&1000u32.to_be_bytes());
            seg.extend_from_slice(&2000u32.to_be_bytes());
            seg.extend_from_slice(&[doff << 4, *flags, 0xff, 0xff, 0, 0, 0, 0]);
            // Options (NOPs) up to the data offset, where it says more.
            let hlen = (*doff as usize * 4).max(20);
            seg.resize(hlen, 1);
            seg.extend_from_slice(payload);
            let mut c = l4_checksum(s, d, 6, &seg);
            if *bad_csum {
                c ^= 0x0101;
            }
            seg[16..18].copy_from_slice(&c.to_be_bytes());
            seg
        }
        L4Spec::Udp {
            sport,
            dport,
            len_lie,
            zero_csum,
            payload,
            bad_csum,
        } => {
            let mut seg = Vec::new();
            seg.extend_from_slice(&sport.to_be_bytes());
            seg.extend_from_slice(&dport.to_be_bytes());
            let len = len_lie.unwrap_or((8 + payload.len()) as u16);
            seg.extend_from_slice(&len.to_be_bytes());
            seg.extend_from_slice(&[0, 0]);
            seg.extend_from_slice(payload);
            if !zero_csum {
                let mut c = l4_checksum(s, d, 17, &seg);
                if c == 0 {
                    c = 0xffff;
                }
                if *bad_csum {
                    c ^= 0x0101;
                }
                seg[6..8].copy_from_slice(&c.to_be_bytes());
            }
            seg
        }
        L4Spec::Icmp {
            typ,
            code,
            id,
            payload,
            bad_csum,
        } => {
            let mut m = vec![*typ, *code, 0, 0];
            m.extend_from_slice(&id.to_be_bytes());
            m.extend_from_slice(&7u16.to_be_bytes());
            m.extend_from_slice(payload);
            icmp_sum(&mut m, *bad_csum);
            m
        }
        L4Spec::IcmpError {
            typ,
            code,
            inner,
            quote,
            bad_csum,
        } => {
            let mut m = vec![*typ, *code, 0, 0, 0, 0, 0x05, 0xdc];
            let q = v4_bytes(inner);
            let n = quote.map_or(q.len(), |n| n.min(q.len()));
            m.extend_from_slice(&q[..n]);
            icmp_sum(&mut m, *bad_csum);
            m
        }
        L4Spec::Raw { bytes, .. } => bytes.clone(),
    }
}

fn icmp_sum(m: &mut [u8], bad: bool) {
    let mut c = csum::checksum(m);
    if bad {
        c ^= 0x0101;
    }
    m[2..4].copy_from_slice(&c.to_be_bytes());
}

fn v6_bytes(p: &V6) -> Vec<u8> {
    let (proto, l4, check_at) = match &p.l4 {
        L6::Ns { target, slla, code } => {
            let mut m = vec![ipv6::NS, *code, 0, 0, 0, 0, 0, 0];
            m.extend_from_slice(&target.octets());
            if *slla {
                m.extend_from_slice(&[1, 1]);
                m.extend_from_slice(&p.src_mac);
            }
            (ipv6::ICMPV6, m, 2)
        }
        L6::Icmp { typ, body } => {
            let mut m = vec![*typ, 0, 0, 0];
            m.extend_from_slice(body);
            (ipv6::ICMPV6, m, 2)
        }
        L6::Udp { payload } => {
            let mut m = Vec::new();
            m.extend_from_slice(&4000u16.to_be_bytes());
            m.extend_from_slice(&53u16.to_be_bytes());
            m.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
            m.extend_from_slice(&[0, 0]);
            m.extend_from_slice(payload);
            (ipv6::UDP, m, 6)
        }
    };
    let mut f = ipv6::frame6(
        p.src_mac,
        p.dst_mac,
        p.saddr,
        p.daddr,
        p.hop,
        p.exts,
        proto,
        l4,
        Some(check_at),
    );
    if let Some(l) = p.plen_lie {
        f[18..20].copy_from_slice(&l.to_be_bytes());
    }
    f
}

fn frame_bytes(f: &Frame) -> Vec<u8> {
    match f {
        Frame::V6(p) => v6_bytes(p),
        Frame::V4(p) => {
            let mut b = eth(p.dst_mac, p.src_mac, 0x0800);
            b.extend_from_slice(&v4_bytes(p));
            b
        }
        Frame::Arp {
            op,
            src_mac,
            sha,
            spa,
            tpa,
            hlen,
        } => {
            let mut b = arp(*op, *sha, *spa, [0; 6], *tpa);
            b[6..12].copy_from_slice(src_mac);
            b[18] = *hlen;
            b
        }
        Frame::Other {
            ethertype,
            src_mac,
            body,
        } => {
            let mut b = eth(GW_MAC, *src_mac, *ethertype);
            b.extend_from_slice(body);
            b
        }
    }
}

fn wire_bytes(w: &Wire) -> Vec<u8> {
    let mut b = frame_bytes(&w.frame);
    if let Some((tpid, tci)) = w.tag {
        let mut t = b[..12].to_vec();
        t.extend_from_slice(&tpid.to_be_bytes());
        t.extend_from_slice(&tci.to_be_bytes());
        t.extend_from_slice(&b[12..]);
        b = t;
    }
    if let Some(c) = w.cut {
        let n = (b.len() * c as usize / 256).max(14);
        b.truncate(n);
    }
    b.extend_from_slice(&w.pad);
    for (pos, mask) in &w.flips {
        let i = *pos as usize * b.len() / 65536;
        b[i] ^= mask;
    }
    b
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

// ---- Strategies ----

/// What the strategies pick from: the fixture's addresses, MACs and the
/// seeded flows' ports and tuples.
#[derive(Clone)]
struct Pools {
    macs: Vec<[u8; 6]>,
    addrs: Vec<Ipv4Addr>,
    ports: Vec<u16>,
    /// Tuples (source, destination, sport, dport, proto) that were on the
    /// wire, or in the table: what an ICMP error may quote.
    tuples: Vec<(Ipv4Addr, Ipv4Addr, u16, u16, u8)>,
    a_mac: [u8; 6],
    up_mac: [u8; 6],
}

fn pick<T: Clone + std::fmt::Debug + 'static>(v: &[T]) -> BoxedStrategy<T> {
    prop::sample::select(v.to_vec()).boxed()
}

fn addr(p: &Pools) -> BoxedStrategy<Ipv4Addr> {
    prop_oneof![6 => pick(&p.addrs), 1 => any::<u32>().prop_map(Ipv4Addr::from)].boxed()
}

fn port(p: &Pools) -> BoxedStrategy<u16> {
    prop_oneof![6 => pick(&p.ports), 1 => any::<u16>()].boxed()
}

fn mac(p: &Pools) -> BoxedStrategy<[u8; 6]> {
    prop_oneof![6 => pick(&p.macs), 1 => any::<[u8; 6]>()].boxed()
}

fn payload() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        3 => prop::collection::vec(any::<u8>(), 0..8),
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ]
    .boxed()
}

fn tcp_flags() -> BoxedStrategy<u8> {
    prop_oneof![
        3 => Just(TCP_SYN),
        2 => Just(TCP_ACK),
        1 => Just(TCP_SYN | TCP_ACK),
        1 => Just(TCP_RST),
        1 => Just(TCP_FIN | TCP_ACK),
        1 => Just(TCP_SYN | TCP_FIN),
        1 => Just(TCP_SYN | TCP_RST),
        2 => any::<u8>(),
    ]
    .boxed()
}

/// A transport header (no ICMP error): what an error may quote.
fn l4_plain(p: &Pools) -> BoxedStrategy<L4Spec> {
    let tcp = (
        port(p),
        port(p),
        tcp_flags(),
        prop_oneof![8 => Just(5u8), 1 => 0u8..16],
        payload(),
        prop::bool::weighted(0.1),
    )
        .prop_map(
            |(sport, dport, flags, doff, payload, bad_csum)| L4Spec::Tcp {
                sport,
                dport,
                flags,
                doff,
                payload,
                bad_csum,
            },
        );
    let udp = (
        port(p),
        port(p),
        prop::option::weighted(0.1, any::<u16>()),
        prop::bool::weighted(0.1),
        payload(),
        prop::bool::weighted(0.1),
    )
        .prop_map(
            |(sport, dport, len_lie, zero_csum, payload, bad_csum)| L4Spec::Udp {
                sport,
                dport,
                len_lie,
                zero_csum,
                payload,
                bad_csum,
            },
        );
    let icmp = (
        prop_oneof![3 => Just(8u8), 3 => Just(0u8), 1 => any::<u8>()],
        prop_oneof![3 => Just(0u8), 1 => any::<u8>()],
        port(p),
        payload(),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(typ, code, id, payload, bad_csum)| L4Spec::Icmp {
            typ,
            code,
            id,
            payload,
            bad_csum,
        });
    let raw = (any::<u8>(), prop::collection::vec(any::<u8>(), 0..40))
        .prop_map(|(proto, bytes)| L4Spec::Raw { proto, bytes });
    prop_oneof![4 => tcp, 4 => udp, 2 => icmp, 1 => raw].boxed()
}

/// Header fields other than the addresses, mostly plain.
#[allow(clippy::type_complexity)]
fn ip_fields() -> BoxedStrategy<(u8, Vec<u8>, u16, Option<u16>, bool)> {
    (
        prop_oneof![16 => Just(64u8), 1 => Just(1u8), 1 => Just(0u8), 1 => Just(2u8)],
        prop_oneof![12 => Just(Vec::new()), 1 => prop::collection::vec(any::<u8>(), 0..44)],
        prop_oneof![
            16 => Just(0x4000u16),
            1 => Just(0u16),
            1 => Just(0x2000u16),
            1 => Just(0x00b9u16),
            1 => any::<u16>(),
        ],
        prop::option::weighted(0.05, any::<u16>()),
        prop::bool::weighted(0.05),
    )
        .boxed()
}

/// A header an ICMP error quotes: a known flow's tuple in either
/// orientation, or made up.
fn quoted(p: &Pools, prog: Prog) -> BoxedStrategy<V4> {
    // Mostly a packet the sender of the error could have received: one the
    // uplink sent, or one delivered to A.
    let likely: Vec<_> = p
        .tuples
        .iter()
        .flat_map(|t| [*t, (t.1, t.0, t.3, t.2, t.4)])
        .filter(|t| match prog {
            Prog::FromUplink => t.0 == ip(UPLINK),
            _ => t.1 == ip(A),
        })
        .collect();
    let tuple = prop_oneof![
        3 => pick(&likely),
        2 => pick(&p.tuples)
            .prop_flat_map(|t| prop_oneof![Just(t), Just((t.1, t.0, t.3, t.2, t.4))]),
        1 => (addr(p), addr(p), port(p), port(p), prop::sample::select(vec![6u8, 17, 1])),
    ];
    (tuple, l4_plain(p), ip_fields())
        .prop_map(
            |((s, d, sp, dp, proto), l4, (ttl, options, frag, tot_len_lie, bad))| {
                let l4 = match (proto, l4) {
                    (6, _) => L4Spec::Tcp {
                        sport: sp,
                        dport: dp,
                        flags: TCP_SYN,
                        doff: 5,
                        payload: Vec::new(),
                        bad_csum: false,
                    },
                    (17, _) => L4Spec::Udp {
                        sport: sp,
                        dport: dp,
                        len_lie: None,
                        zero_csum: false,
                        payload: b"dnet".to_vec(),
                        bad_csum: false,
                    },
                    (_, other) => other,
                };
                V4 {
                    src_mac: [0; 6],
                    dst_mac: [0; 6],
                    saddr: s,
                    daddr: d,
                    ttl,
                    options,
                    frag,
                    tot_len_lie,
                    bad_ip_csum: bad,
                    l4,
                }
            },
        )
        .boxed()
}

fn l4_any(p: &Pools, prog: Prog) -> BoxedStrategy<L4Spec> {
    let err = (
        prop_oneof![3 => Just(3u8), 1 => Just(11u8), 1 => Just(12u8)],
        prop_oneof![2 => Just(3u8), 1 => Just(4u8), 1 => Just(0u8)],
        quoted(p, prog),
        prop::option::weighted(0.3, 0usize..80),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(typ, code, inner, quote, bad_csum)| L4Spec::IcmpError {
            typ,
            code,
            inner: Box::new(inner),
            quote,
            bad_csum,
        });
    prop_oneof![3 => l4_plain(p), 1 => err].boxed()
}

/// A frame as `prog` would mostly see it: from A (or one lying about
/// being A), or from the world to the uplink.
fn frame(p: &Pools, prog: Prog) -> BoxedStrategy<Frame> {
    let (src_mac, dst_mac, saddr, daddr) = match prog {
        Prog::FromUplink => (
            prop_oneof![6 => Just(WORLD_MAC), 1 => mac(p)].boxed(),
            prop_oneof![6 => Just(p.up_mac), 1 => mac(p)].boxed(),
            prop_oneof![4 => Just(ip(WORLD)), 2 => addr(p)].boxed(),
            prop_oneof![6 => Just(ip(UPLINK)), 1 => addr(p)].boxed(),
        ),
        Prog::ToUplink => (
            Just(p.up_mac).boxed(),
            Just(WORLD_MAC).boxed(),
            prop_oneof![6 => Just(ip(UPLINK)), 1 => addr(p)].boxed(),
            addr(p),
        ),
        _ => (
            prop_oneof![8 => Just(p.a_mac), 1 => mac(p)].boxed(),
            prop_oneof![4 => Just(GW_MAC), 1 => mac(p)].boxed(),
            prop_oneof![8 => Just(ip(A)), 1 => addr(p)].boxed(),
            addr(p),
        ),
    };
    let v4 = (
        src_mac.clone(),
        dst_mac.clone(),
        saddr.clone(),
        daddr.clone(),
        ip_fields(),
        l4_any(p, prog),
        prop::bool::weighted(0.7),
    )
        .prop_map(
            move |(
                src_mac,
                dst_mac,
                saddr,
                mut daddr,
                (ttl, options, frag, tot_len_lie, bad),
                l4,
                aim,
            )| {
                // An error goes back to the quoted packet's sender.
                if let (L4Spec::IcmpError { inner, .. }, true, Prog::FromContainer) =
                    (&l4, aim, prog)
                {
                    daddr = inner.saddr;
                }
                Frame::V4(V4 {
                    src_mac,
                    dst_mac,
                    saddr,
                    daddr,
                    ttl,
                    options,
                    frag,
                    tot_len_lie,
                    bad_ip_csum: bad,
                    l4,
                })
            },
        );
    // A packet of a flow in the table, mostly one the program would see.
    let oriented: Vec<_> = p
        .tuples
        .iter()
        .flat_map(|t| [*t, (t.1, t.0, t.3, t.2, t.4)])
        .collect();
    let seen: Vec<_> = oriented
        .iter()
        .filter(|t| match prog {
            Prog::FromUplink => t.1 == ip(UPLINK),
            _ => t.0 == ip(A),
        })
        .copied()
        .collect();
    let flow = (
        src_mac.clone(),
        dst_mac.clone(),
        prop_oneof![4 => pick(&seen), 1 => pick(&oriented)],
        ip_fields(),
        tcp_flags(),
        payload(),
        prop::bool::weighted(0.1),
    )
        .prop_map(
            |(
                src_mac,
                dst_mac,
                (s, d, sp, dp, proto),
                (ttl, options, frag, lie, bad_ip),
                flags,
                payload,
                bad_csum,
            )| {
                let l4 = match proto {
                    6 => L4Spec::Tcp {
                        sport: sp,
                        dport: dp,
                        flags,
                        doff: 5,
                        payload,
                        bad_csum,
                    },
                    17 => L4Spec::Udp {
                        sport: sp,
                        dport: dp,
                        len_lie: None,
                        zero_csum: false,
                        payload,
                        bad_csum,
                    },
                    // The identifier is a request's source port and a
                    // reply's destination port.
                    _ => L4Spec::Icmp {
                        typ: if sp != 0 { 8 } else { 0 },
                        code: 0,
                        id: sp.max(dp),
                        payload,
                        bad_csum,
                    },
                };
                Frame::V4(V4 {
                    src_mac,
                    dst_mac,
                    saddr: s,
                    daddr: d,
                    ttl,
                    options,
                    frag,
                    tot_len_lie: lie,
                    bad_ip_csum: bad_ip,
                    l4,
                })
            },
        );
    let arp = (
        prop_oneof![3 => Just(1u16), 1 => Just(2u16), 1 => any::<u16>()],
        src_mac.clone(),
        prop_oneof![4 => Just(p.a_mac), 1 => mac(p)],
        saddr,
        daddr,
        prop_oneof![6 => Just(6u8), 1 => any::<u8>()],
    )
        .prop_map(|(op, src_mac, sha, spa, tpa, hlen)| Frame::Arp {
            op,
            src_mac,
            sha,
            spa,
            tpa,
            hlen,
        });
    let other = (
        prop_oneof![3 => Just(0x86ddu16), 1 => Just(0x88ccu16), 1 => any::<u16>()],
        src_mac.clone(),
        prop::collection::vec(any::<u8>(), 0..80),
    )
        .prop_map(|(ethertype, src_mac, body)| Frame::Other {
            ethertype,
            src_mac,
            body,
        });
    let addrs6: Vec<Ipv6Addr> = [
        ipv6::A6,
        ipv6::B6,
        ipv6::GW6,
        ipv6::C6,
        "fd00:1::99",
        "fd00:2::1",
        ipv6::A_LL,
        "::",
        "2001:db8::1",
        "ff02::1",
        "ff02::2",
        "ff02::1:ff00:1",
        "ff02::16",
    ]
    .iter()
    .map(|a| ipv6::ip6(a))
    .collect();
    let l6 = prop_oneof![
        4 => (
            prop_oneof![
                3 => Just(ipv6::ip6(ipv6::GW6)),
                2 => Just(ipv6::ip6(ipv6::B6)),
                3 => pick(&addrs6)
            ],
            any::<bool>(),
            prop_oneof![8 => Just(0u8), 1 => any::<u8>()]
        )
            .prop_map(|(target, slla, code)| L6::Ns { target, slla, code }),
        3 => (
            prop_oneof![
                1 => Just(128u8),
                1 => Just(129u8),
                3 => 130u8..=137,
                1 => Just(143u8),
                1 => any::<u8>()
            ],
            prop::collection::vec(any::<u8>(), 0..40)
        )
            .prop_map(|(typ, body)| L6::Icmp { typ, body }),
        3 => payload().prop_map(|payload| L6::Udp { payload }),
    ];
    let v6 = (
        (src_mac.clone(), dst_mac.clone()),
        prop_oneof![
            6 => Just(ipv6::ip6(ipv6::A6)),
            2 => Just(ipv6::ip6(ipv6::A_LL)),
            2 => pick(&addrs6)
        ],
        pick(&addrs6),
        prop_oneof![6 => Just(255u8), 2 => Just(64u8), 1 => any::<u8>()],
        prop_oneof![8 => Just(0usize), 3 => 1usize..=4, 1 => 5usize..=7],
        l6,
        prop_oneof![8 => Just(None), 1 => any::<u16>().prop_map(Some)],
    )
        .prop_map(
            |((src_mac, dst_mac), saddr, daddr, hop, exts, l4, plen_lie)| {
                Frame::V6(V6 {
                    src_mac,
                    dst_mac,
                    saddr,
                    daddr,
                    hop,
                    exts,
                    l4,
                    plen_lie,
                })
            },
        );
    prop_oneof![5 => v4, 5 => flow, 2 => arp, 1 => other, 4 => v6].boxed()
}

fn wire(p: &Pools, prog: Prog) -> BoxedStrategy<Wire> {
    (
        frame(p, prog),
        prop::option::weighted(
            0.05,
            (prop::sample::select(vec![0x8100u16, 0x88a8]), any::<u16>()),
        ),
        prop::option::weighted(0.05, any::<u8>()),
        prop_oneof![8 => Just(Vec::new()), 1 => prop::collection::vec(any::<u8>(), 0..40)],
        prop_oneof![
            10 => Just(Vec::new()),
            1 => prop::collection::vec((any::<u16>(), 1u8..), 1..4),
        ],
    )
        .prop_map(|(frame, tag, cut, pad, flips)| Wire {
            frame,
            tag,
            cut,
            pad,
            flips,
        })
        .boxed()
}

fn step(p: &Pools) -> BoxedStrategy<Step> {
    let iif = prop::sample::select(vec![0u32, TEST_IFINDEX, 1000, 1001, 77]);
    prop_oneof![
        6 => Just(Prog::FromContainer),
        4 => Just(Prog::FromUplink),
        1 => iif.prop_map(Prog::ToContainer),
        2 => Just(Prog::ToUplink),
    ]
    .prop_flat_map({
        let p = p.clone();
        move |prog| wire(&p, prog).prop_map(move |wire| Step { prog, wire })
    })
    .boxed()
}

// ---- What a frame is, as the checks read it ----

/// An IPv4 packet's fields, when its header can be read.
#[derive(Debug)]
struct Ip4 {
    saddr: Ipv4Addr,
    daddr: Ipv4Addr,
    proto: u8,
    ttl: u8,
    hlen: usize,
    tot: usize,
    /// Version 4, IHL 5+, a total length that covers the header and fits.
    valid: bool,
    frag: bool,
    /// MF set at offset 0: the first fragment of a datagram.
    first_frag: bool,
    /// The header checksum is right.
    ip_ok: bool,
}

fn ip4_at(f: &[u8], off: usize) -> Option<Ip4> {
    let h = f.get(off..off + 20)?;
    let hlen = (h[0] & 0x0f) as usize * 4;
    let tot = u16::from_be_bytes([h[2], h[3]]) as usize;
    let valid = h[0] >> 4 == 4 && hlen >= 20 && tot >= hlen && off + tot <= f.len();
    let ip_ok = f
        .get(off..off + hlen.max(20))
        .is_some_and(|h| csum::checksum(h) == 0);
    Some(Ip4 {
        saddr: Ipv4Addr::new(h[12], h[13], h[14], h[15]),
        daddr: Ipv4Addr::new(h[16], h[17], h[18], h[19]),
        proto: h[9],
        ttl: h[8],
        hlen,
        tot,
        valid,
        frag: u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0,
        first_frag: u16::from_be_bytes([h[6], h[7]]) & 0x3fff == 0x2000,
        ip_ok,
    })
}

fn ethertype(f: &[u8]) -> u16 {
    u16::from_be_bytes([f[12], f[13]])
}

/// The IPv4 packet of an untagged frame.
fn ip4(f: &[u8]) -> Option<Ip4> {
    if f.len() < 14 || ethertype(f) != 0x0800 {
        return None;
    }
    ip4_at(f, 14)
}

/// The transport segment of a valid, whole IPv4 packet at `off`.
fn segment<'a>(f: &'a [u8], off: usize, h: &Ip4) -> Option<&'a [u8]> {
    (h.valid && !h.frag).then(|| &f[off + h.hlen..off + h.tot])
}

/// The transport bytes of a valid IPv4 packet at `off` that carry its
/// tuple: a whole packet's segment, or a UDP or ICMP first fragment's part
/// of its datagram (dnet follows no TCP fragment).
fn head_segment<'a>(f: &'a [u8], off: usize, h: &Ip4) -> Option<&'a [u8]> {
    (h.valid && (!h.frag || (h.first_frag && h.proto != 6))).then(|| &f[off + h.hlen..off + h.tot])
}

/// The quoted header of an ICMP error (and the quote), if `f` is one (a
/// whole datagram: dnet translates no fragmented error).
fn quote_of<'a>(f: &'a [u8], h: &Ip4) -> Option<(Ip4, &'a [u8])> {
    let m = f.get(14 + h.hlen..)?;
    if h.frag || h.proto != 1 || m.len() < 28 || !matches!(m[0], 3 | 11 | 12) {
        return None;
    }
    Some((ip4_at(m, 8)?, &m[8..]))
}

/// Whether the segment's checksum is right (`None`: UDP without one).
fn l4_ok(h: &Ip4, seg: &[u8]) -> Option<bool> {
    match h.proto {
        6 if seg.len() >= 20 => Some(l4_checksum(h.saddr, h.daddr, 6, seg) == 0),
        17 if seg.len() >= 8 => {
            if seg[6..8] == [0, 0] {
                None
            } else {
                Some(l4_checksum(h.saddr, h.daddr, 17, seg) == 0)
            }
        }
        1 if seg.len() >= 4 => Some(csum::checksum(seg) == 0),
        _ => None,
    }
}

/// The tuple as conntrack keys it, for a packet whose header is whole
/// inside its IPv4 total length.
fn tuple(h: &Ip4, seg: &[u8]) -> Option<CtKey> {
    let mut k = CtKey {
        saddr_be: ipv4_be(h.saddr),
        daddr_be: ipv4_be(h.daddr),
        proto: h.proto,
        ..Default::default()
    };
    let be = |i: usize| u16::from_ne_bytes([seg[i], seg[i + 1]]);
    match h.proto {
        6 if seg.len() >= 20 => (k.sport_be, k.dport_be) = (be(0), be(2)),
        17 if seg.len() >= 8 => (k.sport_be, k.dport_be) = (be(0), be(2)),
        1 if seg.len() >= 8 && seg[0] == 8 => k.sport_be = be(4),
        1 if seg.len() >= 8 && seg[0] == 0 => k.dport_be = be(4),
        _ => return None,
    }
    Some(k)
}

/// Whether a frame may open a flow: a whole, unfragmented IPv4 packet
/// whose transport header is whole and honest (a TCP data offset of 5 to
/// the segment's length, a UDP length of 8 to the datagram's; a UDP or
/// ICMP first fragment's header whole, its UDP length at least 8), and that is
/// a TCP SYN (no ACK, RST or FIN), a UDP datagram or a ping. The sender,
/// the destination and the TTL (one to spare where dnet routes) are judged
/// by the caller.
fn may_open(f: &[u8]) -> Option<(Ip4, CtKey)> {
    let h = ip4(f)?;
    let seg = head_segment(f, 14, &h)?;
    let k = tuple(&h, seg)?;
    let honest = match h.proto {
        6 => {
            let doff = (seg[12] >> 4) as usize * 4;
            doff >= 20
                && doff <= seg.len()
                && seg[13] & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN) == TCP_SYN
        }
        17 => {
            let len = u16::from_be_bytes([seg[4], seg[5]]) as usize;
            len >= 8 && (h.first_frag || len <= seg.len())
        }
        1 => seg[0] == 8,
        _ => false,
    };
    honest.then_some((h, k))
}

fn in_dnet_subnets(a: Ipv4Addr) -> bool {
    let o = a.octets();
    (o[0] == 172 && o[1] == 17) || (o[0] == 10 && o[1] == 9 && o[2] == 0)
}

// ---- The run ----

struct World {
    fx: Fixture,
    tally: std::cell::RefCell<Tally>,
    up_mac: [u8; 6],
    /// The table every sequence starts from.
    seed_ct: Vec<(CtKey, CtEntry)>,
}

/// What the frames did, so that a run shows it reached the datapath's
/// paths (and a generator that stopped reaching them fails).
#[derive(Debug, Default)]
struct Tally {
    frames: u64,
    refused_by_the_kernel: u64,
    passed: u64,
    dropped: u64,
    redirected: u64,
    flows_made: u64,
    icmp_errors_translated: u64,
    icmp_errors_built: u64,
    /// Neighbor Advertisements built (IPv6, issue 13).
    ndp_answered: u64,
}

fn all_drops(dp: &Datapath) -> u64 {
    (0..4)
        .map(|s| dp.stats(s).unwrap().drops.iter().sum::<u64>())
        .sum()
}

/// Runs `prog` on `frame`; `None` when the kernel refuses the frame
/// itself (an IPv4 or IPv6 frame shorter than its network header: the
/// kernel drops those before TC too).
fn try_run(dp: &Datapath, prog: Prog, frame: &[u8]) -> Option<(u32, Vec<u8>)> {
    let (name, ctx) = match prog {
        Prog::FromContainer => (PROG_FROM_CONTAINER, None),
        Prog::FromUplink => (PROG_FROM_UPLINK, None),
        Prog::ToContainer(iif) => (PROG_TO_CONTAINER, Some(skb_ctx(iif, 0))),
        Prog::ToUplink => (PROG_TO_UPLINK, None),
    };
    let p = dp.program(name).unwrap();
    let mut out = vec![0u8; frame.len() + 256];
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.data_out = Some(&mut out);
    if let Some(c) = &ctx {
        opts.ctx_in = Some(c);
    }
    match p.test_run(opts) {
        Ok(r) => {
            out.truncate(r.data_size_out as usize);
            Some((r.return_value, out))
        }
        Err(e) => {
            assert!(
                frame.len() < 14 + 20 || (ethertype(frame) == 0x86dd && frame.len() < 14 + 40),
                "BPF_PROG_TEST_RUN refused a {}-byte frame {}: {e:?}",
                frame.len(),
                hex(frame)
            );
            None
        }
    }
}

fn check(cond: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if cond { Ok(()) } else { Err(what()) }
}

/// Checksums of a frame dnet rewrote: right iff they were right, at each
/// level the two frames share (outer IPv4, transport, quoted IPv4 and
/// transport of an ICMP error).
fn same_checksums(inp: &[u8], out: &[u8]) -> Result<(), String> {
    let (Some(hi), Some(ho)) = (ip4(inp), ip4(out)) else {
        return Ok(());
    };
    check(hi.ip_ok == ho.ip_ok, || {
        format!("IPv4 checksum right: {} in, {} out", hi.ip_ok, ho.ip_ok)
    })?;
    let (Some(si), Some(so)) = (segment(inp, 14, &hi), segment(out, 14, &ho)) else {
        return Ok(());
    };
    let (ci, co) = (l4_ok(&hi, si), l4_ok(&ho, so));
    check(ci == co, || {
        format!("transport checksum right: {ci:?} in, {co:?} out")
    })?;
    // A quoted header (an ICMP error translated back).
    if hi.proto == 1 && si.len() >= 28 && matches!(si[0], 3 | 11 | 12) {
        let (qi, qo) = (ip4_at(si, 8), ip4_at(so, 8));
        if let (Some(qi), Some(qo)) = (qi, qo) {
            check(qi.ip_ok == qo.ip_ok, || {
                format!(
                    "quoted IPv4 checksum right: {} in, {} out",
                    qi.ip_ok, qo.ip_ok
                )
            })?;
            if let (Some(a), Some(b)) = (segment(si, 8, &qi), segment(so, 8, &qo)) {
                let (ci, co) = (l4_ok(&qi, a), l4_ok(&qo, b));
                check(ci == co, || {
                    format!("quoted transport checksum right: {ci:?} in, {co:?} out")
                })?;
            }
        }
    }
    Ok(())
}

/// An ICMP error dnet built from `inp` (from `from`, to `inp`'s sender,
/// quoting it): both checksums right.
fn is_built_answer(inp: &[u8], out: &[u8], from: Ipv4Addr) -> Result<bool, String> {
    let (Some(hi), Some(ho)) = (ip4(inp), ip4(out)) else {
        return Ok(false);
    };
    let Some(so) = out.get(14 + ho.hlen.max(20)..) else {
        return Ok(false);
    };
    let built = ho.proto == 1
        && so.len() > 8
        && matches!(so[0], 3 | 11)
        && ho.saddr == from
        && ho.daddr == hi.saddr
        && inp.get(14..14 + so.len() - 8) == Some(&so[8..]);
    if built {
        check(ho.ip_ok, || "the ICMP error's IPv4 checksum".into())?;
        check(csum::checksum(so) == 0, || {
            "the ICMP error's checksum".into()
        })?;
        check(out[..6] == inp[6..12], || {
            "the ICMP error goes back to the sender's MAC".into()
        })?;
    }
    Ok(built)
}

/// IPv6 from A that was not dropped: an advertisement dnet built for a
/// solicitation it may answer, or A's own packet (its own source, no NDP
/// or MLD message), passed on as it came or redirected to the endpoint of
/// its destination unchanged beyond the MACs, or translated (NAT66) out
/// to the world.
/// True for an advertisement.
fn check_v6(w: &World, inp: &[u8], v: u32, out: &[u8]) -> Result<bool, String> {
    let a6 = ipv6::ip6(ipv6::A6).octets();
    check(inp.len() >= 54, || "a short IPv6 frame got through".into())?;
    let src = &inp[22..38];
    if v == REDIRECT && out.len() == 86 && out[20] == ipv6::ICMPV6 && out[54] == ipv6::NA {
        // The asker solicited, from its address or its link-local one, an
        // address that is the gateway's or a peer's, not its own.
        check(inp[20] == ipv6::ICMPV6 && inp[54] == ipv6::NS, || {
            "an advertisement for something other than a solicitation".into()
        })?;
        check(
            src == a6 || (src[0] == 0xfe && src[1] & 0xc0 == 0x80),
            || format!("answered a solicitation from {}", hex(src)),
        )?;
        let target = &inp[62..78];
        let gw = ipv6::ip6(ipv6::GW6).octets();
        let b6 = ipv6::ip6(ipv6::B6).octets();
        let mac = if target == gw {
            GW_MAC
        } else if target == b6 {
            w.fx.b.mac
        } else {
            return Err(format!("answered for {}", hex(target)));
        };
        check(
            out[..6] == w.fx.a.mac && out[6..12] == mac && out[80..86] == mac,
            || format!("advertisement with the wrong MACs: {}", hex(out)),
        )?;
        check(
            out[22..38] == *target && out[38..54] == *src && out[62..78] == *target,
            || "advertisement with the wrong addresses".into(),
        )?;
        check(ipv6::icmp6_checksum_ok(out), || {
            format!("advertisement with a wrong checksum: {}", hex(out))
        })?;
        return Ok(true);
    }
    check(src == a6, || {
        format!("a foreign IPv6 source {} got through", hex(src))
    })?;
    if inp[20] == ipv6::ICMPV6 && inp.len() > 54 {
        check(!matches!(inp[54], 130..=137 | 143), || {
            format!("ICMPv6 type {} got through", inp[54])
        })?;
    }
    if v == REDIRECT && out.len() >= 54 && out[22..38] == ipv6::ip6(UPLINK6).octets() {
        // NAT66: to the same destination beyond dnet's subnets
        // (fd00:1::/64, fd00:2::/64), from the uplink's address, through
        // the world's router.
        let to = &inp[38..54];
        // Whole /64s: fd00:1:100::2 is beyond them, and translated.
        let dnet = [[0xfd, 0, 0, 1, 0, 0, 0, 0], [0xfd, 0, 0, 2, 0, 0, 0, 0]]
            .iter()
            .any(|p| to[..8] == *p);
        check(
            out[38..54] == *to && !dnet && out[..6] == WORLD_MAC && out[21] + 1 == inp[21],
            || format!("translated IPv6 that should not be: {}", hex(out)),
        )?;
        return Ok(false);
    }
    if v == REDIRECT {
        // To B, or back to A itself (its own address, as IPv4's).
        let to = &inp[38..54];
        let into = [(w.fx.b.mac, ipv6::B6), (w.fx.a.mac, ipv6::A6)]
            .into_iter()
            .find(|(_, a)| to == ipv6::ip6(a).octets());
        check(
            into.is_some_and(|(mac, _)| out[..6] == mac) && out[12..] == inp[12..],
            || format!("redirected IPv6 other than to an endpoint: {}", hex(out)),
        )?;
    }
    Ok(false)
}

fn check_step(w: &World, s: &Step, inp: &[u8]) -> Result<(), String> {
    let dp = &w.fx.dp;
    let a = &w.fx.a;
    let drops_before = all_drops(dp);
    let ct_before = dp.conntrack().unwrap();
    let Some((v, out)) = try_run(dp, s.prog, inp) else {
        w.tally.borrow_mut().refused_by_the_kernel += 1;
        return Ok(());
    };
    let ct_after = dp.conntrack().unwrap();
    check([OK, SHOT, REDIRECT].contains(&v), || format!("verdict {v}"))?;
    let mut tally = w.tally.borrow_mut();
    tally.frames += 1;
    match v {
        OK => tally.passed += 1,
        SHOT => tally.dropped += 1,
        _ => tally.redirected += 1,
    }
    if v == SHOT {
        check(all_drops(dp) > drops_before, || {
            "dropped without a counted reason".into()
        })?;
    }
    if v == OK && s.prog != Prog::ToUplink {
        check(out == inp, || format!("passed on changed: {}", hex(&out)))?;
    }
    let tagged = matches!(ethertype(inp), 0x8100 | 0x88a8);
    let hi = ip4(inp);
    match s.prog {
        Prog::FromContainer if v != SHOT => {
            check(inp[6..12] == a.mac, || {
                "a foreign source MAC got through".into()
            })?;
            check(!tagged, || "a tagged frame got through".into())?;
            match ethertype(inp) {
                0x0800 => {
                    let h = hi.as_ref().unwrap();
                    check(h.saddr == ip(A), || {
                        format!("a foreign source address {} got through", h.saddr)
                    })?;
                }
                0x0806 => {
                    check(
                        inp.len() >= 42 && inp[22..28] == a.mac && inp[28..32] == [172, 17, 0, 2],
                        || "an ARP request with a foreign sender was answered".into(),
                    )?;
                }
                0x86dd => {
                    if check_v6(w, inp, v, &out)? {
                        tally.ndp_answered += 1;
                    }
                }
                t => return Err(format!("EtherType {t:#06x} got through")),
            }
            if v == REDIRECT && ethertype(&out) == 0x0800 {
                if is_built_answer(inp, &out, ip(GW))? {
                    tally.icmp_errors_built += 1;
                } else {
                    if quote_of(inp, hi.as_ref().unwrap()).is_some() {
                        tally.icmp_errors_translated += 1;
                    }
                    let ho = ip4(&out).ok_or("redirected, no IPv4 header")?;
                    check([ip(A), ip(UPLINK), ip(GW)].contains(&ho.saddr), || {
                        format!("left with source {}", ho.saddr)
                    })?;
                    if out[6..12] == w.up_mac {
                        check(ho.saddr == ip(UPLINK), || {
                            format!("out of the uplink from {}", ho.saddr)
                        })?;
                    }
                    if ho.saddr == ip(A) {
                        check(out[12..] == inp[12..], || {
                            "a frame between peers changed beyond its MACs".into()
                        })?;
                    }
                    same_checksums(inp, &out)?;
                }
            }
        }
        Prog::FromUplink if v == REDIRECT => {
            let h = hi.as_ref().ok_or("redirected from the uplink, not IPv4")?;
            check(!tagged && h.daddr == ip(UPLINK) && h.valid, || {
                format!(
                    "redirected from the uplink: to {}, valid {}",
                    h.daddr, h.valid
                )
            })?;
            if is_built_answer(inp, &out, ip(UPLINK))? {
                tally.icmp_errors_built += 1;
            } else {
                let ho = ip4(&out).ok_or("redirected, no IPv4 header")?;
                let into = [w.fx.a, w.fx.b]
                    .into_iter()
                    .find(|e| out[..6] == e.mac)
                    .ok_or_else(|| format!("redirected to MAC {}", hex(&out[..6])))?;
                check(
                    ho.daddr == Ipv4Addr::from(u32::from_be(into.addr_be)),
                    || format!("into {} for {}", hex(&into.mac), ho.daddr),
                )?;
                check(out[6..12] == GW_MAC, || {
                    "into a container, not from the gateway".into()
                })?;
                match quote_of(inp, h) {
                    // An ICMP error: about a packet that left through the
                    // uplink (from its address, to the world), and quoting,
                    // once translated, one the container sent.
                    Some((qi, _)) => {
                        tally.icmp_errors_translated += 1;
                        check(qi.saddr == ip(UPLINK) && !in_dnet_subnets(qi.daddr), || {
                            format!(
                                "an ICMP error from the world about {} -> {}",
                                qi.saddr, qi.daddr
                            )
                        })?;
                        let (qo, _) = quote_of(&out, &ho).ok_or("the quote is gone")?;
                        check(qo.saddr == ho.daddr, || {
                            format!(
                                "into {} an ICMP error quoting {}'s packet",
                                ho.daddr, qo.saddr
                            )
                        })?;
                    }
                    None => check(ho.saddr == h.saddr, || {
                        format!("into a container from {}, sent from {}", ho.saddr, h.saddr)
                    })?,
                }
                same_checksums(inp, &out)?;
            }
        }
        // The host's echo requests take an identifier of the table; nothing
        // else changes.
        Prog::ToUplink if v == OK && out != inp => {
            let h = hi.as_ref().ok_or("changed, not IPv4")?;
            let m = 14 + h.hlen;
            check(
                h.valid && h.saddr == ip(UPLINK) && h.proto == 1 && inp[m] == 8,
                || "the host's packet changed, not its echo request".into(),
            )?;
            check(
                out.len() == inp.len()
                    && out[..m + 2] == inp[..m + 2]
                    && out[m + 6..] == inp[m + 6..],
                || {
                    format!(
                        "the host's echo request changed beyond its id: {}",
                        hex(&out)
                    )
                },
            )?;
            same_checksums(inp, &out)?;
        }
        Prog::ToContainer(iif) if v == OK => {
            check([0, TEST_IFINDEX, w.fx.b.ifindex].contains(&iif), || {
                format!("into A from interface {iif}")
            })?;
        }
        _ => {}
    }
    // The table: nothing lost; at most one new flow, of a frame that may
    // open one, keyed by its tuple.
    for (k, _) in &ct_before {
        check(ct_after.iter().any(|(x, _)| x == k), || {
            format!("entry {k:?} went away")
        })?;
    }
    let new: Vec<&(CtKey, CtEntry)> = ct_after
        .iter()
        .filter(|(k, _)| !ct_before.iter().any(|(x, _)| x == k))
        .collect();
    if !new.is_empty() {
        let opener = may_open(inp).filter(|(h, _)| !tagged && h.valid);
        let (h, key) = opener.ok_or_else(|| format!("a frame that opens no flow made {new:?}"))?;
        let sender_ok = match s.prog {
            Prog::FromContainer => {
                h.ttl > 1
                    && inp[6..12] == a.mac
                    && h.saddr == ip(A)
                    && (!in_dnet_subnets(h.daddr) || h.daddr == ip(UPLINK))
                    && h.daddr.octets()[0] != 0
            }
            Prog::FromUplink => {
                h.ttl > 1 && h.daddr == ip(UPLINK) && (h.proto == 6 || h.proto == 17)
            }
            // The host's own packet: its TTL is the host's business
            // (`traceroute -I` sends 1).
            Prog::ToContainer(_) => false,
            Prog::ToUplink => h.saddr == ip(UPLINK) && h.proto == 1,
        };
        check(sender_ok, || format!("{:?} made {new:?}", s.prog))?;
        check(new.len() == 2, || {
            format!("{} new entries: {new:?}", new.len())
        })?;
        check(
            new.iter()
                .any(|(k, e)| *k == key && e.flags & CT_F_REPLY == 0),
            || format!("new entries {new:?} are not keyed by the frame's tuple {key:?}"),
        )?;
        let sent = if s.prog == Prog::ToUplink {
            OK
        } else {
            REDIRECT
        };
        check(v == sent, || {
            "a flow made for a frame that was dropped".into()
        })?;
        tally.flows_made += 1;
    }
    Ok(())
}

/// The table back to the seeded flows.
fn restore(w: &mut World) {
    w.fx.dp.forget_fragments();
    let now: Vec<CtKey> =
        w.fx.dp
            .conntrack()
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
    w.fx.dp.ct_remove(&now).unwrap();
    for (k, e) in &w.seed_ct {
        w.fx.dp.ct_insert(k, e).unwrap();
    }
}

const GW: &str = "172.17.0.1";

/// The NAT fixture, two published ports of A, and one flow of each kind.
fn world() -> World {
    let mut fx = nat_fixture(50000, 50009);
    // Dual-stack: networks 1 and 2, A, B and C (issue 13).
    for (id, subnet, gw) in [
        (1, "fd00:1::/64", ipv6::GW6),
        (2, "fd00:2::/64", "fd00:2::1"),
    ] {
        let (s, n) = ipv6::net6(subnet, gw, dnet_common::ipv6::NET6_F_NAT);
        fx.dp.set_network6(id, s, &n).unwrap();
    }
    for (e, a) in [(fx.a, ipv6::A6), (fx.b, ipv6::B6), (fx.c, ipv6::C6)] {
        fx.dp.set_endpoint6(e.ifindex, ipv6::ip6(a), &e).unwrap();
    }
    publish_8080_to_a(&mut fx.dp);
    let key = ServiceKey {
        addr_be: 0,
        port_be: UDP_PUBLISHED.to_be(),
        proto: 17,
        _pad: 0,
    };
    let svc = Service {
        backend_be: fx.a.addr_be,
        backend_port_be: 53u16.to_be(),
        _pad: 0,
    };
    fx.dp.set_service(&key, &svc).unwrap();
    let up = up0_mac();
    let a = fx.a.mac;
    let dp = &fx.dp;
    // A's UDP, answered.
    let (v, o) = run(dp, &udp_to(a, GW_MAC, (A, 4000), (WORLD, 53), false));
    assert_eq!(v, REDIRECT);
    let pu = parse_checked(&o).sport;
    let r = udp_to(WORLD_MAC, up, (WORLD, 53), (UPLINK, pu), false);
    assert_eq!(run_prog(dp, PROG_FROM_UPLINK, &r).0, REDIRECT);
    // A's TCP, established.
    let (v, o) = run(dp, &tcp(a, GW_MAC, (A, 40000), (WORLD, 80), TCP_SYN));
    assert_eq!(v, REDIRECT);
    let pt = parse_checked(&o).sport;
    let sa = tcp(WORLD_MAC, up, (WORLD, 80), (UPLINK, pt), TCP_SYN | TCP_ACK);
    assert_eq!(run_prog(dp, PROG_FROM_UPLINK, &sa).0, REDIRECT);
    assert_eq!(
        run(dp, &tcp(a, GW_MAC, (A, 40000), (WORLD, 80), TCP_ACK)).0,
        REDIRECT
    );
    // A's ping.
    assert_eq!(
        run(dp, &icmp_echo(a, GW_MAC, A, WORLD, 8, 0x1234)).0,
        REDIRECT
    );
    // The world to A's published port, answered.
    let syn = tcp(WORLD_MAC, up, (WORLD, 33333), (UPLINK, 8080), TCP_SYN);
    assert_eq!(run_prog(dp, PROG_FROM_UPLINK, &syn).0, REDIRECT);
    let sa = tcp(a, GW_MAC, (A, 80), (WORLD, 33333), TCP_SYN | TCP_ACK);
    assert_eq!(run(dp, &sa).0, REDIRECT);
    // A to its own published port (hairpin).
    let hairpin = tcp(a, GW_MAC, (A, 41000), (UPLINK, 8080), TCP_SYN);
    assert_eq!(run(dp, &hairpin).0, REDIRECT);
    // B's UDP to the world, as the datapath would have made it.
    let taken: Vec<u16> = dp
        .conntrack()
        .unwrap()
        .iter()
        .map(|(k, _)| u16::from_be(k.dport_be))
        .collect();
    let pb = (50000..=50009).find(|p| !taken.contains(p)).unwrap();
    let bkey = CtKey {
        saddr_be: fx.b.addr_be,
        daddr_be: ipv4_be(ip(WORLD)),
        sport_be: 4000u16.to_be(),
        dport_be: 53u16.to_be(),
        proto: 17,
        _pad: [0; 3],
    };
    let bfwd = CtEntry {
        new_saddr_be: ipv4_be(ip(UPLINK)),
        new_sport_be: pb.to_be(),
        flags: CT_F_SNAT | CT_F_REPLY_TO_ENDPOINT,
        tcp_seen: dnet_common::nat::CT_SEEN,
        endpoint_be: fx.b.addr_be,
        flow_id: 0x5eed,
        ..Default::default()
    };
    let (mut rk, mut re) = (CtKey::default(), CtEntry::default());
    reply_into(&bkey, &bfwd, &mut rk, &mut re);
    fx.dp.ct_insert(&rk, &re).unwrap();
    fx.dp.ct_insert(&bkey, &bfwd).unwrap();
    let seed_ct = fx.dp.conntrack().unwrap();
    assert_eq!(seed_ct.len(), 12, "six flows");
    for s in 0..4 {
        fx.dp.reset_stats(s).unwrap();
    }
    World {
        fx,
        tally: Default::default(),
        up_mac: up,
        seed_ct,
    }
}

fn pools(w: &World) -> Pools {
    let mut ports = vec![
        0,
        53,
        80,
        4000,
        40000,
        41000,
        8080,
        UDP_PUBLISHED,
        33333,
        0x1234,
    ];
    let mut tuples = Vec::new();
    for (k, e) in &w.seed_ct {
        for t in [*k, translated(k, e)] {
            ports.extend([u16::from_be(t.sport_be), u16::from_be(t.dport_be)]);
            tuples.push((
                Ipv4Addr::from(u32::from_be(t.saddr_be)),
                Ipv4Addr::from(u32::from_be(t.daddr_be)),
                u16::from_be(t.sport_be),
                u16::from_be(t.dport_be),
                t.proto,
            ));
        }
    }
    ports.sort_unstable();
    ports.dedup();
    let addrs = [
        A,
        B,
        "10.9.0.2",
        GW,
        "10.9.0.1",
        UPLINK,
        WORLD,
        OTHER_WORLD,
        "172.17.0.99",
        "172.17.255.255",
        "224.0.0.251",
        "255.255.255.255",
        "127.0.0.1",
        "0.0.0.0",
    ]
    .iter()
    .map(|s| ip(s))
    .collect();
    Pools {
        macs: vec![
            w.fx.a.mac,
            w.fx.b.mac,
            w.fx.c.mac,
            GW_MAC,
            WORLD_MAC,
            w.up_mac,
            [0xff; 6],
            [1, 0, 0x5e, 0, 0, 0xfb],
        ],
        addrs,
        ports,
        tuples,
        a_mac: w.fx.a.mac,
        up_mac: w.up_mac,
    }
}

fn seed() -> [u8; 32] {
    let n: u64 = match std::env::var("DNET_PROPTEST_SEED") {
        Ok(s) => s.parse().expect("DNET_PROPTEST_SEED: a number"),
        Err(_) => rand::random(),
    };
    let mut s = [0u8; 32];
    s[..8].copy_from_slice(&n.to_le_bytes());
    s
}

#[test]
fn prop_random_and_mutated_frames_keep_the_datapaths_invariants() {
    in_fresh_netns(|| {
        let mut w = world();
        let p = pools(&w);
        let seed = seed();
        let n = u64::from_le_bytes(seed[..8].try_into().unwrap());
        let cases = std::env::var("DNET_PROPTEST_CASES")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(CASES);
        let config = PtConfig {
            cases,
            failure_persistence: None,
            max_shrink_iters: 2000,
            ..PtConfig::default()
        };
        let mut runner =
            TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed));
        let strategy = prop::collection::vec(step(&p), 1..=3);
        let w = std::cell::RefCell::new(&mut w);
        let result = runner.run(&strategy, |steps| {
            let mut w = w.borrow_mut();
            restore(&mut w);
            for (i, s) in steps.iter().enumerate() {
                let frame = wire_bytes(&s.wire);
                check_step(&w, s, &frame).map_err(|e| {
                    TestCaseError::fail(format!(
                        "step {i} ({:?}), frame {}: {e}",
                        s.prog,
                        hex(&frame)
                    ))
                })?;
            }
            Ok(())
        });
        if let Err(e) = result {
            panic!("DNET_PROPTEST_SEED={n}: {e}");
        }
        let t = w.borrow().tally.take();
        eprintln!("{cases} sequences, DNET_PROPTEST_SEED={n}: {t:?}");
        if cases >= CASES {
            assert!(
                t.flows_made > 0
                    && t.icmp_errors_translated > 0
                    && t.icmp_errors_built > 0
                    && t.ndp_answered > 0
                    && t.redirected > t.frames / 10,
                "the frames no longer reach the datapath's paths: {t:?}"
            );
        }
    });
}
