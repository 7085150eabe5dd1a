//! NAT66 (issue 13): a dual-stack container's IPv6 to the world, translated
//! to the uplink's global IPv6 address and a NAT port, and the answers back
//! into the container. The conntrack code is IPv4's (`ct`, `quota`, the port
//! choice in `nat`), monomorphised over 128-bit addresses (`DNET_CT6`).
//!
//! Two programs of their own (tail calls; their callers' stacks are full):
//! - `lxc6_nat_from_container` (slot `PROG_SLOT_NAT6_FROM_CONTAINER`),
//!   reached from `lxc6_from_container` once a NAT66 network's packet is
//!   bound beyond the host: the flow (new or known), the rewrite of source
//!   address and port with the L4 checksum (IPv6 pseudo-header: TCP, UDP
//!   and ICMPv6 alike), and out along the FIB route, which must be the
//!   uplink;
//! - `host6_from_uplink` (slot `PROG_SLOT_FROM_UPLINK6`), reached from
//!   `host_from_uplink` for IPv6 frames: answers of NAT66 flows to the
//!   uplink's address go into their container (`bpf_redirect_peer`);
//!   a source of a dnet IPv6 subnet on the uplink is spoofed
//!   (`spoofed-ip`); a packet to a container's own address goes on to
//!   `host6_routed` (`routed6`); everything else is the host's.
//!
//! The uplink's egress (`host_to_uplink`, [`to_uplink`]) keeps the host's
//! own ICMPv6 echo identifiers apart from the containers' (`CT_F_HOST`), as
//! for IPv4.
//!
//! Tracked: TCP, UDP, ICMPv6 echo (its identifier as a port, as IPv4's).
//! Fragments go on to programs of their own (`frag6`), which translate a
//! first fragment with this module's `FIRST_FRAGMENT` instances and a
//! later one by its first's record. ICMPv6 errors about NAT66 flows are
//! translated either way by `icmp6_error`; a container's packet that does
//! not fit the uplink's route, or whose hop limit runs out here, is
//! answered from its gateway by `icmp6_reply` (packet too big, time
//! exceeded) before anything is rewritten, and so is the world's packet
//! into a container whose hop limit runs out here (time exceeded, from the
//! uplink's address: `host6_icmp6_reply`).

use aya_ebpf::{
    bindings::{BPF_F_PSEUDO_HDR, BPF_F_RECOMPUTE_CSUM},
    helpers::generated::bpf_csum_diff,
    macros::map,
    maps::{PerCpuArray, lpm_trie::Key},
    programs::TcContext,
};
use dnet_common::{
    Config, CtEntry6, CtKey6, DropReason, Endpoint,
    ipv6::NET6_F_NAT,
    maps::{
        PROG_SLOT_FRAG6_FROM_UPLINK, PROG_SLOT_FRAG6_PUBLISHED, PROG_SLOT_ICMP6_ERROR_FROM_UPLINK,
        PROG_SLOT_ICMP6_REPLY, PROG_SLOT_ICMP6_REPLY_FROM_UPLINK,
        PROG_SLOT_NAT6_FRAG_FROM_CONTAINER, PROG_SLOT_PUBLISHED6, PROG_SLOT_ROUTED6_FROM_UPLINK,
    },
    nat::{CT_F_DNAT, CT_F_HOST, CT_F_REPLY_TO_ENDPOINT, CT_F_SNAT, CT_F_TO_ENDPOINT},
};

use crate::{
    ct::{self, XlateOf},
    err,
    eth::ETH_HLEN,
    fib::{self, KeptRoute, Route},
    frag6, icmp6_reply,
    ipv6::{self, IPPROTO_ICMPV6, IPV6_HLEN, Ipv6Hdr, NEXTHDR_FRAGMENT, addr_eq},
    l4::{self, IPPROTO_TCP, IPPROTO_UDP, L4, Tuple},
    lxc,
    maps::{PROGS, SUBNETS6},
    nat,
    ptr::ptr_at,
    stats::{count_translated, drop},
    verdict::TC_ACT_OK,
};

