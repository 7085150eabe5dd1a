//! Routing where the datapath forwards: the FIB lookup (with its per-CPU
//! scratch map), the TTL, and sending a packet out along a route.

use aya_ebpf::{
    EbpfContext as _,
    bindings::{
        BPF_F_RECOMPUTE_CSUM, BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_NO_NEIGH,
        BPF_FIB_LKUP_RET_NOT_FWDED, BPF_FIB_LKUP_RET_SUCCESS, bpf_fib_lookup,
    },
    helpers::generated::{bpf_fib_lookup as fib_lookup_helper, bpf_redirect, bpf_redirect_neigh},
    macros::map,
    maps::PerCpuArray,
    programs::TcContext,
};
use dnet_common::DropReason;

use crate::{err, eth::ETH_HLEN, verdict::TC_ACT_REDIRECT};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// Scratch space for `bpf_fib_lookup`'s parameters (one per CPU), which do
/// not fit on the container program's stack beside everything else.
#[map(name = "DNET_FIB_SCRATCH")]
pub static FIB_SCRATCH: PerCpuArray<FibParams> = PerCpuArray::with_max_entries(1, 0);

/// The interface the packet arrived on.
#[inline(always)]
pub fn ingress_ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: reading a field of the context the kernel passed.
    unsafe { (*ctx.skb.skb).ifindex }
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

/// Decrements the IPv6 hop limit. No header checksum absorbs the change,
/// so on a CHECKSUM_COMPLETE skb (a NIC's, on the uplink) `skb->csum`
/// follows it (`BPF_F_RECOMPUTE_CSUM`; nothing for other skbs), or the
/// receiver's checksum check would see a sum off by one hop and report a
/// hardware checksum failure.
#[inline(always)]
pub fn dec_hop_limit(ctx: &TcContext, ip_off: usize) -> Result<(), DropReason> {
    let hl: u8 = err(ctx.load(ip_off + 7))?;
    if hl <= 1 {
        return Err(DropReason::TtlExceeded);
    }
    err(ctx.store(ip_off + 7, &(hl - 1), BPF_F_RECOMPUTE_CSUM as u64))
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

/// A [`Route`] as plain data, every byte written, to keep in a scratch
/// slot (a program's stack may have no room for it): an enum's unused
/// bytes are uninitialised, and the verifier refuses to store those in a
/// map value.
#[derive(Clone, Copy, Default)]
pub struct KeptRoute {
    kind: u8,
    mtu: u16,
    ifindex: u32,
    smac: [u8; 6],
    dmac: [u8; 6],
}

const KEPT_OUT: u8 = 1;
const KEPT_OUT_NO_NEIGH: u8 = 2;
const KEPT_TOO_BIG: u8 = 3;
const KEPT_LOCAL: u8 = 4;

impl KeptRoute {
    /// Keeps `r`.
    #[inline(always)]
    pub fn set(&mut self, r: &Route) {
        *self = KeptRoute::default();
        match r {
            Route::Out {
                ifindex,
                macs: Some((smac, dmac)),
            } => {
                self.kind = KEPT_OUT;
                self.ifindex = *ifindex;
                self.smac = *smac;
                self.dmac = *dmac;
            }
            Route::Out {
                ifindex,
                macs: None,
            } => {
                self.kind = KEPT_OUT_NO_NEIGH;
                self.ifindex = *ifindex;
            }
            Route::TooBig { mtu } => {
                self.kind = KEPT_TOO_BIG;
                self.mtu = *mtu;
            }
            Route::Local => self.kind = KEPT_LOCAL,
            Route::None => {}
        }
    }

    /// The interface a route out leaves by.
    #[inline(always)]
    pub fn out_ifindex(&self) -> Option<u32> {
        matches!(self.kind, KEPT_OUT | KEPT_OUT_NO_NEIGH).then_some(self.ifindex)
    }

    /// The packet does not fit the route's next link.
    #[inline(always)]
    pub fn is_too_big(&self) -> bool {
        self.kind == KEPT_TOO_BIG
    }
}

/// [`forward6`] along a kept route (read where it is kept: no copy of it
/// on the stack).
#[inline(always)]
pub fn forward6_kept(ctx: &TcContext, r: &KeptRoute) -> Result<i32, DropReason> {
    match r.kind {
        KEPT_OUT => out(ctx, r.ifindex, Some((&r.smac, &r.dmac)), dec_hop_limit),
        KEPT_OUT_NO_NEIGH => out(ctx, r.ifindex, None, dec_hop_limit),
        KEPT_TOO_BIG => Err(DropReason::FragNeeded),
        _ => Err(DropReason::NoRoute),
    }
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
    lookup(ctx, AF_INET, q.proto, q.tot_len, q.iif, |src, dst| {
        src[0] = q.saddr_be;
        dst[0] = q.daddr_be;
    })
}

/// As [`route`], for IPv6 addresses as the packet holds them. The helper
/// insists on IPv6 forwarding on `iif` (`net.ipv6.conf.IF.forwarding`);
/// without it the answer is [`Route::None`].
#[inline(always)]
pub fn route6(ctx: &TcContext, iif: u32, saddr: &[u8; 16], daddr: &[u8; 16], proto: u8) -> Route {
    route6_len(ctx, iif, saddr, daddr, proto, 0)
}

/// As [`route6`], with the length the next link must carry (`tot_len`,
/// as in [`RouteQuery`]).
#[inline(always)]
pub fn route6_len(
    ctx: &TcContext,
    iif: u32,
    saddr: &[u8; 16],
    daddr: &[u8; 16],
    proto: u8,
    tot_len: u16,
) -> Route {
    lookup(ctx, AF_INET6, proto, tot_len, iif, |src, dst| {
        // Written word by word into the scratch slot: built on the stack
        // first, the two addresses cost the container programs room they
        // lack.
        let w = |a: &[u8; 16], i: usize| {
            u32::from_ne_bytes([a[i * 4], a[i * 4 + 1], a[i * 4 + 2], a[i * 4 + 3]])
        };
        for i in 0..4 {
            src[i] = w(saddr, i);
            dst[i] = w(daddr, i);
        }
    })
}

/// Looks the route up with the given parameters, the addresses written
/// into the parameters by `addrs` (source, destination), which find them
/// zeroed.
#[inline(always)]
fn lookup(
    ctx: &TcContext,
    family: u8,
    proto: u8,
    tot_len: u16,
    iif: u32,
    addrs: impl FnOnce(&mut [u32; 4], &mut [u32; 4]),
) -> Route {
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
            family,
            l4_protocol: proto,
            sport: 0,
            dport: 0,
            tot_len,
            ifindex: iif,
            tos: 0,
            src: [0; 4],
            dst: [0; 4],
            vlan_or_tbid: 0,
            smac: [0; 6],
            dmac: [0; 6],
            mark: 0,
            _reserved: [0; 3],
        };
        addrs(&mut (*p).src, &mut (*p).dst);
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
    forward_dec(ctx, route, dec_ttl)
}

