//! ICMPv6 errors (destination unreachable, packet too big, time exceeded,
//! parameter problem) about NAT66 flows, translated both ways (issue 13),
//! as IPv4's `icmp_error`: the outer address and the quoted packet's
//! address and port (or echo identifier), with every checksum they touch.
//! IPv6 has no header checksum; the ICMPv6 checksum covers the pseudo-
//! header (the outer addresses) and the whole quote, and the quoted
//! transport checksum covers the quoted addresses (ICMPv6 echo's too).
//!
//! Two programs of their own (tail calls; their callers' stacks are full),
//! over one translation:
//! - `host6_icmp6_error` (slot `PROG_SLOT_ICMP6_ERROR_FROM_UPLINK`),
//!   reached from `host6_from_uplink` for IPv6 that is no flow of its own:
//!   an error from the world to the uplink's IPv6 address quoting a packet
//!   a container sent through NAT66 (quoted source: the uplink's address
//!   and a NAT port) goes into that container, as the flow's answers do,
//!   so path-MTU discovery and "port unreachable" reach it;
//! - `lxc6_icmp6_error` (slot `PROG_SLOT_ICMP6_ERROR_FROM_CONTAINER`),
//!   reached from `lxc6_from_container` for an ICMPv6 error a container of
//!   a NAT66 network sends beyond the host: one about a flow from the world
//!   to a port it publishes over IPv6 leaves as from the uplink's address
//!   and the published port; and for one a container sends to its IPv6
//!   gateway or the uplink's IPv6 address about a hairpin flow
//!   (`hairpin6`), as the backend (about what it was sent from its
//!   gateway) or as the client (about an answer from `[uplink6]:H`): it
//!   goes into the other container translated, as the flow's packets do.
//!
//! The quote is looked up only (`ct::probe`): an error, forged or not,
//! keeps no flow alive. From the uplink, an error about no flow of dnet's
//! is the host's (its own traffic from the same address); from a
//! container it is dropped (`nat-unsupported`), as IPv4's, but for one to
//! the gateway or the uplink's address, which goes up the host stack as
//! before. A quote with
//! extension headers is walked as a packet's own are (`ipv6::walk_from`,
//! the same bound) to its transport header, which is translated; the
//! extension headers are left as they are (the transport checksum's
//! pseudo-header holds the addresses only).

use aya_ebpf::{
    bindings::{BPF_F_PSEUDO_HDR, BPF_F_RECOMPUTE_CSUM},
    helpers::generated::{bpf_csum_diff, bpf_skb_load_bytes},
    maps::lpm_trie::Key,
    programs::TcContext,
};
use dnet_common::{
    DropReason, Endpoint,
    ipv6::NET6_F_NAT,
    nat::{CT_F_DNAT, CT_F_HOST, CT_F_SNAT, CT_F_TO_ENDPOINT},
};

use crate::{
    ct, err,
    eth::{ETH_HLEN, ETH_P_IPV6, EthHdr},
    fib::{self, Route},
    icmp_reply::fold_ne,
    ipv6::{self, ICMPV6_DEST_UNREACH, ICMPV6_PARAM_PROB, IPPROTO_ICMPV6, IPV6_HLEN, Ipv6Hdr},
    l4::{IPPROTO_TCP, IPPROTO_UDP},
    lxc,
    maps::SUBNETS6,
    nat,
    nat6::{self, ICMPV6_ECHO_REPLY, ICMPV6_ECHO_REQUEST},
    ptr::ptr_at,
    stats::drop,
    verdict::TC_ACT_OK,
};

/// `host6_icmp6_error`: tail-called by `host6_from_uplink`.
#[inline(always)]
pub fn from_uplink_tail(ctx: &TcContext) -> i32 {
    match from_uplink(ctx) {
        Ok(v) => v,
        Err(reason) => drop(0, reason),
    }
}

