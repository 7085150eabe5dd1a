//! IPv6 from a container (issue 13): the header, the bounded walk of its
//! extension headers, and the container-side path.
//!
//! A dual-stack endpoint has an entry in `DNET_EP6_BY_IF` and its network
//! one in `DNET_NETWORKS6`; without both, its IPv6 is dropped (`ipv6`), as
//! on an IPv4-only network. With them, in order:
//! 1. the header must be valid (version 6, a payload length within the
//!    packet) and its extension headers, at most
//!    [`IPV6_MAX_EXT_HEADERS`], lead to the L4 header within it;
//! 2. Neighbor Solicitations are answered here (`ndp`), before the source
//!    check: a container may ask from its link-local address;
//! 3. Router Solicitations and Advertisements, Redirects, MLD and Neighbor
//!    Advertisements from a container are dropped, each with its reason,
//!    whatever their source;
//! 4. the source must be exactly the endpoint's IPv6 address (so link-local
//!    and `::` sources go no further);
//! 5. multicast fans out to the network's other members and goes up the
//!    host stack, as IPv4's does;
//! 6. a destination endpoint of the same network gets the packet straight
//!    into its namespace (`bpf_redirect_peer`); one of another network, or
//!    an unused address of a dnet subnet, is dropped; `icc=false` and
//!    `--internal` hold as for IPv4;
//! 7. the gateway and the host's other addresses go up the host stack,
//!    but for hairpin over IPv6 (`hairpin6`, a tail call): TCP and UDP to
//!    the uplink's IPv6 address, and to the gateway (a hairpin flow's
//!    answers), pass there first, and ICMPv6 errors to either pass through
//!    their translation (`icmp6_error`: a hairpin flow's); beyond them, a routed network's packets
//!    go on to `routed6` and a NAT66 network's to NAT66 (`nat6`), its
//!    ICMPv6 errors to their translation (`icmp6_error`), each a tail call.

use aya_ebpf::{maps::lpm_trie::Key, programs::TcContext};
use dnet_common::{
    DropReason, Endpoint, Endpoint6, Ip6, Network6,
    drop::IPV6_MAX_EXT_HEADERS,
    ipv6::NET6_F_NAT,
    maps::{
        PROG_SLOT_HAIRPIN6, PROG_SLOT_ICMP6_ERROR_FROM_CONTAINER, PROG_SLOT_NAT6_FROM_CONTAINER,
        PROG_SLOT_ROUTED6_FROM_CONTAINER,
    },
    network::NET_F_INTERNAL,
};

use crate::{
    eth::{ETH_HLEN, ETH_P_IPV6, EthHdr, mac_eq},
    fib::{self, Route},
    lxc,
    maps::{EP6_BY_IF, EP6_BY_IP, NETWORKS6, PROGS, SUBNETS6},
    ndp,
    ptr::ptr_at,
    stats::drop,
    verdict::TC_ACT_OK,
};

/// The fixed IPv6 header (RFC 8200), 40 bytes.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Ipv6Hdr {
    /// Version (high nibble of the first byte), traffic class, flow label.
    pub vtcfl: [u8; 4],
    pub payload_len_be: u16,
    pub nexthdr: u8,
    pub hop_limit: u8,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

pub const IPV6_HLEN: usize = 40;

/// Next-header values (`include/net/ipv6.h`).
pub const NEXTHDR_HOP: u8 = 0;
pub const NEXTHDR_ROUTING: u8 = 43;
pub const NEXTHDR_FRAGMENT: u8 = 44;
pub const NEXTHDR_AUTH: u8 = 51;
pub const NEXTHDR_DEST: u8 = 60;
pub const IPPROTO_ICMPV6: u8 = 58;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// ICMPv6 error types (RFC 4443): destination unreachable, packet too
/// big, time exceeded, parameter problem.
pub const ICMPV6_DEST_UNREACH: u8 = 1;
pub const ICMPV6_PARAM_PROB: u8 = 4;

/// ICMPv6 types a container may not send (RFC 4861, RFC 2710, RFC 3810).
pub const ICMPV6_MLD_QUERY: u8 = 130;
pub const ICMPV6_MLD_REPORT: u8 = 131;
pub const ICMPV6_MLD_DONE: u8 = 132;
pub const ICMPV6_ROUTER_SOLICIT: u8 = 133;
pub const ICMPV6_ROUTER_ADVERT: u8 = 134;
pub const ICMPV6_NEIGH_SOLICIT: u8 = 135;
pub const ICMPV6_NEIGH_ADVERT: u8 = 136;
pub const ICMPV6_REDIRECT: u8 = 137;
pub const ICMPV6_MLD2_REPORT: u8 = 143;

