//! ICMP errors about translated flows, translated back: the outer address
//! and the quoted inner header, with every checksum they touch.

use aya_ebpf::{maps::lpm_trie::Key, programs::TcContext};
use dnet_common::{
    CtKey, DropReason,
    nat::{CT_F_DNAT, CT_F_HOST, CT_F_SNAT, CT_F_TO_ENDPOINT},
};

use crate::{
    ct, err,
    eth::ETH_HLEN,
    fib::{RouteQuery, forward, ingress_ifindex, route},
    l4::{IPPROTO_ICMP, IPPROTO_UDP},
    maps::SUBNETS,
    nat::to_endpoint,
    verdict::TC_ACT_OK,
};

/// An ICMP error (at `icmp_off`) about a translated flow, translated back:
/// the outer address and the quoted inner header, with the outer IPv4, the
/// inner IPv4, the inner L4 and the ICMP checksums kept right. Path-MTU
/// discovery and "port unreachable" then reach the container. `from` is the
/// sending container's address (`None` from the uplink). Returns the
/// verdict, or `TC_ACT_OK` when the error is about no flow of dnet's.
#[inline(always)]
pub fn icmp_error(ctx: &TcContext, icmp_off: usize, from: Option<u32>) -> Result<i32, DropReason> {
    let ip_off = ETH_HLEN;
    let inner_off = icmp_off + 8;
    let ivihl: u8 = err(ctx.load(inner_off))?;
    let ihl = ((ivihl & 0x0f) as usize) * 4;
    if ivihl >> 4 != 4 || ihl < 20 {
        return Ok(TC_ACT_OK);
    }
    let proto: u8 = err(ctx.load(inner_off + 9))?;
    let isaddr: u32 = err(ctx.load(inner_off + 12))?;
    let idaddr: u32 = err(ctx.load(inner_off + 16))?;
    let il4 = inner_off + ihl;
    if il4 + 8 > message_end(ctx)? {
        return Ok(TC_ACT_OK);
    }
    // The quoted L4 header's first 8 bytes (ports, or type/code/csum/id).
    let h: [u8; 8] = err(ctx.load(il4))?;
    let (sport_off, dport_off, isport, idport) = match proto {
        IPPROTO_ICMP => {
            let id = u16::from_ne_bytes([h[4], h[5]]);
            // A quoted echo request carries the id as its source port.
            match h[0] {
                crate::l4::ICMP_ECHO => (il4 + 4, il4 + 4, id, 0),
                crate::l4::ICMP_ECHOREPLY => (il4 + 4, il4 + 4, 0, id),
                _ => return Ok(TC_ACT_OK),
            }
        }
        crate::l4::IPPROTO_TCP | IPPROTO_UDP => (
            il4,
            il4 + 2,
            u16::from_ne_bytes([h[0], h[1]]),
            u16::from_ne_bytes([h[2], h[3]]),
        ),
        _ => return Ok(TC_ACT_OK),
    };
    // From the uplink, only an error about a packet that left through it:
    // sent from the uplink's address (an error goes back to the quoted
    // packet's sender, as Linux's conntrack checks), to none of dnet's
    // networks. A hairpin flow's packets never left; an error from the
    // world that quotes one is forged.
    // (Values are loaded again after the lookup rather than kept across
    // it: the container program's stack has no room for them.)
    if from.is_none() {
        let outer_daddr: u32 = err(ctx.load(ip_off + 16))?;
        if outer_daddr != isaddr || SUBNETS.get(Key::new(32, idaddr)).is_some() {
            return Ok(TC_ACT_OK);
        }
    }
    // The quoted packet is one we sent; its answers are keyed reversed.
    let key = CtKey {
        saddr_be: idaddr,
        daddr_be: isaddr,
        sport_be: idport,
        dport_be: isport,
        proto,
        _pad: [0; 3],
    };
    // The quote is looked up only: it writes nothing (no repair, no time),
    // so that an error, forged or not, keeps no flow alive.
    let Some(e) = ct::probe(&key) else {
        return Ok(TC_ACT_OK);
    };
    // From a container, only an error about a packet it was sent, to that
    // packet's sender: a container must not speak into others' flows. The
    // entry is then keyed by what the container sends (its source checked
    // on every packet): a flow it is part of, its own or one it serves,
    // and, as a hairpin client, one whose endpoint is the server.
    if let Some(addr) = from {
        let outer_daddr: u32 = err(ctx.load(ip_off + 16))?;
        if idaddr != addr || outer_daddr != isaddr {
            return Err(DropReason::NatUnsupported);
        }
    }
    let icmp_csum = icmp_off + 2;
    // The inner L4 checksum, when quoted (UDP's may be zero: left alone).
    let l4_csum_off = match proto {
        IPPROTO_ICMP => Some(il4 + 2),
        IPPROTO_UDP if u16::from_ne_bytes([h[6], h[7]]) != 0 => Some(il4 + 6),
        IPPROTO_UDP => None,
        _ if message_end(ctx)? >= il4 + 18 => Some(il4 + 16),
        _ => None,
    };
    // The error travels the reverse way of the quoted packet: the flow's
    // DNAT turns into the inner source and the outer destination.
    if e.flags & CT_F_DNAT != 0 {
        fix_inner(
            ctx,
            ip_off + 16,
            inner_off,
            12,
            sport_off,
            isaddr,
            e.new_daddr_be,
            isport,
            e.new_dport_be,
            proto,
            l4_csum_off,
            icmp_csum,
        )?;
    }
    if e.flags & CT_F_SNAT != 0 {
        fix_inner(
            ctx,
            ip_off + 12,
            inner_off,
            16,
            dport_off,
            idaddr,
            e.new_saddr_be,
            idport,
            e.new_sport_be,
            proto,
            l4_csum_off,
            icmp_csum,
        )?;
    }
    // About the host's own echo: the host's.
    if e.flags & CT_F_HOST != 0 {
        return Ok(TC_ACT_OK);
    }
    if e.flags & CT_F_TO_ENDPOINT != 0 {
        let dst = if e.flags & CT_F_DNAT != 0 {
            e.new_daddr_be
        } else {
            idaddr
        };
        return to_endpoint(ctx, dst);
    }
    let saddr: u32 = err(ctx.load(ip_off + 12))?;
    let daddr: u32 = err(ctx.load(ip_off + 16))?;
    let r = route(
        ctx,
        &RouteQuery {
            iif: ingress_ifindex(ctx),
            saddr_be: saddr,
            daddr_be: daddr,
            proto: IPPROTO_ICMP,
            tot_len: 0,
        },
    );
    forward(ctx, &r)
}