#[inline(always)]
fn from_uplink(ctx: &TcContext) -> Result<i32, DropReason> {
    // What `host6_from_uplink` checked, checked again: this program must
    // not trust that it was reached that way only.
    if lxc::vlan_tagged(ctx) {
        return Ok(TC_ACT_OK);
    }
    let Ok(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return Ok(TC_ACT_OK);
    };
    // SAFETY: `ptr_at` checked that the header lies inside the packet.
    if unsafe { (*eth).proto() } != ETH_P_IPV6 {
        return Ok(TC_ACT_OK);
    }
    let Some(cfg) = crate::maps::CONFIG
        .get(0)
        .filter(|c| c.uplink_ifindex != 0 && c.uplink_addr6 != [0; 16])
    else {
        return Ok(TC_ACT_OK);
    };
    let Ok(Some(icmp_off)) = icmp_error_at(ctx) else {
        return Ok(TC_ACT_OK);
    };
    let saddr: [u8; 16] = err(ctx.load(ETH_HLEN + 8))?;
    if SUBNETS6.get(Key::new(128, saddr)).is_some() {
        return Err(DropReason::SpoofedIp);
    }
    let daddr: [u8; 16] = err(ctx.load(ETH_HLEN + 24))?;
    if !ipv6::addr_eq(&daddr, &cfg.uplink_addr6) {
        return Ok(TC_ACT_OK);
    }
    translate(ctx, icmp_off, None)
}

/// `lxc6_icmp6_error`: tail-called by `lxc6_from_container`.
#[inline(always)]
pub fn from_container_tail(ctx: &TcContext) -> i32 {
    let Some(ep) = lxc::endpoint_of(lxc::ifindex(ctx)) else {
        return drop(0, DropReason::UnknownEndpoint);
    };
    match from_container(ctx, &ep) {
        Ok(v) => v,
        Err(reason) => drop(ep.slot, reason),
    }
}

#[inline(always)]
fn from_container(ctx: &TcContext, ep: &Endpoint) -> Result<i32, DropReason> {
    // What `lxc6_from_container` checked that this relies on, checked
    // again: the source MAC and IPv6 address are the endpoint's, its
    // network is NAT66, the packet an ICMPv6 error.
    let (me, net6) = ipv6::tail_checked(ctx, ep)?;
    // To the container's IPv6 gateway or the uplink's IPv6 address: about a
    // hairpin flow (of a NAT66 or a routed network), or the host's.
    // Elsewhere: about a NAT66 flow.
    let daddr: [u8; 16] = err(ctx.load(ETH_HLEN + 24))?;
    let local = ipv6::addr_eq(&daddr, &net6.gateway)
        || nat6::config6().is_some_and(|c| ipv6::addr_eq(&daddr, &c.uplink_addr6));
    if local {
        lxc::outside(lxc::network(ep.net_id)?)?;
    } else if net6.flags & NET6_F_NAT == 0 {
        return Err(DropReason::NatUnsupported);
    }
    let icmp_off = icmp_error_at(ctx)?.ok_or(DropReason::NatUnsupported)?;
    let saddr: [u8; 16] = err(ctx.load(ETH_HLEN + 8))?;
    if !ipv6::addr_eq(&saddr, &me.addr) {
        return Err(DropReason::SpoofedIp);
    }
    match translate(ctx, icmp_off, Some((ep, &me.addr)))? {
        // About no flow of dnet's: up the host stack when it is the host's
        // to hear, as before; otherwise nothing leaves untranslated.
        TC_ACT_OK if local => Ok(TC_ACT_OK),
        TC_ACT_OK => Err(DropReason::NatUnsupported),
        v => Ok(v),
    }
}

