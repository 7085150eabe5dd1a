//! Routed IPv6 (`-o gateway_mode_ipv6=routed`, issue 13): a network whose
//! containers' addresses are routed, untranslated, between the world and
//! the host (the world routes the subnet to the host's uplink). dnet
//! forwards these packets itself, in eBPF, so the host's forwarding sysctl
//! (`net.ipv6.conf.all.forwarding`) stays as it is.
//!
//! As Docker's routed mode with `ip6tables`, the world reaches a routed
//! container only on its published ports (at the container's own address
//! and port; the daemon puts them in `DNET_SERVICES6` keyed by that
//! address), by ICMPv6 echo and errors, and with the answers of flows the
//! container opened. Flows are tracked in the NAT66 table (`DNET_CT6`)
//! with an identity translation, so the same conntrack rules (TCP windows,
//! the containers' flow limits) hold. The world's echo requests and the
//! container's replies are not tracked (the world could fill the table
//! with them). Fragments follow their datagram's first (`frag6`): a first
//! fragment is judged as a whole datagram and records its ports, a later
//! one goes where its first went.
//!
//! Two programs of their own (tail calls; their callers' stacks are full):
//! - `lxc6_routed_from_container` (slot `PROG_SLOT_ROUTED6_FROM_CONTAINER`),
//!   reached from `lxc6_from_container` for a routed network's packet bound
//!   beyond the host: its flow (known, or a new one the container opens),
//!   and out along the FIB route, which must be the uplink
//!   (`bpf_fib_lookup` and a redirect, the hop limit down by one); a
//!   packet too big for that route, or whose hop limit runs out, is
//!   answered from the gateway by `lxc6_icmp6_reply`;
//! - `host6_routed` (slot `PROG_SLOT_ROUTED6_FROM_UPLINK`), reached from
//!   `host6_from_uplink` for a packet on the uplink to an endpoint's IPv6
//!   address: on a routed network, delivered into the container
//!   (`bpf_redirect_peer`, hop limit down by one) when it belongs to a
//!   flow, opens one to a published port or is ICMPv6 echo or an ICMPv6
//!   error; anything else is dropped (`not-published`). Such a packet
//!   whose hop limit runs out here is answered "time exceeded" from the
//!   uplink's address (`host6_icmp6_reply`), an ICMPv6 error excepted. A NAT66 network's
//!   endpoints are not reachable this way (the host's, as before).

use aya_ebpf::{maps::lpm_trie::Key, programs::TcContext};
use dnet_common::{
    CtKey6, DropReason, Endpoint,
    ipv6::NET6_F_NAT,
    maps::PROG_SLOT_ICMP6_REPLY,
    nat::{CT_F_DNAT, CT_F_PUBLISHED, CT_F_REPLY_TO_ENDPOINT, CT_F_SNAT, CT_F_TO_ENDPOINT},
};

use crate::{
    ct::{self, InsertError, XlateOf},
    eth::{ETH_HLEN, ETH_P_IPV6, EthHdr},
    fib::{self, Route},
    frag6, icmp6_reply,
    ipv6::{self, IPPROTO_ICMPV6, IPV6_HLEN, Ipv6Hdr, NEXTHDR_FRAGMENT, addr_eq},
    l4::{IPPROTO_TCP, IPPROTO_UDP, Tuple},
    lxc,
    maps::PROGS,
    nat,
    nat6::{self, ICMPV6_ECHO_REPLY, ICMPV6_ECHO_REQUEST, Nat6Scratch, Xlate6},
    ptr::ptr_at,
    stats::drop,
    verdict::TC_ACT_OK,
};

/// `lxc6_routed_from_container`: tail-called by `lxc6_from_container` for
/// a routed network's packet bound beyond the host.
#[inline(always)]
pub fn from_container_tail(ctx: &TcContext) -> i32 {
    let Some(ep) = lxc::endpoint_of(lxc::ifindex(ctx)) else {
        return drop(0, DropReason::UnknownEndpoint);
    };
    match from_container(ctx, &ep) {
        Ok(v) => v,
        // Refused before anything was rewritten: the container is told
        // from its gateway (packet too big, time exceeded) by the program
        // that answers NAT66's too (`icmp6_reply`).
        Err(reason @ (DropReason::FragNeeded | DropReason::TtlExceeded)) => {
            // SAFETY: the tail call jumps to `lxc6_icmp6_reply` with the
            // same context, or returns when the slot is empty.
            unsafe { PROGS.tail_call(ctx, PROG_SLOT_ICMP6_REPLY) };
            drop(ep.slot, reason)
        }
        Err(reason) => drop(ep.slot, reason),
    }
}

