//! The programs on a container's host-side veth, direct-action cls_bpf
//! filters of its clsact qdisc: what the container sends (tc ingress) and
//! what the host stack sends into it (tc egress).
//!
//! From the container, in order:
//! 1. the frame must carry no VLAN tag, and its source MAC must be the
//!    endpoint's own;
//! 2. ARP requests are answered here, for the gateway and for the network's
//!    endpoints; any other ARP is dropped, so a container cannot poison a
//!    neighbour's cache;
//! 3. IPv4 must carry the endpoint's own source address (IPv6, for a
//!    dual-stack endpoint, takes the same steps in `ipv6`, with NDP in
//!    place of ARP);
//! 4. broadcast and multicast fan out to the network's other members;
//! 5. a destination endpoint of the same network gets the packet straight
//!    into its namespace (`bpf_redirect_peer`); one of another network, or an
//!    unused address of a dnet subnet, is dropped;
//! 6. a packet of a translated flow (an answer to a published port, an
//!    outbound flow already under way) is rewritten and delivered;
//! 7. the gateway and other host addresses go up the host stack; a
//!    published port on the uplink's address is reached by hairpin NAT;
//! 8. the world, through the uplink, gets a new flow translated to the
//!    uplink's address (source NAT), unless the network is internal or the
//!    uplink has no address (then nothing leaves, untranslated or not).
//!
//! Where the datapath routes (6 to 8), it answers as a router: a TTL that
//! runs out gets "time exceeded" and a packet too big for the next link
//! "fragmentation needed", from the network's gateway (`icmp_reply`).
//!
//! Into the container (tc egress) goes only what the datapath sent there
//! (ARP answers, ICMP errors, broadcast copies of the network's members)
//! and what the host itself sends; a packet the host's kernel forwarded
//! from another interface is dropped (`host-forwarded`), as is a tagged
//! one.

use aya_ebpf::{
    helpers::generated::{bpf_redirect, bpf_redirect_peer},
    maps::lpm_trie::Key,
    programs::TcContext,
};
use dnet_common::{
    DropReason, Endpoint, Network,
    maps::PROG_SLOT_FROM_CONTAINER6,
    network::{NET_F_INTERNAL, NET_F_NO_ICC},
};

use crate::{
    arp::{ARPOP_REPLY, ARPOP_REQUEST, ArpHdr},
    ct,
    eth::{ETH_HLEN, ETH_P_8021AD, ETH_P_8021Q, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, EthHdr, mac_eq},
    fanout,
    fib::{self, Route, RouteQuery},
    icmp_error,
    icmp_reply::{self, IcmpError},
    ipv4::{self, Ipv4Hdr},
    l4::{
        self, ICMP_DEST_UNREACH, ICMP_ECHO, ICMP_PARAMETERPROB, ICMP_TIME_EXCEEDED, IPPROTO_ICMP,
        IPPROTO_TCP, IPPROTO_UDP, Parsed,
    },
    maps::{EP_BY_IF, EP_BY_IP, NETWORKS, PROGS, SUBNETS},
    nat,
    ptr::ptr_at,
    stats::{count_rx, count_translated, count_tx, drop},
    verdict::{TC_ACT_OK, TC_ACT_REDIRECT},
};

/// The interface the packet is on.
#[inline(always)]
pub(crate) fn ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: `ctx.skb.skb` is the context pointer the kernel passed to the
    // program; reading a field of `__sk_buff` is the access the verifier
    // rewrites into a read of the real skb.
    unsafe { (*ctx.skb.skb).ifindex }
}

#[inline(always)]
pub(crate) fn endpoint_of(ifindex: u32) -> Option<Endpoint> {
    // SAFETY: map values are only read here; a concurrent update from
    // userspace replaces the value whole, and `Endpoint` is plain data.
    unsafe { EP_BY_IF.get(&ifindex).copied() }
}

#[inline(always)]
fn endpoint_at(addr_be: u32) -> Option<Endpoint> {
    // SAFETY: as in `endpoint_of`.
    unsafe { EP_BY_IP.get(&addr_be).copied() }
}

