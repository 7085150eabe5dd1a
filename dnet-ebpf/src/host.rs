//! The program on the uplink's tcx ingress: answers of translated flows, and
//! new flows to published ports, go straight into their containers; every
//! other packet goes on to the host stack untouched.

use aya_ebpf::programs::TcContext;
use dnet_common::DropReason;

use crate::{
    eth::{ETH_HLEN, ETH_P_IP, EthHdr},
    ipv4::Ipv4Hdr,
    l4::{self, IPPROTO_TCP, IPPROTO_UDP, Parsed},
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
    let Ok(eth) = ptr_at::<EthHdr>(ctx, 0) else {
        return Ok(TC_ACT_OK);
    };
    // SAFETY: `ptr_at` checked the header is in the packet.
    if unsafe { (*eth).proto() } != ETH_P_IP {
        return Ok(TC_ACT_OK);
    }
    let Ok(ip) = ptr_at::<Ipv4Hdr>(ctx, ETH_HLEN) else {
        return Ok(TC_ACT_OK);
    };
    // SAFETY: as above.
    let ip = unsafe { *ip };
    // Only packets for the uplink's address can belong to dnet; the host's
    // own traffic is not dnet's to judge.
    if ip.daddr_be != cfg.uplink_addr_be
        || !ip.is_valid((ctx.len() as usize).saturating_sub(ETH_HLEN))
    {
        return Ok(TC_ACT_OK);
    }
    match l4::parse(ctx, ETH_HLEN, &ip) {
        Parsed::Flow(key, l4) => {
            if let Some(e) = nat::lookup(&key, l4.tcp_flags) {
                return nat::translate_and_deliver(ctx, &l4, &key, &e);
            }
            if (key.proto == IPPROTO_TCP || key.proto == IPPROTO_UDP)
                && nat::opens_flow(key.proto, l4.tcp_flags)
            {
                if let Some(svc) = nat::service(key.daddr_be, key.dport_be, key.proto) {
                    let e = nat::new_dnat(&key, svc.backend_be, svc.backend_port_be, l4.tcp_flags)?;
                    return nat::translate_and_deliver(ctx, &l4, &key, &e);
                }
            }
            Ok(TC_ACT_OK)
        }
        Parsed::IcmpError(off) => nat::icmp_error(ctx, off, None),
        // Fragments and other protocols are the host's (a translated flow
        // never fragments: containers get the uplink's MTU and do PMTU
        // discovery).
        _ => Ok(TC_ACT_OK),
    }
}
