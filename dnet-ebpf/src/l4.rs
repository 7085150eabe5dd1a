//! The transport layer as NAT sees it: a packet's tuple and where its ports
//! and checksum sit.

use aya_ebpf::{
    bindings::BPF_F_MARK_MANGLED_0, macros::map, maps::PerCpuArray, programs::TcContext,
};
use dnet_common::{
    CtAddr, CtKey, CtKeyOf, DropReason,
    nat::{CT_SEEN, TCP_SYN, TCP_TRACKED},
    tcp::{NO_WSCALE, Seg},
};

use crate::{
    err,
    eth::ETH_HLEN,
    ipv4::Ipv4Hdr,
    ipv6::IPPROTO_ICMPV6,
    nat6::{ICMPV6_ECHO_REPLY, ICMPV6_ECHO_REQUEST},
    ptr::ptr_at,
};

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

pub const ICMP_ECHOREPLY: u8 = 0;
pub const ICMP_DEST_UNREACH: u8 = 3;
pub const ICMP_ECHO: u8 = 8;
pub const ICMP_TIME_EXCEEDED: u8 = 11;
pub const ICMP_PARAMETERPROB: u8 = 12;

const TCPOPT_EOL: u8 = 0;
const TCPOPT_NOP: u8 = 1;
const TCPOPT_WINDOW: u8 = 3;

/// Where a tuple's L4 fields are.
#[derive(Clone, Copy)]
pub struct L4 {
    /// Offset of the L4 header from the packet start.
    pub off: usize,
    /// Offset of the L4 checksum field.
    pub csum_off: usize,
    /// Offset of the field that holds the "source port" of the tuple (for
    /// ICMP echo: the identifier; the echo request's source, the reply's
    /// destination).
    pub sport_off: usize,
    pub dport_off: usize,
    /// TCP flags conntrack keeps (`TCP_TRACKED`); `CT_SEEN` for other
    /// protocols.
    pub tcp_flags: u8,
    /// ICMP type (0 for other protocols).
    pub icmp_type: u8,
    /// [`FRAG_NONE`], or which fragment of a datagram this is (IPv4).
    pub frag: u8,
    /// The datagram's IP identification (a fragment's).
    pub frag_id_be: u16,
}

/// A whole datagram.
pub const FRAG_NONE: u8 = 0;
/// A datagram's first fragment: its transport header is here, and the
/// flow's translation records its ports for the rest ([`crate::frag`]).
pub const FRAG_FIRST: u8 = 1;
/// A later fragment: no transport header, its ports found through the
/// first's record. Only its addresses are translated, and it opens no
/// flow.
pub const FRAG_LATER: u8 = 2;

/// The largest IPv4 datagram: what a first fragment's transport header is
/// checked against (the datagram goes on past the fragment).
const MAX_DATAGRAM: usize = 65535;

/// What [`parse`] found in an IPv4 packet.
pub enum Parsed {
    /// A TCP or UDP segment, or an ICMP echo request or reply.
    Flow(CtKey, L4),
    /// An ICMP error (destination unreachable, time exceeded, parameter
    /// problem): the offset of its ICMP header.
    IcmpError(usize),
    /// A TCP fragment, an ICMP error's, or a later fragment whose first
    /// was not translated: no usable ports.
    Fragment,
    /// Another protocol or ICMP type.
    Other,
    /// Headers cut short, or lying about their lengths.
    Truncated,
}

/// What [`tuple`] found after the network header(s), for either family.
pub enum Tuple {
    /// TCP, UDP, or an ICMP echo request or reply: its ports (or echo
    /// identifier) are in the key [`tuple`] was given.
    Flow(L4),
    /// An ICMP error (quoting another packet): the offset of its ICMP
    /// header.
    IcmpError(usize),
    /// A fragment (first or later): no ports to translate by. (Found by
    /// the caller, which knows its family's fragment headers.)
    Fragment,
    /// Another protocol or ICMP type.
    Other,
    /// Headers cut short, or lying about their lengths.
    Truncated,
}

/// An address family's ICMP, as [`tuple`] reads it: IPv4's ICMP or
/// ICMPv6, whose echo and error types differ but whose echo header is
/// the same (type, code, checksum, identifier, sequence).
pub trait IcmpFamily: CtAddr {
    /// The protocol number of the family's ICMP (1, 58).
    const IPPROTO: u8;
    const ECHO_REQUEST: u8;
    const ECHO_REPLY: u8;
    /// An error that quotes the packet it is about.
    fn is_error(ty: u8) -> bool;
}

