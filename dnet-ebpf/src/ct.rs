//! Connection tracking: finding a packet's flow and noting the packet on
//! it (TCP flags per direction, last use), and what opens a flow.
//!
//! The map layout and the meaning of each entry are described in
//! `dnet_common::nat`.

use aya_ebpf::{helpers::generated::bpf_ktime_get_ns, macros::map, maps::LruHashMap};
use dnet_common::{
    CtEntry, CtKey,
    maps::CT_ENTRIES,
    nat::{
        CT_FIN_ACKED, CT_PEER_FIN, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, partner, tcp_closed,
        tcp_reusable,
    },
};

use crate::l4::IPPROTO_TCP;

pub const NSEC_PER_SEC: u64 = 1_000_000_000;
/// How long a closed TCP flow keeps its port after its last packet (the
/// last ACK, or the RST). That packet and a new flow's SYN on the same tuple
/// may reach the peer out of order when two CPUs forward them; a SYN that
/// comes first meets the old connection and is answered with a challenge
/// ACK, which costs the new connect a SYN retransmit (1 s).
const REUSE_GRACE_NS: u64 = NSEC_PER_SEC / 20;

/// Both directions of every translated flow; the daemon sets the size
/// (`--ct-entries`) and collects expired entries.
#[map(name = "DNET_CT")]
pub static CT: LruHashMap<CtKey, CtEntry> = LruHashMap::with_max_entries(CT_ENTRIES, 0);

#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: a helper call without arguments.
    unsafe { bpf_ktime_get_ns() }
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

#[inline(always)]
pub fn entry(
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

/// Frees the port of the TCP flow whose reply is keyed `rkey` if that flow
/// is over (a RST, or a FIN each way and the last ACK) since
/// [`REUSE_GRACE_NS`], so a closed connection's port serves a new one
/// almost at once, as Linux reuses a TIME_WAIT tuple for a new SYN.
/// Without it, short connections to one server would hold every port of
/// the range for the closing timeout.
#[inline(always)]
pub fn reclaim(rkey: &CtKey) -> bool {
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