#[inline(always)]
fn from_container(ctx: &TcContext, ep: &Endpoint) -> Result<i32, DropReason> {
    // What its caller checked that this program relies on, checked again:
    // the source MAC and IPv6 address are the endpoint's, its network is
    // routed and not internal.
    let (me, net6) = ipv6::tail_checked(ctx, ep)?;
    if net6.flags & NET6_F_NAT != 0 {
        return Err(DropReason::NatUnsupported);
    }
    lxc::outside(lxc::network(ep.net_id)?)?;
    let ip: *const Ipv6Hdr = ptr_at(ctx, ETH_HLEN).map_err(|_| DropReason::Malformed)?;
    // SAFETY: as above.
    let ip = unsafe { &*ip };
    if !ip.is_valid((ctx.len() as usize).saturating_sub(ETH_HLEN)) {
        return Err(DropReason::Malformed);
    }
    if !addr_eq(&ip.saddr, &me.addr) {
        return Err(DropReason::SpoofedIp);
    }
    // Only the uplink, not the whole configuration: the stack has no room
    // to keep a copy of it across the walk and the route.
    let uplink = nat::config().ok_or(DropReason::NoRoute)?.uplink_ifindex;
    if ip.hop_limit <= 1 {
        return Err(DropReason::TtlExceeded);
    }
    // The upper-layer protocol past the extension headers (the walk's, not
    // the first next header, which may be a hop-by-hop or destination
    // options header): the route is looked up, and the flow keyed, by it.
    let end = ETH_HLEN + IPV6_HLEN + ip.payload_len();
    let s = nat6::scratch().ok_or(DropReason::Malformed)?;
    let at = nat6::l4_at(ctx, s, ip, end)?;
    // The route first, once, by the packet's own addresses (a routed flow
    // translates nothing), for the packet's length (without one the
    // kernel checks the MTU only once the next hop is resolved): a new
    // flow that dies or does not fit here takes no entry or charge.
    // dnet forwards through the uplink only (the answers come back there,
    // where `host6_routed` takes them).
    // The length and the route are kept in the scratch slot: the stack has
    // no room for them beside the walk's answer.
    nat6::keep_mtu_len(
        &mut s.mtu_len,
        icmp6_reply::mtu_len6(ctx, ip, at.proto, at.off),
    );
    let route = fib::route6_len(
        ctx,
        ep.ifindex,
        &ip.saddr,
        &ip.daddr,
        at.proto,
        nat6::kept_mtu_len(&s.mtu_len),
    );
    match route {
        Route::Out { ifindex, .. } if ifindex == uplink => {}
        Route::TooBig { .. } => return Err(DropReason::FragNeeded),
        _ => return Err(DropReason::NoRoute),
    }
    s.route.set(&route);
    // A fragment: a later one follows its first's record (`frag6`), a
    // first one is read as a whole datagram and records its ports.
    let mut first = false;
    let t = match nat6::parse::<{ nat6::WHOLE }>(ctx, ip, &at, end, &mut s.key) {
        Tuple::Fragment if at.proto == NEXTHDR_FRAGMENT => {
            let ty = frag6::later(ctx, ip, &mut s.key).ok_or(DropReason::Fragment)?;
            later_out(ctx, s, ty)?;
            return fib::forward6_kept(ctx, &s.route);
        }
        Tuple::Fragment => {
            first = true;
            nat6::parse::<{ nat6::FIRST_FRAGMENT }>(ctx, ip, &at, end, &mut s.key)
        }
        t => t,
    };
    match t {
        // The container's answer to the world's echo request, which came
        // in untracked (`into_routed`): out untracked too.
        Tuple::Flow(l4) if s.key.proto == IPPROTO_ICMPV6 && l4.icmp_type == ICMPV6_ECHO_REPLY => {
            if first {
                frag6::record_first(ctx, &s.key, l4.icmp_type);
            }
        }
        Tuple::Flow(l4) => {
            let key = &s.key;
            let seg = crate::l4::seg_to(ctx, Some(&l4), key.proto, || end)?;
            let e = match ct::lookup(key, seg)? {
                Some(e) => e,
                None => {
                    if !ct::opens_flow(key.proto, l4.tcp_flags) {
                        return Err(DropReason::CtNoFlow);
                    }
                    new_outbound(s, ep.addr_be, seg)?
                }
            };
            // Identity for the container's own flows; a flow the world
            // opened to a port published on the uplink's address answers
            // from there.
            nat6::rewrite(ctx, &l4, &s.key, &e)?;
            if first {
                frag6::record_first(ctx, &s.key, l4.icmp_type);
            }
        }
        Tuple::Fragment => return Err(DropReason::Fragment),
        Tuple::Truncated => return Err(DropReason::Malformed),
        // ICMPv6 errors (their quote was checked by `lxc6_from_container`)
        // and other protocols: routed as they are, with no flow.
        Tuple::IcmpError(_) | Tuple::Other => {}
    }
    fib::forward6_kept(ctx, &s.route)
}