/// Not TC verdicts: what `try_from_container` returns where dnet answers
/// the packet as its router. The answer is built in one place, at the end,
/// where the frame holds little else.
const ANSWER_TIME_EXCEEDED: i32 = -100;
/// The MTU is the last route lookup's (`fib::route_mtu`).
const ANSWER_FRAG_NEEDED: i32 = -101;

/// tc ingress (cls_bpf) of the host-side veth.
#[inline(always)]
pub fn from_container(ctx: &TcContext) -> i32 {
    let Some(ep) = endpoint_of(ifindex(ctx)) else {
        return drop(0, DropReason::UnknownEndpoint);
    };
    count_rx(ep.slot, ctx.len());
    let err = match try_from_container(ctx, &ep) {
        Ok(ANSWER_TIME_EXCEEDED) => IcmpError::TimeExceeded,
        Ok(ANSWER_FRAG_NEEDED) => IcmpError::FragNeeded(fib::route_mtu()),
        Ok(verdict) => return verdict,
        Err(reason) => return drop(ep.slot, reason),
    };
    // From the gateway: the hop the container sees.
    match network(ep.net_id) {
        Ok(net) => icmp_reply::reply(ctx, err, ep.ifindex, ep.slot, net.gateway_be),
        Err(reason) => drop(ep.slot, reason),
    }
}

/// The packet carries an 802.1Q/802.1ad tag in its metadata (the kernel
/// moves a frame's outer tag there before tc runs, and keeps it there on
/// the way out).
#[inline(always)]
pub(crate) fn vlan_tagged(ctx: &TcContext) -> bool {
    // SAFETY: as in `ifindex`.
    unsafe { (*ctx.skb.skb).vlan_present != 0 }
}

/// tc egress (cls_bpf) of the host-side veth: what goes into the container. The
/// host's own packets have no ingress interface; dnet's ARP answers and
/// ICMP errors come back through this veth; broadcast copies come from
/// another member of the network. Anything else the host's kernel
/// forwarded here from another interface (`ip_forward` on, a LAN host
/// routing a dnet subnet to the host): it would reach unpublished ports
/// and internal networks, so it is dropped.
#[inline(always)]
pub fn to_container(ctx: &TcContext) -> i32 {
    let Some(ep) = endpoint_of(ifindex(ctx)) else {
        return TC_ACT_OK;
    };
    // SAFETY: as in `ifindex`.
    let iif = unsafe { (*ctx.skb.skb).ingress_ifindex };
    if iif != 0 && iif != ep.ifindex && endpoint_of(iif).is_none_or(|from| from.net_id != ep.net_id)
    {
        return drop(ep.slot, DropReason::HostForwarded);
    }
    if vlan_tagged(ctx) {
        return drop(ep.slot, DropReason::VlanTagged);
    }
    count_tx(ep.slot, ctx.len());
    TC_ACT_OK
}

#[inline(always)]
fn try_from_container(ctx: &TcContext, ep: &Endpoint) -> Result<i32, DropReason> {
    // A tag would ride along wherever the packet goes (out of the uplink
    // too: VLAN hopping on a trunk).
    if vlan_tagged(ctx) {
        return Err(DropReason::VlanTagged);
    }
    let eth: *mut EthHdr = ptr_at(ctx, 0).map_err(|_| DropReason::Malformed)?;
    // SAFETY: `ptr_at` checked that the header lies inside the packet.
    let eth = unsafe { &mut *eth };
    if !mac_eq(&eth.src, &ep.mac) {
        return Err(DropReason::SpoofedMac);
    }
    match eth.proto() {
        ETH_P_IP => from_container_ipv4(ctx, ep, eth),
        ETH_P_ARP => arp_respond(ctx, ep, eth),
        // Dropped (`ipv6`) unless the endpoint and its network are
        // dual-stack.
        // (A program of its own: this one's stack is full.)
        ETH_P_IPV6 => {
            // SAFETY: the tail call jumps to `lxc6_from_container` with the
            // same context, or returns when the slot is empty.
            unsafe { PROGS.tail_call(ctx, PROG_SLOT_FROM_CONTAINER6) };
            Err(DropReason::Ipv6)
        }
        // An inner tag still in the frame (the outer one was stripped).
        ETH_P_8021Q | ETH_P_8021AD => Err(DropReason::VlanTagged),
        _ => Err(DropReason::UnknownL3),
    }
}

