//! ICMPv6 errors dnet sends as the router at its own hop for a container's
//! NAT66 or routed packet (issue 13), IPv4's `icmp_reply` for IPv6: "packet too big"
//! (RFC 4443 3.2) with the next link's MTU when the packet does not fit
//! the uplink's route, so that path-MTU discovery works at dnet's hop, and
//! "time exceeded" (3.3) when its hop limit runs out here, so traceroute
//! shows the gateway. From the network's IPv6 gateway, the hop the
//! container sees.
//!
//! `lxc6_icmp6_reply` (slot `PROG_SLOT_ICMP6_REPLY`) is a program of its
//! own, tail-called by `lxc6_nat_from_container` and
//! `lxc6_routed_from_container` before they rewrite anything (their
//! stacks have no room for the builder). It judges the packet
//! again (hop limit, then the route with the packet's length) rather than
//! trusting how it was reached, and answers only the packet's own sender.
//!
//! The error is made in place as IPv4's: the packet is cut to its IPv6
//! header, extension headers and the start of its transport header (8
//! bytes, a whole TCP header for TCP: a `CHECKSUM_PARTIAL` packet cannot be
//! cut inside what its checksum covers), 48 bytes for a new IPv6 and
//! ICMPv6 header go in front, the MACs swap, and it goes back into the
//! container. The checksum covers the IPv6 pseudo-header. A quote longer
//! than [`MAX_QUOTE`] (a long extension-header chain) is not answered; the
//! packet is dropped with its cause either way. Rate limit: IPv4's bucket
//! of the endpoint (`icmp_reply::allowed`).
//!
//! `host6_icmp6_reply` (slot `PROG_SLOT_ICMP6_REPLY_FROM_UPLINK`) does the
//! same for the world: a packet on the uplink that dnet would route into a
//! container (a NAT66 flow or published port at the uplink's address, a
//! routed network's container) and whose hop limit runs out here is
//! answered "time exceeded" from the uplink's IPv6 address, the hop its
//! sender sees, back out of the uplink, as Linux's forwarding does,
//! quoting as much of the packet as fits in 1,280 bytes; it is counted
//! (`ttl-exceeded`) on its container (0 for the uplink's address), the
//! rate limit the uplink's bucket (slot 0), as IPv4's. Tail-called by
//! `host6_from_uplink`, `host6_publish` and `host6_routed` before they
//! rewrite anything; it judges the packet again (hop limit, destination,
//! no ICMPv6 error, a source that names one node).

use aya_ebpf::maps::lpm_trie::Key;
use aya_ebpf::{
    bindings::bpf_adj_room_mode::BPF_ADJ_ROOM_MAC,
    helpers::generated::{
        bpf_csum_diff, bpf_redirect, bpf_skb_adjust_room, bpf_skb_change_tail, bpf_skb_load_bytes,
        bpf_skb_store_bytes,
    },
    macros::map,
    maps::PerCpuArray,
    programs::TcContext,
};
use dnet_common::{DropReason, Endpoint, ipv6::NET6_F_NAT, network::NET_F_INTERNAL};

use crate::{
    eth::{ETH_HLEN, ETH_P_IPV6},
    fib::{self, Route},
    icmp_reply::{allowed, fold_ne, ok},
    ipv6::{self, IPPROTO_ICMPV6, IPV6_HLEN, Ipv6Hdr, addr_eq},
    l4::{IPPROTO_TCP, IPPROTO_UDP},
    lxc,
    maps::SUBNETS6,
    ptr::ptr_at,
    stats::{count_drops, drop},
    verdict::{TC_ACT_OK, TC_ACT_SHOT},
};