/// ICMPv6 echo request and reply (RFC 4443).
pub const ICMPV6_ECHO_REQUEST: u8 = 128;
pub const ICMPV6_ECHO_REPLY: u8 = 129;

/// A NAT66 flow's translation.
pub type Xlate6 = XlateOf<[u8; 16]>;

/// Which packets a program instance translates as datagrams: whole ones
/// ([`WHOLE`]), or first fragments ([`FIRST_FRAGMENT`], the instances
/// `frag6` runs). Each instance has one kind, so that the verifier walks
/// what follows the parse for one kind per program (for both kinds it
/// outgrows its budget).
pub const WHOLE: bool = false;
pub const FIRST_FRAGMENT: bool = true;

/// The tuple (into `key`) of the IPv6 packet whose fixed header is `ip`,
/// its upper-layer header at `at` (from `ipv6::walk`), its payload ending
/// at `end`: IPv4's parser (`l4::tuple`), after IPv6's fragments. `FRAG`:
/// which kind of packet is read ([`WHOLE`], [`FIRST_FRAGMENT`]); the other
/// kind, and a later fragment, are `Fragment`.
#[inline(always)]
pub fn parse<const FRAG: bool>(
    ctx: &TcContext,
    ip: &Ipv6Hdr,
    at: &ipv6::L4At,
    end: usize,
    key: &mut CtKey6,
) -> Tuple {
    key.saddr_be = ip.saddr;
    key.daddr_be = ip.daddr;
    key.sport_be = 0;
    key.dport_be = 0;
    key.proto = at.proto;
    key._pad = [0; 3];
    // The walk stops at a fragment header for a later fragment: no
    // transport header (`frag6` follows it by its first's record). A
    // first fragment has its fragment header right after the fixed one
    // (where Linux puts it). One with the fragment header deeper in the
    // chain is read as whole: its later fragments are not followed, so
    // its datagram never completes beyond dnet.
    if !FRAG {
        if at.proto == NEXTHDR_FRAGMENT || ip.nexthdr == NEXTHDR_FRAGMENT {
            return Tuple::Fragment;
        }
        return l4::tuple(ctx, at.off, end.saturating_sub(at.off), key);
    }
    // A first fragment's transport header is read as a whole datagram's,
    // bounded by the largest datagram rather than the fragment. TCP's is
    // not followed (`fragment`), as IPv4's.
    if at.proto == NEXTHDR_FRAGMENT || ip.nexthdr != NEXTHDR_FRAGMENT || at.proto == IPPROTO_TCP {
        return Tuple::Fragment;
    }
    l4::tuple(ctx, at.off, MAX_DATAGRAM6, key)
}

/// The largest IPv6 payload without a jumbogram's option: what a first
/// fragment's transport header is checked against.
const MAX_DATAGRAM6: usize = 65535;

/// Rewrites the packet's addresses and ports as `e` says, keeping the L4
/// checksum right: for IPv6 it covers the pseudo-header, so an address
/// change is folded in for TCP, UDP and ICMPv6 alike (UDP's may never
/// become zero, which means "none" and is invalid over IPv6: it becomes
/// 0xffff).
#[inline(always)]
pub fn rewrite(ctx: &TcContext, l4: &L4, key: &CtKey6, e: &Xlate6) -> Result<(), DropReason> {
    let mangled = l4::mangled(key.proto);
    if e.flags & CT_F_SNAT != 0 {
        if !addr_eq(&e.new_saddr_be, &key.saddr_be) {
            replace_addr(
                ctx,
                l4,
                ETH_HLEN + 8,
                &key.saddr_be,
                &e.new_saddr_be,
                mangled,
            )?;
        }
        l4::replace_port(
            ctx,
            l4.csum_off,
            l4.sport_off,
            key.sport_be,
            e.new_sport_be,
            mangled,
        )?;
    }
    if e.flags & CT_F_DNAT != 0 {
        if !addr_eq(&e.new_daddr_be, &key.daddr_be) {
            replace_addr(
                ctx,
                l4,
                ETH_HLEN + 24,
                &key.daddr_be,
                &e.new_daddr_be,
                mangled,
            )?;
        }
        l4::replace_port(
            ctx,
            l4.csum_off,
            l4.dport_off,
            key.dport_be,
            e.new_dport_be,
            mangled,
        )?;
    }
    Ok(())
}