/// A container's later fragment (its tuple in `s.key`, its first's ICMPv6
/// type `ty`): its flow's addresses, or untracked as its first was (an
/// answer to the world's echo request); nothing else goes out.
#[inline(always)]
fn later_out(ctx: &TcContext, s: &mut Nat6Scratch, ty: u8) -> Result<(), DropReason> {
    let seg = crate::l4::seg_to(ctx, None, s.key.proto, || 0)?;
    match ct::lookup(&s.key, seg)? {
        Some(e) => frag6::rewrite_addrs(ctx, &s.key, &e),
        None if s.key.proto == IPPROTO_ICMPV6 && ty == ICMPV6_ECHO_REPLY => Ok(()),
        None => Err(DropReason::Fragment),
    }
}

/// A new flow the container opens (`s.key`), untranslated: its answers
/// come back into the endpoint whose record is keyed `endpoint_be`. Charged
/// to the container's limits as a NAT66 flow is.
#[inline(always)]
fn new_outbound(
    s: &mut Nat6Scratch,
    endpoint_be: u32,
    seg: &dnet_common::tcp::Seg,
) -> Result<Xlate6, DropReason> {
    ct::entry_into(
        &mut s.fwd,
        s.key.saddr_be,
        s.key.sport_be,
        [0; 16],
        0,
        CT_F_SNAT | CT_F_REPLY_TO_ENDPOINT,
        endpoint_be,
        seg,
    );
    let cfg = nat::config().ok_or(DropReason::NoRoute)?;
    let charged = crate::quota::charge(&cfg, &s.key, endpoint_be)?;
    if charged {
        s.fwd.flags |= dnet_common::nat::CT_F_COUNTED;
    }
    let r = insert(&s.key, &mut s.fwd);
    if charged && !matches!(r, Ok(true)) {
        crate::quota::release(&s.key, endpoint_be, dnet_common::nat::CT_F_COUNTED);
    }
    r?;
    Ok(XlateOf::of(&s.fwd))
}

/// Inserts a new untranslated flow (first entry `fwd`, keyed `key`) and its
/// reply entry. Its reply tuple is the packet's own, reversed: taken
/// already, it is this very flow's (made meanwhile on another CPU, `fwd`
/// then holds its first entry: `Ok(false)`), or the other direction of a
/// flow the world opened, whose entry would have matched.
#[inline(always)]
fn insert(key: &CtKey6, fwd: &mut dnet_common::CtEntry6) -> Result<bool, DropReason> {
    let s = ct::reply_in_scratch(key, fwd).ok_or(DropReason::CtFull)?;
    match ct::insert_flow(key, fwd, &s.rkey, &s.reply) {
        Ok(made) => Ok(made),
        Err(InsertError::Full) => Err(DropReason::CtFull),
        Err(InsertError::Exists) => Err(DropReason::CtHalfFlow),
    }
}