/// ICMPv6 "packet too big" and "time exceeded" (RFC 4443).
pub const ICMPV6_PKT_TOOBIG: u8 = 2;
pub const ICMPV6_TIME_EXCEED: u8 = 3;
const ICMPV6_HLEN: usize = 8;
/// The new IPv6 and ICMPv6 headers put in front of the quote.
const ROOM: usize = IPV6_HLEN + ICMPV6_HLEN;
/// IPv6's minimum MTU, which an ICMPv6 error must not exceed (RFC 4443
/// 2.4 c).
const IPV6_MIN_MTU: usize = 1280;
/// The longest quote: what fits in [`IPV6_MIN_MTU`] beside the new headers.
pub const MAX_QUOTE: usize = IPV6_MIN_MTU - ROOM;
/// The longest ICMPv6 message.
const MAX_MSG: usize = ICMPV6_HLEN + MAX_QUOTE;
/// The pseudo-header (RFC 8200 8.1) before the message in the buffer the
/// checksum is summed over.
const PSEUDO: usize = 40;
/// The buffer the checksum is summed over.
const SUM_LEN: usize = PSEUDO + MAX_MSG;
/// The most `bpf_csum_diff` sums in one call.
const SUM_CHUNK: usize = 512;
/// Linux's default hop limit for what it sends.
const HOP_LIMIT: u8 = 64;

/// Per-CPU room to build an error in (the stack is spoken for).
#[repr(C)]
pub struct Icmp6Scratch {
    /// The packet's Ethernet and IPv6 headers as they came.
    old: [u8; ETH_HLEN + IPV6_HLEN + 2],
    /// The new Ethernet (14 bytes), IPv6 (40) and ICMPv6 (8) headers.
    hdr: [u8; ETH_HLEN + ROOM + 2],
    /// The pseudo-header and the message, read back for the checksum
    /// (the word it ends in padded with zeros).
    sum: [u32; SUM_LEN / 4],
}

#[map(name = "DNET_ICMP6_SCRATCH")]
static ICMP6_SCRATCH: PerCpuArray<Icmp6Scratch> = PerCpuArray::with_max_entries(1, 0);

/// What went wrong with the packet.
#[derive(Clone, Copy)]
enum Icmp6Error {
    TimeExceeded,
    /// It does not fit the next link, whose MTU this is.
    TooBig(u16),
}

impl Icmp6Error {
    #[inline(always)]
    fn cause(self) -> DropReason {
        match self {
            Icmp6Error::TimeExceeded => DropReason::TtlExceeded,
            Icmp6Error::TooBig(_) => DropReason::FragNeeded,
        }
    }

    /// The ICMPv6 header's first 8 bytes, checksum zero.
    #[inline(always)]
    fn header(self) -> [u8; 8] {
        match self {
            Icmp6Error::TimeExceeded => [ICMPV6_TIME_EXCEED, 0, 0, 0, 0, 0, 0, 0],
            Icmp6Error::TooBig(mtu) => {
                let m = (mtu as u32).to_be_bytes();
                [ICMPV6_PKT_TOOBIG, 0, 0, 0, m[0], m[1], m[2], m[3]]
            }
        }
    }
}

/// The length the next link must carry for the IPv6 packet whose fixed
/// header is `ip` and upper-layer header (of `proto`) is at `l4_off`: the
/// packet's own (payload and fixed header), or for a GSO packet one
/// segment's (the kernel cuts it after the datapath), as IPv4's
/// `icmp_reply::mtu_len`. 0 (no check) when the TCP header cannot be read.
#[inline(always)]
pub fn mtu_len6(ctx: &TcContext, ip: &Ipv6Hdr, proto: u8, l4_off: usize) -> u16 {
    let tot = IPV6_HLEN + ip.payload_len();
    // SAFETY: reading a field of the context the kernel passed.
    let gso = unsafe { (*ctx.skb.skb).gso_size } as usize;
    if gso == 0 {
        return tot.min(0xffff) as u16;
    }
    let l4 = match proto {
        IPPROTO_TCP => match ctx.load::<u8>(l4_off + 12) {
            Ok(b) => ((b >> 4) as usize) * 4,
            Err(_) => return 0,
        },
        IPPROTO_UDP => 8,
        _ => return 0,
    };
    let seg = l4_off.saturating_sub(ETH_HLEN) + l4 + gso;
    seg.min(tot).min(0xffff) as u16
}