/// Where the ICMPv6 header of a valid IPv6 packet carrying an ICMPv6
/// error lies; `None` for any other packet.
#[inline(always)]
fn icmp_error_at(ctx: &TcContext) -> Result<Option<usize>, DropReason> {
    let ip: *const Ipv6Hdr = ptr_at(ctx, ETH_HLEN).map_err(|_| DropReason::Malformed)?;
    // SAFETY: `ptr_at` checked that the header lies inside the packet.
    let ip = unsafe { &*ip };
    if !ip.is_valid((ctx.len() as usize).saturating_sub(ETH_HLEN)) {
        return Err(DropReason::Malformed);
    }
    let s = nat6::scratch().ok_or(DropReason::Malformed)?;
    // Its offset passed through memory, as the quote's is ([`translate`]):
    // the verifier then checks what follows once, not once per pair of
    // chain lengths.
    let at = nat6::l4_at(ctx, s, ip, message_end(ctx)?)?;
    if at.proto != IPPROTO_ICMPV6 {
        return Ok(None);
    }
    let ty: u8 = err(ctx.load(at.off))?;
    Ok((ICMPV6_DEST_UNREACH..=ICMPV6_PARAM_PROB)
        .contains(&ty)
        .then_some(at.off))
}

/// Where the ICMPv6 message ends: at the outer payload length (checked
/// against the packet). Bytes past it are link padding, which no checksum
/// covers and nothing may rewrite.
#[inline(always)]
fn message_end(ctx: &TcContext) -> Result<usize, DropReason> {
    let len: u16 = err(ctx.load(ETH_HLEN + 4))?;
    Ok(ETH_HLEN + IPV6_HLEN + u16::from_be(len) as usize)
}

