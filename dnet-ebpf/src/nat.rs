//! NAT: new flows (source NAT to the uplink, destination NAT to a
//! published port, hairpin) with the choice of their port, rewriting
//! headers with their checksums, and delivery.
//!
//! The map layout and the meaning of each entry are described in
//! `dnet_common::nat`.

use aya_ebpf::{
    bindings::BPF_F_PSEUDO_HDR, helpers::generated::bpf_redirect_peer, maps::lpm_trie::Key,
    programs::TcContext,
};
use dnet_common::{
    Config, CtEntryOf, CtKey, CtKeyOf, DropReason, Endpoint, ServiceKey,
    nat::{
        CT_F_COUNTED, CT_F_DNAT, CT_F_HOST, CT_F_PUBLISHED, CT_F_REPLY_TO_ENDPOINT, CT_F_SNAT,
        CT_F_TO_ENDPOINT, CT_SEEN, NAT_PORT_PROBES, nat_port_candidate, tuple_hash,
    },
    network::NET_F_INTERNAL,
    tcp::Seg,
};

use crate::{
    ct::{
        Family, InsertError, REUSE_GRACE_NS, REUSE_SETTLE_NS, Xlate, XlateOf, entry, entry_into,
        insert_flow, reclaim, reply_in_scratch,
    },
    err,
    eth::ETH_HLEN,
    fib::{Route, RouteQuery, dec_ttl, forward, ingress_ifindex, route},
    l4::{self, IPPROTO_ICMP, IPPROTO_TCP, L4},
    maps::{CONFIG, EP_BY_IP, NETWORKS, PUBLISH_FROM, PUBLISH_FROM6, SERVICES},
    quota::{charge, release},
    stats::{count_translated, count_tx},
    verdict::{TC_ACT_OK, TC_ACT_REDIRECT},
};

/// The NAT configuration, when there is an uplink to translate to.
#[inline(always)]
pub fn config() -> Option<Config> {
    CONFIG.get(0).copied().filter(|c| c.uplink_ifindex != 0)
}

#[inline(always)]
pub fn endpoint_at(addr_be: u32) -> Option<Endpoint> {
    // SAFETY: map values are only read; userspace replaces them whole.
    unsafe { EP_BY_IP.get(&addr_be).copied() }
}

/// A published port, by the address it was sent to or by any address.
#[inline(always)]
pub fn service(addr_be: u32, port_be: u16, proto: u8) -> Option<dnet_common::Service> {
    let mut k = ServiceKey {
        addr_be,
        port_be,
        proto,
        _pad: 0,
    };
    // SAFETY: read-only map access to plain data.
    unsafe {
        if let Some(s) = SERVICES.get(&k) {
            return Some(*s);
        }
        k.addr_be = 0;
        SERVICES.get(&k).copied()
    }
}

/// The world's `saddr_be` may open a flow to a published port (`dnet
/// daemon --publish-from`): one lookup per new flow, none per packet.
#[inline(always)]
pub fn may_publish_to(saddr_be: u32) -> bool {
    PUBLISH_FROM.get(Key::new(32, saddr_be)).is_some()
}

/// [`may_publish_to`] for an IPv6 source.
#[inline(always)]
pub fn may_publish_to6(saddr: [u8; 16]) -> bool {
    PUBLISH_FROM6.get(Key::new(128, saddr)).is_some()
}

/// Claims a source port for a flow whose first entry, but for the port,
/// is `fwd` (a source NAT to `fwd.new_saddr_be`): each candidate port's
/// reply tuple is taken only if it is free, so two flows never share one,
/// and a failed probe changes nothing. On success `fwd` is the first entry
/// as the map holds it: `Ok(true)` made here, `Ok(false)` the same flow
/// made meanwhile by another CPU.
///
/// The reply entry is built in the scratch map ([`reply_in_scratch`]): as
/// a subprogram, or with its entries on the stack, the programs that make
/// new flows outgrow the 512-byte stack.
#[inline(always)]
fn claim_port<A: Family>(
    cfg: &Config,
    key: &CtKeyOf<A>,
    fwd: &mut CtEntryOf<A>,
) -> Result<bool, DropReason> {
    let size = (cfg.nat_port_max as u32).saturating_sub(cfg.nat_port_min as u32) + 1;
    let hash = tuple_hash(key);
    // The first half of the probes leave a just-closed flow's port to its
    // peer; the second half take it after the short grace. A sequence
    // visits every port of the range before it repeats one, so each half
    // covers a range of up to half the probes. (A constant bound: one
    // that depends on the range would split the verifier's paths at every
    // probe.)
    for n in 0..NAT_PORT_PROBES {
        fwd.new_sport_be = nat_port_candidate(hash, n, cfg.nat_port_min, size).to_be();
        let s = reply_in_scratch(key, fwd).ok_or(DropReason::CtFull)?;
        // A closed TCP flow's port serves the next one.
        if key.proto == IPPROTO_TCP {
            let grace = if n < NAT_PORT_PROBES / 2 {
                REUSE_SETTLE_NS
            } else {
                REUSE_GRACE_NS
            };
            reclaim(s, grace);
        }
        match insert_flow(key, fwd, &s.rkey, &s.reply) {
            Ok(made) => return Ok(made),
            Err(InsertError::Full) => return Err(DropReason::CtFull),
            Err(InsertError::Exists) => {}
        }
    }
    Err(DropReason::NatPortsExhausted)
}