/// `lxc6_icmp6_reply`: the container's NAT66 or routed packet that dies
/// or does not fit here, answered.
#[inline(always)]
pub fn reply_tail(ctx: &TcContext) -> i32 {
    let Some(ep) = lxc::endpoint_of(lxc::ifindex(ctx)) else {
        return drop(0, DropReason::UnknownEndpoint);
    };
    match judge(ctx, &ep) {
        Ok((err, gw, quote)) => {
            let to = Answer {
                slot: ep.slot,
                bucket: ep.slot,
                ifindex: ep.ifindex,
            };
            reply(ctx, err, to, &gw, quote)
        }
        Err(reason) => drop(ep.slot, reason),
    }
}

/// Why the packet is answered, from which gateway, and how much of it
/// is quoted.
#[inline(always)]
fn judge(ctx: &TcContext, ep: &Endpoint) -> Result<(Icmp6Error, [u8; 16], usize), DropReason> {
    let (me, net6) = ipv6::tail_checked(ctx, ep)?;
    // Nothing of an internal network's goes beyond the host: no route
    // there to judge it by.
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
    let end = ETH_HLEN + IPV6_HLEN + ip.payload_len();
    let at = ipv6::walk(ctx, ip.nexthdr, end)?;
    // An ICMPv6 error (a routed network's: NAT66 sends them elsewhere) is
    // never answered with one (RFC 4443 2.4 e): dropped for its cause.
    if at.proto == IPPROTO_ICMPV6 {
        let ty: u8 = ctx.load(at.off).map_err(|_| DropReason::Malformed)?;
        if ty < 128 {
            return Err(if ip.hop_limit <= 1 {
                DropReason::TtlExceeded
            } else {
                DropReason::FragNeeded
            });
        }
    }
    let l4 = if at.proto == IPPROTO_TCP { 20 } else { 8 };
    let quote = (at.off - ETH_HLEN + l4).min(end - ETH_HLEN);
    let err = if ip.hop_limit <= 1 {
        Icmp6Error::TimeExceeded
    } else {
        let cfg = crate::maps::CONFIG.get(0).ok_or(DropReason::NoNatAddress)?;
        let len = mtu_len6(ctx, ip, at.proto, at.off);
        // The route the packet would take: from the uplink's address
        // (NAT66), or from its own (routed).
        let from = if net6.flags & NET6_F_NAT != 0 {
            &cfg.uplink_addr6
        } else {
            &ip.saddr
        };
        match fib::route6_len(ctx, ep.ifindex, from, &ip.daddr, at.proto, len) {
            Route::TooBig { mtu } => Icmp6Error::TooBig(mtu),
            // Not reached from `lxc6_nat_from_container` or
            // `lxc6_routed_from_container` (they go on then): nothing to
            // answer.
            _ => return Err(DropReason::NoRoute),
        }
    };
    Ok((err, net6.gateway, quote))
}

/// `host6_icmp6_reply`: a packet from the world that dnet would route
/// into a container, whose hop limit runs out here, answered "time
/// exceeded" from the uplink's IPv6 address, back out of the uplink.
#[inline(always)]
pub fn from_uplink_tail(ctx: &TcContext) -> i32 {
    match judge_from_uplink(ctx) {
        Ok(Some((to, from, quote))) => reply(ctx, Icmp6Error::TimeExceeded, to, &from, quote),
        Ok(None) => TC_ACT_OK,
        Err((slot, reason)) => drop(slot, reason),
    }
}

/// Where an answer goes, from which address, quoting how many bytes.
type Judged = (Answer, [u8; 16], usize);

