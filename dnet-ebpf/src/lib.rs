//! dnet's datapath, as library modules the entry points in `main.rs` call.
//!
//! One module per concern: `ptr` (bounds-checked packet access), `eth`,
//! `arp`, `ipv4`, `ipv6` (IPv6 from containers), `ndp` (Neighbor
//! Discovery answered for them), `l4` (headers and tuples), `maps` (the maps), `stats`
//! (counters and drops), `ct` (conntrack), `quota` (containers'
//! flow limits), `nat` (new flows and their
//! ports, rewriting, delivery), `nat6` (NAT66: IPv6 to the world and
//! its answers), `routed6` (routed IPv6 networks, untranslated), `hairpin6` (containers to
//! ports published on the uplink's IPv6 address), `fib` (routing where the datapath
//! forwards), `frag` (the later fragments of translated datagrams), `icmp_error` (ICMP errors about translated flows),
//! `icmp_reply` (the ICMP errors dnet sends at its own hop), `icmp6_error`
//! and `icmp6_reply` (the same for IPv6), `lxc` (the
//! container-facing programs), `fanout` (broadcast copies to a network's
//! members), `host` (the uplink program), `sock` (the
//! socket hooks for host access to published ports).
#![no_std]
// Map keys and values go to aya-ebpf's `get`/`insert` by reference, as
// written: passing them by value (what this lint asks) changes the code
// LLVM emits, and the verifier then rejects `lxc_from_container` (a stack
// slot read before it is written). Nested `if`s are kept as written for
// the same reason: the datapath's shape is checked by the verifier, not
// by style.
#![allow(clippy::needless_borrows_for_generic_args, clippy::collapsible_if)]

pub mod arp;
pub mod ct;
pub mod eth;
pub mod fanout;
pub mod fib;
pub mod frag;
pub mod frag6;
pub mod hairpin6;
pub mod host;
pub mod icmp6_error;
pub mod icmp6_reply;
pub mod icmp_error;
pub mod icmp_reply;
pub mod ipv4;
pub mod ipv6;
pub mod l4;
pub mod lxc;
pub mod maps;
pub mod nat;
pub mod nat6;
pub mod ndp;
pub mod ptr;
pub mod quota;
pub mod routed6;
pub mod sock;
pub mod stats;

/// A failed packet access (load, store, checksum helper) as a drop reason.
#[inline(always)]
pub(crate) fn err<T>(r: Result<T, i64>) -> Result<T, dnet_common::DropReason> {
    r.map_err(|_| dnet_common::DropReason::Malformed)
}

/// TC verdicts (`include/uapi/linux/pkt_cls.h`).
pub mod verdict {
    pub const TC_ACT_OK: i32 = 0;
    pub const TC_ACT_SHOT: i32 = 2;
    pub const TC_ACT_REDIRECT: i32 = 7;
}
