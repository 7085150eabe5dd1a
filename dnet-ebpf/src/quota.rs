//! Per-container limits (issue 10, item 3): how many flows a container may
//! have open (`--ct-flows-per-endpoint`), and how many NAT ports towards
//! one destination (address, port and protocol: `--nat-ports-per-destination`),
//! so that one container cannot take the table or every port towards a
//! resolver. Counted only when a flow is made or removed, never per packet.
//!
//! Two maps of counters per [`QuotaKey`], each with one writer kind: the
//! datapath counts in `DNET_CT_OPENED` (up when it makes a charged flow,
//! down when it removes one), the daemon counts in `DNET_CT_CLOSED` the
//! charged flows it removed (expired, or of a container that left). A
//! key's live flows are the difference. A flow is charged when its first
//! entry has `CT_F_COUNTED`; whoever removes that entry gives the charge
//! back, and a TCP flow gives it back as soon as it closes (the bit is
//! cleared then), so that short connections do not hold their charge
//! until the collector runs. The counters may drift (a charge given back
//! twice in a race, charges on CPUs beyond `MAX_CPUS`): the daemon's sweep
//! recounts the charged flows in the table and sets `DNET_CT_CLOSED` so
//! that the difference is that count again (`Datapath::quota_sweep`).

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::generated::bpf_map_lookup_percpu_elem,
    macros::map,
    maps::{HashMap, PerCpuHashMap},
};
use dnet_common::{
    Config, CtAddr, CtEntryOf, CtKeyOf, DropReason,
    maps::{MAX_CPUS, QUOTA_ENTRIES},
    nat::{CT_F_COUNTED, CT_F_REPLY_TO_ENDPOINT, QuotaKey},
};

use crate::maps::CONFIG;

/// Per CPU, so that each CPU counts in its own slot without atomics; a
/// limit is judged on the sum.
#[map(name = "DNET_CT_OPENED")]
pub static OPENED: PerCpuHashMap<QuotaKey, i64> = PerCpuHashMap::with_max_entries(QUOTA_ENTRIES, 0);

#[map(name = "DNET_CT_CLOSED")]
pub static CLOSED: HashMap<QuotaKey, i64> = HashMap::with_max_entries(QUOTA_ENTRIES, 0);

/// This CPU's counter under `k`, made when missing.
#[inline(always)]
fn slot(k: &QuotaKey) -> Result<*mut i64, DropReason> {
    match OPENED.get_ptr_mut(k) {
        Some(c) => Ok(c),
        None => {
            // Another CPU may insert it first: either way it is there.
            let _ = OPENED.insert(k, &0, BPF_NOEXIST as u64);
            OPENED.get_ptr_mut(k).ok_or(DropReason::CtFull)
        }
    }
}

/// The live flows counted under `k`: every CPU's counter, less what the
/// daemon removed. Read only where a limit is set (it reads one slot per
/// CPU).
#[inline(always)]
fn live(cfg: &Config, k: &QuotaKey) -> i64 {
    // SAFETY: read-only map access to plain data (copied out).
    let mut live = -unsafe { CLOSED.get(k).copied().unwrap_or(0) };
    let map = &OPENED as *const PerCpuHashMap<QuotaKey, i64> as *mut core::ffi::c_void;
    for cpu in 0..MAX_CPUS {
        if cpu >= cfg.nr_cpus {
            break;
        }
        // SAFETY: `map` is the map's definition (`PerCpuHashMap` is a
        // transparent wrapper of it, as aya-ebpf's own calls use it) and
        // `k` a live key of its type; the value returned, if any, is that
        // CPU's `i64`, read once (another CPU's concurrent add makes it
        // stale by that add, no more).
        let v = unsafe { bpf_map_lookup_percpu_elem(map, k as *const QuotaKey as *const _, cpu) };
        if !v.is_null() {
            // SAFETY: as above.
            live += unsafe { core::ptr::read_volatile(v as *const i64) };
        }
    }
    live
}

/// Adds `n` to this CPU's counter at `c`.
#[inline(always)]
fn add(c: *mut i64, n: i64) {
    // SAFETY: `c` is this CPU's slot of a live per-CPU map value: nothing
    // else writes it while the program runs.
    unsafe { *c += n };
}

/// Charges a new flow, keyed `key`, of the container at `key.saddr_be`
/// (whose first entry names the endpoint `endpoint_be`: IPv6's limits are
/// keyed by it, `CtAddr::opener_id`) to its limits: `Ok(true)` when
/// charged (the flow's first entry then carries `CT_F_COUNTED`),
/// `Ok(false)` when no limit is set. Beyond a limit, the flow is refused
/// with its reason. Two CPUs charging one key at the same moment may each
/// pass a limit by one.
#[inline(always)]
pub fn charge<A: CtAddr>(
    cfg: &Config,
    key: &CtKeyOf<A>,
    endpoint_be: u32,
) -> Result<bool, DropReason> {
    if cfg.ep_flow_limit == 0 && cfg.dest_port_limit == 0 {
        return Ok(false);
    }
    // Both counters count; only a limit that is set is summed.
    let ep = QuotaKey::opener(key, endpoint_be);
    let ec = slot(&ep)?;
    if cfg.ep_flow_limit != 0 && live(cfg, &ep) >= cfg.ep_flow_limit as i64 {
        return Err(DropReason::CtEndpointLimit);
    }
    let dest = QuotaKey::destination(key, endpoint_be);
    let dc = slot(&dest)?;
    if cfg.dest_port_limit != 0 && live(cfg, &dest) >= cfg.dest_port_limit as i64 {
        return Err(DropReason::NatDestinationLimit);
    }
    add(ec, 1);
    add(dc, 1);
    Ok(true)
}

/// A closed TCP flow that its opener starts over (keyed `key`, first
/// entry `e`): charged again, as a new flow, if it is a container's (only
/// those are charged: `CT_F_REPLY_TO_ENDPOINT`) and holds no charge.
/// `Ok(true)` when charged; beyond a limit the SYN is refused and the flow
/// stays closed.
#[inline(always)]
pub fn recharge<A: CtAddr>(key: &CtKeyOf<A>, e: &CtEntryOf<A>) -> Result<bool, DropReason> {
    if e.flags & (CT_F_REPLY_TO_ENDPOINT | CT_F_COUNTED) != CT_F_REPLY_TO_ENDPOINT {
        return Ok(false);
    }
    match CONFIG.get(0) {
        Some(cfg) => charge(cfg, key, e.endpoint_be),
        None => Ok(false),
    }
}

/// Gives back what the flow whose first entry (keyed `key`) has `flags`
/// and names `endpoint_be` was charged: called by the datapath when it
/// removed that entry itself, when the flow closed (TCP: RST, or a FIN
/// each way; `ct::lookup`), or when the flow it charged was not made
/// after all.
#[inline(always)]
pub fn release<A: CtAddr>(key: &CtKeyOf<A>, endpoint_be: u32, flags: u16) {
    if flags & CT_F_COUNTED == 0 {
        return;
    }
    for k in [
        QuotaKey::opener(key, endpoint_be),
        QuotaKey::destination(key, endpoint_be),
    ] {
        if let Some(c) = OPENED.get_ptr_mut(&k) {
            add(c, -1);
        }
    }
}