/// Where the answer to the world's packet goes, from which address, and
/// how much of the packet it quotes; `None` for a packet that is no dying
/// packet of dnet's (the host's).
#[inline(always)]
fn judge_from_uplink(ctx: &TcContext) -> Result<Option<Judged>, (u32, DropReason)> {
    // What the callers checked, checked again (this program must not
    // trust that it was reached from them only): an IPv6 packet on the
    // uplink whose hop limit runs out, to the uplink's address (NAT66) or
    // to a routed network's container.
    let Some(ip) = ipv6::uplink_ipv6(ctx).filter(|ip| ip.hop_limit <= 1) else {
        return Ok(None);
    };
    let cfg = crate::nat6::config6();
    let slot = if cfg.is_some_and(|c| addr_eq(&ip.daddr, &c.uplink_addr6)) {
        0
    } else {
        match ipv6::endpoint6_at(&ip.daddr) {
            Some(ep)
                if ipv6::network6(ep.net_id).is_some_and(|n| n.flags & NET6_F_NAT == 0)
                    && lxc::network(ep.net_id).is_ok_and(|n| n.flags & NET_F_INTERNAL == 0) =>
            {
                ep.slot
            }
            _ => return Ok(None),
        }
    };
    let fail = |reason| Err((slot, reason));
    // No global IPv6 address on the uplink to answer from (a routed
    // network's container may still be reached): dropped unanswered.
    let Some(cfg) = cfg else {
        return fail(DropReason::TtlExceeded);
    };
    if SUBNETS6.get(Key::new(128, ip.saddr)).is_some() {
        return fail(DropReason::SpoofedIp);
    }
    // Never to a source that names no single node (RFC 4443 2.4 e).
    if ipv6::is_multicast(&ip.saddr) || ipv6::is_unspecified(&ip.saddr) {
        return fail(DropReason::TtlExceeded);
    }
    let end = ETH_HLEN + IPV6_HLEN + ip.payload_len();
    let at = match ipv6::walk(ctx, ip.nexthdr, end) {
        Ok(at) => at,
        Err(r) => return fail(r),
    };
    // Never about an ICMPv6 error (RFC 4443 2.4 e): dropped for its cause.
    if at.proto == IPPROTO_ICMPV6 {
        match ctx.load::<u8>(at.off) {
            Ok(ty) if ty >= 128 => {}
            _ => return fail(DropReason::TtlExceeded),
        }
    }
    // As much of the packet as fits (RFC 4443 3.3): a packet from the
    // uplink is never `CHECKSUM_PARTIAL` from a NIC, and may be cut
    // anywhere.
    let quote = (end - ETH_HLEN).min(MAX_QUOTE);
    let to = Answer {
        slot,
        // The world's answers share the uplink's bucket, as IPv4's.
        bucket: 0,
        ifindex: cfg.uplink_ifindex,
    };
    Ok(Some((to, cfg.uplink_addr6, quote)))
}

/// Where an answer goes and what it is counted against.
struct Answer {
    /// The stats slot the packet is counted on, by its cause.
    slot: u32,
    /// The rate limit's bucket (an endpoint's slot; 0: the uplink's).
    bucket: u32,
    /// Out of this interface (egress), back to the packet's sender.
    ifindex: u32,
}

/// Answers the packet with `err` from `from`, as `to` says: counts the
/// packet by its cause and returns the verdict (a redirect, or a drop
/// when the rate limit or the packet says no, counted too).
#[inline(always)]
fn reply(ctx: &TcContext, err: Icmp6Error, to: Answer, from: &[u8; 16], quote: usize) -> i32 {
    count_drops(to.slot, err.cause(), 1);
    let reason = if allowed(to.bucket) {
        match build(ctx, err.header(), from, quote) {
            // SAFETY: a helper call with plain integer arguments.
            Ok(()) => return unsafe { bpf_redirect(to.ifindex, 0) } as i32,
            Err(r) => r,
        }
    } else {
        DropReason::IcmpRateLimited
    };
    count_drops(to.slot, reason, 1);
    TC_ACT_SHOT
}

