//! Connection tracking and NAT: find a packet's flow, make new flows,
//! rewrite headers with their checksums, and deliver.
//!
//! The map layout and the meaning of each entry are described in
//! `dnet_common::nat`.

use aya_ebpf::{
    EbpfContext as _,
    bindings::{
        BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, BPF_FIB_LKUP_RET_FRAG_NEEDED,
        BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_NOT_FWDED, BPF_FIB_LKUP_RET_SUCCESS,
        BPF_NOEXIST, bpf_fib_lookup,
    },
    helpers::generated::{
        bpf_fib_lookup as fib_lookup_helper, bpf_ktime_get_ns, bpf_redirect, bpf_redirect_neigh,
        bpf_redirect_peer,
    },
    programs::TcContext,
};
use dnet_common::{
    Config, CtEntry, CtKey, DropReason, Endpoint, ServiceKey,
    nat::{
        CT_F_DNAT, CT_F_PUBLISHED, CT_F_REPLY, CT_F_SNAT, CT_F_TO_ENDPOINT, CT_FIN_ACKED,
        CT_PEER_FIN, NAT_PORT_PROBES, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, nat_port_candidate,
        partner, tcp_closed, tcp_reusable, tuple_hash,
    },
    network::NET_F_INTERNAL,
};

use crate::{
    eth::ETH_HLEN,
    l4::{IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, L4},
    maps::{CONFIG, CT, EP_BY_IP, FIB_SCRATCH, NETWORKS, SERVICES},
    stats::{count_translated, count_tx},
    verdict::{TC_ACT_OK, TC_ACT_REDIRECT},
};

const AF_INET: u8 = 2;
const NSEC_PER_SEC: u64 = 1_000_000_000;
/// How long a closed TCP flow keeps its port after its last packet (the
/// last ACK, or the RST). That packet and a new flow's SYN on the same tuple
/// may reach the peer out of order when two CPUs forward them; a SYN that
/// comes first meets the old connection and is answered with a challenge
/// ACK, which costs the new connect a SYN retransmit (1 s).
const REUSE_GRACE_NS: u64 = NSEC_PER_SEC / 20;

/// The NAT configuration, when there is an uplink to translate to.
#[inline(always)]
pub fn config() -> Option<Config> {
    CONFIG.get(0).copied().filter(|c| c.uplink_ifindex != 0)
}

/// The interface the packet arrived on.
#[inline(always)]
pub fn ingress_ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: reading a field of the context the kernel passed.
    unsafe { (*ctx.skb.skb).ifindex }
}

#[inline(always)]
fn now() -> u64 {
    // SAFETY: a helper call without arguments.
    unsafe { bpf_ktime_get_ns() }
}

#[inline(always)]
pub fn endpoint_at(addr_be: u32) -> Option<Endpoint> {
    // SAFETY: map values are only read; userspace replaces them whole.
    unsafe { EP_BY_IP.get(&addr_be).copied() }
}

