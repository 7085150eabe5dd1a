//! The program on the uplink's tcx ingress: answers of translated flows, and
//! new flows to published ports, go straight into their containers; every
//! other packet goes on to the host stack untouched, but one from an
//! address of dnet's networks, which is spoofed (whatever its destination). A tagged frame belongs
//! to a VLAN on the uplink's link, not to the uplink's own network (nor to
//! dnet): the host's. A packet whose TTL runs out at dnet's hop gets "time
//! exceeded" from the uplink's address.
//!
//! The program on the uplink's tcx egress keeps the host's own ICMP and
//! ICMPv6 echo identifiers apart from the containers' (`CT_F_HOST`; IPv6's
//! in `nat6::to_uplink`).

use aya_ebpf::{maps::lpm_trie::Key, programs::TcContext};
use dnet_common::{DropReason, maps::PROG_SLOT_FROM_UPLINK6, nat::CT_F_HOST};

use crate::{
    ct,
    eth::{ETH_HLEN, ETH_P_IP, ETH_P_IPV6, EthHdr},
    icmp_error,
    icmp_reply::{self, IcmpError},
    ipv4::Ipv4Hdr,
    l4::{self, ICMP_ECHO, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, Parsed},
    maps::{PROGS, SUBNETS},
    nat,
    ptr::ptr_at,
    stats::drop,
    verdict::TC_ACT_OK,
};

/// tcx ingress of the uplink.
#[inline(always)]
pub fn from_uplink(ctx: &TcContext) -> i32 {
    match try_from_uplink(ctx) {
        Ok(v) => v,
        Err(reason) => drop(0, reason),
    }
}

#[inline(always)]
fn try_from_uplink(ctx: &TcContext) -> Result<i32, DropReason> {
    let Some(cfg) = nat::config() else {
        return Ok(TC_ACT_OK);
    };
    // SAFETY: reading a field of the context the kernel passed.
    if unsafe { (*ctx.skb.skb).vlan_present } != 0 {
        return Ok(TC_ACT_OK);
    }
    let Some(ip) = ipv4_of(ctx) else {
        if is_ipv6(ctx) {
            // SAFETY: the tail call jumps to `host6_from_uplink` with the
            // same context, or returns when the slot is empty.
            unsafe { PROGS.tail_call(ctx, PROG_SLOT_FROM_UPLINK6) };
        }
        return Ok(TC_ACT_OK);
    };
    // dnet's networks live behind its veths: a source of theirs on the
    // uplink is spoofed, whatever its destination. For the uplink's address
    // it would find a hairpin flow (keyed by its container's tuple to the
    // uplink's address) and speak into it; for a gateway (on `lo`, which
    // the host accepts on any interface) it would speak to dnet's
    // resolver as that container.
    if SUBNETS.get(Key::new(32, ip.saddr_be)).is_some() {
        return Err(DropReason::SpoofedIp);
    }
    // Only packets for the uplink's address can belong to dnet; the host's
    // own traffic is not dnet's to judge.
    if ip.daddr_be != cfg.uplink_addr_be {
        return Ok(TC_ACT_OK);
    }
    match l4::parse(ctx, ETH_HLEN, &ip) {
        Parsed::Flow(key, l4) => {
            let seg = l4::seg(ctx, Some(&l4), key.proto)?;
            let e = ct::lookup(&key, seg)?;
            let svc = match e {
                Some(_) => None,
                None if (key.proto == IPPROTO_TCP || key.proto == IPPROTO_UDP)
                    && ct::opens_flow(key.proto, l4.tcp_flags)
                    && l4.frag != l4::FRAG_LATER =>
                {
                    nat::service(key.daddr_be, key.dport_be, key.proto)
                }
                None => None,
            };
            if e.is_none() && svc.is_none() {
                return Ok(TC_ACT_OK);
            }
            // dnet routes it to a container: a TTL that runs out here is
            // answered from the uplink's address, the hop the sender sees.
            // A new flow that dies here takes no entry. (An answer to the
            // host's own echo is the host's, not routed.)
            if ip.ttl <= 1 && e.is_none_or(|e| e.flags & CT_F_HOST == 0) {
                return Ok(icmp_reply::reply(
                    ctx,
                    IcmpError::TimeExceeded,
                    cfg.uplink_ifindex,
                    0,
                    cfg.uplink_addr_be,
                ));
            }
            let e = match (e, svc) {
                (Some(e), _) => e,
                (None, Some(svc)) => {
                    let ep = nat::endpoint_at(svc.backend_be);
                    if !nat::may_publish_to(key.saddr_be) {
                        let slot = ep.map_or(0, |ep| ep.slot);
                        return Ok(drop(slot, DropReason::SourceNotAllowed));
                    }
                    // What delivery would refuse (`nat::to_endpoint`),
                    // refused before the flow takes an entry.
                    nat::open_network(&ep.ok_or(DropReason::NoEndpoint)?)?;
                    nat::new_dnat(&cfg, &key, svc.backend_be, svc.backend_port_be, seg)?
                }
                (None, None) => return Ok(TC_ACT_OK),
            };
            nat::translate_and_deliver(ctx, &l4, &key, &e)
        }
        Parsed::IcmpError(off) => icmp_error::icmp_error(ctx, off, None),
        // Other protocols, and fragments of no translated datagram, are
        // the host's.
        _ => Ok(TC_ACT_OK),
    }
}