/// [`claim_port`] for a flow a container opens (`key.saddr_be`), charged
/// to its limits first (`quota`); the charge is given back unless the
/// flow was made here.
#[inline(always)]
pub fn claim_charged<A: Family>(
    cfg: &Config,
    key: &CtKeyOf<A>,
    fwd: &mut CtEntryOf<A>,
) -> Result<(), DropReason> {
    let endpoint_be = fwd.endpoint_be;
    let charged = charge(cfg, key, endpoint_be)?;
    if charged {
        fwd.flags |= CT_F_COUNTED;
    }
    let r = claim_port(cfg, key, fwd);
    if charged && !matches!(r, Ok(true)) {
        release(key, endpoint_be, CT_F_COUNTED);
    }
    r.map(|_| ())
}

/// A new flow from a container to the world, translated to the uplink's
/// address and a free NAT port.
#[inline(always)]
pub fn new_snat(cfg: &Config, key: &CtKey, seg: &Seg) -> Result<Xlate, DropReason> {
    let mut fwd = entry(
        cfg.uplink_addr_be,
        0,
        0,
        0,
        CT_F_SNAT | CT_F_REPLY_TO_ENDPOINT,
        key.saddr_be,
        seg,
    );
    claim_charged(cfg, key, &mut fwd)?;
    Ok(Xlate::of(&fwd))
}

/// A new flow from the world to a published port. Its reply tuple (the
/// backend to the client) is taken only if free: another published port
/// of the same backend port may have a flow from the same client address
/// and port. Then the client's port is translated too (see
/// [`insert_or_translate_port`]), and the backend sees the client on a
/// free port.
#[inline(always)]
pub fn new_dnat(
    cfg: &Config,
    key: &CtKey,
    backend_be: u32,
    backend_port_be: u16,
    seg: &Seg,
) -> Result<Xlate, DropReason> {
    let mut fwd = CtEntryOf::default();
    dnat_into(
        cfg,
        key,
        &mut fwd,
        backend_be,
        backend_port_be,
        backend_be,
        seg,
    )
}

/// [`new_dnat`] for either family, its first entry built in `fwd` (a
/// scratch slot for IPv6): to `backend`, `backend_port_be`, of the
/// endpoint whose record is keyed `endpoint_be` (its IPv4 address).
#[inline(always)]
pub fn dnat_into<A: Family>(
    cfg: &Config,
    key: &CtKeyOf<A>,
    fwd: &mut CtEntryOf<A>,
    backend: A,
    backend_port_be: u16,
    endpoint_be: u32,
    seg: &Seg,
) -> Result<XlateOf<A>, DropReason> {
    entry_into(
        fwd,
        A::ZERO,
        0,
        backend,
        backend_port_be,
        CT_F_DNAT | CT_F_TO_ENDPOINT | CT_F_PUBLISHED,
        endpoint_be,
        seg,
    );
    insert_or_translate_port(cfg, key, fwd)?;
    Ok(XlateOf::of(fwd))
}

/// The host's own ICMP echo request out of the uplink (`CT_F_HOST`): its
/// identifier stays when no container's flow holds it (and is held from
/// then on), and is translated to a free NAT port when one does. Either
/// way its answers come back to the host, and a container's echo never
/// gets an identifier the host uses.
#[inline(always)]
pub fn new_host_echo(cfg: &Config, key: &CtKey) -> Result<Xlate, DropReason> {
    let mut fwd = CtEntryOf::default();
    host_echo_into(cfg, key, &mut fwd, key.saddr_be)
}