/// The flow `key` belongs to, with the packet noted on it.
#[inline(always)]
pub fn lookup(key: &CtKey, tcp_flags: u8) -> Option<CtEntry> {
    let e = CT.get_ptr_mut(key)?;
    let t = now();
    // SAFETY: `e` (and the partner entry below) point into live map values.
    // The datapath writes only `last_seen_ns` and `tcp_seen`, both plain
    // data: a torn timestamp is harmless, and a `tcp_seen` bit lost to a
    // concurrent write on another CPU only keeps a closed flow's port held
    // until the closing timeout.
    unsafe {
        if t.saturating_sub((*e).last_seen_ns) > NSEC_PER_SEC {
            (*e).last_seen_ns = t;
        }
        let seen = (*e).tcp_seen;
        if tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN {
            // A new connection on the tuple of a closed one: both directions
            // start over, or the old FIN/RST would mark the new one closed.
            let p = CT.get_ptr_mut(partner(key, &*e));
            let other = p.map(|p| (*p).tcp_seen).unwrap_or(0);
            if tcp_closed(seen, other) {
                (*e).tcp_seen = tcp_flags;
                if let Some(p) = p {
                    (*p).tcp_seen = 0;
                }
                return Some(*e);
            }
        }
        let mut add = tcp_flags;
        if add & TCP_FIN != 0 && seen & TCP_FIN == 0 {
            // This side's first FIN: the other side's next ACK is its last
            // word. Noted on the other side's entry (one more lookup, once
            // per direction of a flow).
            if let Some(p) = CT.get_ptr_mut(partner(key, &*e)) {
                (*p).tcp_seen |= CT_PEER_FIN;
            }
        }
        if add & TCP_ACK != 0 && seen & (CT_PEER_FIN | CT_FIN_ACKED) == CT_PEER_FIN {
            // Follows the order packets reach the datapath, not ACK numbers:
            // a FIN lost beyond it can make a port reusable early, as a lost
            // last ACK keeps one held until the closing timeout.
            add |= CT_FIN_ACKED;
        }
        if seen | add != seen {
            (*e).tcp_seen = seen | add;
            if add & !seen & (TCP_RST | CT_FIN_ACKED) != 0 {
                // The flow's end, timed: its port waits REUSE_GRACE_NS.
                (*e).last_seen_ns = t;
            }
        }
        Some(*e)
    }
}

/// A TCP segment that may open a flow: a SYN without ACK. Anything else
/// with no flow (a stray ACK, a spoofed segment) opens none, so it cannot
/// take a port or push live flows out of the LRU table.
#[inline(always)]
pub fn opens_flow(proto: u8, tcp_flags: u8) -> bool {
    proto != IPPROTO_TCP || tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
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

#[inline(always)]
fn entry(
    new_saddr_be: u32,
    new_sport_be: u16,
    new_daddr_be: u32,
    new_dport_be: u16,
    flags: u16,
    endpoint_be: u32,
    tcp_flags: u8,
) -> CtEntry {
    let t = now();
    CtEntry {
        new_saddr_be,
        new_daddr_be,
        new_sport_be,
        new_dport_be,
        flags,
        tcp_seen: tcp_flags,
        _pad: 0,
        endpoint_be,
        created_ns: t,
        last_seen_ns: t,
    }
}

/// Claims a NAT port for a flow whose reply will come from `peer`:`peer_port`
/// to `nat_addr`: the reply entry is inserted only if its key is free, so
/// two flows never share a reply tuple. Returns the forward entry as the
/// map holds it.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn claim_port(
    cfg: &Config,
    key: &CtKey,
    nat_addr_be: u32,
    peer_be: u32,
    peer_port_be: u16,
    reply: &CtEntry,
    forward: &CtEntry,
) -> Result<CtEntry, DropReason> {
    let size = (cfg.nat_port_max as u32).saturating_sub(cfg.nat_port_min as u32) + 1;
    let hash = tuple_hash(key);
    let icmp = key.proto == IPPROTO_ICMP;
    for n in 0..NAT_PORT_PROBES {
        if n >= size {
            break;
        }
        let port_be = nat_port_candidate(hash, n, cfg.nat_port_min, size).to_be();
        let rkey = CtKey {
            saddr_be: peer_be,
            daddr_be: nat_addr_be,
            // An echo reply carries the identifier as its "destination port".
            sport_be: if icmp { 0 } else { peer_port_be },
            dport_be: port_be,
            proto: key.proto,
            _pad: [0; 3],
        };
        if CT.insert(&rkey, reply, BPF_NOEXIST as u64).is_ok()
            || (key.proto == IPPROTO_TCP
                && reclaim(&rkey)
                && CT.insert(&rkey, reply, BPF_NOEXIST as u64).is_ok())
        {
            let mut fwd = *forward;
            fwd.new_sport_be = port_be;
            if CT.insert(key, &fwd, BPF_NOEXIST as u64).is_err() {
                let _ = CT.remove(&rkey);
                // Another CPU made this flow meanwhile: take its entry.
                // SAFETY: read-only map access to plain data (copied out).
                return match unsafe { CT.get(key) } {
                    Some(e) => Ok(*e),
                    None => Err(DropReason::CtFull),
                };
            }
            return Ok(fwd);
        }
    }
    Err(DropReason::NatPortsExhausted)
}