/// As [`forward`], for IPv6 (the hop limit goes down by one).
#[inline(always)]
pub fn forward6(ctx: &TcContext, route: &Route) -> Result<i32, DropReason> {
    forward_dec(ctx, route, dec_hop_limit)
}

#[inline(always)]
fn forward_dec(
    ctx: &TcContext,
    route: &Route,
    dec: fn(&TcContext, usize) -> Result<(), DropReason>,
) -> Result<i32, DropReason> {
    match route {
        Route::Out {
            ifindex,
            macs: Some((smac, dmac)),
        } => out(ctx, *ifindex, Some((smac, dmac)), dec),
        Route::Out {
            ifindex,
            macs: None,
        } => out(ctx, *ifindex, None, dec),
        Route::TooBig { .. } => Err(DropReason::FragNeeded),
        _ => Err(DropReason::NoRoute),
    }
}

/// Out of `ifindex`: to the next hop's MAC (`macs`: ours, theirs) when
/// known, else resolved by the kernel; TTL or hop limit down by one
/// (`dec`).
#[inline(always)]
fn out(
    ctx: &TcContext,
    ifindex: u32,
    macs: Option<(&[u8; 6], &[u8; 6])>,
    dec: fn(&TcContext, usize) -> Result<(), DropReason>,
) -> Result<i32, DropReason> {
    dec(ctx, ETH_HLEN)?;
    // SAFETY: helper calls with plain arguments (a null neighbour means:
    // resolve the route's next hop).
    let v = unsafe {
        match macs {
            Some((smac, dmac)) => {
                err(ctx.store(0, dmac, 0))?;
                err(ctx.store(6, smac, 0))?;
                bpf_redirect(ifindex, 0)
            }
            None => bpf_redirect_neigh(ifindex, core::ptr::null_mut(), 0, 0),
        }
    } as i32;
    if v == TC_ACT_REDIRECT {
        Ok(v)
    } else {
        Err(DropReason::RedirectFailed)
    }
}