#[inline(always)]
pub(crate) fn network(net_id: u32) -> Result<&'static Network, DropReason> {
    NETWORKS
        .get(net_id)
        .filter(|n| n.active != 0)
        .ok_or(DropReason::UnknownEndpoint)
}

/// Answers an ARP request in place and sends the reply back to the asker.
#[inline(always)]
fn arp_respond(ctx: &TcContext, ep: &Endpoint, eth: &mut EthHdr) -> Result<i32, DropReason> {
    let arp: *mut ArpHdr = ptr_at(ctx, ETH_HLEN).map_err(|_| DropReason::Malformed)?;
    // SAFETY: `ptr_at` checked that the header lies inside the packet.
    let arp = unsafe { &mut *arp };
    if !arp.is_ipv4_over_ether() {
        return Err(DropReason::Malformed);
    }
    if arp.op() != ARPOP_REQUEST {
        return Err(DropReason::ArpReply);
    }
    let spa = arp.spa_be;
    let tpa = arp.tpa_be;
    if !mac_eq(&arp.sha, &ep.mac) || spa != ep.addr_be {
        return Err(DropReason::ArpSpoofed);
    }
    if tpa == spa {
        // Gratuitous ARP: announces rather than asks.
        return Err(DropReason::ArpReply);
    }
    let net = network(ep.net_id)?;
    let mac = if tpa == net.gateway_be {
        net.gateway_mac
    } else {
        match endpoint_at(tpa) {
            Some(t) if t.net_id == ep.net_id => t.mac,
            _ => return Err(DropReason::ArpUnknownTarget),
        }
    };
    arp.op_be = ARPOP_REPLY.to_be();
    arp.tha = arp.sha;
    arp.tpa_be = spa;
    arp.sha = mac;
    arp.spa_be = tpa;
    eth.dst = eth.src;
    eth.src = mac;
    // SAFETY: a helper call with plain integer arguments.
    Ok(unsafe { bpf_redirect(ep.ifindex, 0) } as i32)
}

/// An ICMP error a container sends must be about a packet it was sent:
/// the quoted header's destination is the container and its source the
/// error's destination (a flow through NAT is also checked against
/// conntrack later). An error about anything else, a peer's or the host's
/// flow, is dropped (`icmp-error-forged`), so no container speaks into
/// another's flows. Other ICMP, and a header too short to tell, pass on
/// to the checks that follow.
#[inline(always)]
fn error_quote_is_own(ctx: &TcContext, ip: &Ipv4Hdr, ep: &Endpoint) -> Result<(), DropReason> {
    let off = ETH_HLEN + ip.hlen();
    let Ok(kind) = ctx.load::<u8>(off) else {
        return Ok(());
    };
    if !matches!(
        kind,
        ICMP_DEST_UNREACH | ICMP_TIME_EXCEEDED | ICMP_PARAMETERPROB
    ) {
        return Ok(());
    }
    // The quoted IPv4 header follows the 8-byte ICMP header.
    let quote = off + 8;
    let qsrc: u32 = ctx
        .load(quote + 12)
        .map_err(|_| DropReason::IcmpErrorForged)?;
    let qdst: u32 = ctx
        .load(quote + 16)
        .map_err(|_| DropReason::IcmpErrorForged)?;
    if qdst == ep.addr_be && qsrc == ip.daddr_be {
        Ok(())
    } else {
        Err(DropReason::IcmpErrorForged)
    }
}

