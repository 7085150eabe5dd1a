//! IPv6 fragments of NAT66 flows (issue 13), followed as IPv4's are
//! (`frag`): a datagram's first fragment is translated as a whole
//! datagram would be and records its ports ([`record_first`]); each later
//! fragment finds its flow through that record and has only its
//! addresses translated. Both in programs of their own, which the whole
//! datagrams' programs tail-call for a fragment:
//! - `lxc6_nat_frag` (slot `PROG_SLOT_NAT6_FRAG_FROM_CONTAINER`), reached
//!   from `lxc6_nat_from_container`: a container's first fragment goes
//!   through NAT66 as a whole datagram (`nat6`'s `FIRST_FRAGMENT`
//!   instance), a later one of a known flow out through the uplink;
//!   anything else is dropped (`fragment`);
//! - `host6_frag` (slot `PROG_SLOT_FRAG6_FROM_UPLINK`), reached from
//!   `host6_from_uplink`: the world's first fragment as a whole datagram
//!   (a new flow to a published port in `host6_frag_publish`, slot
//!   `PROG_SLOT_FRAG6_PUBLISHED`), a later one of a known flow into its
//!   container; anything else is the host's.
//!
//! They are programs of their own because the verifier walks every path
//! of a program: first fragments (a transport header past a fragment
//! header, a record to make) beside whole datagrams in one program double
//! the walk of everything after the parse, past the verifier's limit.
//!
//! Only a fragment header right after the fixed header is followed, where
//! Linux and every stack that fragments at the source put it; the later
//! fragments of a datagram whose fragment header lies deeper in the chain
//! are dropped (`fragment`), as TCP's are. A later fragment opens no flow.
//!
//! A routed network's fragments are followed within its own programs
//! (`routed6`, which are small enough to walk both kinds), by the same
//! record: a first fragment records its ports once let through, and a
//! later one goes where its first went ([`later`], [`rewrite_addrs`]).
//! Hairpin over IPv6 does not follow fragments (the host's, as before).

use aya_ebpf::{bindings::BPF_F_RECOMPUTE_CSUM, maps::lpm_trie::Key, programs::TcContext};
use dnet_common::{
    CtKey6, DropReason, Endpoint,
    ipv6::NET6_F_NAT,
    maps::PROG_SLOT_ICMP6_REPLY,
    nat::{CT_F_DNAT, CT_F_SNAT, CT_F_TO_ENDPOINT},
};

use crate::{
    ct, err,
    eth::ETH_HLEN,
    fib::{self, Route},
    frag,
    ipv6::{self, IPV6_HLEN, Ipv6Hdr, NEXTHDR_FRAGMENT, addr_eq},
    lxc,
    maps::{PROGS, SUBNETS6},
    nat,
    nat6::{self, Xlate6},
    ptr::ptr_at,
    stats::{count_translated, drop},
    verdict::TC_ACT_OK,
};

/// Offsets in the frame of the fixed header's next-header field and of
/// a fragment header right after the fixed header.
const NEXTHDR_AT: usize = ETH_HLEN + 6;
const FRAG_HDR_AT: usize = ETH_HLEN + IPV6_HLEN;

/// The fragment header (RFC 8200 4.5) right after the fixed one: the
/// upper-layer protocol, the offset in 8-byte units (0 for a first
/// fragment) and the identification, or `None` when the packet has none
/// there.
#[inline(always)]
fn header(ctx: &TcContext) -> Option<(u8, u16, u32)> {
    if ctx.load::<u8>(NEXTHDR_AT).ok()? != NEXTHDR_FRAGMENT {
        return None;
    }
    let h: [u8; 8] = ctx.load(FRAG_HDR_AT).ok()?;
    Some((
        h[0],
        u16::from_be_bytes([h[2], h[3]]) >> 3,
        u32::from_ne_bytes([h[4], h[5], h[6], h[7]]),
    ))
}

/// The packet is a later fragment (its fragment header, right after the
/// fixed one, has an offset).
#[inline(always)]
fn is_later(ctx: &TcContext) -> bool {
    matches!(header(ctx), Some((_, off, _)) if off != 0)
}