/// An IPv6 frame (NAT66's answers: `nat6`, a program of its own).
#[inline(always)]
fn is_ipv6(ctx: &TcContext) -> bool {
    // SAFETY: `ptr_at` checked the header is in the packet.
    ptr_at::<EthHdr>(ctx, 0).is_ok_and(|eth| unsafe { (*eth).proto() } == ETH_P_IPV6)
}

/// The IPv4 header (copied) of an IPv4 frame whose header is whole and
/// valid for the packet's length; `None` for anything else, which the
/// uplink's programs leave to the host.
#[inline(always)]
fn ipv4_of(ctx: &TcContext) -> Option<Ipv4Hdr> {
    let eth = ptr_at::<EthHdr>(ctx, 0).ok()?;
    // SAFETY: `ptr_at` checked the header is in the packet.
    if unsafe { (*eth).proto() } != ETH_P_IP {
        return None;
    }
    let ip = ptr_at::<Ipv4Hdr>(ctx, ETH_HLEN).ok()?;
    // SAFETY: as above.
    let ip = unsafe { *ip };
    ip.is_valid((ctx.len() as usize).saturating_sub(ETH_HLEN))
        .then_some(ip)
}

/// tcx egress of the uplink: an ICMP echo request the host itself sends
/// from the uplink's address takes its identifier through the conntrack
/// table, as a container's does (see `nat::new_host_echo`). Everything
/// else goes out untouched, and so does every packet dnet forwards: those
/// came in on an interface, the host's own did not.
#[inline(always)]
pub fn to_uplink(ctx: &TcContext) -> i32 {
    match try_to_uplink(ctx) {
        Ok(v) => v,
        Err(reason) => drop(0, reason),
    }
}

#[inline(always)]
fn try_to_uplink(ctx: &TcContext) -> Result<i32, DropReason> {
    // SAFETY: reading a field of the context the kernel passed.
    if unsafe { (*ctx.skb.skb).ingress_ifindex } != 0 {
        return Ok(TC_ACT_OK);
    }
    let Some(ip) = ipv4_of(ctx) else {
        if is_ipv6(ctx) {
            return crate::nat6::to_uplink(ctx);
        }
        return Ok(TC_ACT_OK);
    };
    if ip.proto != IPPROTO_ICMP {
        return Ok(TC_ACT_OK);
    }
    let Some(cfg) = nat::config() else {
        return Ok(TC_ACT_OK);
    };
    if ip.saddr_be != cfg.uplink_addr_be {
        return Ok(TC_ACT_OK);
    }
    let Parsed::Flow(key, l4) = l4::parse(ctx, ETH_HLEN, &ip) else {
        return Ok(TC_ACT_OK);
    };
    if l4.icmp_type != ICMP_ECHO {
        return Ok(TC_ACT_OK);
    }
    let e = match ct::lookup(&key, l4::seg(ctx, Some(&l4), key.proto)?)? {
        Some(e) => e,
        None => nat::new_host_echo(&cfg, &key)?,
    };
    nat::rewrite(ctx, ETH_HLEN, &l4, &key, &e)?;
    Ok(TC_ACT_OK)
}