/// The translation of the error whose ICMPv6 header is at `icmp_off`.
/// `from` is the sending container (its record and IPv6 address), `None`
/// from the uplink. Returns the verdict, or `TC_ACT_OK` when the error is
/// about no flow of dnet's.
#[inline(always)]
fn translate(
    ctx: &TcContext,
    icmp_off: usize,
    from: Option<(&Endpoint, &[u8; 16])>,
) -> Result<i32, DropReason> {
    let inner = icmp_off + 8;
    let end = message_end(ctx)?;
    if inner + IPV6_HLEN > end {
        return Ok(TC_ACT_OK);
    }
    let v: u8 = err(ctx.load(inner))?;
    let nexthdr: u8 = err(ctx.load(inner + 6))?;
    if v >> 4 != 6 {
        return Ok(TC_ACT_OK);
    }
    // The quoted packet's extension headers (destination options, a first
    // fragment's header, ...) walked as the packet's own are, within the
    // quote; a chain the walk refuses, or a later fragment (no transport
    // header), is not translated.
    let Ok(at) = ipv6::walk_from(ctx, nexthdr, inner + IPV6_HLEN, end) else {
        return Ok(TC_ACT_OK);
    };
    let proto = at.proto;
    let s = nat6::scratch().ok_or(DropReason::Malformed)?;
    let il4 = nat6::kept_off(s, at.off)?;
    if il4 + 8 > end {
        return Ok(TC_ACT_OK);
    }
    // The quoted packet is one we sent; its answers are keyed reversed.
    // The key is made in the scratch slot (this program's stack has no room
    // for it): its source is the quoted destination (`idaddr`), its
    // destination the quoted source (`isaddr`).
    let key = &mut s.key;
    quoted_addr(ctx, inner + 24, &mut key.saddr_be)?;
    quoted_addr(ctx, inner + 8, &mut key.daddr_be)?;
    // The quoted transport header's first 8 bytes (ports, or
    // type/code/checksum/identifier).
    let h: [u8; 8] = err(ctx.load(il4))?;
    let (sport_off, dport_off, isport, idport) = match proto {
        IPPROTO_ICMPV6 => {
            let id = u16::from_ne_bytes([h[4], h[5]]);
            // A quoted echo request carries the id as its source port.
            match h[0] {
                ICMPV6_ECHO_REQUEST => (il4 + 4, il4 + 4, id, 0),
                ICMPV6_ECHO_REPLY => (il4 + 4, il4 + 4, 0, id),
                _ => return Ok(TC_ACT_OK),
            }
        }
        IPPROTO_TCP | IPPROTO_UDP => (
            il4,
            il4 + 2,
            u16::from_ne_bytes([h[0], h[1]]),
            u16::from_ne_bytes([h[2], h[3]]),
        ),
        _ => return Ok(TC_ACT_OK),
    };
    key.sport_be = idport;
    key.dport_be = isport;
    key.proto = proto;
    key._pad = [0; 3];
    let (isaddr, idaddr) = (&key.daddr_be, &key.saddr_be);
    // An error goes back to the quoted packet's sender (as Linux's
    // conntrack checks): from the uplink, one about a packet that left
    // from the uplink's address to none of dnet's networks; from a
    // container, one about a packet it was sent, to that packet's sender.
    let outer_daddr: [u8; 16] = err(ctx.load(ETH_HLEN + 24))?;
    if !ipv6::addr_eq(&outer_daddr, isaddr) {
        return match from {
            None => Ok(TC_ACT_OK),
            Some(_) => Err(DropReason::IcmpErrorForged),
        };
    }
    match from {
        None if SUBNETS6.get(Key::new(128, *idaddr)).is_some() => return Ok(TC_ACT_OK),
        Some((_, me)) if !ipv6::addr_eq(idaddr, me) => {
            return Err(DropReason::IcmpErrorForged);
        }
        _ => {}
    }
    let Some(e) = ct::probe(key) else {
        return Ok(TC_ACT_OK);
    };
    // About the host's own flow: the host's.
    if e.flags & CT_F_HOST != 0 {
        return Ok(TC_ACT_OK);
    }
    let icmp_csum = icmp_off + 2;
    // The quoted transport checksum, when quoted (UDP's zero, invalid over
    // IPv6, is left alone).
    let l4_csum_off = match proto {
        IPPROTO_ICMPV6 => Some(il4 + 2),
        IPPROTO_UDP if u16::from_ne_bytes([h[6], h[7]]) != 0 => Some(il4 + 6),
        IPPROTO_UDP => None,
        _ if message_end(ctx)? >= il4 + 18 => Some(il4 + 16),
        _ => None,
    };
    // The error travels the reverse way of the quoted packet: the flow's
    // DNAT turns into the inner source and the outer destination, its SNAT
    // into the inner destination and the outer source.
    if e.flags & CT_F_DNAT != 0 {
        fix(
            ctx,
            ETH_HLEN + 24,
            &Inner {
                addr_off: inner + 8,
                port_off: sport_off,
                l4_csum_off,
                icmp_csum,
            },
            isaddr,
            &e.new_daddr_be,
            isport,
            e.new_dport_be,
        )?;
    }
    if e.flags & CT_F_SNAT != 0 {
        fix(
            ctx,
            ETH_HLEN + 8,
            &Inner {
                addr_off: inner + 24,
                port_off: dport_off,
                l4_csum_off,
                icmp_csum,
            },
            idaddr,
            &e.new_saddr_be,
            idport,
            e.new_sport_be,
        )?;
    }
    if e.flags & CT_F_TO_ENDPOINT != 0 {
        let dst = if e.flags & CT_F_DNAT != 0 {
            e.new_daddr_be
        } else {
            *idaddr
        };
        let ep = ipv6::endpoint6_at(&dst).ok_or(DropReason::NoEndpoint)?;
        return nat::into_endpoint(ctx, &ep, fib::dec_hop_limit);
    }
    // Out, from the address the error now has: through the uplink only.
    let Some((ep, _)) = from else {
        return Ok(TC_ACT_OK);
    };
    let saddr: [u8; 16] = err(ctx.load(ETH_HLEN + 8))?;
    let daddr: [u8; 16] = err(ctx.load(ETH_HLEN + 24))?;
    let route = fib::route6(ctx, ep.ifindex, &saddr, &daddr, IPPROTO_ICMPV6);
    let uplink = crate::maps::CONFIG.get(0).map_or(0, |c| c.uplink_ifindex);
    match route {
        Route::Out { ifindex, .. } if ifindex == uplink => fib::forward6(ctx, &route),
        Route::TooBig { .. } => Err(DropReason::FragNeeded),
        _ => Err(DropReason::NoRoute),
    }
}