/// Frees the port of the TCP flow whose reply is keyed `rkey` if that flow
/// is over (a RST, or a FIN each way and the last ACK) since
/// [`REUSE_GRACE_NS`], so a closed connection's port serves a new one
/// almost at once, as Linux reuses a TIME_WAIT tuple for a new SYN.
/// Without it, short connections to one server would hold every port of
/// the range for the closing timeout.
#[inline(always)]
fn reclaim(rkey: &CtKey) -> bool {
    // SAFETY: read-only map access to plain data (copied out).
    let Some(old) = (unsafe { CT.get(rkey) }).copied() else {
        // Gone meanwhile: the caller's insert may now succeed.
        return true;
    };
    let fkey = partner(rkey, &old);
    // SAFETY: as above.
    let closed = match unsafe { CT.get(&fkey) } {
        Some(f) => {
            tcp_reusable(old.tcp_seen, f.tcp_seen)
                && now().saturating_sub(old.last_seen_ns.max(f.last_seen_ns)) > REUSE_GRACE_NS
        }
        // Half a flow: another CPU may be between its two inserts, so only
        // an orphan older than a second is taken.
        None => now().saturating_sub(old.created_ns) > NSEC_PER_SEC,
    };
    if !closed {
        return false;
    }
    let _ = CT.remove(&fkey);
    let _ = CT.remove(rkey);
    true
}

/// A new flow from a container to the world, translated to the uplink's
/// address and a free NAT port.
#[inline(always)]
pub fn new_snat(cfg: &Config, key: &CtKey, tcp_flags: u8) -> Result<CtEntry, DropReason> {
    let reply = entry(
        0,
        0,
        key.saddr_be,
        key.sport_be,
        CT_F_DNAT | CT_F_TO_ENDPOINT | CT_F_REPLY,
        key.saddr_be,
        0,
    );
    let fwd = entry(
        cfg.uplink_addr_be,
        0,
        0,
        0,
        CT_F_SNAT,
        key.saddr_be,
        tcp_flags,
    );
    claim_port(
        cfg,
        key,
        cfg.uplink_addr_be,
        key.daddr_be,
        key.dport_be,
        &reply,
        &fwd,
    )
}

/// A new flow from the world to a published port.
#[inline(always)]
pub fn new_dnat(
    key: &CtKey,
    backend_be: u32,
    backend_port_be: u16,
    tcp_flags: u8,
) -> Result<CtEntry, DropReason> {
    let fwd = entry(
        0,
        0,
        backend_be,
        backend_port_be,
        CT_F_DNAT | CT_F_TO_ENDPOINT | CT_F_PUBLISHED,
        backend_be,
        tcp_flags,
    );
    let rkey = CtKey {
        saddr_be: backend_be,
        daddr_be: key.saddr_be,
        sport_be: backend_port_be,
        dport_be: key.sport_be,
        proto: key.proto,
        _pad: [0; 3],
    };
    let reply = entry(
        key.daddr_be,
        key.dport_be,
        0,
        0,
        CT_F_SNAT | CT_F_REPLY | CT_F_PUBLISHED,
        backend_be,
        0,
    );
    CT.insert(&rkey, &reply, 0)
        .map_err(|_| DropReason::CtFull)?;
    if CT.insert(key, &fwd, 0).is_err() {
        let _ = CT.remove(&rkey);
        return Err(DropReason::CtFull);
    }
    Ok(fwd)
}