/// After a first fragment's translation (its tuple `key` as it came, its
/// ICMPv6 type `icmp_type`): its datagram's ports, recorded for the later
/// fragments.
#[inline(always)]
pub fn record_first(ctx: &TcContext, key: &CtKey6, icmp_type: u8) {
    if let Some((_, 0, id_be)) = header(ctx) {
        frag::record(key, id_be, icmp_type);
    }
}

/// The tuple of a later fragment (fixed header `ip`), as its datagram's
/// first fragment recorded it, into `key`, and the first's ICMPv6 type;
/// `None` when it is no later fragment or its datagram has no record.
#[inline(always)]
pub(crate) fn later(ctx: &TcContext, ip: &Ipv6Hdr, key: &mut CtKey6) -> Option<u8> {
    let (proto, off, id_be) = header(ctx)?;
    if off == 0 {
        return None;
    }
    let p = frag::ports(ip.saddr, ip.daddr, id_be, proto)?;
    key.saddr_be = ip.saddr;
    key.daddr_be = ip.daddr;
    key.sport_be = p.sport_be;
    key.dport_be = p.dport_be;
    key.proto = proto;
    key._pad = [0; 3];
    Some(p.icmp_type)
}

/// A later fragment's addresses rewritten as its flow's `e` says (`key`:
/// its tuple as it came). It carries no transport header, so no checksum
/// but `skb->csum`'s (`BPF_F_RECOMPUTE_CSUM`) follows: the first
/// fragment's L4 checksum update covered the datagram's pseudo-header.
#[inline(always)]
pub(crate) fn rewrite_addrs(ctx: &TcContext, key: &CtKey6, e: &Xlate6) -> Result<(), DropReason> {
    if e.flags & CT_F_SNAT != 0 && !addr_eq(&e.new_saddr_be, &key.saddr_be) {
        err(ctx.store(ETH_HLEN + 8, &e.new_saddr_be, BPF_F_RECOMPUTE_CSUM as u64))?;
    }
    if e.flags & CT_F_DNAT != 0 && !addr_eq(&e.new_daddr_be, &key.daddr_be) {
        err(ctx.store(ETH_HLEN + 24, &e.new_daddr_be, BPF_F_RECOMPUTE_CSUM as u64))?;
    }
    Ok(())
}

/// `lxc6_nat_frag`: tail-called by `lxc6_nat_from_container` for a
/// fragment.
#[inline(always)]
pub fn from_container_tail(ctx: &TcContext) -> i32 {
    if !is_later(ctx) {
        return nat6::from_container_tail::<{ nat6::FIRST_FRAGMENT }>(ctx);
    }
    let Some(ep) = lxc::endpoint_of(lxc::ifindex(ctx)) else {
        return drop(0, DropReason::UnknownEndpoint);
    };
    match from_container(ctx, &ep) {
        Ok(v) => v,
        // Refused before anything was rewritten: the container is told
        // from its gateway (`icmp6_reply`), as for a whole datagram.
        Err(reason @ (DropReason::FragNeeded | DropReason::TtlExceeded)) => {
            // SAFETY: the tail call jumps to `lxc6_icmp6_reply` with the
            // same context, or returns when the slot is empty.
            unsafe { PROGS.tail_call(ctx, PROG_SLOT_ICMP6_REPLY) };
            drop(ep.slot, reason)
        }
        Err(reason) => drop(ep.slot, reason),
    }
}

