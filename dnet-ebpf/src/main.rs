//! Entry points, one per attach point. Each is a thin call into the library.
// Built for the BPF target; on the host (`cargo clippy --workspace`) it is
// an ordinary crate with an empty `main`, so that lints see it too.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

use aya_ebpf::{
    macros::{cgroup_sock_addr, classifier},
    programs::{SockAddrContext, TcContext},
};

/// tc ingress of a container's host-side veth (a cls_bpf filter of its
/// clsact qdisc): traffic the container sends.
/// (`inline(always)` reaches the function `classifier` wraps: the body is
/// large enough that LLVM would rather call it, and a BPF-to-BPF call costs
/// the east-west path a few nanoseconds per packet.)
#[classifier]
#[inline(always)]
pub fn lxc_from_container(ctx: TcContext) -> i32 {
    dnet_ebpf::lxc::from_container(&ctx)
}

/// IPv6 from a container: tail-called by `lxc_from_container` (slot
/// `PROG_SLOT_FROM_CONTAINER6` of `DNET_PROGS`), never attached.
#[classifier]
pub fn lxc6_from_container(ctx: TcContext) -> i32 {
    dnet_ebpf::ipv6::from_container_tail(&ctx)
}

/// NAT66 of a container's IPv6 to the world: tail-called by
/// `lxc6_from_container` (slot `PROG_SLOT_NAT6_FROM_CONTAINER`).
#[classifier]
pub fn lxc6_nat_from_container(ctx: TcContext) -> i32 {
    dnet_ebpf::nat6::from_container_tail::<{ dnet_ebpf::nat6::WHOLE }>(&ctx)
}

/// Hairpin over IPv6 (a container to `[uplink6]:H`, and the answers to
/// its gateway): tail-called by `lxc6_from_container` (slot
/// `PROG_SLOT_HAIRPIN6`).
#[classifier]
pub fn lxc6_hairpin(ctx: TcContext) -> i32 {
    dnet_ebpf::hairpin6::from_container_tail(&ctx)
}

/// IPv6 on the uplink (NAT66's answers): tail-called by
/// `host_from_uplink` (slot `PROG_SLOT_FROM_UPLINK6`).
#[classifier]
pub fn host6_from_uplink(ctx: TcContext) -> i32 {
    dnet_ebpf::nat6::from_uplink_tail::<{ dnet_ebpf::nat6::WHOLE }>(&ctx)
}

/// A new flow from the world to a port published over IPv6: tail-called
/// by `host6_from_uplink` (slot `PROG_SLOT_PUBLISHED6`).
#[classifier]
pub fn host6_publish(ctx: TcContext) -> i32 {
    dnet_ebpf::nat6::publish_tail::<{ dnet_ebpf::nat6::WHOLE }>(&ctx)
}

/// A routed IPv6 network's packet from a container to the world:
/// tail-called by `lxc6_from_container` (slot
/// `PROG_SLOT_ROUTED6_FROM_CONTAINER`).
#[classifier]
pub fn lxc6_routed_from_container(ctx: TcContext) -> i32 {
    dnet_ebpf::routed6::from_container_tail(&ctx)
}

/// A packet from the world to a routed IPv6 network's container:
/// tail-called by `host6_from_uplink` (slot `PROG_SLOT_ROUTED6_FROM_UPLINK`).
#[classifier]
pub fn host6_routed(ctx: TcContext) -> i32 {
    dnet_ebpf::routed6::from_uplink_tail(&ctx)
}

/// An ICMPv6 error from the world about a NAT66 flow: tail-called by
/// `host6_from_uplink` (slot `PROG_SLOT_ICMP6_ERROR_FROM_UPLINK`).
#[classifier]
pub fn host6_icmp6_error(ctx: TcContext) -> i32 {
    dnet_ebpf::icmp6_error::from_uplink_tail(&ctx)
}

/// An ICMPv6 error from a container about a flow to a port it publishes
/// over IPv6: tail-called by `lxc6_from_container` (slot
/// `PROG_SLOT_ICMP6_ERROR_FROM_CONTAINER`).
#[classifier]
pub fn lxc6_icmp6_error(ctx: TcContext) -> i32 {
    dnet_ebpf::icmp6_error::from_container_tail(&ctx)
}

/// "Packet too big" or "time exceeded" for a container's NAT66 or routed
/// packet: tail-called by `lxc6_nat_from_container` and
/// `lxc6_routed_from_container` (slot `PROG_SLOT_ICMP6_REPLY`).
#[classifier]
pub fn lxc6_icmp6_reply(ctx: TcContext) -> i32 {
    dnet_ebpf::icmp6_reply::reply_tail(&ctx)
}