/// A new flow from a container to a published port of the host (hairpin):
/// to the backend, from the backend's gateway and a NAT port, so that the
/// backend's answer comes back through the datapath.
#[inline(always)]
pub fn new_hairpin(
    cfg: &Config,
    key: &CtKey,
    backend: &Endpoint,
    backend_port_be: u16,
    tcp_flags: u8,
) -> Result<CtEntry, DropReason> {
    let gw = NETWORKS
        .get(backend.net_id)
        .map(|n| n.gateway_be)
        .ok_or(DropReason::NoEndpoint)?;
    let flags = CT_F_SNAT | CT_F_DNAT | CT_F_TO_ENDPOINT | CT_F_PUBLISHED;
    let reply = entry(
        key.daddr_be,
        key.dport_be,
        key.saddr_be,
        key.sport_be,
        flags | CT_F_REPLY,
        backend.addr_be,
        0,
    );
    let fwd = entry(
        gw,
        0,
        backend.addr_be,
        backend_port_be,
        flags,
        backend.addr_be,
        tcp_flags,
    );
    claim_port(cfg, key, gw, backend.addr_be, backend_port_be, &reply, &fwd)
}

#[inline(always)]
fn err<T>(r: Result<T, i64>) -> Result<T, DropReason> {
    r.map_err(|_| DropReason::Malformed)
}

/// Rewrites the packet's addresses and ports as `e` says, keeping the IPv4
/// and L4 checksums right (a zero UDP checksum stays zero).
#[inline(always)]
pub fn rewrite(
    ctx: &TcContext,
    ip_off: usize,
    l4: &L4,
    key: &CtKey,
    e: &CtEntry,
) -> Result<(), DropReason> {
    let icmp = key.proto == IPPROTO_ICMP;
    let mangled = if key.proto == IPPROTO_UDP {
        BPF_F_MARK_MANGLED_0 as u64
    } else {
        0
    };
    if e.flags & CT_F_SNAT != 0 {
        if e.new_saddr_be != key.saddr_be {
            err(ctx.l3_csum_replace(ip_off + 10, key.saddr_be as u64, e.new_saddr_be as u64, 4))?;
            if !icmp {
                err(ctx.l4_csum_replace(
                    l4.csum_off,
                    key.saddr_be as u64,
                    e.new_saddr_be as u64,
                    BPF_F_PSEUDO_HDR as u64 | mangled | 4,
                ))?;
            }
            err(ctx.store(ip_off + 12, &e.new_saddr_be, 0))?;
        }
        if e.new_sport_be != key.sport_be {
            err(ctx.l4_csum_replace(
                l4.csum_off,
                key.sport_be as u64,
                e.new_sport_be as u64,
                mangled | 2,
            ))?;
            err(ctx.store(l4.sport_off, &e.new_sport_be, 0))?;
        }
    }
    if e.flags & CT_F_DNAT != 0 {
        if e.new_daddr_be != key.daddr_be {
            err(ctx.l3_csum_replace(ip_off + 10, key.daddr_be as u64, e.new_daddr_be as u64, 4))?;
            if !icmp {
                err(ctx.l4_csum_replace(
                    l4.csum_off,
                    key.daddr_be as u64,
                    e.new_daddr_be as u64,
                    BPF_F_PSEUDO_HDR as u64 | mangled | 4,
                ))?;
            }
            err(ctx.store(ip_off + 16, &e.new_daddr_be, 0))?;
        }
        if e.new_dport_be != key.dport_be {
            err(ctx.l4_csum_replace(
                l4.csum_off,
                key.dport_be as u64,
                e.new_dport_be as u64,
                mangled | 2,
            ))?;
            err(ctx.store(l4.dport_off, &e.new_dport_be, 0))?;
        }
    }
    Ok(())
}

/// Decrements the TTL (the datapath routes here), fixing the checksum.
#[inline(always)]
pub fn dec_ttl(ctx: &TcContext, ip_off: usize) -> Result<(), DropReason> {
    let word: [u8; 2] = err(ctx.load(ip_off + 8))?;
    if word[0] <= 1 {
        return Err(DropReason::TtlExceeded);
    }
    let new = [word[0] - 1, word[1]];
    err(ctx.l3_csum_replace(
        ip_off + 10,
        u16::from_ne_bytes(word) as u64,
        u16::from_ne_bytes(new) as u64,
        2,
    ))?;
    err(ctx.store(ip_off + 8, &new[0], 0))
}