/// A container's later fragment of a known flow.
#[inline(always)]
fn from_container(ctx: &TcContext, ep: &Endpoint) -> Result<i32, DropReason> {
    // What `lxc6_nat_from_container` checked, checked again (this program
    // must not trust that it was reached that way only).
    let (me, net6) = ipv6::tail_checked(ctx, ep)?;
    if net6.flags & NET6_F_NAT == 0 {
        return Err(DropReason::NatUnsupported);
    }
    let ip: *const Ipv6Hdr = ptr_at(ctx, ETH_HLEN).map_err(|_| DropReason::Malformed)?;
    // SAFETY: `ptr_at` checked that the header lies inside the packet.
    let ip = unsafe { &*ip };
    if !ip.is_valid((ctx.len() as usize).saturating_sub(ETH_HLEN)) {
        return Err(DropReason::Malformed);
    }
    if !addr_eq(&ip.saddr, &me.addr) {
        return Err(DropReason::SpoofedIp);
    }
    let cfg = nat6::config6().ok_or(DropReason::NoNatAddress)?;
    let len = (IPV6_HLEN + ip.payload_len()).min(0xffff) as u16;
    let hop_limit = ip.hop_limit;
    let s = nat6::scratch().ok_or(DropReason::Malformed)?;
    later(ctx, ip, &mut s.key).ok_or(DropReason::Fragment)?;
    let key = &s.key;
    let seg = crate::l4::seg_to(ctx, None, key.proto, || 0)?;
    // Only a flow its first fragment opened (or an older one) carries it.
    let e = ct::lookup(key, seg)?.ok_or(DropReason::Fragment)?;
    let r = fib::route6_len(
        ctx,
        ep.ifindex,
        &e.new_saddr_be,
        &key.daddr_be,
        key.proto,
        len,
    );
    match r {
        Route::Out { ifindex, .. } if ifindex == cfg.uplink_ifindex => {}
        Route::TooBig { .. } => return Err(DropReason::FragNeeded),
        _ => return Err(DropReason::NoRoute),
    }
    if hop_limit <= 1 {
        return Err(DropReason::TtlExceeded);
    }
    s.route.set(&r);
    rewrite_addrs(ctx, key, &e)?;
    count_translated(ep.slot);
    fib::forward6_kept(ctx, &s.route)
}

/// `host6_frag`: tail-called by `host6_from_uplink` for a fragment.
#[inline(always)]
pub fn from_uplink_tail(ctx: &TcContext) -> i32 {
    if !is_later(ctx) {
        return nat6::from_uplink_tail::<{ nat6::FIRST_FRAGMENT }>(ctx);
    }
    match from_uplink(ctx) {
        Ok(v) => v,
        Err(DropReason::TtlExceeded) => drop(0, nat6::expired(ctx)),
        Err(reason) => drop(0, reason),
    }
}

/// The world's later fragment of a known flow.
#[inline(always)]
fn from_uplink(ctx: &TcContext) -> Result<i32, DropReason> {
    // What `host6_from_uplink` checked, checked again.
    let Some(ip) = ipv6::uplink_ipv6(ctx) else {
        return Ok(TC_ACT_OK);
    };
    if SUBNETS6.get(Key::new(128, ip.saddr)).is_some() {
        return Err(DropReason::SpoofedIp);
    }
    if nat6::config6().is_none_or(|c| !addr_eq(&ip.daddr, &c.uplink_addr6)) {
        return Ok(TC_ACT_OK);
    }
    let hop_limit = ip.hop_limit;
    let s = nat6::scratch().ok_or(DropReason::Malformed)?;
    // No record, or no flow: the host's, as a whole datagram dnet does not
    // translate is.
    if later(ctx, ip, &mut s.key).is_none() {
        return Ok(TC_ACT_OK);
    }
    let key = &s.key;
    let seg = crate::l4::seg_to(ctx, None, key.proto, || 0)?;
    let Some(e) = ct::lookup(key, seg)? else {
        return Ok(TC_ACT_OK);
    };
    // The host's own echo (`CT_F_HOST`) keeps its addresses: nothing to do.
    if e.flags & CT_F_TO_ENDPOINT == 0 {
        return Ok(TC_ACT_OK);
    }
    if hop_limit <= 1 {
        return Err(DropReason::TtlExceeded);
    }
    let ep = ipv6::endpoint6_at(&e.new_daddr_be).ok_or(DropReason::NoEndpoint)?;
    rewrite_addrs(ctx, key, &e)?;
    nat::into_endpoint(ctx, &ep, fib::dec_hop_limit)
}