/// Where the ICMP message ends: at the outer IPv4 total length (checked
/// against the packet by the caller). Bytes past it are link padding, which
/// no checksum covers and nothing may rewrite.
#[inline(always)]
fn message_end(ctx: &TcContext) -> Result<usize, DropReason> {
    let tot: u16 = err(ctx.load(ETH_HLEN + 2))?;
    Ok(ETH_HLEN + u16::from_be(tot) as usize)
}

/// Rewrites one address (outer and inner) and one inner port of an ICMP
/// error, with every checksum they touch.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn fix_inner(
    ctx: &TcContext,
    outer_addr_off: usize,
    inner_off: usize,
    inner_addr_rel: usize,
    port_off: usize,
    old_addr: u32,
    new_addr: u32,
    old_port: u16,
    new_port: u16,
    proto: u8,
    l4_csum_off: Option<usize>,
    icmp_csum: usize,
) -> Result<(), DropReason> {
    use dnet_common::csum::{replace2, replace4};
    // Outer header: the address, with the outer IPv4 checksum.
    let outer_old: u32 = err(ctx.load(outer_addr_off))?;
    err(ctx.l3_csum_replace(ETH_HLEN + 10, outer_old as u64, new_addr as u64, 4))?;
    err(ctx.store(outer_addr_off, &new_addr, 0))?;
    // Inner address, and the inner IPv4 checksum it changes; both are part
    // of the ICMP payload, so the ICMP checksum follows each.
    if old_addr != new_addr {
        let c_old: u16 = err(ctx.load(inner_off + 10))?;
        let c_new = replace4(
            u16::from_be(c_old),
            u32::from_be(old_addr),
            u32::from_be(new_addr),
        )
        .to_be();
        err(ctx.store(inner_off + inner_addr_rel, &new_addr, 0))?;
        err(ctx.store(inner_off + 10, &c_new, 0))?;
        err(ctx.l4_csum_replace(icmp_csum, old_addr as u64, new_addr as u64, 4))?;
        err(ctx.l4_csum_replace(icmp_csum, c_old as u64, c_new as u64, 2))?;
    }
    if old_port != new_port {
        err(ctx.store(port_off, &new_port, 0))?;
        err(ctx.l4_csum_replace(icmp_csum, old_port as u64, new_port as u64, 2))?;
    }
    // The inner L4 checksum: its pseudo-header holds the address (not for
    // ICMP), and it covers the port.
    if let Some(off) = l4_csum_off {
        let c_old: u16 = err(ctx.load(off))?;
        let mut c = u16::from_be(c_old);
        if proto != IPPROTO_ICMP {
            c = replace4(c, u32::from_be(old_addr), u32::from_be(new_addr));
        }
        c = replace2(c, u16::from_be(old_port), u16::from_be(new_port));
        let c_new = c.to_be();
        err(ctx.store(off, &c_new, 0))?;
        err(ctx.l4_csum_replace(icmp_csum, c_old as u64, c_new as u64, 2))?;
    }
    Ok(())
}
