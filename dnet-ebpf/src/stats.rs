//! Per-endpoint counters. One per-CPU slot per endpoint: no atomics, no
//! contention; userspace sums the CPUs.

use dnet_common::DropReason;

use crate::{maps::STATS, verdict::TC_ACT_SHOT};

/// Counts a packet the endpoint in `slot` sent.
#[inline(always)]
pub fn count_rx(slot: u32, bytes: u32) {
    if let Some(s) = STATS.get_ptr_mut(slot) {
        // SAFETY: the pointer is this CPU's copy of a live array element; no
        // other context on this CPU runs while the program does.
        unsafe {
            (*s).rx_packets += 1;
            (*s).rx_bytes += bytes as u64;
        }
    }
}

/// Counts a packet delivered to the endpoint in `slot`.
#[inline(always)]
pub fn count_tx(slot: u32, bytes: u32) {
    if let Some(s) = STATS.get_ptr_mut(slot) {
        // SAFETY: as in `count_rx`.
        unsafe {
            (*s).tx_packets += 1;
            (*s).tx_bytes += bytes as u64;
        }
    }
}

/// Counts `n` drops for `reason` against `slot`.
#[inline(always)]
pub fn count_drops(slot: u32, reason: DropReason, n: u64) {
    if let Some(s) = STATS.get_ptr_mut(slot) {
        let code = reason as u32;
        // The reason may come back from a BPF subprogram through the stack;
        // the compiler knows it is a valid `DropReason` and would drop the
        // bounds check, but the verifier does not, so the code is read
        // opaquely and checked.
        // SAFETY: a read of a local.
        let i = unsafe { core::ptr::read_volatile(&code) } as usize;
        // SAFETY: as in `count_rx`.
        unsafe {
            if let Some(c) = (*s).drops.get_mut(i) {
                *c += n;
            }
        }
    }
}

/// Counts one drop and returns the verdict that drops the packet.
#[inline(always)]
pub fn drop(slot: u32, reason: DropReason) -> i32 {
    count_drops(slot, reason, 1);
    TC_ACT_SHOT
}

/// Counts a packet of the endpoint's flows that NAT rewrote.
#[inline(always)]
pub fn count_translated(slot: u32) {
    if let Some(s) = STATS.get_ptr_mut(slot) {
        // SAFETY: as in `count_rx`.
        unsafe {
            (*s).translated += 1;
        }
    }
}