/// [`new_host_echo`] for either family, its first entry built in `fwd` (a
/// scratch slot for IPv6), naming `endpoint_be` (IPv4: the uplink's
/// address; IPv6: 0, no endpoint).
#[inline(always)]
pub fn host_echo_into<A: Family>(
    cfg: &Config,
    key: &CtKeyOf<A>,
    fwd: &mut CtEntryOf<A>,
    endpoint_be: u32,
) -> Result<XlateOf<A>, DropReason> {
    entry_into(
        fwd,
        key.saddr_be,
        key.sport_be,
        A::ZERO,
        0,
        CT_F_SNAT | CT_F_HOST,
        endpoint_be,
        // An echo request: no TCP segment.
        &Seg {
            flags: CT_SEEN,
            ..Seg::default()
        },
    );
    insert_or_translate_port(cfg, key, fwd)?;
    Ok(XlateOf::of(fwd))
}

/// Inserts the flow whose first entry is `fwd` (keyed `key`) as it is; if
/// its reply tuple belongs to another flow, its source port is translated
/// to a free NAT port (its source address stays), as Linux does on a NAT
/// clash.
#[inline(always)]
fn insert_or_translate_port<A: Family>(
    cfg: &Config,
    key: &CtKeyOf<A>,
    fwd: &mut CtEntryOf<A>,
) -> Result<(), DropReason> {
    let s = reply_in_scratch(key, fwd).ok_or(DropReason::CtFull)?;
    match insert_flow(key, fwd, &s.rkey, &s.reply) {
        Ok(_) => Ok(()),
        Err(InsertError::Full) => Err(DropReason::CtFull),
        Err(InsertError::Exists) => {
            fwd.flags |= CT_F_SNAT;
            fwd.new_saddr_be = key.saddr_be;
            claim_port(cfg, key, fwd).map(|_| ())
        }
    }
}

/// A new flow from a container to a published port of the host (hairpin):
/// to the backend, from the backend's gateway and a NAT port, so that the
/// backend's answer comes back through the datapath. A backend whose
/// network delivery would refuse ([`open_network`]) is refused here, before
/// the flow takes an entry, a port and a charge.
#[inline(always)]
pub fn new_hairpin(
    cfg: &Config,
    key: &CtKey,
    backend: &Endpoint,
    backend_port_be: u16,
    seg: &Seg,
) -> Result<Xlate, DropReason> {
    let gw = open_network(backend)?.gateway_be;
    let mut fwd = entry(
        gw,
        0,
        backend.addr_be,
        backend_port_be,
        CT_F_SNAT | CT_F_DNAT | CT_F_TO_ENDPOINT | CT_F_PUBLISHED | CT_F_REPLY_TO_ENDPOINT,
        backend.addr_be,
        seg,
    );
    claim_charged(cfg, key, &mut fwd)?;
    Ok(Xlate::of(&fwd))
}

/// Rewrites the packet's addresses and ports as `e` says, keeping the IPv4
/// and L4 checksums right (a zero UDP checksum stays zero).
#[inline(always)]
pub fn rewrite(
    ctx: &TcContext,
    ip_off: usize,
    l4: &L4,
    key: &CtKey,
    e: &Xlate,
) -> Result<(), DropReason> {
    // A later fragment has no transport header: its addresses only (the
    // first's checksum update covers the whole datagram's pseudo-header).
    let later = l4.frag == l4::FRAG_LATER;
    if l4.frag == l4::FRAG_FIRST {
        crate::frag::record(key, u32::from(l4.frag_id_be), l4.icmp_type);
    }
    // No pseudo-header in the L4 checksum to fold an address change into:
    // ICMP's, and a later fragment's (it has no transport header).
    let no_pseudo = key.proto == IPPROTO_ICMP || later;
    let mangled = l4::mangled(key.proto);
    if e.flags & CT_F_SNAT != 0 {
        if e.new_saddr_be != key.saddr_be {
            err(ctx.l3_csum_replace(ip_off + 10, key.saddr_be as u64, e.new_saddr_be as u64, 4))?;
            if !no_pseudo {
                err(ctx.l4_csum_replace(
                    l4.csum_off,
                    key.saddr_be as u64,
                    e.new_saddr_be as u64,
                    BPF_F_PSEUDO_HDR as u64 | mangled | 4,
                ))?;
            }
            err(ctx.store(ip_off + 12, &e.new_saddr_be, 0))?;
        }
        if !later {
            l4::replace_port(
                ctx,
                l4.csum_off,
                l4.sport_off,
                key.sport_be,
                e.new_sport_be,
                mangled,
            )?;
        }
    }
    if e.flags & CT_F_DNAT != 0 {
        if e.new_daddr_be != key.daddr_be {
            err(ctx.l3_csum_replace(ip_off + 10, key.daddr_be as u64, e.new_daddr_be as u64, 4))?;
            if !no_pseudo {
                err(ctx.l4_csum_replace(
                    l4.csum_off,
                    key.daddr_be as u64,
                    e.new_daddr_be as u64,
                    BPF_F_PSEUDO_HDR as u64 | mangled | 4,
                ))?;
            }
            err(ctx.store(ip_off + 16, &e.new_daddr_be, 0))?;
        }
        if !later {
            l4::replace_port(
                ctx,
                l4.csum_off,
                l4.dport_off,
                key.dport_be,
                e.new_dport_be,
                mangled,
            )?;
        }
    }
    Ok(())
}