/// Writes `new` over the address at `off` (was `old`), folding the change
/// into the L4 checksum as a pseudo-header change.
#[inline(always)]
fn replace_addr(
    ctx: &TcContext,
    l4: &L4,
    off: usize,
    old: &[u8; 16],
    new: &[u8; 16],
    mangled: u64,
) -> Result<(), DropReason> {
    // SAFETY: both buffers are 16 bytes (on the stack or in a map value),
    // as the sizes given say; the helper only reads them.
    let diff = unsafe {
        bpf_csum_diff(
            old.as_ptr() as *mut u32,
            16,
            new.as_ptr() as *mut u32,
            16,
            0,
        )
    };
    if diff < 0 {
        return Err(DropReason::Malformed);
    }
    err(ctx.l4_csum_replace(
        l4.csum_off,
        0,
        diff as u64,
        BPF_F_PSEUDO_HDR as u64 | mangled,
    ))?;
    // On a CHECKSUM_COMPLETE skb (a NIC's, on the uplink) the helper above
    // takes the L4 checksum's change out of `skb->csum` (right for IPv4,
    // whose header checksum absorbs the address change). IPv6 has no
    // header checksum: the address bytes change the packet's sum by as
    // much again, so their store puts that back
    // (`BPF_F_RECOMPUTE_CSUM`: `skb->csum` less the old bytes, plus the
    // new). The two cancel and `skb->csum` stays the packet's sum, as the
    // kernel's own NAT keeps it. (Kernel 6.16+ has `BPF_F_IPV6` for the
    // helper to leave `skb->csum` alone; older kernels refuse the flag.)
    err(ctx.store(off, new, BPF_F_RECOMPUTE_CSUM as u64))
}

/// The NAT configuration when the uplink has a global IPv6 address.
#[inline(always)]
pub(crate) fn config6() -> Option<&'static Config> {
    // Borrowed from the map, not copied: the programs' stacks are full.
    crate::maps::CONFIG
        .get(0)
        .filter(|c| c.uplink_ifindex != 0 && c.uplink_addr6 != [0; 16])
}