/// Delivers the packet into the endpoint that owns `addr_be`, as a router
/// would (gateway MAC as source, TTL down by one).
#[inline(always)]
pub fn to_endpoint(ctx: &TcContext, addr_be: u32) -> Result<i32, DropReason> {
    let ep = endpoint_at(addr_be).ok_or(DropReason::NoEndpoint)?;
    let net = NETWORKS.get(ep.net_id).ok_or(DropReason::NoEndpoint)?;
    // Nothing translated goes into an internal network, whatever a flow
    // or a published port says.
    if net.flags & NET_F_INTERNAL != 0 {
        return Err(DropReason::Internal);
    }
    let gw_mac = net.gateway_mac;
    dec_ttl(ctx, ETH_HLEN)?;
    err(ctx.store(0, &ep.mac, 0))?;
    err(ctx.store(6, &gw_mac, 0))?;
    count_tx(ep.slot, ctx.len());
    count_translated(ep.slot);
    // SAFETY: a helper call with plain integer arguments.
    let v = unsafe { bpf_redirect_peer(ep.ifindex, 0) } as i32;
    if v == TC_ACT_REDIRECT {
        Ok(v)
    } else {
        Err(DropReason::RedirectFailed)
    }
}

/// What [`route`] looks up.
pub struct RouteQuery {
    /// The interface the packet arrived on.
    pub iif: u32,
    pub saddr_be: u32,
    pub daddr_be: u32,
    pub proto: u8,
    /// The length the next link must carry (`icmp_reply::mtu_len`); 0
    /// leaves the MTU check to the helper (on the whole packet, GSO ones
    /// passing).
    pub tot_len: u16,
}

/// Where the routing table sends `daddr`.
pub enum Route {
    /// Out of `ifindex`; the MACs are known when `macs` holds them.
    Out {
        ifindex: u32,
        macs: Option<([u8; 6], [u8; 6])>,
    },
    /// Out, but the packet does not fit the next link, whose MTU this is.
    TooBig { mtu: u16 },
    /// A local address of the host.
    Local,
    /// Unreachable, blackhole, prohibited.
    None,
}

/// `struct bpf_fib_lookup` as kernel 6.10+ has it (with `mark`), plus room
/// to grow: the helper refuses a buffer smaller than the kernel's struct,
/// and the bindings' copy predates `mark`.
#[repr(C)]
pub struct FibParams {
    family: u8,
    l4_protocol: u8,
    sport: u16,
    dport: u16,
    tot_len: u16,
    ifindex: u32,
    tos: u32,
    src: [u32; 4],
    dst: [u32; 4],
    vlan_or_tbid: u32,
    smac: [u8; 6],
    dmac: [u8; 6],
    mark: u32,
    _reserved: [u32; 3],
}

/// Looks the route up in the host's table as for a packet that arrived on
/// `iif` (a container's host-side veth, which has forwarding on; the
/// helper insists, and the lookup then honours policy routing as the
/// kernel would for that packet).
#[inline(always)]
pub fn route(ctx: &TcContext, q: &RouteQuery) -> Route {
    // The parameters live in a per-CPU scratch slot, not on the stack: the
    // container program's 512 bytes are spoken for.
    let Some(p) = FIB_SCRATCH.get_ptr_mut(0) else {
        return Route::None;
    };
    // SAFETY: `p` is this CPU's slot of a live per-CPU array; nothing else
    // runs on this CPU while the program does. The helper reads and writes
    // only the struct, whose size it is given and which is at least the
    // kernel's `struct bpf_fib_lookup`.
    let rc = unsafe {
        *p = FibParams {
            family: AF_INET,
            l4_protocol: q.proto,
            sport: 0,
            dport: 0,
            tot_len: q.tot_len,
            ifindex: q.iif,
            tos: 0,
            src: [q.saddr_be, 0, 0, 0],
            dst: [q.daddr_be, 0, 0, 0],
            vlan_or_tbid: 0,
            smac: [0; 6],
            dmac: [0; 6],
            mark: 0,
            _reserved: [0; 3],
        };
        fib_lookup_helper(
            ctx.as_ptr(),
            p.cast::<bpf_fib_lookup>(),
            core::mem::size_of::<FibParams>() as i32,
            0,
        )
    };
    // SAFETY: as above; the helper has written its answer.
    let p = unsafe { &*p };
    match rc as u32 {
        BPF_FIB_LKUP_RET_SUCCESS => Route::Out {
            ifindex: p.ifindex,
            macs: Some((p.smac, p.dmac)),
        },
        BPF_FIB_LKUP_RET_NO_NEIGH => Route::Out {
            ifindex: p.ifindex,
            macs: None,
        },
        BPF_FIB_LKUP_RET_NOT_FWDED => Route::Local,
        // `tot_len` and `mtu_result` share their place.
        BPF_FIB_LKUP_RET_FRAG_NEEDED => Route::TooBig { mtu: p.tot_len },
        _ => Route::None,
    }
}