#[inline(always)]
fn from_container_ipv4(
    ctx: &TcContext,
    ep: &Endpoint,
    eth: &mut EthHdr,
) -> Result<i32, DropReason> {
    let ip: *const Ipv4Hdr = ptr_at(ctx, ETH_HLEN).map_err(|_| DropReason::Malformed)?;
    // SAFETY: `ptr_at` checked that the fixed header lies inside the packet.
    let ip = unsafe { &*ip };
    // Checked against the whole packet, not the linear part, so that GSO
    // packets with paged data pass.
    let avail = (ctx.len() as usize).saturating_sub(ETH_HLEN);
    if !ip.is_valid(avail) {
        return Err(DropReason::Malformed);
    }
    if ip.saddr_be != ep.addr_be {
        return Err(DropReason::SpoofedIp);
    }
    // A first fragment or a whole datagram: its ICMP header is here.
    if ip.proto == IPPROTO_ICMP && u16::from_be(ip.frag_off_be) & 0x1fff == 0 {
        error_quote_is_own(ctx, ip, ep)?;
    }
    let daddr = ip.daddr_be;
    let net = network(ep.net_id)?;

    let broadcast = net.subnet_be | !net.mask_be;
    if daddr == broadcast || daddr == ipv4::LIMITED_BROADCAST_BE || ipv4::is_multicast(daddr) {
        return fan_out(ctx, ep, net);
    }

    if let Some(dst) = endpoint_at(daddr) {
        return to_peer(ctx, ep, net, eth, &dst);
    }

    // Beyond the network: flows the datapath translates come first. An
    // internal network has none (nothing of its may be translated, even if
    // a flow or a published port says otherwise).
    let ipc = *ip;
    let parsed = l4::parse(ctx, ETH_HLEN, &ipc);
    if net.flags & NET_F_INTERNAL == 0 {
        match &parsed {
            Parsed::Flow(key, l4) => {
                if let Some(e) = ct::lookup(key, l4::seg(ctx, Some(l4), key.proto)?)? {
                    if ipc.ttl <= 1 {
                        return Ok(ANSWER_TIME_EXCEEDED);
                    }
                    return match nat::translate_and_deliver(ctx, l4, key, &e) {
                        Err(DropReason::FragNeeded) => Ok(ANSWER_FRAG_NEEDED),
                        r => r,
                    };
                }
            }
            Parsed::IcmpError(off) => {
                // An error about a flow from the world to a published port.
                let v = icmp_error::icmp_error(ctx, *off, Some(ep.addr_be))?;
                if v != TC_ACT_OK {
                    return Ok(v);
                }
            }
            _ => {}
        }
    }

    if let Some(owner) = SUBNETS.get(Key::new(32, daddr)) {
        let owner = *owner;
        if daddr == net.gateway_be {
            return Ok(TC_ACT_OK);
        }
        if owner != ep.net_id {
            // Another network's gateway is a host address like any other.
            if network(owner)
                .map(|n| n.gateway_be == daddr)
                .unwrap_or(false)
            {
                return outside(net);
            }
            return Err(DropReason::CrossNetwork);
        }
        return Err(DropReason::NoEndpoint);
    }
    outside(net)?;
    let cfg = nat::config();
    if let Some(cfg) = &cfg
        && daddr == cfg.uplink_addr_be
    {
        // Hairpin: a published port of the host, from a container.
        if let Parsed::Flow(key, l4) = &parsed
            && (key.proto == IPPROTO_TCP || key.proto == IPPROTO_UDP)
            && ct::opens_flow(key.proto, l4.tcp_flags)
            && l4.frag != l4::FRAG_LATER
            && let Some(svc) = nat::service(daddr, key.dport_be, key.proto)
        {
            if ipc.ttl <= 1 {
                return Ok(ANSWER_TIME_EXCEEDED);
            }
            let backend = nat::endpoint_at(svc.backend_be).ok_or(DropReason::NoEndpoint)?;
            let seg = l4::seg(ctx, Some(l4), key.proto)?;
            let e = nat::new_hairpin(cfg, key, &backend, svc.backend_port_be, seg)?;
            return nat::translate_and_deliver(ctx, l4, key, &e);
        }
        return Ok(TC_ACT_OK);
    }
    // 0.0.0.0/8 is no destination (Linux's forwarding drops it as martian),
    // but the route lookup finds the default route for it.
    if daddr.to_ne_bytes()[0] == 0 {
        return Err(DropReason::NoRoute);
    }
    let route = fib::route(
        ctx,
        &RouteQuery {
            iif: ep.ifindex,
            saddr_be: ipc.saddr_be,
            daddr_be: daddr,
            proto: ipc.proto,
            tot_len: icmp_reply::mtu_len(ctx),
        },
    );
    match route {
        Route::Local => return Ok(TC_ACT_OK),
        Route::None => return Err(DropReason::NoRoute),
        _ => {}
    }
    // No address to translate to: dropped, never left to the host's kernel,
    // which would route it out untranslated.
    let Some(cfg) = cfg else {
        return Err(DropReason::NoNatAddress);
    };
    // dnet forwards, and translates, through the uplink only.
    if let Route::Out { ifindex, .. } = route
        && ifindex != cfg.uplink_ifindex
    {
        return Err(DropReason::NoRoute);
    }
    // Out through the uplink: a new flow, translated to the uplink's address.
    match parsed {
        Parsed::Flow(key, l4) => {
            if key.proto == IPPROTO_ICMP && l4.icmp_type != ICMP_ECHO {
                return Err(DropReason::NatUnsupported);
            }
            if !ct::opens_flow(key.proto, l4.tcp_flags) {
                return Err(DropReason::CtNoFlow);
            }
            // Its flow is gone (or its first fragment never came).
            if l4.frag == l4::FRAG_LATER {
                return Err(DropReason::Fragment);
            }
            // A packet that dies or does not fit here takes no port.
            if ipc.ttl <= 1 {
                return Ok(ANSWER_TIME_EXCEEDED);
            }
            // (A lookup that finds the packet too big names no interface:
            // the answer holds whichever way it would have gone.)
            if let Route::TooBig { .. } = route {
                return Ok(ANSWER_FRAG_NEEDED);
            }
            let e = nat::new_snat(&cfg, &key, l4::seg(ctx, Some(&l4), key.proto)?)?;
            nat::rewrite(ctx, ETH_HLEN, &l4, &key, &e)?;
            count_translated(ep.slot);
            fib::forward(ctx, &route)
        }
        Parsed::Fragment => Err(DropReason::Fragment),
        Parsed::Truncated => Err(DropReason::Malformed),
        Parsed::IcmpError(_) | Parsed::Other => Err(DropReason::NatUnsupported),
    }
}