/// Delivers the packet into the endpoint that owns `addr_be`, as a router
/// would (gateway MAC as source, TTL down by one).
#[inline(always)]
pub fn to_endpoint(ctx: &TcContext, addr_be: u32) -> Result<i32, DropReason> {
    let ep = endpoint_at(addr_be).ok_or(DropReason::NoEndpoint)?;
    into_endpoint(ctx, &ep, dec_ttl)
}

/// The network of `ep` when packets from beyond it may go in: nothing
/// translated goes into an internal network, whatever a flow or a
/// published port says. Checked by [`into_endpoint_as`], and before a new
/// flow into `ep` is made, so that a flow whose packet would be refused
/// here takes no entry.
#[inline(always)]
pub fn open_network(ep: &Endpoint) -> Result<&'static dnet_common::Network, DropReason> {
    let net = NETWORKS.get(ep.net_id).ok_or(DropReason::NoEndpoint)?;
    if net.flags & NET_F_INTERNAL != 0 {
        return Err(DropReason::Internal);
    }
    Ok(net)
}

/// Delivers the translated packet into `ep`, as a router would (gateway
/// MAC as source, TTL or hop limit down by one: `dec`), for both
/// families.
#[inline(always)]
pub fn into_endpoint(
    ctx: &TcContext,
    ep: &Endpoint,
    dec: fn(&TcContext, usize) -> Result<(), DropReason>,
) -> Result<i32, DropReason> {
    into_endpoint_as(ctx, ep, dec, true)
}

/// [`into_endpoint`], counted as translated or not (a routed IPv6
/// network's packets are not).
#[inline(always)]
pub fn into_endpoint_as(
    ctx: &TcContext,
    ep: &Endpoint,
    dec: fn(&TcContext, usize) -> Result<(), DropReason>,
    translated: bool,
) -> Result<i32, DropReason> {
    let gw_mac = open_network(ep)?.gateway_mac;
    dec(ctx, ETH_HLEN)?;
    err(ctx.store(0, &ep.mac, 0))?;
    err(ctx.store(6, &gw_mac, 0))?;
    count_tx(ep.slot, ctx.len());
    if translated {
        count_translated(ep.slot);
    }
    // SAFETY: a helper call with plain integer arguments.
    let v = unsafe { bpf_redirect_peer(ep.ifindex, 0) } as i32;
    if v == TC_ACT_REDIRECT {
        Ok(v)
    } else {
        Err(DropReason::RedirectFailed)
    }
}

/// Rewrites by `e` and delivers: into the endpoint, or out where the new
/// destination routes, or (an answer to the host's own echo) up the host's
/// stack. Out, the route comes first: a packet the next link cannot carry
/// is refused as it came (`FragNeeded`, the MTU in [`route_mtu`]), so that
/// its sender can be told with a quote it knows.
#[inline(always)]
pub fn translate_and_deliver(
    ctx: &TcContext,
    l4: &L4,
    key: &CtKey,
    e: &Xlate,
) -> Result<i32, DropReason> {
    if e.flags & CT_F_HOST != 0 {
        rewrite(ctx, ETH_HLEN, l4, key, e)?;
        return Ok(TC_ACT_OK);
    }
    let daddr = if e.flags & CT_F_DNAT != 0 {
        e.new_daddr_be
    } else {
        key.daddr_be
    };
    if e.flags & CT_F_TO_ENDPOINT != 0 {
        rewrite(ctx, ETH_HLEN, l4, key, e)?;
        return to_endpoint(ctx, daddr);
    }
    let saddr = if e.flags & CT_F_SNAT != 0 {
        e.new_saddr_be
    } else {
        key.saddr_be
    };
    let r = route(
        ctx,
        &RouteQuery {
            iif: ingress_ifindex(ctx),
            saddr_be: saddr,
            daddr_be: daddr,
            proto: key.proto,
            tot_len: crate::icmp_reply::mtu_len(ctx),
        },
    );
    if let Route::TooBig { .. } = r {
        return Err(DropReason::FragNeeded);
    }
    rewrite(ctx, ETH_HLEN, l4, key, e)?;
    if let Some(ep) = endpoint_at(e.endpoint_be) {
        count_translated(ep.slot);
    }
    forward(ctx, &r)
}