impl IcmpFamily for u32 {
    const IPPROTO: u8 = IPPROTO_ICMP;
    const ECHO_REQUEST: u8 = ICMP_ECHO;
    const ECHO_REPLY: u8 = ICMP_ECHOREPLY;
    #[inline(always)]
    fn is_error(ty: u8) -> bool {
        matches!(
            ty,
            ICMP_DEST_UNREACH | ICMP_TIME_EXCEEDED | ICMP_PARAMETERPROB
        )
    }
}

impl IcmpFamily for [u8; 16] {
    const IPPROTO: u8 = IPPROTO_ICMPV6;
    const ECHO_REQUEST: u8 = ICMPV6_ECHO_REQUEST;
    const ECHO_REPLY: u8 = ICMPV6_ECHO_REPLY;
    /// Destination unreachable, packet too big, time exceeded, parameter
    /// problem (RFC 4443).
    #[inline(always)]
    fn is_error(ty: u8) -> bool {
        (1..=4).contains(&ty)
    }
}

/// The tuple of the IPv4 packet whose header is at `ip_off` ([`tuple`]);
/// a fragment's as [`fragment`] finds it.
#[inline(always)]
pub fn parse(ctx: &TcContext, ip_off: usize, ip: &Ipv4Hdr) -> Parsed {
    let mut key = CtKey {
        saddr_be: ip.saddr_be,
        daddr_be: ip.daddr_be,
        sport_be: 0,
        dport_be: 0,
        proto: ip.proto,
        _pad: [0; 3],
    };
    // MF set, or a fragment offset.
    if u16::from_be(ip.frag_off_be) & 0x3fff != 0 {
        return fragment(ctx, ip_off, ip, key);
    }
    let seg_len = ip.tot_len().saturating_sub(ip.hlen());
    match tuple(ctx, ip_off + ip.hlen(), seg_len, &mut key) {
        Tuple::Flow(l4) => Parsed::Flow(key, l4),
        Tuple::IcmpError(off) => Parsed::IcmpError(off),
        Tuple::Fragment => Parsed::Fragment,
        Tuple::Other => Parsed::Other,
        Tuple::Truncated => Parsed::Truncated,
    }
}

/// The tuple of a UDP or ICMP echo fragment: a first one's from its
/// transport header, which the datagram's length (not the fragment's)
/// bounds; a later one's from its first's record ([`crate::frag`]).
#[inline(always)]
fn fragment(ctx: &TcContext, ip_off: usize, ip: &Ipv4Hdr, mut key: CtKey) -> Parsed {
    if ip.proto == IPPROTO_TCP {
        return Parsed::Fragment;
    }
    let off = ip_off + ip.hlen();
    if u16::from_be(ip.frag_off_be) & 0x1fff == 0 {
        // Its transport header (8 bytes for UDP and ICMP) must lie inside
        // the fragment, as the whole one's inside the datagram.
        if ip.tot_len().saturating_sub(ip.hlen()) < 8 {
            return Parsed::Truncated;
        }
        return match tuple(ctx, off, MAX_DATAGRAM, &mut key) {
            Tuple::Flow(mut l4) => {
                l4.frag = FRAG_FIRST;
                l4.frag_id_be = ip.id_be;
                Parsed::Flow(key, l4)
            }
            Tuple::Truncated => Parsed::Truncated,
            _ => Parsed::Fragment,
        };
    }
    let Some(p) = crate::frag::ports(ip.saddr_be, ip.daddr_be, u32::from(ip.id_be), ip.proto)
    else {
        return Parsed::Fragment;
    };
    key.sport_be = p.sport_be;
    key.dport_be = p.dport_be;
    Parsed::Flow(
        key,
        L4 {
            off,
            csum_off: 0,
            sport_off: 0,
            dport_off: 0,
            tcp_flags: CT_SEEN,
            icmp_type: p.icmp_type,
            frag: FRAG_LATER,
            frag_id_be: ip.id_be,
        },
    )
}