impl Ipv6Hdr {
    #[inline(always)]
    pub fn version(&self) -> u8 {
        self.vtcfl[0] >> 4
    }

    #[inline(always)]
    pub fn payload_len(&self) -> usize {
        u16::from_be(self.payload_len_be) as usize
    }

    /// A header that can be trusted: version 6 and a payload that fits in
    /// the `avail` bytes from the header's start to the end of the packet
    /// (checked against the whole packet, so GSO packets pass).
    #[inline(always)]
    pub fn is_valid(&self, avail: usize) -> bool {
        self.version() == 6 && IPV6_HLEN + self.payload_len() <= avail
    }
}

/// Two IPv6 addresses are the same (four 32-bit compares, not a `memcmp`
/// call the BPF target does not have).
#[inline(always)]
pub fn addr_eq(a: &[u8; 16], b: &[u8; 16]) -> bool {
    let w = |x: &[u8; 16], i: usize| u32::from_ne_bytes([x[i], x[i + 1], x[i + 2], x[i + 3]]);
    w(a, 0) == w(b, 0) && w(a, 4) == w(b, 4) && w(a, 8) == w(b, 8) && w(a, 12) == w(b, 12)
}

/// `ff00::/8`.
#[inline(always)]
pub fn is_multicast(a: &[u8; 16]) -> bool {
    a[0] == 0xff
}

/// `fe80::/10`.
#[inline(always)]
pub fn is_link_local(a: &[u8; 16]) -> bool {
    a[0] == 0xfe && a[1] & 0xc0 == 0x80
}

/// `::`.
#[inline(always)]
pub fn is_unspecified(a: &[u8; 16]) -> bool {
    addr_eq(a, &[0; 16])
}

/// TCP or UDP: the protocols of published ports.
#[inline(always)]
fn is_tcp_or_udp(proto: u8) -> bool {
    proto == IPPROTO_TCP || proto == IPPROTO_UDP
}

/// The packet's upper layer (at `l4`) is an ICMPv6 error (its type read
/// again, where the stack has no room to keep it).
#[inline(always)]
fn is_icmp6_error(ctx: &TcContext, l4: &L4At) -> bool {
    l4.proto == IPPROTO_ICMPV6
        && matches!(
            ctx.load::<u8>(l4.off),
            Ok(ICMPV6_DEST_UNREACH..=ICMPV6_PARAM_PROB)
        )
}

/// Where the walk of the extension headers ended.
#[derive(Clone, Copy)]
pub struct L4At {
    /// The upper-layer protocol; [`NEXTHDR_FRAGMENT`] for a fragment that
    /// is not the first (it carries no L4 header).
    pub proto: u8,
    /// Its offset from the start of the frame.
    pub off: usize,
}

/// Walks at most [`IPV6_MAX_EXT_HEADERS`] extension headers from the one
/// `nexthdr` names, at `ETH_HLEN + IPV6_HLEN`, to the upper-layer header.
/// `end` is where the IPv6 payload ends. A chain longer than the bound, or
/// one that runs past `end`, is dropped (`ipv6-ext-headers`): what it hides
/// (an RA behind many options) cannot be judged; so is a routing header with
/// segments left.
#[inline(always)]
pub fn walk(ctx: &TcContext, nexthdr: u8, end: usize) -> Result<L4At, DropReason> {
    let at = walk_from(ctx, nexthdr, ETH_HLEN + IPV6_HLEN, end)?;
    l4_fits(at.proto, at.off, end)
}

/// The chain of [`walk`] from `start` (where the header `nexthdr` names
/// lies), to the upper-layer header or to the fragment header of a later
/// fragment, without judging the upper-layer header's room: also the walk
/// of the packet an ICMPv6 error quotes (`icmp6_error`), which may end
/// inside the quoted transport header.
#[inline(always)]
pub fn walk_from(
    ctx: &TcContext,
    nexthdr: u8,
    start: usize,
    end: usize,
) -> Result<L4At, DropReason> {
    let mut proto = nexthdr;
    let mut off = start;
    for _ in 0..IPV6_MAX_EXT_HEADERS {
        let len = match proto {
            NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_DEST | NEXTHDR_AUTH | NEXTHDR_FRAGMENT => {
                let h: [u8; 4] = ctx.load(off).map_err(|_| DropReason::Ipv6ExtHeaders)?;
                // A routing header with segments left: the packet's final
                // destination is not the one its header names, which every
                // check judges (as Linux by default and Cilium, dropped).
                if proto == NEXTHDR_ROUTING && h[3] != 0 {
                    return Err(DropReason::Ipv6ExtHeaders);
                }
                let len = match proto {
                    NEXTHDR_FRAGMENT => {
                        // Offset (13 bits, in 8-byte units): a later
                        // fragment has no upper-layer header.
                        if u16::from_be_bytes([h[2], h[3]]) & 0xfff8 != 0 {
                            return Ok(L4At {
                                proto: NEXTHDR_FRAGMENT,
                                off,
                            });
                        }
                        8
                    }
                    NEXTHDR_AUTH => (h[1] as usize + 2) * 4,
                    _ => (h[1] as usize + 1) * 8,
                };
                proto = h[0];
                len
            }
            _ => return Ok(L4At { proto, off }),
        };
        off += len;
        if off > end {
            return Err(DropReason::Ipv6ExtHeaders);
        }
    }
    match proto {
        NEXTHDR_HOP | NEXTHDR_ROUTING | NEXTHDR_DEST | NEXTHDR_AUTH | NEXTHDR_FRAGMENT => {
            Err(DropReason::Ipv6ExtHeaders)
        }
        _ => Ok(L4At { proto, off }),
    }
}