/// The MTU the last route lookup on this CPU found too small (the packet
/// in hand's, within one run of a program).
#[inline(always)]
pub fn route_mtu() -> u16 {
    let Some(p) = FIB_SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: this CPU's slot of a live per-CPU array, read only.
    unsafe { (*p).tot_len }
}

/// Sends the (already rewritten) packet out along `route`.
#[inline(always)]
pub fn forward(ctx: &TcContext, route: &Route) -> Result<i32, DropReason> {
    let (ifindex, macs) = match route {
        Route::Out { ifindex, macs } => (ifindex, macs),
        Route::TooBig { .. } => return Err(DropReason::FragNeeded),
        _ => return Err(DropReason::NoRoute),
    };
    dec_ttl(ctx, ETH_HLEN)?;
    // SAFETY: helper calls with plain arguments (a null neighbour means:
    // resolve the route's next hop).
    let v = unsafe {
        match macs {
            Some((smac, dmac)) => {
                err(ctx.store(0, dmac, 0))?;
                err(ctx.store(6, smac, 0))?;
                bpf_redirect(*ifindex, 0)
            }
            None => bpf_redirect_neigh(*ifindex, core::ptr::null_mut(), 0, 0),
        }
    } as i32;
    if v == TC_ACT_REDIRECT {
        Ok(v)
    } else {
        Err(DropReason::RedirectFailed)
    }
}

/// Rewrites by `e` and delivers: into the endpoint, or out where the new
/// destination routes. Out, the route comes first: a packet the next link
/// cannot carry is refused as it came (`FragNeeded`, the MTU in
/// [`route_mtu`]), so that its sender can be told with a quote it knows.
#[inline(always)]
pub fn translate_and_deliver(
    ctx: &TcContext,
    l4: &L4,
    key: &CtKey,
    e: &CtEntry,
) -> Result<i32, DropReason> {
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
    // The quoted packet is one we sent; its answers are keyed reversed.
    let key = CtKey {
        saddr_be: idaddr,
        daddr_be: isaddr,
        sport_be: idport,
        dport_be: isport,
        proto,
        _pad: [0; 3],
    };
    let Some(e) = lookup(&key, 0) else {
        return Ok(TC_ACT_OK);
    };
    // From a container, only an error about a flow of its own, sent to the
    // flow's peer: a container must not speak into others' flows.
    if let Some(addr) = from {
        let outer_daddr: u32 = err(ctx.load(ip_off + 16))?;
        if e.endpoint_be != addr || outer_daddr != isaddr {
            return Err(DropReason::NatUnsupported);
        }
    }
    let icmp_csum = icmp_off + 2;
    // The inner L4 checksum, when quoted (UDP's may be zero: left alone).
    let l4_csum_off = match proto {
        IPPROTO_ICMP => Some(il4 + 2),
        IPPROTO_UDP if u16::from_ne_bytes([h[6], h[7]]) != 0 => Some(il4 + 6),
        IPPROTO_UDP => None,
        _ if (ctx.len() as usize) >= il4 + 18 => Some(il4 + 16),
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
