//! Hairpin over IPv6 (issue 13): a container reaching a port published
//! over IPv6 at the uplink's IPv6 address (`[uplink6]:H`), from the same
//! network or another, reaches the publishing container, as IPv4's hairpin
//! (`nat::new_hairpin`) does. The flow is translated both ways, so that
//! the answers come back through the datapath:
//!
//! | entry keyed by | rewrite | deliver |
//! |---|---|---|
//! | A:a → U6:h | source G6:n (the backend's gateway, a NAT port), destination B:b | into B |
//! | B:b → G6:n | source U6:h, destination A:a | into A |
//!
//! One program of its own, `lxc6_hairpin` (slot `PROG_SLOT_HAIRPIN6`),
//! tail-called by `lxc6_from_container` for TCP and UDP to the uplink's
//! IPv6 address (a new flow, or a flow under way) and to the container's
//! own IPv6 gateway (a hairpin flow's answers): its stack is full. A
//! packet that belongs to no hairpin flow and opens none goes up the host
//! stack, as it did before. ICMPv6 errors about a hairpin flow, which
//! either container sends to the address it sees the other at (its
//! gateway, or the uplink's address), are translated into the other by
//! `icmp6_error`, as NAT66's are.

use aya_ebpf::programs::TcContext;
use dnet_common::{
    Config, CtEntry6, CtKey6, DropReason, Endpoint, Ip6, Service6, ServiceKey6,
    nat::{CT_F_DNAT, CT_F_PUBLISHED, CT_F_REPLY_TO_ENDPOINT, CT_F_SNAT, CT_F_TO_ENDPOINT},
    network::NET_F_INTERNAL,
    tcp::Seg,
};

use crate::{
    ct::{self, XlateOf},
    eth::ETH_HLEN,
    fib,
    ipv6::{self, IPV6_HLEN, Ipv6Hdr, addr_eq},
    l4::{self, IPPROTO_TCP, IPPROTO_UDP},
    lxc,
    maps::{EP_BY_IF, EP6_BY_IP, SERVICES6},
    nat,
    nat6::{self, Xlate6},
    ptr::ptr_at,
    stats::drop,
    verdict::TC_ACT_OK,
};

/// `lxc6_hairpin`: tail-called by `lxc6_from_container`.
#[inline(always)]
pub fn from_container_tail(ctx: &TcContext) -> i32 {
    // SAFETY: map values are only read; userspace replaces them whole.
    // Borrowed, not copied: this program's stack is full.
    let Some(ep) = (unsafe { EP_BY_IF.get(&lxc::ifindex(ctx)) }) else {
        return drop(0, DropReason::UnknownEndpoint);
    };
    match from_container(ctx, ep) {
        Ok(v) => v,
        Err(reason) => drop(ep.slot, reason),
    }
}

/// The endpoint whose IPv6 address is `addr`, borrowed from the map.
#[inline(always)]
fn endpoint6_at(addr: &[u8; 16]) -> Option<&'static Endpoint> {
    // SAFETY: `Ip6` is a `repr(C)` struct of the one `[u8; 16]`, so the
    // address is a valid key as it lies; map values are only read.
    unsafe { EP6_BY_IP.get(&*(addr as *const [u8; 16] as *const Ip6)) }
}

/// The port published over IPv6 at `addr`, `port_be` (or on every
/// address), borrowed from the map (`sock::service6` copies it).
#[inline(always)]
fn service6_at(addr: &[u8; 16], port_be: u16, proto: u8) -> Option<&'static Service6> {
    let mut k = ServiceKey6 {
        addr: *addr,
        port_be,
        proto,
        _pad: 0,
    };
    // SAFETY: read-only map access to plain data.
    unsafe {
        if let Some(s) = SERVICES6.get(&k) {
            return Some(s);
        }
        k.addr = [0; 16];
        SERVICES6.get(&k)
    }
}