/// The upper-layer header must lie within the payload (ICMPv6 and UDP 8
/// bytes, TCP 20), or the checks after the walk would read its type from
/// Ethernet padding or judge a first fragment that hides it in the next
/// (RFC 7112): `malformed`.
#[inline(always)]
fn l4_fits(proto: u8, off: usize, end: usize) -> Result<L4At, DropReason> {
    let min = match proto {
        IPPROTO_ICMPV6 | IPPROTO_UDP => 8,
        IPPROTO_TCP => 20,
        _ => 0,
    };
    if off + min > end {
        return Err(DropReason::Malformed);
    }
    Ok(L4At { proto, off })
}

/// An ICMPv6 error a container sends must be about a packet it was sent
/// (there is no IPv6 conntrack to look the quote up in): the quoted IPv6
/// header, after the error's 8-byte header, has the container's own address
/// as its destination and the error's destination as its source. Anything
/// else (no room for the quote, a peer's or the host's flow) is dropped
/// (`icmp-error-forged`).
#[inline(always)]
fn error_quote_is_own(
    ctx: &TcContext,
    me: &Endpoint6,
    ip: &Ipv6Hdr,
    icmp_off: usize,
    end: usize,
) -> Result<(), DropReason> {
    let quote = icmp_off + 8;
    if quote + IPV6_HLEN > end {
        return Err(DropReason::IcmpErrorForged);
    }
    let qsrc: [u8; 16] = ctx
        .load(quote + 8)
        .map_err(|_| DropReason::IcmpErrorForged)?;
    let qdst: [u8; 16] = ctx
        .load(quote + 24)
        .map_err(|_| DropReason::IcmpErrorForged)?;
    if addr_eq(&qdst, &me.addr) && addr_eq(&qsrc, &ip.daddr) {
        Ok(())
    } else {
        Err(DropReason::IcmpErrorForged)
    }
}

#[inline(always)]
pub(crate) fn endpoint6_of(ifindex: u32) -> Option<Endpoint6> {
    // SAFETY: map values are only read here; userspace replaces a value
    // whole, and `Endpoint6` is plain data.
    unsafe { EP6_BY_IF.get(&ifindex).copied() }
}

#[inline(always)]
pub fn endpoint6_at(addr: &[u8; 16]) -> Option<Endpoint> {
    // SAFETY: as in `endpoint6_of`.
    unsafe { EP6_BY_IP.get(&Ip6 { addr: *addr }).copied() }
}

/// What a program tail-called for a container's IPv6 packet relies on,
/// checked again (it must not trust that it was reached from
/// `lxc6_from_container` only): the frame's source MAC is the endpoint's
/// and it carries IPv6. Gives the endpoint's IPv6 record and its
/// network's IPv6 side.
#[inline(always)]
pub fn tail_checked(
    ctx: &TcContext,
    ep: &Endpoint,
) -> Result<(Endpoint6, &'static Network6), DropReason> {
    let eth: *const EthHdr = ptr_at(ctx, 0).map_err(|_| DropReason::Malformed)?;
    // SAFETY: `ptr_at` checked that the header lies inside the packet.
    let eth = unsafe { &*eth };
    if !mac_eq(&eth.src, &ep.mac) || eth.proto() != ETH_P_IPV6 {
        return Err(DropReason::SpoofedMac);
    }
    let me = endpoint6_of(ep.ifindex).ok_or(DropReason::Ipv6)?;
    let net6 = network6(ep.net_id).ok_or(DropReason::Ipv6)?;
    Ok((me, net6))
}

