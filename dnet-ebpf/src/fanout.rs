//! Broadcast and multicast from a container: a copy to every other member
//! of its network, however many there are.
//!
//! A network's members sit in [`NET_MEMBER`] under dense indexes
//! `0..count` ([`NET_FANOUT`]), so the copies are one `bpf_loop` over the
//! indexes: the verifier checks the loop body once, whatever the count,
//! and the count is bounded by the map's size. Each copy is a
//! `bpf_clone_redirect` to the member's host-side veth, whose egress
//! program lets it into the container.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::__sk_buff,
    helpers::generated::{bpf_clone_redirect, bpf_loop},
    programs::TcContext,
};
use dnet_common::{Endpoint, MemberKey, maps::MAX_ENDPOINTS};

use crate::maps::{NET_FANOUT, NET_MEMBER};

/// What the loop body needs, on the caller's stack.
#[repr(C)]
struct Walk {
    skb: *mut __sk_buff,
    net_id: u32,
    /// The sender's own veth: it gets no copy.
    skip_ifindex: u32,
}

/// Sends a copy of the packet in `ctx` to every member of `ep`'s network
/// but `ep` itself. A copy that fails (a member going away) is not the
/// packet's fault and stops nothing.
#[inline(always)]
pub fn to_members(ctx: &TcContext, ep: &Endpoint) {
    let Some(fanout) = NET_FANOUT.get(ep.net_id) else {
        return;
    };
    let count = fanout.count.min(MAX_ENDPOINTS);
    if count == 0 {
        return;
    }
    let mut walk = Walk {
        skb: ctx.skb.skb,
        net_id: ep.net_id,
        skip_ifindex: ep.ifindex,
    };
    // SAFETY: `copy_to_member` has the signature `bpf_loop` calls back
    // with, and `walk` outlives the call (the helper returns after the last
    // iteration); the verifier checks both.
    unsafe {
        bpf_loop(
            count,
            copy_to_member as *mut c_void,
            &mut walk as *mut Walk as *mut c_void,
            0,
        );
    }
}

/// The loop body: one member, by index. Returns 0 to go on.
#[inline(never)]
extern "C" fn copy_to_member(index: u64, walk: *mut c_void) -> i64 {
    // SAFETY: `walk` is the `Walk` that `to_members` passed to `bpf_loop`,
    // alive on its stack for the whole loop.
    let walk = unsafe { &*(walk as *const Walk) };
    let key = MemberKey {
        net_id: walk.net_id,
        index: index as u32,
    };
    // SAFETY: the value is only read; userspace replaces it whole.
    let Some(&ifindex) = (unsafe { NET_MEMBER.get(&key) }) else {
        return 0;
    };
    if ifindex != walk.skip_ifindex {
        // SAFETY: `walk.skb` is the program's context pointer, which stays
        // valid for the whole run; the helper takes plain integers besides.
        unsafe {
            bpf_clone_redirect(walk.skb, ifindex, 0);
        }
    }
    0
}