/// East-west, either family: `dst`, the endpoint that holds the
/// destination address, gets the packet straight into its namespace if it
/// is of the sender's network and the network lets its members talk
/// (`icc`).
#[inline(always)]
pub(crate) fn to_peer(
    ctx: &TcContext,
    ep: &Endpoint,
    net: &Network,
    eth: &mut EthHdr,
    dst: &Endpoint,
) -> Result<i32, DropReason> {
    if dst.net_id != ep.net_id {
        return Err(DropReason::CrossNetwork);
    }
    if net.flags & NET_F_NO_ICC != 0 {
        return Err(DropReason::IccDisabled);
    }
    eth.dst = dst.mac;
    // Delivered into the peer's namespace: its host-side veth's egress
    // program never sees the packet, so it is counted here.
    count_tx(dst.slot, ctx.len());
    // SAFETY: a helper call with plain integer arguments.
    let verdict = unsafe { bpf_redirect_peer(dst.ifindex, 0) } as i32;
    if verdict == TC_ACT_REDIRECT {
        Ok(verdict)
    } else {
        Err(DropReason::RedirectFailed)
    }
}

/// A destination beyond the network: refused on an internal network.
#[inline(always)]
pub(crate) fn outside(net: &Network) -> Result<i32, DropReason> {
    if net.flags & NET_F_INTERNAL != 0 {
        return Err(DropReason::Internal);
    }
    Ok(TC_ACT_OK)
}

/// Broadcast and multicast: a copy to every other member of the network,
/// then up the host stack as a bridge would.
#[inline(always)]
pub(crate) fn fan_out(ctx: &TcContext, ep: &Endpoint, net: &Network) -> Result<i32, DropReason> {
    if net.flags & NET_F_NO_ICC == 0 {
        fanout::to_members(ctx, ep);
    }
    Ok(TC_ACT_OK)
}