/// `lxc6_nat_from_container`: tail-called by `lxc6_from_container` for a
/// packet of a NAT66 network bound beyond the host.
#[inline(always)]
pub fn from_container_tail<const FRAG: bool>(ctx: &TcContext) -> i32 {
    let Some(ep) = lxc::endpoint_of(lxc::ifindex(ctx)) else {
        return drop(0, DropReason::UnknownEndpoint);
    };
    match from_container::<FRAG>(ctx, &ep) {
        Ok(v) => v,
        // Refused before anything was rewritten: the container is told
        // by a program of its own (`icmp6_reply`, from its gateway).
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
fn from_container<const FRAG: bool>(ctx: &TcContext, ep: &Endpoint) -> Result<i32, DropReason> {
    // What its caller checked that this program relies on, checked again
    // (it must not trust that it was reached that way only): the source
    // MAC and IPv6 address are the endpoint's, its network is NAT66.
    let (me, net6) = ipv6::tail_checked(ctx, ep)?;
    if net6.flags & NET6_F_NAT == 0 {
        return Err(DropReason::NatUnsupported);
    }
    let ip: *const Ipv6Hdr = ptr_at(ctx, ETH_HLEN).map_err(|_| DropReason::Malformed)?;
    // SAFETY: as above.
    let ip = unsafe { &*ip };
    if !ip.is_valid((ctx.len() as usize).saturating_sub(ETH_HLEN)) {
        return Err(DropReason::Malformed);
    }
    if !addr_eq(&ip.saddr, &me.addr) {
        return Err(DropReason::SpoofedIp);
    }
    // No global address to translate to: dropped, never left to the host,
    // which would route it out untranslated.
    let cfg = config6().ok_or(DropReason::NoNatAddress)?;
    let end = ETH_HLEN + IPV6_HLEN + ip.payload_len();
    let s = scratch().ok_or(DropReason::Malformed)?;
    let at = l4_at(ctx, s, ip, end)?;
    let key = &mut s.key;
    let l4 = match parse::<FRAG>(ctx, ip, &at, end, key) {
        Tuple::Flow(l4) => l4,
        // Fragments are followed by a program of their own (`frag6`).
        Tuple::Fragment => {
            if !FRAG {
                // SAFETY: the tail call jumps to `lxc6_nat_frag` with the
                // same context, or returns when the slot is empty.
                unsafe { PROGS.tail_call(ctx, PROG_SLOT_NAT6_FRAG_FROM_CONTAINER) };
            }
            return Err(DropReason::Fragment);
        }
        Tuple::Truncated => return Err(DropReason::Malformed),
        // ICMPv6 errors go to `icmp6_error` from `lxc6_from_container`.
        Tuple::IcmpError(_) | Tuple::Other => return Err(DropReason::NatUnsupported),
    };
    // The length the uplink's route must carry, kept in the scratch slot
    // (the stack has no room for it across the lookups).
    keep_mtu_len(
        &mut s.mtu_len,
        icmp6_reply::mtu_len6(ctx, ip, key.proto, l4.off),
    );
    let seg = crate::l4::seg_to(ctx, Some(&l4), key.proto, || end)?;
    // The route is kept in the scratch slot (the stack has no room), so
    // a new flow looks it up once.
    let e = match ct::lookup(key, seg)? {
        Some(e) => {
            let r = fib::route6_len(
                ctx,
                ep.ifindex,
                &e.new_saddr_be,
                &key.daddr_be,
                key.proto,
                kept_mtu_len(&s.mtu_len),
            );
            s.route.set(&r);
            e
        }
        None => {
            // An echo reply opens nothing (nothing asked it from the world).
            if l4.icmp_type == ICMPV6_ECHO_REPLY || !ct::opens_flow(key.proto, l4.tcp_flags) {
                return Err(DropReason::CtNoFlow);
            }
            if ip.hop_limit <= 1 {
                return Err(DropReason::TtlExceeded);
            }
            // The route first, from the address the packet will leave with
            // (the new flow's), for the packet's length: a new flow that
            // dies or does not fit here takes no entry, port or charge, as
            // IPv4's.
            let r = fib::route6_len(
                ctx,
                ep.ifindex,
                &cfg.uplink_addr6,
                &key.daddr_be,
                key.proto,
                kept_mtu_len(&s.mtu_len),
            );
            match r {
                Route::Out { ifindex, .. } if ifindex == cfg.uplink_ifindex => {}
                Route::TooBig { .. } => return Err(DropReason::FragNeeded),
                _ => return Err(DropReason::NoRoute),
            }
            s.route.set(&r);
            new_snat(cfg, key, &mut s.fwd, ep.addr_be, seg)?
        }
    };
    // dnet forwards, and translates, through the uplink only.
    if s.route
        .out_ifindex()
        .is_some_and(|i| i != cfg.uplink_ifindex)
    {
        return Err(DropReason::NoRoute);
    }
    // A packet that does not fit or dies here is refused as it came
    // (nothing rewritten yet), so that its sender can be told with a quote
    // it knows. (The hop limit read again: the stack has no room to keep
    // the header.)
    if s.route.is_too_big() {
        return Err(DropReason::FragNeeded);
    }
    if ctx
        .load::<u8>(ETH_HLEN + 7)
        .map_err(|_| DropReason::Malformed)?
        <= 1
    {
        return Err(DropReason::TtlExceeded);
    }
    rewrite(ctx, &l4, key, &e)?;
    if FRAG {
        frag6::record_first(ctx, key, l4.icmp_type);
    }
    count_translated(ep.slot);
    fib::forward6_kept(ctx, &s.route)
}

/// A new flow from the container at `endpoint_be` (its IPv4 address, its
/// record's key) to the world, translated to the uplink's IPv6 address and
/// a free NAT port, charged to the container's limits.
#[inline(always)]
fn new_snat(
    cfg: &Config,
    key: &CtKey6,
    fwd: &mut CtEntry6,
    endpoint_be: u32,
    seg: &dnet_common::tcp::Seg,
) -> Result<Xlate6, DropReason> {
    ct::entry_into(
        fwd,
        cfg.uplink_addr6,
        0,
        [0; 16],
        0,
        CT_F_SNAT | CT_F_REPLY_TO_ENDPOINT,
        endpoint_be,
        seg,
    );
    nat::claim_charged(cfg, key, fwd)?;
    Ok(XlateOf::of(fwd))
}

/// Room (one per CPU) for a NAT66 packet's tuple and a new flow's first
/// entry: the 128-bit tuples do not fit the stack beside the rest.
pub struct Nat6Scratch {
    pub key: CtKey6,
    pub fwd: CtEntry6,
    /// The L4 offset the walk found, passed through memory ([`l4_at`]).
    pub l4_off: u32,
    /// The route of a container's packet, looked up once.
    pub route: KeptRoute,
    /// The length the next link must carry (`icmp6_reply::mtu_len6`).
    pub mtu_len: u32,
}

/// Keeps `len`, the length the next link must carry, in the scratch slot
/// (`v`: [`Nat6Scratch::mtu_len`]): the stack has no room for it across a
/// route lookup.
#[inline(always)]
pub(crate) fn keep_mtu_len(v: &mut u32, len: u16) {
    // SAFETY: `v` is plain data in this CPU's scratch slot.
    unsafe { core::ptr::write_volatile(v, len as u32) }
}

/// The length [`keep_mtu_len`] kept in `v`.
#[inline(always)]
pub(crate) fn kept_mtu_len(v: &u32) -> u16 {
    // SAFETY: plain data in this CPU's scratch slot.
    unsafe { core::ptr::read_volatile(v) as u16 }
}

#[map(name = "DNET_NAT6_SCRATCH")]
static NAT6_SCRATCH: PerCpuArray<Nat6Scratch> = PerCpuArray::with_max_entries(1, 0);

/// The walk of the extension headers (`ipv6::walk`), its L4 offset
/// passed through this CPU's scratch slot: the verifier then knows it as
/// one bounded value rather than one constant per number of headers, and
/// checks what follows once instead of once per chain length (which
/// outgrows its budget).
#[inline(always)]
pub(crate) fn l4_at(
    ctx: &TcContext,
    s: &mut Nat6Scratch,
    ip: &Ipv6Hdr,
    end: usize,
) -> Result<ipv6::L4At, DropReason> {
    let at = ipv6::walk(ctx, ip.nexthdr, end)?;
    Ok(ipv6::L4At {
        proto: at.proto,
        off: kept_off(s, at.off)?,
    })
}

/// An offset a walk found (`off`), passed through this CPU's scratch slot
/// and bounded, as [`l4_at`] does.
#[inline(always)]
pub(crate) fn kept_off(s: &mut Nat6Scratch, off: usize) -> Result<usize, DropReason> {
    // SAFETY: `s.l4_off` is plain data in this CPU's scratch slot.
    let off = unsafe {
        core::ptr::write_volatile(&mut s.l4_off, off as u32);
        core::ptr::read_volatile(&s.l4_off)
    } as usize;
    // Bounded well below the verifier's packet offset limit (0xffff) so
    // that offsets beyond it still count; at most four extension headers
    // of 2 KiB each lie before it.
    if off > 0x3fff {
        return Err(DropReason::Malformed);
    }
    Ok(off)
}

#[inline(always)]
pub(crate) fn scratch() -> Option<&'static mut Nat6Scratch> {
    // SAFETY: this CPU's slot of a live per-CPU array; nothing else runs on
    // this CPU while the program does, and each program takes it once.
    NAT6_SCRATCH.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

/// `host6_from_uplink`: tail-called by `host_from_uplink` for IPv6.
#[inline(always)]
pub fn from_uplink_tail<const FRAG: bool>(ctx: &TcContext) -> i32 {
    match from_uplink::<FRAG>(ctx) {
        Ok(v) => v,
        Err(reason) => drop(0, reason),
    }
}

#[inline(always)]
fn from_uplink<const FRAG: bool>(ctx: &TcContext) -> Result<i32, DropReason> {
    let s = scratch().ok_or(DropReason::Malformed)?;
    let Some((p, _)) = uplink_flow::<FRAG>(ctx, s)? else {
        if FRAG {
            return Ok(TC_ACT_OK);
        }
        // Not a flow: a fragment of one, or an ICMPv6 error about one, is
        // translated by a program of its own (`frag6`, `icmp6_error`),
        // which leaves the rest to the host.
        if ctx.load::<u8>(ETH_HLEN + 6) == Ok(NEXTHDR_FRAGMENT) {
            // SAFETY: the tail call jumps to `host6_frag` with the same
            // context, or returns when the slot is empty.
            unsafe { PROGS.tail_call(ctx, PROG_SLOT_FRAG6_FROM_UPLINK) };
            return Ok(TC_ACT_OK);
        }
        // SAFETY: the tail call jumps to `host6_icmp6_error` with the
        // same context, or returns when the slot is empty.
        unsafe { PROGS.tail_call(ctx, PROG_SLOT_ICMP6_ERROR_FROM_UPLINK) };
        return Ok(TC_ACT_OK);
    };
    let key = &mut s.key;
    let seg = crate::l4::seg_to(ctx, Some(&p.l4), key.proto, || p.end)?;
    let Some(e) = ct::lookup(key, seg)? else {
        // A new flow to a published port is made in a program of its own
        // (this one's stack is full).
        if may_be_published(key, &p.l4) {
            let slot = if FRAG {
                PROG_SLOT_FRAG6_PUBLISHED
            } else {
                PROG_SLOT_PUBLISHED6
            };
            // SAFETY: the tail call jumps to `host6_publish` (or
            // `host6_frag_publish`) with the same context, or returns when
            // the slot is empty.
            unsafe { PROGS.tail_call(ctx, slot) };
        }
        return Ok(TC_ACT_OK);
    };
    // An answer to the host's own echo: up its stack, with the identifier
    // it sent (`to_uplink`).
    if e.flags & CT_F_HOST != 0 {
        rewrite(ctx, &p.l4, key, &e)?;
        return Ok(TC_ACT_OK);
    }
    if e.flags & CT_F_TO_ENDPOINT == 0 {
        return Ok(TC_ACT_OK);
    }
    // Its hop limit runs out here: refused as it came (nothing rewritten
    // yet) and answered "time exceeded" (`icmp6_reply`).
    if p.hop_limit <= 1 {
        return Err(expired(ctx));
    }
    let ep = ipv6::endpoint6_at(&e.new_daddr_be).ok_or(DropReason::NoEndpoint)?;
    rewrite(ctx, &p.l4, key, &e)?;
    if FRAG {
        frag6::record_first(ctx, key, p.l4.icmp_type);
    }
    nat::into_endpoint(ctx, &ep, fib::dec_hop_limit)
}

/// A packet from the world whose hop limit runs out at dnet's hop: its
/// sender is answered "time exceeded" by a program of its own
/// (`host6_icmp6_reply`; the callers' stacks are full), which drops it
/// with its cause. Here only when that slot is empty.
#[inline(always)]
pub(crate) fn expired(ctx: &TcContext) -> DropReason {
    // SAFETY: the tail call jumps to `host6_icmp6_reply` with the same
    // context, or returns when the slot is empty.
    unsafe { PROGS.tail_call(ctx, PROG_SLOT_ICMP6_REPLY_FROM_UPLINK) };
    DropReason::TtlExceeded
}

/// `host_to_uplink` for IPv6 (the uplink's tcx egress, a packet the host
/// itself sends): an ICMPv6 echo request from the uplink's IPv6 address
/// takes its identifier through `DNET_CT6` (`CT_F_HOST`), as IPv4's does
/// (`nat::new_host_echo`): kept while no container's flow holds it (and
/// held from then on, so no NAT66 flow gets it), translated to a free NAT
/// port when one does. Its answers go up the host's stack with the
/// identifier it sent ([`from_uplink`]), never into a container. Anything
/// else goes out untouched.
#[inline(always)]
pub fn to_uplink(ctx: &TcContext) -> Result<i32, DropReason> {
    let Ok(ip) = ptr_at::<Ipv6Hdr>(ctx, ETH_HLEN) else {
        return Ok(TC_ACT_OK);
    };
    // SAFETY: `ptr_at` checked that the header lies inside the packet.
    let ip = unsafe { &*ip };
    if !ip.is_valid((ctx.len() as usize).saturating_sub(ETH_HLEN)) {
        return Ok(TC_ACT_OK);
    }
    let Some(cfg) = config6() else {
        return Ok(TC_ACT_OK);
    };
    if !addr_eq(&ip.saddr, &cfg.uplink_addr6) {
        return Ok(TC_ACT_OK);
    }
    let s = scratch().ok_or(DropReason::Malformed)?;
    let end = ETH_HLEN + IPV6_HLEN + ip.payload_len();
    let Ok(at) = l4_at(ctx, s, ip, end) else {
        return Ok(TC_ACT_OK);
    };
    let Tuple::Flow(l4) = parse::<WHOLE>(ctx, ip, &at, end, &mut s.key) else {
        return Ok(TC_ACT_OK);
    };
    if at.proto != IPPROTO_ICMPV6 || l4.icmp_type != ICMPV6_ECHO_REQUEST {
        return Ok(TC_ACT_OK);
    }
    let key = &s.key;
    let seg = crate::l4::seg_to(ctx, Some(&l4), key.proto, || end)?;
    let e = match ct::lookup(key, seg)? {
        Some(e) => e,
        None => nat::host_echo_into(cfg, key, &mut s.fwd, 0)?,
    };
    rewrite(ctx, &l4, key, &e)?;
    Ok(TC_ACT_OK)
}

/// What [`uplink_flow`] found: the L4 header, the hop limit, where the
/// payload ends.
struct UplinkFlow {
    l4: L4,
    hop_limit: u8,
    end: usize,
}

/// The checks both uplink programs make before a packet can be dnet's,
/// and its tuple (into `s.key`): `None` for a packet that is the host's.
#[inline(always)]
fn uplink_flow<const FRAG: bool>(
    ctx: &TcContext,
    s: &mut Nat6Scratch,
) -> Result<Option<(UplinkFlow, &'static Config)>, DropReason> {
    // A tagged frame is the host's (as for IPv4).
    let Some(ip) = ipv6::uplink_ipv6(ctx) else {
        return Ok(None);
    };
    // dnet's IPv6 networks live behind its veths: a source of theirs on
    // the uplink is spoofed, whatever its destination (a gateway, on `lo`,
    // is reached from any interface; IPv6 has no rp_filter), and whether
    // the uplink has a global address or not.
    if SUBNETS6.get(Key::new(128, ip.saddr)).is_some() {
        return Err(DropReason::SpoofedIp);
    }
    // Only packets for the uplink's address, or for a container's own
    // address (a routed network's: `routed6`, a program of its own), can
    // belong to dnet.
    let cfg = config6();
    let Some(cfg) = cfg.filter(|c| addr_eq(&ip.daddr, &c.uplink_addr6)) else {
        if ipv6::endpoint6_at(&ip.daddr).is_some() {
            // SAFETY: the tail call jumps to `host6_routed` with the same
            // context, or returns when the slot is empty.
            unsafe { PROGS.tail_call(ctx, PROG_SLOT_ROUTED6_FROM_UPLINK) };
        }
        return Ok(None);
    };
    let end = ETH_HLEN + IPV6_HLEN + ip.payload_len();
    // A chain the walk refuses is the host's to judge, not dnet's.
    let Ok(at) = l4_at(ctx, s, ip, end) else {
        return Ok(None);
    };
    let Tuple::Flow(l4) = parse::<FRAG>(ctx, ip, &at, end, &mut s.key) else {
        return Ok(None);
    };
    Ok(Some((
        UplinkFlow {
            l4,
            hop_limit: ip.hop_limit,
            end,
        },
        cfg,
    )))
}

/// The packet (no flow yet) may open a flow to a port published over
/// IPv6 on the uplink's address.
#[inline(always)]
fn may_be_published(key: &CtKey6, l4: &L4) -> bool {
    (key.proto == IPPROTO_TCP || key.proto == IPPROTO_UDP)
        && ct::opens_flow(key.proto, l4.tcp_flags)
        && crate::sock::service6(key.daddr_be, key.dport_be, key.proto).is_some()
}

/// `host6_publish`: tail-called by `host6_from_uplink` for a packet that
/// may open a flow to a published port: the flow, and the packet into
/// its container.
#[inline(always)]
pub fn publish_tail<const FRAG: bool>(ctx: &TcContext) -> i32 {
    match publish::<FRAG>(ctx) {
        Ok(v) => v,
        // A new flow that dies here took no entry; its sender is told.
        Err(DropReason::TtlExceeded) => drop(0, expired(ctx)),
        Err(reason) => drop(0, reason),
    }
}

#[inline(always)]
fn publish<const FRAG: bool>(ctx: &TcContext) -> Result<i32, DropReason> {
    // Checked again: this program must not trust that it was reached
    // from `host6_from_uplink` only.
    let s = scratch().ok_or(DropReason::Malformed)?;
    let Some((p, cfg)) = uplink_flow::<FRAG>(ctx, s)? else {
        return Ok(TC_ACT_OK);
    };
    let key = &s.key;
    let seg = crate::l4::seg_to(ctx, Some(&p.l4), key.proto, || p.end)?;
    let (e, ep) = match published(cfg, key, &p.l4, p.hop_limit, &mut s.fwd, seg)? {
        Published::Flow(e, ep) => (e, ep),
        Published::No => return Ok(TC_ACT_OK),
        Published::Refused(verdict) => return Ok(verdict),
    };
    rewrite(ctx, &p.l4, key, &e)?;
    if FRAG {
        frag6::record_first(ctx, key, p.l4.icmp_type);
    }
    nat::into_endpoint(ctx, &ep, fib::dec_hop_limit)
}

/// What [`published`] made of a packet that has no flow.
enum Published {
    /// The new flow to a published port, and its container.
    Flow(Xlate6, Endpoint),
    /// No published port there, or not a flow's first packet: the host's.
    No,
    /// Dropped (and counted on the container): the verdict.
    Refused(i32),
}

/// A new flow from the world (`key`, no flow yet) to a port published over
/// IPv6 on the uplink's address: DNAT to the container's IPv6 address and
/// port, as IPv4's (`nat::dnat_into`), its first entry built in `fwd`.
/// A source `--publish-from` does not list is dropped
/// (`source-not-allowed`, counted on the container); a hop limit that
/// runs out here takes no entry (`ttl-exceeded`, answered "time
/// exceeded" by `host6_icmp6_reply`).
#[inline(always)]
fn published(
    cfg: &Config,
    key: &CtKey6,
    l4: &L4,
    hop_limit: u8,
    fwd: &mut CtEntry6,
    seg: &dnet_common::tcp::Seg,
) -> Result<Published, DropReason> {
    if (key.proto != IPPROTO_TCP && key.proto != IPPROTO_UDP)
        || !ct::opens_flow(key.proto, l4.tcp_flags)
    {
        return Ok(Published::No);
    }
    let Some(svc) = crate::sock::service6(key.daddr_be, key.dport_be, key.proto) else {
        return Ok(Published::No);
    };
    let ep = ipv6::endpoint6_at(&svc.backend).ok_or(DropReason::NoEndpoint)?;
    if !nat::may_publish_to6(key.saddr_be) {
        return Ok(Published::Refused(drop(
            ep.slot,
            DropReason::SourceNotAllowed,
        )));
    }
    if hop_limit <= 1 {
        return Err(DropReason::TtlExceeded);
    }
    // What delivery would refuse (`nat::into_endpoint`), refused before the
    // flow takes an entry.
    nat::open_network(&ep)?;
    let e = nat::dnat_into(
        cfg,
        key,
        fwd,
        svc.backend,
        svc.backend_port_be,
        ep.addr_be,
        seg,
    )?;
    Ok(Published::Flow(e, ep))
}