/// The ports (or echo identifier) of the transport header at `off`, into
/// `key` (whose addresses and protocol the caller wrote), for either
/// family: the one parser of TCP, UDP and ICMP echo. The transport header
/// must lie inside the datagram as its length says (`seg_len` bytes from
/// `off`; bytes past it are link padding, which the receiver trims), with
/// a TCP data offset of 5 words to the segment's length and a UDP length
/// of 8 bytes to the datagram's: what lies about its lengths reaches no
/// socket, and Linux's conntrack calls it invalid. It is `Truncated`, and
/// so opens no flow.
#[inline(always)]
pub fn tuple<A: IcmpFamily>(
    ctx: &TcContext,
    off: usize,
    seg_len: usize,
    key: &mut CtKeyOf<A>,
) -> Tuple {
    key.sport_be = 0;
    key.dport_be = 0;
    let proto = key.proto;
    if proto == IPPROTO_TCP {
        let Ok(p) = ptr_at::<[u8; 20]>(ctx, off) else {
            return Tuple::Truncated;
        };
        // SAFETY: `ptr_at` checked the bytes are in the packet.
        let h = unsafe { &*p };
        let doff = ((h[12] >> 4) as usize) * 4;
        if doff < 20 || doff > seg_len {
            return Tuple::Truncated;
        }
        key.sport_be = u16::from_ne_bytes([h[0], h[1]]);
        key.dport_be = u16::from_ne_bytes([h[2], h[3]]);
        return Tuple::Flow(L4 {
            off,
            csum_off: off + 16,
            sport_off: off,
            dport_off: off + 2,
            tcp_flags: h[13] & TCP_TRACKED,
            icmp_type: 0,
            frag: FRAG_NONE,
            frag_id_be: 0,
        });
    }
    if proto == IPPROTO_UDP {
        let Ok(p) = ptr_at::<[u8; 8]>(ctx, off) else {
            return Tuple::Truncated;
        };
        // SAFETY: as above.
        let h = unsafe { &*p };
        let len = u16::from_be_bytes([h[4], h[5]]) as usize;
        if len < 8 || len > seg_len {
            return Tuple::Truncated;
        }
        key.sport_be = u16::from_ne_bytes([h[0], h[1]]);
        key.dport_be = u16::from_ne_bytes([h[2], h[3]]);
        return Tuple::Flow(L4 {
            off,
            csum_off: off + 6,
            sport_off: off,
            dport_off: off + 2,
            tcp_flags: CT_SEEN,
            icmp_type: 0,
            frag: FRAG_NONE,
            frag_id_be: 0,
        });
    }
    if proto != A::IPPROTO {
        return Tuple::Other;
    }
    let Ok(p) = ptr_at::<[u8; 8]>(ctx, off) else {
        return Tuple::Truncated;
    };
    if seg_len < 8 {
        return Tuple::Truncated;
    }
    // SAFETY: as above.
    let h = unsafe { &*p };
    let id = u16::from_ne_bytes([h[4], h[5]]);
    let ty = h[0];
    if ty == A::ECHO_REQUEST {
        key.sport_be = id;
    } else if ty == A::ECHO_REPLY {
        key.dport_be = id;
    } else if A::is_error(ty) {
        return Tuple::IcmpError(off);
    } else {
        return Tuple::Other;
    }
    Tuple::Flow(L4 {
        off,
        csum_off: off + 2,
        sport_off: off + 4,
        dport_off: off + 4,
        tcp_flags: CT_SEEN,
        icmp_type: ty,
        frag: FRAG_NONE,
        frag_id_be: 0,
    })
}

/// `BPF_F_MARK_MANGLED_0` for UDP (whose zero checksum means "none": a
/// rewrite that would make it zero writes 0xffff), nothing for others:
/// the flags every L4 checksum rewrite of a `proto` packet carries.
#[inline(always)]
pub fn mangled(proto: u8) -> u64 {
    if proto == IPPROTO_UDP {
        BPF_F_MARK_MANGLED_0 as u64
    } else {
        0
    }
}

/// Writes `new_be` over the port (or echo identifier) at `port_off`, which
/// held `old_be`, folding the change into the L4 checksum at `csum_off`
/// (`mangled`: [`mangled`]); nothing when they are equal. For either
/// family: a port is no part of a pseudo-header, and its change and the
/// checksum's cancel out in the packet's sum (`skb->csum` stays right).
#[inline(always)]
pub fn replace_port(
    ctx: &TcContext,
    csum_off: usize,
    port_off: usize,
    old_be: u16,
    new_be: u16,
    mangled: u64,
) -> Result<(), DropReason> {
    if old_be == new_be {
        return Ok(());
    }
    err(ctx.l4_csum_replace(csum_off, old_be as u64, new_be as u64, mangled | 2))?;
    err(ctx.store(port_off, &new_be, 0))
}