/// An untagged, well-formed IPv6 packet on the uplink: its header, or
/// `None` for a frame that cannot be dnet's (the host's to handle). The
/// opening both uplink directions and the time-exceeded answer share.
#[inline(always)]
pub fn uplink_ipv6(ctx: &TcContext) -> Option<&Ipv6Hdr> {
    if lxc::vlan_tagged(ctx) {
        return None;
    }
    let eth: *const EthHdr = ptr_at(ctx, 0).ok()?;
    // SAFETY: `ptr_at` checked that the header lies inside the packet.
    if unsafe { (*eth).proto() } != ETH_P_IPV6 {
        return None;
    }
    let ip: *const Ipv6Hdr = ptr_at(ctx, ETH_HLEN).ok()?;
    // SAFETY: as above; the header stays valid while `ctx` is borrowed.
    let ip = unsafe { &*ip };
    ip.is_valid((ctx.len() as usize).saturating_sub(ETH_HLEN))
        .then_some(ip)
}

/// A network's IPv6 side, if it is dual-stack.
#[inline(always)]
pub fn network6(net_id: u32) -> Option<&'static Network6> {
    NETWORKS6.get(net_id).filter(|n| n.active != 0)
}

/// The program `lxc_from_container` tail-calls for IPv6 (it counted the
/// packet; this one counts its drop).
#[inline(always)]
pub fn from_container_tail(ctx: &TcContext) -> i32 {
    let Some(ep) = lxc::endpoint_of(lxc::ifindex(ctx)) else {
        return drop(0, DropReason::UnknownEndpoint);
    };
    match from_container_checked(ctx, &ep) {
        Ok(v) => v,
        Err(reason) => drop(ep.slot, reason),
    }
}

/// The checks `lxc_from_container` made before its tail call, made again:
/// this program must not trust that it was reached that way only.
#[inline(always)]
fn from_container_checked(ctx: &TcContext, ep: &Endpoint) -> Result<i32, DropReason> {
    if lxc::vlan_tagged(ctx) {
        return Err(DropReason::VlanTagged);
    }
    let eth: *mut EthHdr = ptr_at(ctx, 0).map_err(|_| DropReason::Malformed)?;
    // SAFETY: `ptr_at` checked that the header lies inside the packet.
    let eth = unsafe { &mut *eth };
    if !mac_eq(&eth.src, &ep.mac) {
        return Err(DropReason::SpoofedMac);
    }
    if eth.proto() != ETH_P_IPV6 {
        return Err(DropReason::UnknownL3);
    }
    from_container(ctx, ep, eth)
}