#[inline(always)]
fn from_container(ctx: &TcContext, ep: &Endpoint) -> Result<i32, DropReason> {
    // What the caller checked that this program relies on, checked again
    // (it must not trust that it was reached that way only): the source
    // MAC and IPv6 address are the endpoint's, the destination is its
    // gateway or the uplink's address, the network is not internal.
    let (me, net6) = ipv6::tail_checked(ctx, ep)?;
    let ip: *const Ipv6Hdr = ptr_at(ctx, ETH_HLEN).map_err(|_| DropReason::Malformed)?;
    // SAFETY: as above.
    let ip = unsafe { &*ip };
    if !ip.is_valid((ctx.len() as usize).saturating_sub(ETH_HLEN)) {
        return Err(DropReason::Malformed);
    }
    if !addr_eq(&ip.saddr, &me.addr) {
        return Err(DropReason::SpoofedIp);
    }
    let to_gateway = addr_eq(&ip.daddr, &net6.gateway);
    let internal = lxc::network(ep.net_id)?.flags & NET_F_INTERNAL != 0;
    let cfg = nat6::config6();
    let to_uplink = cfg.is_some_and(|c| addr_eq(&ip.daddr, &c.uplink_addr6));
    if !to_gateway && !to_uplink {
        return Err(DropReason::NoRoute);
    }
    // An internal network translates nothing: its gateway is the host's,
    // the uplink beyond its reach.
    if internal {
        return if to_gateway {
            Ok(TC_ACT_OK)
        } else {
            Err(DropReason::Internal)
        };
    }
    let Some(cfg) = cfg else {
        return Ok(TC_ACT_OK);
    };
    let hop_limit = ip.hop_limit;
    let end = ETH_HLEN + IPV6_HLEN + ip.payload_len();
    let s = nat6::scratch().ok_or(DropReason::Malformed)?;
    let at = nat6::l4_at(ctx, s, ip, end)?;
    let key = &mut s.key;
    // Fragments and other protocols: the host's, as IPv4's.
    let l4::Tuple::Flow(l4) = nat6::parse::<{ nat6::WHOLE }>(ctx, ip, &at, end, key) else {
        return Ok(TC_ACT_OK);
    };
    let seg = l4::seg_to(ctx, Some(&l4), key.proto, || end)?;
    let e = match ct::lookup(key, seg)? {
        Some(e) if e.flags & CT_F_TO_ENDPOINT != 0 => e,
        // No flow of a container's goes to the host's own addresses
        // otherwise; whatever it is, it is the host's.
        Some(_) => return Ok(TC_ACT_OK),
        None => {
            if !to_uplink
                || (key.proto != IPPROTO_TCP && key.proto != IPPROTO_UDP)
                || !ct::opens_flow(key.proto, l4.tcp_flags)
            {
                return Ok(TC_ACT_OK);
            }
            // Not published (on this address or on all): the host's own
            // port.
            let Some(svc) = service6_at(&key.daddr_be, key.dport_be, key.proto) else {
                return Ok(TC_ACT_OK);
            };
            // A packet that dies here takes no port.
            if hop_limit <= 1 {
                return Err(DropReason::TtlExceeded);
            }
            new_hairpin(cfg, key, &mut s.fwd, svc, seg)?
        }
    };
    if hop_limit <= 1 {
        return Err(DropReason::TtlExceeded);
    }
    let to = if e.flags & CT_F_DNAT != 0 {
        endpoint6_at(&e.new_daddr_be)
    } else {
        None
    }
    .ok_or(DropReason::NoEndpoint)?;
    nat6::rewrite(ctx, &l4, key, &e)?;
    nat::into_endpoint(ctx, to, fib::dec_hop_limit)
}

/// A new hairpin flow from a container (`key`) to the port published as
/// `svc`: to the backend's IPv6 address and port, from the backend's IPv6
/// gateway and a free NAT port (charged to the opener's limits), its first
/// entry built in `fwd`. The backend sees a source it answers through the
/// datapath, as IPv4's hairpin gives it.
#[inline(always)]
fn new_hairpin(
    cfg: &Config,
    key: &CtKey6,
    fwd: &mut CtEntry6,
    svc: &Service6,
    seg: &Seg,
) -> Result<Xlate6, DropReason> {
    let backend = endpoint6_at(&svc.backend).ok_or(DropReason::NoEndpoint)?;
    // What delivery would refuse (`nat::into_endpoint`), refused before the
    // flow takes an entry, a port and a charge.
    nat::open_network(backend)?;
    let net6 = ipv6::network6(backend.net_id).ok_or(DropReason::NoEndpoint)?;
    ct::entry_into(
        fwd,
        net6.gateway,
        0,
        svc.backend,
        svc.backend_port_be,
        CT_F_SNAT | CT_F_DNAT | CT_F_TO_ENDPOINT | CT_F_PUBLISHED | CT_F_REPLY_TO_ENDPOINT,
        backend.addr_be,
        seg,
    );
    nat::claim_charged(cfg, key, fwd)?;
    Ok(XlateOf::of(fwd))
}