/// What conntrack reads of the segment `l4` describes, in a packet whose
/// IPv4 header is at `ETH_HLEN`: for TCP its sequence numbers, window,
/// payload length and, on a SYN, the window scale option; for other
/// protocols the flags alone (and nothing for an ICMP error's quote,
/// `l4` `None`). Built in this CPU's scratch slot: the programs' stacks
/// are full.
#[inline(always)]
pub fn seg(ctx: &TcContext, l4: Option<&L4>, proto: u8) -> Result<&'static Seg, DropReason> {
    seg_to(ctx, l4, proto, || {
        let tot = ctx.load::<u16>(ETH_HLEN + 2).map(u16::from_be).unwrap_or(0) as usize;
        ETH_HLEN + tot
    })
}

/// As [`seg`], for a datagram that ends where `end` says (IPv6: after its
/// payload length).
#[inline(always)]
pub fn seg_to(
    ctx: &TcContext,
    l4: Option<&L4>,
    proto: u8,
    end: impl FnOnce() -> usize,
) -> Result<&'static Seg, DropReason> {
    let p = SEG_SCRATCH.get_ptr_mut(0).ok_or(DropReason::Malformed)?;
    // SAFETY: this CPU's slot of a live per-CPU array; nothing else runs
    // on this CPU while the program does, and each program fills it once,
    // before anything reads it.
    let s = unsafe { &mut *p };
    *s = Seg {
        flags: l4.map(|l| l.tcp_flags).unwrap_or(0),
        wscale: NO_WSCALE,
        ..Default::default()
    };
    let Some(l4) = l4.filter(|_| proto == IPPROTO_TCP) else {
        return Ok(s);
    };
    let Ok(p) = ptr_at::<[u8; 20]>(ctx, l4.off) else {
        return Ok(s);
    };
    // SAFETY: `ptr_at` checked the bytes are in the packet.
    let h = unsafe { &*p };
    s.seq = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
    s.ack = u32::from_be_bytes([h[8], h[9], h[10], h[11]]);
    s.win = u16::from_be_bytes([h[14], h[15]]);
    let hlen = ((h[12] >> 4) as usize) * 4;
    s.len = end().saturating_sub(l4.off + hlen) as u32;
    if s.flags & TCP_SYN != 0 {
        s.wscale = wscale(ctx, l4.off, hlen);
    }
    Ok(s)
}

/// Room for the segment conntrack reads ([`seg`]), one per CPU.
#[map(name = "DNET_SEG_SCRATCH")]
static SEG_SCRATCH: PerCpuArray<Seg> = PerCpuArray::with_max_entries(1, 0);

/// The window scale option of the TCP header at `off`, `hlen` bytes long
/// with its options, or `NO_WSCALE`. Looks at the first
/// [`MAX_SYN_OPTIONS`] options: every stack's SYN puts it among the first
/// five (Linux: MSS, SACK-permitted, timestamps, NOP, window scale).
#[inline(always)]
fn wscale(ctx: &TcContext, off: usize, hlen: usize) -> u8 {
    let mut i = 20usize;
    for _ in 0..MAX_SYN_OPTIONS {
        // Two bytes at a time: a kind and a length, or two NOPs.
        let Ok([kind, len]) = ctx.load::<[u8; 2]>(off + (i & 63)) else {
            break;
        };
        if i + 1 >= hlen || kind == TCPOPT_EOL {
            break;
        }
        if kind == TCPOPT_NOP {
            i += if len == TCPOPT_NOP { 2 } else { 1 };
            continue;
        }
        if kind == TCPOPT_WINDOW {
            if len != 3 || i + 2 >= hlen {
                break;
            }
            return ctx.load::<u8>(off + (i & 63) + 2).unwrap_or(NO_WSCALE);
        }
        if len < 2 {
            break;
        }
        i += len as usize;
    }
    NO_WSCALE
}

/// Options of a SYN [`wscale`] reads (NOP pairs count one).
const MAX_SYN_OPTIONS: usize = 8;