/// IPv6 from the container behind `ep` (the source MAC was checked).
#[inline(always)]
pub fn from_container(ctx: &TcContext, ep: &Endpoint, eth: &mut EthHdr) -> Result<i32, DropReason> {
    let Some(me) = endpoint6_of(ep.ifindex) else {
        return Err(DropReason::Ipv6);
    };
    let Some(net6) = network6(ep.net_id) else {
        return Err(DropReason::Ipv6);
    };
    let ip: *const Ipv6Hdr = ptr_at(ctx, ETH_HLEN).map_err(|_| DropReason::Malformed)?;
    // SAFETY: `ptr_at` checked that the fixed header lies inside the packet.
    let ip = unsafe { &*ip };
    let avail = (ctx.len() as usize).saturating_sub(ETH_HLEN);
    if !ip.is_valid(avail) {
        return Err(DropReason::Malformed);
    }
    let end = ETH_HLEN + IPV6_HLEN + ip.payload_len();
    let l4 = walk(ctx, ip.nexthdr, end)?;
    if l4.proto == IPPROTO_ICMPV6 {
        // The type must be in the payload, not in padding beyond it.
        if l4.off >= end {
            return Err(DropReason::Malformed);
        }
        let ty: u8 = ctx.load(l4.off).map_err(|_| DropReason::Malformed)?;
        match ty {
            ICMPV6_NEIGH_SOLICIT => return ndp::answer_ns(ctx, ep, &me, net6, l4.off, end),
            ICMPV6_NEIGH_ADVERT => return Err(DropReason::NdpAdvertisement),
            ICMPV6_ROUTER_SOLICIT => return Err(DropReason::NdpRouterSolicitation),
            ICMPV6_ROUTER_ADVERT => return Err(DropReason::NdpRouterAdvertisement),
            ICMPV6_REDIRECT => return Err(DropReason::NdpRedirect),
            ICMPV6_MLD_QUERY | ICMPV6_MLD_REPORT | ICMPV6_MLD_DONE | ICMPV6_MLD2_REPORT => {
                return Err(DropReason::Mld);
            }
            ICMPV6_DEST_UNREACH..=ICMPV6_PARAM_PROB => {
                error_quote_is_own(ctx, &me, ip, l4.off, end)?
            }
            _ => {}
        }
    }
    if !addr_eq(&ip.saddr, &me.addr) {
        return Err(DropReason::SpoofedIp);
    }
    let daddr = ip.daddr;
    let net = lxc::network(ep.net_id)?;

    if is_multicast(&daddr) {
        return lxc::fan_out(ctx, ep, net);
    }

    if let Some(dst) = endpoint6_at(&daddr) {
        return lxc::to_peer(ctx, ep, net, eth, &dst);
    }

    if let Some(owner) = SUBNETS6.get(Key::new(128, daddr)) {
        let owner = *owner;
        if addr_eq(&daddr, &net6.gateway) {
            // The answers of a hairpin flow come to the gateway (`hairpin6`,
            // its own program; this one's stack is full), and so do the
            // backend's ICMPv6 errors about it (`icmp6_error`). What is no
            // hairpin flow's goes up the host stack there.
            if net.flags & NET_F_INTERNAL == 0 {
                if is_tcp_or_udp(l4.proto) {
                    // SAFETY: the tail call jumps to `lxc6_hairpin` with
                    // the same context, or returns when the slot is empty.
                    unsafe { PROGS.tail_call(ctx, PROG_SLOT_HAIRPIN6) };
                } else if is_icmp6_error(ctx, &l4) {
                    // SAFETY: the tail call jumps to `lxc6_icmp6_error`
                    // with the same context, or returns when the slot is
                    // empty.
                    unsafe { PROGS.tail_call(ctx, PROG_SLOT_ICMP6_ERROR_FROM_CONTAINER) };
                }
            }
            return Ok(TC_ACT_OK);
        }
        if owner != ep.net_id {
            // Another network's gateway is a host address like any other.
            if network6(owner).is_some_and(|n| addr_eq(&n.gateway, &daddr)) {
                return lxc::outside(net);
            }
            return Err(DropReason::CrossNetwork);
        }
        return Err(DropReason::NoEndpoint);
    }
    lxc::outside(net)?;
    // Link-local and other non-global destinations are no host's to reach
    // through dnet (the host-side veth has no link-local address).
    if is_link_local(&daddr) || is_unspecified(&daddr) {
        return Err(DropReason::NoRoute);
    }
    // A port published on the uplink's IPv6 address is reached by hairpin
    // NAT (`hairpin6`), and the client's ICMPv6 errors about a hairpin
    // flow's answers are translated (`icmp6_error`); what is no hairpin
    // flow's is the host's.
    if crate::nat6::config6().is_some_and(|c| addr_eq(&daddr, &c.uplink_addr6)) {
        if is_tcp_or_udp(l4.proto) {
            // SAFETY: as above.
            unsafe { PROGS.tail_call(ctx, PROG_SLOT_HAIRPIN6) };
            return Ok(TC_ACT_OK);
        }
        if is_icmp6_error(ctx, &l4) {
            // SAFETY: as above.
            unsafe { PROGS.tail_call(ctx, PROG_SLOT_ICMP6_ERROR_FROM_CONTAINER) };
            return Ok(TC_ACT_OK);
        }
    }
    // The host's own addresses are reached as they are. Beyond them,
    // nothing goes to the world untranslated from a NAT66 network, and a
    // routed network's packets are forwarded by dnet, not by the host's
    // stack (whose forwarding sysctl stays as it is): each has a program
    // of its own (`nat6`, `routed6`; this one's stack is full).
    match fib::route6(ctx, ep.ifindex, &me.addr, &daddr, l4.proto) {
        Route::Local => Ok(TC_ACT_OK),
        _ => {
            // A NAT66 network's ICMPv6 error (its quote checked above) is
            // translated by a program of its own (`icmp6_error`), its flows
            // by NAT66's; a routed network's packets go out untranslated.
            let slot = if net6.flags & NET6_F_NAT == 0 {
                PROG_SLOT_ROUTED6_FROM_CONTAINER
            } else if is_icmp6_error(ctx, &l4) {
                PROG_SLOT_ICMP6_ERROR_FROM_CONTAINER
            } else {
                PROG_SLOT_NAT6_FROM_CONTAINER
            };
            // SAFETY: the tail call jumps to `lxc6_nat_from_container`,
            // `lxc6_icmp6_error` or `lxc6_routed_from_container` with the
            // same context, or returns when the slot is empty.
            unsafe { PROGS.tail_call(ctx, slot) };
            Err(DropReason::NatUnsupported)
        }
    }
}