/// Turns the packet into the ICMPv6 error `icmp` (its first 8 bytes)
/// from `from` to its sender, quoting its first `quote` bytes (from its
/// IPv6 header on).
#[inline(always)]
fn build(ctx: &TcContext, icmp: [u8; 8], from: &[u8; 16], quote: usize) -> Result<(), DropReason> {
    if !(IPV6_HLEN..=MAX_QUOTE).contains(&quote) {
        return Err(DropReason::Malformed);
    }
    let skb = ctx.skb.skb;
    let s = ICMP6_SCRATCH.get_ptr_mut(0).ok_or(DropReason::Malformed)?;
    // SAFETY: the skb helpers get the program's own context; the kernel
    // checks every offset and length against the packet. `s` is this CPU's
    // scratch slot (nothing else runs on this CPU meanwhile), whose fields
    // are at least as long as the lengths passed with them.
    unsafe {
        let old = &mut (*s).old;
        ok(bpf_skb_load_bytes(
            skb as *const _,
            0,
            old.as_mut_ptr() as *mut _,
            (ETH_HLEN + IPV6_HLEN) as u32,
        ))?;
        ok(bpf_skb_change_tail(skb, (ETH_HLEN + quote) as u32, 0))?;
        ok(bpf_skb_adjust_room(skb, ROOM as i32, BPF_ADJ_ROOM_MAC, 0))?;

        let h = &mut (*s).hdr;
        // Back to the sender: the MACs swap.
        h[..6].copy_from_slice(&old[6..12]);
        h[6..12].copy_from_slice(&old[..6]);
        h[12..14].copy_from_slice(&ETH_P_IPV6.to_be_bytes());
        let ip = ETH_HLEN;
        let len = ((ICMPV6_HLEN + quote) as u16).to_be_bytes();
        h[ip..ip + 4].copy_from_slice(&[0x60, 0, 0, 0]);
        h[ip + 4] = len[0];
        h[ip + 5] = len[1];
        h[ip + 6] = IPPROTO_ICMPV6;
        h[ip + 7] = HOP_LIMIT;
        h[ip + 8..ip + 24].copy_from_slice(from);
        // To the packet's source.
        h[ip + 24..ip + 40].copy_from_slice(&old[ETH_HLEN + 8..ETH_HLEN + 24]);
        let icmp_at = ip + IPV6_HLEN;
        h[icmp_at..icmp_at + ICMPV6_HLEN].copy_from_slice(&icmp);
        ok(bpf_skb_store_bytes(
            skb as *mut _,
            0,
            h.as_ptr() as *const _,
            (ETH_HLEN + ROOM) as u32,
            0,
        ))?;

        // The checksum over the pseudo-header (addresses, length, next
        // header) and the message read back, summed in whole words (the
        // last one padded with zeros, which add nothing) and in chunks
        // (`bpf_csum_diff` sums 512 bytes at most), each seeded with the
        // sum so far.
        let n = ICMPV6_HLEN + quote;
        if n > MAX_MSG {
            return Err(DropReason::Malformed);
        }
        let m = &mut (*s).sum;
        let b = m.as_mut_ptr() as *mut u8;
        core::ptr::copy_nonoverlapping(h.as_ptr().add(ip + 8), b, 32);
        let mlen = (n as u32).to_be_bytes();
        core::ptr::copy_nonoverlapping(mlen.as_ptr(), b.add(32), 4);
        m[9] = u32::from_ne_bytes([0, 0, 0, IPPROTO_ICMPV6]);
        let words = (PSEUDO + n).div_ceil(4);
        if let Some(w) = m.get_mut(words - 1) {
            *w = 0;
        }
        ok(bpf_skb_load_bytes(
            skb as *const _,
            (ETH_HLEN + IPV6_HLEN) as u32,
            b.add(PSEUDO) as *mut _,
            n as u32,
        ))?;
        let len = words * 4;
        let mut sum: u32 = 0;
        for i in 0..SUM_LEN.div_ceil(SUM_CHUNK) {
            let start = i * SUM_CHUNK;
            if start >= len {
                break;
            }
            let chunk = (len - start).min(SUM_CHUNK).min(SUM_LEN - start);
            let r = bpf_csum_diff(
                core::ptr::null_mut(),
                0,
                m.as_mut_ptr().add(start / 4),
                chunk as u32,
                sum,
            );
            if r < 0 {
                return Err(DropReason::Malformed);
            }
            sum = r as u32;
        }
        let c = fold_ne(sum as u64);
        ok(bpf_skb_store_bytes(
            skb as *mut _,
            (icmp_at + 2) as u32,
            &c as *const u16 as *const _,
            2,
            0,
        ))?;
    }
    Ok(())
}