/// "Time exceeded" for a packet from the world to a container whose hop
/// limit runs out here: tail-called by `host6_from_uplink`,
/// `host6_publish` and `host6_routed` (slot
/// `PROG_SLOT_ICMP6_REPLY_FROM_UPLINK`).
#[classifier]
pub fn host6_icmp6_reply(ctx: TcContext) -> i32 {
    dnet_ebpf::icmp6_reply::from_uplink_tail(&ctx)
}

/// A container's IPv6 fragment bound for NAT66: tail-called by
/// `lxc6_nat_from_container` (slot `PROG_SLOT_NAT6_FRAG_FROM_CONTAINER`).
#[classifier]
pub fn lxc6_nat_frag(ctx: TcContext) -> i32 {
    dnet_ebpf::frag6::from_container_tail(&ctx)
}

/// The world's IPv6 fragment to the uplink's IPv6 address: tail-called by
/// `host6_from_uplink` (slot `PROG_SLOT_FRAG6_FROM_UPLINK`).
#[classifier]
pub fn host6_frag(ctx: TcContext) -> i32 {
    dnet_ebpf::frag6::from_uplink_tail(&ctx)
}

/// The world's first IPv6 fragment of a new flow to a port published over
/// IPv6: tail-called by `host6_frag` (slot `PROG_SLOT_FRAG6_PUBLISHED`).
#[classifier]
pub fn host6_frag_publish(ctx: TcContext) -> i32 {
    dnet_ebpf::nat6::publish_tail::<{ dnet_ebpf::nat6::FIRST_FRAGMENT }>(&ctx)
}

/// tc egress of a container's host-side veth (a cls_bpf filter): traffic
/// the host stack sends into the container.
#[classifier]
pub fn lxc_to_container(ctx: TcContext) -> i32 {
    dnet_ebpf::lxc::to_container(&ctx)
}

/// tcx ingress of the uplink: answers of translated flows and new flows to
/// published ports.
#[classifier]
pub fn host_from_uplink(ctx: TcContext) -> i32 {
    dnet_ebpf::host::from_uplink(&ctx)
}

/// tcx egress of the uplink: the host's own echo requests, whose
/// identifiers are kept apart from the containers'.
#[classifier]
pub fn host_to_uplink(ctx: TcContext) -> i32 {
    dnet_ebpf::host::to_uplink(&ctx)
}

/// The host's own `connect()` to a published port.
#[cgroup_sock_addr(connect4)]
pub fn sock_connect4(ctx: SockAddrContext) -> i32 {
    dnet_ebpf::sock::to_backend::<dnet_ebpf::sock::V4>(&ctx)
}

/// The host's own `sendmsg()` to a published port.
#[cgroup_sock_addr(sendmsg4)]
pub fn sock_sendmsg4(ctx: SockAddrContext) -> i32 {
    dnet_ebpf::sock::to_backend::<dnet_ebpf::sock::V4>(&ctx)
}

/// Answers to the host's sockets read as coming from the published port.
#[cgroup_sock_addr(recvmsg4)]
pub fn sock_recvmsg4(ctx: SockAddrContext) -> i32 {
    dnet_ebpf::sock::from_backend::<dnet_ebpf::sock::V4>(&ctx)
}

/// `getpeername()` of such a socket shows the published port.
#[cgroup_sock_addr(getpeername4)]
pub fn sock_getpeername4(ctx: SockAddrContext) -> i32 {
    dnet_ebpf::sock::from_backend::<dnet_ebpf::sock::V4>(&ctx)
}

/// The host's own IPv6 `connect()` to a published port (`[::1]`, the
/// uplink's IPv6 address).
#[cgroup_sock_addr(connect6)]
pub fn sock_connect6(ctx: SockAddrContext) -> i32 {
    dnet_ebpf::sock::to_backend::<dnet_ebpf::sock::V6>(&ctx)
}

/// The host's own IPv6 `sendmsg()` to a published port.
#[cgroup_sock_addr(sendmsg6)]
pub fn sock_sendmsg6(ctx: SockAddrContext) -> i32 {
    dnet_ebpf::sock::to_backend::<dnet_ebpf::sock::V6>(&ctx)
}

/// Answers to the host's IPv6 sockets read as coming from the published port.
#[cgroup_sock_addr(recvmsg6)]
pub fn sock_recvmsg6(ctx: SockAddrContext) -> i32 {
    dnet_ebpf::sock::from_backend::<dnet_ebpf::sock::V6>(&ctx)
}

/// `getpeername()` of such an IPv6 socket shows the published port.
#[cgroup_sock_addr(getpeername6)]
pub fn sock_getpeername6(ctx: SockAddrContext) -> i32 {
    dnet_ebpf::sock::from_backend::<dnet_ebpf::sock::V6>(&ctx)
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: BPF programs cannot panic; the verifier rejects any path that
    // could reach this, so it is never executed.
    unsafe { core::hint::unreachable_unchecked() }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