/// `host6_routed`: tail-called by `host6_from_uplink` for a packet to an
/// endpoint's IPv6 address.
#[inline(always)]
pub fn from_uplink_tail(ctx: &TcContext) -> i32 {
    match from_uplink(ctx) {
        Ok(v) => v,
        // Refused before anything was rewritten: its sender is told
        // (`host6_icmp6_reply`, "time exceeded" from the uplink's address).
        Err((slot, DropReason::TtlExceeded)) => drop(slot, nat6::expired(ctx)),
        Err((slot, reason)) => drop(slot, reason),
    }
}

#[inline(always)]
fn from_uplink(ctx: &TcContext) -> Result<i32, (u32, DropReason)> {
    // Checked again: this program must not trust that it was reached from
    // `host6_from_uplink` only.
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
    let Ok(ip) = ptr_at::<Ipv6Hdr>(ctx, ETH_HLEN) else {
        return Ok(TC_ACT_OK);
    };
    // SAFETY: as above.
    let ip = unsafe { &*ip };
    if !ip.is_valid((ctx.len() as usize).saturating_sub(ETH_HLEN)) {
        return Ok(TC_ACT_OK);
    }
    if crate::maps::SUBNETS6.get(Key::new(128, ip.saddr)).is_some() {
        return Err((0, DropReason::SpoofedIp));
    }
    let Some(ep) = ipv6::endpoint6_at(&ip.daddr) else {
        return Ok(TC_ACT_OK);
    };
    // A NAT66 network's containers are not reachable from the world by
    // their own addresses (the host's to judge, as before: it drops what it
    // would forward, `host-forwarded`).
    if ipv6::network6(ep.net_id).is_none_or(|n| n.flags & NET6_F_NAT != 0) {
        return Ok(TC_ACT_OK);
    }
    into_routed(ctx, ip, &ep).map_err(|r| (ep.slot, r))
}

/// A packet from the world to `ep`, a routed network's endpoint whose
/// address is the packet's destination.
#[inline(always)]
fn into_routed(ctx: &TcContext, ip: &Ipv6Hdr, ep: &Endpoint) -> Result<i32, DropReason> {
    // Nothing from the world goes into an internal network.
    lxc::outside(lxc::network(ep.net_id)?)?;
    let end = ETH_HLEN + IPV6_HLEN + ip.payload_len();
    let s = nat6::scratch().ok_or(DropReason::Malformed)?;
    let at = nat6::l4_at(ctx, s, ip, end)?;
    // A fragment: a later one follows its first's record (`frag6`), a
    // first one is read as a whole datagram and records its ports once let
    // in.
    let mut first = false;
    let t = match nat6::parse::<{ nat6::WHOLE }>(ctx, ip, &at, end, &mut s.key) {
        Tuple::Fragment if at.proto == NEXTHDR_FRAGMENT => {
            let ty = frag6::later(ctx, ip, &mut s.key).ok_or(DropReason::Fragment)?;
            return later_in(ctx, s, ip, ep, ty);
        }
        Tuple::Fragment => {
            first = true;
            nat6::parse::<{ nat6::FIRST_FRAGMENT }>(ctx, ip, &at, end, &mut s.key)
        }
        t => t,
    };
    let l4 = match t {
        Tuple::Flow(l4) => l4,
        Tuple::Fragment => return Err(DropReason::Fragment),
        Tuple::Truncated => return Err(DropReason::Malformed),
        // ICMPv6 errors (packet too big above all: PMTU discovery) go in,
        // as Docker's routed mode lets every ICMPv6 in; other ICMPv6 (NDP,
        // MLD: link-local matters, never routed) and other protocols do
        // not.
        Tuple::IcmpError(_) => return nat::into_endpoint_as(ctx, ep, fib::dec_hop_limit, false),
        Tuple::Other => return Err(DropReason::NotPublished),
    };
    let key = &s.key;
    // An echo request goes in untracked, as Docker's routed mode lets
    // ICMPv6 in (the container's reply leaves untracked too): a flow
    // entry for each would let anyone fill the table shared by every
    // container's flows, the world having source addresses enough.
    if key.proto == IPPROTO_ICMPV6 && l4.icmp_type == ICMPV6_ECHO_REQUEST {
        if first {
            frag6::record_first(ctx, key, l4.icmp_type);
        }
        return nat::into_endpoint_as(ctx, ep, fib::dec_hop_limit, false);
    }
    let seg = crate::l4::seg_to(ctx, Some(&l4), key.proto, || end)?;
    let e = match ct::lookup(key, seg)? {
        // An answer of the container's own flow, or a flow to a published
        // port: into the container the flow names.
        Some(e) if e.flags & CT_F_TO_ENDPOINT != 0 && addr_eq(&e.new_daddr_be, &ip.daddr) => e,
        Some(_) => return Err(DropReason::CtNoFlow),
        None => {
            if !matches!(key.proto, IPPROTO_TCP | IPPROTO_UDP)
                || !ct::opens_flow(key.proto, l4.tcp_flags)
            {
                return Err(DropReason::CtNoFlow);
            }
            if !published_here(key) {
                return Err(DropReason::NotPublished);
            }
            if !nat::may_publish_to6(key.saddr_be) {
                return Err(DropReason::SourceNotAllowed);
            }
            if ip.hop_limit <= 1 {
                return Err(DropReason::TtlExceeded);
            }
            new_inbound(s, ep.addr_be, seg)?
        }
    };
    // A hop limit that runs out here: refused as it came, to be answered.
    if ip.hop_limit <= 1 {
        return Err(DropReason::TtlExceeded);
    }
    // Identity (the flow translates nothing), but for a flow the container
    // opened towards a port published on the uplink's address.
    nat6::rewrite(ctx, &l4, &s.key, &e)?;
    if first {
        frag6::record_first(ctx, &s.key, l4.icmp_type);
    }
    nat::into_endpoint_as(ctx, ep, fib::dec_hop_limit, false)
}