/// Reads the quoted address at `off` into `to` (scratch memory).
#[inline(always)]
fn quoted_addr(ctx: &TcContext, off: usize, to: &mut [u8; 16]) -> Result<(), DropReason> {
    // SAFETY: the helper gets the program's own context and checks the
    // offset and length against the packet; `to` is 16 bytes long, the
    // length given.
    let rc = unsafe {
        bpf_skb_load_bytes(
            ctx.skb.skb as *const _,
            off as u32,
            to.as_mut_ptr() as *mut _,
            16,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(DropReason::Malformed)
    }
}

/// Where one side of the quote lies.
struct Inner {
    /// The quoted address.
    addr_off: usize,
    /// The quoted port (or echo identifier).
    port_off: usize,
    /// The quoted transport checksum, if quoted.
    l4_csum_off: Option<usize>,
    /// The error's ICMPv6 checksum.
    icmp_csum: usize,
}

/// Rewrites one address (outer, at `outer_off`, and inner) and one inner
/// port of an ICMPv6 error, with every checksum they touch.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn fix(
    ctx: &TcContext,
    outer_off: usize,
    q: &Inner,
    old: &[u8; 16],
    new: &[u8; 16],
    old_port: u16,
    new_port: u16,
) -> Result<(), DropReason> {
    // Outer: the pseudo-header of the ICMPv6 checksum.
    let outer_old: [u8; 16] = err(ctx.load(outer_off))?;
    let d = diff(&outer_old, new)?;
    err(ctx.l4_csum_replace(q.icmp_csum, 0, d as u64, BPF_F_PSEUDO_HDR as u64))?;
    // `BPF_F_RECOMPUTE_CSUM` keeps a CHECKSUM_COMPLETE `skb->csum` right
    // (IPv6 has no header checksum to absorb the address change), as
    // `nat6::replace_addr` does.
    err(ctx.store(outer_off, new, BPF_F_RECOMPUTE_CSUM as u64))?;
    // Inner: the address, in the ICMPv6 payload and in the quoted
    // transport checksum's pseudo-header.
    let d = diff(old, new)?;
    err(ctx.store(q.addr_off, new, 0))?;
    err(ctx.l4_csum_replace(q.icmp_csum, 0, d as u64, 0))?;
    if old_port != new_port {
        err(ctx.store(q.port_off, &new_port, 0))?;
        err(ctx.l4_csum_replace(q.icmp_csum, old_port as u64, new_port as u64, 2))?;
    }
    // The quoted transport checksum covers both (an ICMPv6 echo's the
    // identifier); its change is part of the ICMPv6 payload too.
    if let Some(off) = q.l4_csum_off {
        let c_old: u16 = err(ctx.load(off))?;
        // One's-complement arithmetic in memory order (`bpf_csum_diff`'s).
        let sum = (!c_old) as u64 + d as u64 + (!old_port) as u64 + new_port as u64;
        let c_new = fold_ne(sum);
        err(ctx.store(off, &c_new, 0))?;
        err(ctx.l4_csum_replace(q.icmp_csum, c_old as u64, c_new as u64, 2))?;
    }
    Ok(())
}

/// The one's-complement difference of two addresses, as
/// `bpf_l4_csum_replace` takes it.
#[inline(always)]
fn diff(old: &[u8; 16], new: &[u8; 16]) -> Result<u32, DropReason> {
    // SAFETY: both buffers are 16 bytes (on the stack or in a map value),
    // as the sizes given say; the helper only reads them.
    let d = unsafe {
        bpf_csum_diff(
            old.as_ptr() as *mut u32,
            16,
            new.as_ptr() as *mut u32,
            16,
            0,
        )
    };
    if d < 0 {
        return Err(DropReason::Malformed);
    }
    Ok(d as u32)
}