/// The world's later fragment (its tuple in `s.key`, its first's ICMPv6
/// type `ty`) to `ep`: in when its first was let in, by the flow it
/// belongs to or untracked as an echo request.
#[inline(always)]
fn later_in(
    ctx: &TcContext,
    s: &mut Nat6Scratch,
    ip: &Ipv6Hdr,
    ep: &Endpoint,
    ty: u8,
) -> Result<i32, DropReason> {
    let seg = crate::l4::seg_to(ctx, None, s.key.proto, || 0)?;
    let e = match ct::lookup(&s.key, seg)? {
        Some(e) if e.flags & CT_F_TO_ENDPOINT != 0 && addr_eq(&e.new_daddr_be, &ip.daddr) => {
            Some(e)
        }
        None if s.key.proto == IPPROTO_ICMPV6 && ty == ICMPV6_ECHO_REQUEST => None,
        _ => return Err(DropReason::Fragment),
    };
    // Read before the rewrite, which moves the packet's bytes.
    if ip.hop_limit <= 1 {
        return Err(DropReason::TtlExceeded);
    }
    if let Some(e) = e {
        frag6::rewrite_addrs(ctx, &s.key, &e)?;
    }
    nat::into_endpoint_as(ctx, ep, fib::dec_hop_limit, false)
}

/// The container published the destination port: the daemon keeps a
/// routed container's published ports in `DNET_SERVICES6` under its own
/// address and port (not a wildcard: a port published on every host
/// address is the host's, not this container's).
#[inline(always)]
fn published_here(key: &CtKey6) -> bool {
    let k = dnet_common::ServiceKey6 {
        addr: key.daddr_be,
        port_be: key.dport_be,
        proto: key.proto,
        _pad: 0,
    };
    // SAFETY: read-only map access to plain data.
    unsafe { crate::maps::SERVICES6.get(&k) }.is_some_and(|svc| {
        addr_eq(&svc.backend, &key.daddr_be) && svc.backend_port_be == key.dport_be
    })
}

/// A new flow from the world to the container (untranslated), not charged
/// to the container (the world opened it), as a NAT66 published port's.
#[inline(always)]
fn new_inbound(
    s: &mut Nat6Scratch,
    endpoint_be: u32,
    seg: &dnet_common::tcp::Seg,
) -> Result<Xlate6, DropReason> {
    ct::entry_into(
        &mut s.fwd,
        [0; 16],
        0,
        s.key.daddr_be,
        s.key.dport_be,
        CT_F_DNAT | CT_F_TO_ENDPOINT | CT_F_PUBLISHED,
        endpoint_be,
        seg,
    );
    insert(&s.key, &mut s.fwd)?;
    Ok(XlateOf::of(&s.fwd))
}
